//! Build-time facts: the git revision for run metadata, the embedded Python's version,
//! and an rpath to libpython so the binary runs from any directory without
//! LD_LIBRARY_PATH. With the `trtllm` feature, the cxx bridge and its C++ shim
//! (`ffi/trtllm/`), compiled against an installed TensorRT-LLM 1.2.x and linked to it
//! with an rpath (see [`trtllm`]). With `llamacpp`, the CPU switches llama.cpp was
//! configured with (see [`llamacpp_switches`]).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    let rev = if dirty { format!("{rev}-dirty") } else { rev };
    println!("cargo:rustc-env=HARNESS_GIT_REV={rev}");

    #[cfg(feature = "python")]
    {
        pyo3_build_config::add_libpython_rpath_link_args();
        // The embedded interpreter's `pythonX.Y`, to check venvs without starting it.
        let v = pyo3_build_config::get().version();
        println!(
            "cargo:rustc-env=HARNESS_PYTHON=python{}.{}",
            v.major, v.minor
        );
        // The adapters are compiled in with include_str!; rebuild when they change.
        println!("cargo:rerun-if-changed=engines");
    }

    #[cfg(feature = "trtllm")]
    trtllm::build();

    #[cfg(feature = "llamacpp")]
    llamacpp_switches();
}

/// The ggml switches llama.cpp was configured with (`GGML_AVX512:BOOL=ON` ...), read
/// from llama-cpp-sys-2's CMakeCache.txt into `HARNESS_LLAMACPP_SWITCHES` (the ON ones
/// without `GGML_`, comma-separated; `native` for GGML_NATIVE): the engine compares them with the CPU it
/// runs on before llama.cpp runs (src/engine/llamacpp/cpu.rs). llama-cpp-sys-2 says
/// where its cmake package is (`DEP_LLAMA_GGML_CMAKE_DIR`, OUT_DIR/lib/cmake), and the
/// build tree is OUT_DIR/build. Nothing is set when the cache is not found there.
#[cfg(feature = "llamacpp")]
fn llamacpp_switches() {
    use std::path::Path;
    let Some(cmake_dir) = std::env::var_os("DEP_LLAMA_GGML_CMAKE_DIR") else {
        println!("cargo:warning=llama-cpp-sys-2 did not say where it built llama.cpp (DEP_LLAMA_GGML_CMAKE_DIR): the engine cannot check this CPU against the build");
        return;
    };
    let Some(cache) = Path::new(&cmake_dir)
        .ancestors()
        .nth(2)
        .map(|out| out.join("build").join("CMakeCache.txt"))
    else {
        return;
    };
    println!("cargo:rerun-if-changed={}", cache.display());
    let Ok(text) = std::fs::read_to_string(&cache) else {
        println!(
            "cargo:warning=no {}: the engine cannot check this CPU against the llama.cpp build",
            cache.display()
        );
        return;
    };
    // `GGML_NAME:TYPE=VALUE` lines with CMake's true values; the engine picks the x86
    // switches among them.
    let on: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let name = k.split_once(':')?.0.strip_prefix("GGML_")?;
            let v = v.trim().to_ascii_uppercase();
            matches!(v.as_str(), "ON" | "1" | "TRUE" | "YES" | "Y").then_some(name)
        })
        .collect();
    let value = if on.contains(&"NATIVE") {
        "native".to_string()
    } else {
        on.join(",")
    };
    println!("cargo:rustc-env=HARNESS_LLAMACPP_SWITCHES={value}");
}

