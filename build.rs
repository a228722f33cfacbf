//! Build-time facts: the git revision for run metadata, the embedded Python's version,
//! and an rpath to libpython so the binary runs from any directory without
//! LD_LIBRARY_PATH.

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
}
