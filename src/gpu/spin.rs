//! The calibration engine's steps on a GPU: the known answer for everything GPU in a
//! run. Each step launches [`SPIN_PTX`] on the engine's own stream, a one-thread kernel
//! that stays resident for the step's scheduled nanoseconds of `%globaltimer`, and the
//! engine waits for it as a real engine waits for its step's sampled tokens. So the
//! CUDA events around a step must read the schedule, NVML must see the device busy for
//! the share of time the schedule fills, and its energy counter must move.
//!
//! The PTX is embedded and JIT-compiled by the driver when it loads (no toolkit, no
//! NVRTC). [`StepDevice`] is what the engine needs from the GPU, so the launch path is
//! tested against a fake device sharing the fake event clock of [`super::timing`].

use super::cuda;
use cudarc::driver::PushKernelArg;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig};
use std::sync::Arc;

/// The spin kernel: `spin(u64 ns)`, PTX 6.0 for sm_50 and later.
pub const SPIN_PTX: &str = include_str!("spin.ptx");

/// Largest device allocation `mem_gib=` may ask for.
pub const MAX_MEM_GIB: f64 = 1024.0;

/// What a step engine needs from the device it computes on.
pub trait StepDevice {
    /// Queues `ns` nanoseconds of device work on the engine's stream; never waits.
    fn launch(&mut self, ns: u64) -> Result<(), String>;
    /// Waits until the queued work is done (the end of the step).
    fn wait(&mut self) -> Result<(), String>;
    /// The CUDA device ordinal and the `CUstream` the work is queued on.
    fn placement(&self) -> (usize, u64);
    /// One line for the engine's notes: device, stream, memory held.
    fn describe(&self) -> String;
}

/// The spin kernel on one CUDA device, on a stream of its own.
pub struct SpinKernel {
    ordinal: usize,
    stream: Arc<CudaStream>,
    spin: CudaFunction,
    described: String,
    /// Device memory held for the engine's life (`mem_gib=`), a known answer for
    /// memory telemetry.
    _held: Option<CudaSlice<u8>>,
}

impl SpinKernel {
    /// Loads the kernel on device `ordinal` and holds `mem_gib` GiB of device memory.
    pub fn open(ordinal: usize, mem_gib: f64) -> Result<SpinKernel, String> {
        let ctx: Arc<CudaContext> = cuda::context(ordinal)?;
        let facts = cuda::device_facts(&ctx);
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(SPIN_PTX))
            .map_err(|e| format!("CUDA device {ordinal}: loading the spin kernel's PTX: {e}"))?;
        let spin = module
            .load_function("spin")
            .map_err(|e| format!("CUDA device {ordinal}: the spin kernel: {e}"))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| format!("CUDA device {ordinal}: a stream: {e}"))?;
        let held = if mem_gib > 0.0 {
            let bytes = (mem_gib.min(MAX_MEM_GIB) * (1u64 << 30) as f64) as usize;
            Some(stream.alloc_zeros::<u8>(bytes).map_err(|e| {
                format!("CUDA device {ordinal}: allocating mem_gib={mem_gib} GiB: {e}")
            })?)
        } else {
            None
        };
        let s = stream.cu_stream() as u64;
        Ok(SpinKernel {
            ordinal,
            described: format!(
                "cuda:{ordinal} ({facts}), spin kernel on its own stream 0x{s:x}{}",
                if held.is_some() {
                    format!(", holding {mem_gib} GiB of device memory")
                } else {
                    String::new()
                }
            ),
            stream,
            spin,
            _held: held,
        })
    }
}

impl StepDevice for SpinKernel {
    fn launch(&mut self, ns: u64) -> Result<(), String> {
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut args = self.stream.launch_builder(&self.spin);
        args.arg(&ns);
        // SAFETY: `spin` takes exactly one u64 by value and touches no memory.
        unsafe { args.launch(cfg) }.map(|_| ()).map_err(|e| {
            format!(
                "CUDA device {}: launching the spin kernel: {e}",
                self.ordinal
            )
        })
    }

    fn wait(&mut self) -> Result<(), String> {
        self.stream
            .synchronize()
            .map_err(|e| format!("CUDA device {}: waiting for the step: {e}", self.ordinal))
    }

    fn placement(&self) -> (usize, u64) {
        (self.ordinal, self.stream.cu_stream() as u64)
    }

    fn describe(&self) -> String {
        self.described.clone()
    }
}

/// Whether device `ordinal` can run the spin kernel here, or why not (checked before
/// anything is created).
pub fn usable(ordinal: usize) -> Result<(), String> {
    cuda::context(ordinal).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// ptxas from `PTXAS`, `$CUDA_HOME/bin` (the CUDA wheel scripts/setup.d/cuda_headers.sh
    /// installs) or the PATH.
    fn ptxas() -> Option<PathBuf> {
        let from_env = std::env::var_os("PTXAS").map(PathBuf::from);
        let from_home =
            std::env::var_os("CUDA_HOME").map(|h| PathBuf::from(h).join("bin").join("ptxas"));
        let from_path = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("ptxas"))
                .find(|f| f.is_file())
        });
        [from_env, from_home, from_path]
            .into_iter()
            .flatten()
            .find(|f| f.is_file())
    }

    #[test]
    fn the_spin_kernel_assembles_for_every_current_gpu_generation() {
        let Some(ptxas) = ptxas() else {
            eprintln!(
                "skipped: no ptxas (set PTXAS or CUDA_HOME; scripts/setup.d/cuda_headers.sh installs one)"
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("spin.ptx");
        std::fs::write(&src, SPIN_PTX).unwrap();
        // Turing, Ampere, Ada, Hopper, Blackwell: what the driver's JIT will be asked for.
        for arch in ["sm_75", "sm_80", "sm_89", "sm_90", "sm_100"] {
            let out = std::process::Command::new(&ptxas)
                .arg(format!("-arch={arch}"))
                .arg(&src)
                .arg("-o")
                .arg(dir.path().join(format!("{arch}.cubin")))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{arch}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn without_a_driver_the_device_is_refused_with_the_reason() {
        // SAFETY: only tries to open the driver library.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            eprintln!("skipped: a CUDA driver is present here");
            return;
        }
        assert!(usable(0).unwrap_err().contains("libcuda.so not found"));
        assert!(SpinKernel::open(0, 0.0).is_err());
    }
}
