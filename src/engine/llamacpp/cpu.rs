//! This CPU's x86 SIMD against the llama.cpp build's.
//!
//! `--features llamacpp` builds llama.cpp's CPU backend for the SIMD of the machine that
//! builds it (ffi/llamacpp/host-cpu.cmake sets ggml's switches from /proc/cpuinfo). But
//! cargo has no input that changes when only the CPU does, so a target directory moved
//! to another machine keeps its llama.cpp. Before llama.cpp runs any code, the engine
//! compares the switches the build was configured with (build.rs reads them from
//! llama.cpp's CMakeCache.txt) with this CPU's: a switch the CPU lacks would fault
//! with SIGILL, so the engine is unusable, with the rebuild command; a switch the CPU
//! has and the build lacks is slower, so a warning. This module is plain Rust, compiled
//! and tested in every build.

use std::collections::HashSet;

/// ggml's x86 switches (`GGML_<NAME>`) and the /proc/cpuinfo flags each needs, every
/// one of them. Where `llama_print_system_info` reports a switch it uses the same name
/// (all but SSE42, AMX_TILE and AMX_BF16). The same table is in
/// ffi/llamacpp/host-cpu.cmake (a test keeps them equal).
pub const SWITCHES: &[(&str, &[&str])] = &[
    ("SSE42", &["sse4_2"]),
    ("AVX", &["avx"]),
    ("AVX2", &["avx2"]),
    ("FMA", &["fma"]),
    ("F16C", &["f16c"]),
    ("BMI2", &["bmi2"]),
    ("AVX_VNNI", &["avx_vnni"]),
    (
        "AVX512",
        &["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"],
    ),
    ("AVX512_VBMI", &["avx512vbmi"]),
    ("AVX512_VNNI", &["avx512_vnni"]),
    ("AVX512_BF16", &["avx512_bf16"]),
    ("AMX_TILE", &["amx_tile"]),
    ("AMX_INT8", &["amx_int8"]),
    ("AMX_BF16", &["amx_bf16"]),
];

/// What to do when the build does not fit this CPU.
pub const HOW_TO_REBUILD: &str = "llama-cpp-sys-2 configures llama.cpp once per target \
    directory, so rebuild it here: `cargo clean -p llama-cpp-sys-2` (with `--release` for a \
    release build), then build again";

/// How the llama.cpp in this binary was configured, as build.rs read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Build {
    /// ggml's switches that were ON (names as in [`SWITCHES`]).
    Switches(Vec<String>),
    /// GGML_NATIVE (`-march=native` for the machine that built it: which features that
    /// was is not recorded).
    Native,
    /// Not read (no llama.cpp in this build, or its CMakeCache.txt was not found).
    Unknown,
}

impl Build {
    /// From build.rs's `HARNESS_LLAMACPP_SWITCHES`: `native`, or the ON switches
    /// separated by commas (empty: none).
    pub fn parse(v: Option<&str>) -> Build {
        match v {
            None => Build::Unknown,
            Some("native") => Build::Native,
            Some(s) => Build::Switches(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            ),
        }
    }

    /// This binary's.
    pub fn this() -> Build {
        Build::parse(option_env!("HARNESS_LLAMACPP_SWITCHES"))
    }
}

/// The switches a CPU with these /proc/cpuinfo flags supports, in [`SWITCHES`] order.
pub fn supported(flags: &HashSet<&str>) -> Vec<&'static str> {
    SWITCHES
        .iter()
        .filter(|(_, needs)| needs.iter().all(|f| flags.contains(f)))
        .map(|(name, _)| *name)
        .collect()
}

/// The `flags` line of /proc/cpuinfo text (the first CPU's).
pub fn cpuinfo_flags(cpuinfo: &str) -> HashSet<&str> {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "flags").then_some(v)
        })
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default()
}

/// The switches this CPU supports; `None` where that cannot be read (not Linux on
/// x86-64: the build then used ggml's defaults, and nothing is checked).
pub fn host() -> Option<Vec<&'static str>> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return None;
    }
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo_flags(&text);
    (!flags.is_empty()).then(|| supported(&flags))
}

/// Switches the build uses that the CPU lacks (its code would fault with SIGILL).
pub fn unsupported<'a>(built: &'a [String], host: &[&str]) -> Vec<&'a str> {
    built
        .iter()
        .map(String::as_str)
        .filter(|b| SWITCHES.iter().any(|(n, _)| n == b) && !host.contains(b))
        .collect()
}

/// Switches host-cpu.cmake leaves off whatever the CPU has (the environment can turn
/// them on).
pub const OFF_BY_DEFAULT: [&str; 3] = ["AMX_TILE", "AMX_INT8", "AMX_BF16"];

