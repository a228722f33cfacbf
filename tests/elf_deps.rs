//! What the harness binary links: without the `python` feature no libpython, so a
//! binary built on one machine runs on any GPU host (scripts/gpu_check.sh takes one);
//! CUDA and NVML never, as both are loaded at run time. `.ci/run` runs this with
//! `--no-default-features`, and the suite with the default build (libpython linked).

use std::process::Command;

/// The ELF's NEEDED entries, from binutils' readelf.
fn needed(bin: &str) -> Vec<String> {
    let out = Command::new("readelf")
        .args(["-d", bin])
        .output()
        .expect("readelf (binutils) runs: the linker's package has it");
    assert!(out.status.success(), "readelf -d {bin} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            let (_, rest) = l.split_once('[')?;
            Some(rest.trim_end_matches(']').to_string())
        })
        .collect()
}

#[test]
fn libpython_is_linked_exactly_when_the_python_feature_is_on_and_cuda_never() {
    let libs = needed(env!("CARGO_BIN_EXE_harness"));
    assert!(libs.iter().any(|l| l.starts_with("libc.so")), "{libs:?}");
    let python = libs.iter().any(|l| l.starts_with("libpython"));
    assert_eq!(python, cfg!(feature = "python"), "NEEDED: {libs:?}");
    for l in &libs {
        assert!(
            !l.starts_with("libcuda") && !l.starts_with("libnvidia-ml"),
            "{l}: CUDA and NVML are loaded at run time, never linked"
        );
    }
}
