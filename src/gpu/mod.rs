//! GPU facts for the run metadata. (CUDA-event timing and NVML telemetry come with the
//! GPU issue; without a GPU the harness runs and says so once.)

/// Names of the NVIDIA GPUs the kernel driver reports, or why there are none.
pub fn describe() -> String {
    let Ok(dir) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return "none (no NVIDIA driver loaded)".into();
    };
    let names: Vec<String> = dir
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("information")).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
        })
        .collect();
    if names.is_empty() {
        "none (driver loaded, no GPU listed)".into()
    } else {
        names.join(", ")
    }
}