/// Switches the CPU supports that the build does not use. `built` may be the names
/// `llama_print_system_info` reports (a native build): switches it never reports are
/// then not counted.
pub fn unused(built: &[String], host: &[&'static str], reported_only: bool) -> Vec<&'static str> {
    const UNREPORTED: [&str; 3] = ["SSE42", "AMX_TILE", "AMX_BF16"];
    host.iter()
        .copied()
        .filter(|h| !(reported_only && UNREPORTED.contains(h)))
        // Off by design (ffi/llamacpp/host-cpu.cmake: ggml's AMX kernel faulted on an
        // AMX host), so not a build to redo.
        .filter(|h| !OFF_BY_DEFAULT.contains(h))
        .filter(|h| !built.iter().any(|b| b == h))
        .collect()
}

/// Why this binary's llama.cpp cannot run on this CPU, with the fix; `None` when it can
/// (or when that cannot be told).
pub fn problem() -> Option<String> {
    problem_for(&Build::this(), host().as_deref())
}

/// Why a llama.cpp configured as `build` cannot run on a CPU supporting `host`.
pub fn problem_for(build: &Build, host: Option<&[&str]>) -> Option<String> {
    let (Build::Switches(built), Some(host)) = (build, host) else {
        return None;
    };
    let lacking = unsupported(built, host);
    (!lacking.is_empty()).then(|| {
        format!(
            "this binary's llama.cpp was built for a CPU with {} and this CPU lacks {} (its code would fault with SIGILL); {HOW_TO_REBUILD}",
            lacking.join(", "),
            if lacking.len() == 1 { "it" } else { "them" }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZEN4: &str = "processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vbmi2 avx512_vnni\nbugs\t\t: sysret_ss_attrs\n\nprocessor\t: 1\nflags\t\t: fpu\n";

    #[test]
    fn reads_the_first_cpus_flags_by_linux_names() {
        let flags = cpuinfo_flags(ZEN4);
        assert!(flags.contains("avx512vbmi") && flags.contains("avx512_vnni"));
        assert_eq!(
            supported(&flags),
            [
                "SSE42",
                "AVX",
                "AVX2",
                "FMA",
                "F16C",
                "BMI2",
                "AVX512",
                "AVX512_VBMI",
                "AVX512_VNNI",
                "AVX512_BF16"
            ]
        );
        // AVX512 needs all five of ggml's -mavx512* flags.
        let partial = cpuinfo_flags("flags : avx avx2 avx512f avx512cd\n");
        assert_eq!(supported(&partial), ["AVX", "AVX2"]);
        assert!(cpuinfo_flags("processor : 0\n").is_empty());
    }

    #[test]
    fn a_build_for_more_than_the_cpu_is_unsupported_and_one_for_less_is_unused() {
        let host = supported(&cpuinfo_flags(ZEN4));
        let v3: Vec<String> = ["SSE42", "AVX", "AVX2", "FMA", "F16C", "BMI2"]
            .map(String::from)
            .into();
        assert!(unsupported(&v3, &host).is_empty());
        assert_eq!(
            unused(&v3, &host, false),
            ["AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"]
        );
        let all: Vec<String> = host.iter().map(|s| s.to_string()).collect();
        assert!(unused(&all, &host, false).is_empty());
        let amx: Vec<String> = ["AVX2", "AMX_TILE", "AMX_INT8", "LLAMAFILE"]
            .map(String::from)
            .into();
        assert_eq!(unsupported(&amx, &host), ["AMX_TILE", "AMX_INT8"]);
        // A native build's system_info names: SSE42 is never reported, so not unused.
        let reported: Vec<String> = ["SSE3", "AVX", "AVX2", "FMA", "F16C", "BMI2"]
            .map(String::from)
            .into();
        assert_eq!(
            unused(&reported, &host, true),
            ["AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"]
        );
    }

    #[test]
    fn a_build_this_cpu_cannot_run_is_refused_with_the_fix() {
        let host = supported(&cpuinfo_flags(ZEN4));
        let amx = Build::parse(Some("AVX2,AVX512,AMX_TILE,AMX_INT8,NATIVE_X,CPU"));
        let p = problem_for(&amx, Some(&host)).unwrap();
        assert!(
            p.contains("with AMX_TILE, AMX_INT8 and this CPU lacks them"),
            "{p}"
        );
        assert!(p.contains("cargo clean -p llama-cpp-sys-2"), "{p}");
        let fits = Build::parse(Some("SSE42,AVX,AVX2,AVX512,LLAMAFILE"));
        assert_eq!(problem_for(&fits, Some(&host)), None);
        // Unknown either way: nothing to say.
        assert_eq!(problem_for(&amx, None), None);
        assert_eq!(problem_for(&Build::Native, Some(&host)), None);
        assert_eq!(problem_for(&Build::Unknown, Some(&host)), None);
    }

    #[test]
    fn build_switches_from_build_rs() {
        assert_eq!(Build::parse(None), Build::Unknown);
        assert_eq!(Build::parse(Some("native")), Build::Native);
        assert_eq!(Build::parse(Some("")), Build::Switches(vec![]));
        assert_eq!(
            Build::parse(Some("AVX,AVX2")),
            Build::Switches(vec!["AVX".into(), "AVX2".into()])
        );
    }

    #[test]
    fn the_cmake_include_has_the_same_table() {
        let cmake = include_str!("../../../ffi/llamacpp/host-cpu.cmake");
        let start = cmake
            .find("set(_llm_harness_switches")
            .expect("the table in host-cpu.cmake");
        let body = &cmake[start..];
        let body = &body[..body.find(')').unwrap()];
        let entries: Vec<(String, Vec<String>)> = body
            .lines()
            .skip(1)
            .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix('"'))
            .map(|e| {
                let (name, flags) = e.split_once(':').unwrap();
                (name.into(), flags.split(',').map(String::from).collect())
            })
            .collect();
        let ours: Vec<(String, Vec<String>)> = SWITCHES
            .iter()
            .map(|(n, f)| (n.to_string(), f.iter().map(|s| s.to_string()).collect()))
            .collect();
        assert_eq!(entries, ours);
    }

    #[test]
    fn this_build_fits_this_cpu() {
        // On the machine that built the tests, the check passes (a failure here means
        // the build-time and run-time tables disagree about this CPU).
        assert_eq!(problem(), None);
    }
}