/// Compiles `ffi/trtllm/shim.cpp` and the bridge in `src/engine/trtllm/ffi.rs` against
/// the Executor headers and CUDA's, and links `tensorrt_llm`,
/// `nvinfer_plugin_tensorrt_llm` and `cudart` with an rpath to where they are.
///
/// Where they come from:
/// - `TRTLLM_ROOT`: an installation with `include/tensorrt_llm/executor/executor.h` and
///   the two libraries in `lib/` or `libs/` (the wheel's layout);
/// - or `TRTLLM_INCLUDE_DIR` (TensorRT-LLM's `cpp/include` at the release's tag) and
///   `TRTLLM_LIB_DIR` (a `:`-separated list: a source build keeps the plugin library
///   in its own directory), each overriding `TRTLLM_ROOT`'s;
/// - `CUDA_HOME` (default `/usr/local/cuda`): `include/cuda_fp16.h` and
///   `lib64/` or `lib/` with `libcudart.so` (`scripts/setup.d/cuda_headers.sh` installs both
///   from PyPI);
/// - `TRTLLM_CXX11_ABI` (0 or 1) overrides the libstdc++ ABI, otherwise read from
///   `libtensorrt_llm.so` (new-ABI symbols name `__cxx11`): std::string crosses the
///   library's interface, so the shim must match it.
///
/// Anything missing stops the build with a message naming the variable or file and
/// the fix.
#[cfg(feature = "trtllm")]
mod trtllm {
    use std::env;
    use std::path::{Path, PathBuf};

    /// Marks a TRTLLM_ROOT-shaped tree made by scripts/setup.d/trtllm_standin.sh.
    const STANDIN_MARK: &str = "LLM_HARNESS_STANDIN";

    fn fail(msg: &str) -> ! {
        eprintln!("error: building with --features trtllm: {msg}");
        std::process::exit(1);
    }

    fn var(name: &str) -> Option<PathBuf> {
        println!("cargo:rerun-if-env-changed={name}");
        env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }

    /// The directory among `dirs` that holds `file`.
    fn find(dirs: &[PathBuf], file: &str) -> Option<PathBuf> {
        dirs.iter().find(|d| d.join(file).is_file()).cloned()
    }

    /// Whether the library was built with libstdc++'s new (C++11) string ABI.
    fn cxx11_abi(lib: &Path) -> bool {
        use std::io::Read;
        let Ok(mut f) = std::fs::File::open(lib) else {
            return true;
        };
        let needle = b"__cxx11";
        let mut buf = vec![0u8; 1 << 20];
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            carry.extend_from_slice(&buf[..n]);
            if carry.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            let keep = carry.len().saturating_sub(needle.len() - 1);
            carry.drain(..keep);
        }
    }

    pub fn build() {
        let root = var("TRTLLM_ROOT");
        let include = var("TRTLLM_INCLUDE_DIR")
            .or_else(|| root.as_ref().map(|r| r.join("include")))
            .unwrap_or_else(|| {
                fail("set TRTLLM_ROOT to a TensorRT-LLM 1.2.x installation (or TRTLLM_INCLUDE_DIR and TRTLLM_LIB_DIR); see README, TensorRT-LLM")
            });
        let executor_h = include.join("tensorrt_llm/executor/executor.h");
        if !executor_h.is_file() {
            fail(&format!(
                "{} not found: TRTLLM_INCLUDE_DIR (or TRTLLM_ROOT/include) must be TensorRT-LLM 1.2.x's cpp/include (the Python wheel does not ship the Executor headers)",
                executor_h.display()
            ));
        }
        let lib_dirs: Vec<PathBuf> = match var("TRTLLM_LIB_DIR") {
            Some(list) => env::split_paths(&list).collect(),
            None => match &root {
                Some(r) => vec![r.join("lib"), r.join("libs")],
                None => fail("set TRTLLM_LIB_DIR (the directories of libtensorrt_llm.so and libnvinfer_plugin_tensorrt_llm.so) or TRTLLM_ROOT"),
            },
        };
        let searched = || {
            lib_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut link_dirs: Vec<PathBuf> = Vec::new();
        for lib in ["tensorrt_llm", "nvinfer_plugin_tensorrt_llm"] {
            let file = format!("lib{lib}.so");
            match find(&lib_dirs, &file) {
                Some(d) => {
                    if !link_dirs.contains(&d) {
                        link_dirs.push(d);
                    }
                }
                None => fail(&format!(
                    "{file} not found in {}; set TRTLLM_LIB_DIR (or TRTLLM_ROOT) to where TensorRT-LLM 1.2.x's C++ libraries are",
                    searched()
                )),
            }
        }
        let trt_dir = link_dirs[0].clone();
        let standin = trt_dir.join(STANDIN_MARK).is_file();
        if env::var_os("CARGO_FEATURE_TRTLLM_STANDIN").is_some() && !standin {
            fail(&format!(
                "the trtllm-standin feature runs the tests against the stand-in Executor, but {} is not the stand-in tree; set TRTLLM_ROOT=\"$(scripts/setup.d/trtllm_standin.sh | tail -n1)\"",
                trt_dir.display()
            ));
        }
        if standin {
            println!(
                "cargo:warning=linking the llm-harness test stand-in of tensorrt_llm::executor from {} (not TensorRT-LLM): its runs are labelled as instruments",
                trt_dir.display()
            );
        }

        let cuda = var("CUDA_HOME").unwrap_or_else(|| PathBuf::from("/usr/local/cuda"));
        let cuda_include = cuda.join("include");
        if !cuda_include.join("cuda_fp16.h").is_file() {
            fail(&format!(
                "{} not found: set CUDA_HOME to a CUDA 13.x toolkit (or CUDA_HOME=\"$(scripts/setup.d/cuda_headers.sh | tail -n1)\", the headers from PyPI)",
                cuda_include.join("cuda_fp16.h").display()
            ));
        }
        let cuda_lib = [cuda.join("lib64"), cuda.join("lib")]
            .into_iter()
            .find(|d| d.join("libcudart.so").is_file())
            .unwrap_or_else(|| {
                fail(&format!(
                    "libcudart.so not found in {0}/lib64 or {0}/lib; set CUDA_HOME to a CUDA 13.x toolkit (or run scripts/setup.d/cuda_headers.sh)",
                    cuda.display()
                ))
            });
        let shown: Vec<String> = link_dirs.iter().map(|d| d.display().to_string()).collect();
        if !link_dirs.contains(&cuda_lib) {
            link_dirs.push(cuda_lib);
        }

        let abi = match env::var("TRTLLM_CXX11_ABI").ok().as_deref() {
            Some("0") => false,
            Some("1") => true,
            Some(other) if !other.is_empty() => fail(&format!(
                "TRTLLM_CXX11_ABI={other}: expected 0 or 1 (or unset, to read it from libtensorrt_llm.so)"
            )),
            _ => cxx11_abi(&trt_dir.join("libtensorrt_llm.so")),
        };
        println!("cargo:rerun-if-env-changed=TRTLLM_CXX11_ABI");
        for f in [
            "ffi/trtllm/shim.h",
            "ffi/trtllm/shim.cpp",
            "src/engine/trtllm/ffi.rs",
        ] {
            println!("cargo:rerun-if-changed={f}");
        }
        println!("cargo:rerun-if-changed={}", executor_h.display());
        println!(
            "cargo:rerun-if-changed={}",
            trt_dir.join("libtensorrt_llm.so").display()
        );

        cxx_build::bridge("src/engine/trtllm/ffi.rs")
            .file("ffi/trtllm/shim.cpp")
            .std("c++17")
            .include(&include)
            .include(&cuda_include)
            // TensorRT-LLM's own builds define these; types.h's traits depend on them.
            .define("ENABLE_BF16", None)
            .define("ENABLE_FP8", None)
            .define("_GLIBCXX_USE_CXX11_ABI", if abi { "1" } else { "0" })
            .compile("llm_harness_trtllm_shim");

        for d in &link_dirs {
            println!("cargo:rustc-link-search=native={}", d.display());
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", d.display());
        }
        for lib in ["tensorrt_llm", "nvinfer_plugin_tensorrt_llm", "cudart"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
        println!(
            "cargo:rustc-env=HARNESS_TRTLLM_LIB_DIRS={}",
            shown.join(":")
        );
    }
}
