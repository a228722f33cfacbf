//! CUDA through cudarc, loaded at run time: building needs no CUDA toolkit, and
//! without a driver every function here says why GPU timing is off instead of
//! failing (cudarc panics when libcuda is missing, so its presence is checked first).
//!
//! What it provides: the driver and device facts for `harness engines`, CUDA events
//! on the engine's stream for [`super::timing::StepRing`], the profiler capture range
//! (`cuProfilerStart`/`Stop`, which `nsys --capture-range=cudaProfilerApi` and
//! `ncu --profile-from-start off` obey) and NVTX ranges.

use super::timing::EventClock;
use cudarc::driver::{sys, CudaContext, CudaEvent, CudaStream};
use std::sync::Arc;

/// Why CUDA is not usable here, or the context of device `ordinal`.
pub fn context(ordinal: usize) -> Result<Arc<CudaContext>, String> {
    // SAFETY: only tries to open the driver library; no CUDA call is made.
    if !unsafe { sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda.so not found)".into());
    }
    // cudarc panics rather than erring on some load failures; keep that off the run.
    match std::panic::catch_unwind(|| CudaContext::new(ordinal)) {
        Ok(Ok(ctx)) => Ok(ctx),
        Ok(Err(e)) => Err(format!("CUDA device {ordinal}: {e}")),
        Err(_) => Err("the CUDA driver library could not be loaded".into()),
    }
}

/// The CUDA driver's version (e.g. 12040), when a driver is present.
pub fn driver_version() -> Option<i32> {
    // SAFETY: as in `context`.
    if !unsafe { sys::is_culib_present() } {
        return None;
    }
    let mut v = 0;
    // SAFETY: a valid out pointer; the symbol is looked up in the present library.
    let r = std::panic::catch_unwind(move || {
        let rc = unsafe { sys::cuDriverGetVersion(&mut v) };
        (rc == sys::CUresult::CUDA_SUCCESS).then_some(v)
    });
    r.ok().flatten()
}

/// One device, for `harness engines`.
pub fn device_facts(ctx: &Arc<CudaContext>) -> String {
    let name = ctx.name().unwrap_or_else(|_| "unknown".into());
    let mem = ctx
        .total_mem()
        .map_or(0.0, |b| b as f64 / (1u64 << 30) as f64);
    let (ma, mi) = ctx.compute_capability().unwrap_or((0, 0));
    format!("{name}, {mem:.1} GiB, compute capability {ma}.{mi}")
}

/// CUDA events on one stream: the engine's own (`stream` from the adapter) or the
/// legacy default stream.
pub struct CudaEvents {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// Which stream, for the output.
    pub described: String,
}

impl CudaEvents {
    /// Events on device `ordinal`, on `stream` (a `CUstream` the engine computes on,
    /// e.g. `torch.cuda.current_stream().cuda_stream`) or else the legacy default one.
    pub fn new(ordinal: usize, stream: Option<u64>) -> Result<CudaEvents, String> {
        let ctx = context(ordinal)?;
        let (stream, described) = match stream.filter(|&s| s != 0) {
            // SAFETY: the engine owns this stream for its whole life, which outlasts the
            // run's timing; it belongs to the primary context, which `context` retains.
            Some(s) => (
                unsafe { ctx.wrap_borrowed_stream(s as usize as sys::CUstream) },
                format!("the engine's stream 0x{s:x} on device {ordinal}"),
            ),
            None => (
                ctx.default_stream(),
                format!(
                    "the legacy default stream of device {ordinal} (the engine does not expose its own)"
                ),
            ),
        };
        Ok(CudaEvents {
            ctx,
            stream,
            described,
        })
    }
}

impl EventClock for CudaEvents {
    type Event = CudaEvent;

    fn new_event(&mut self) -> Result<CudaEvent, String> {
        self.ctx
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| e.to_string())
    }

    fn record(&mut self, e: &CudaEvent) -> Result<(), String> {
        e.record(&self.stream).map_err(|e| e.to_string())
    }

    fn is_complete(&self, e: &CudaEvent) -> Result<bool, String> {
        e.try_is_complete().map_err(|e| e.to_string())
    }

    fn elapsed_ms(&self, a: &CudaEvent, b: &CudaEvent) -> Result<f64, String> {
        a.elapsed_ms(b).map(f64::from).map_err(|e| e.to_string())
    }
}

/// Opens or closes the profiler's capture range (`cuProfilerStart`/`Stop`).
pub fn capture(open: bool) -> Result<(), String> {
    // SAFETY: as in `context`.
    if !unsafe { sys::is_culib_present() } {
        return Err("no CUDA driver".into());
    }
    let rc = std::panic::catch_unwind(|| {
        // SAFETY: no arguments; acts on the current context.
        unsafe {
            if open {
                sys::cuProfilerStart()
            } else {
                sys::cuProfilerStop()
            }
        }
    })
    .map_err(|_| "cuProfilerStart/Stop is not in this driver".to_string())?;
    (rc == sys::CUresult::CUDA_SUCCESS)
        .then_some(())
        .ok_or_else(|| format!("{rc:?}"))
}

/// An NVTX range for as long as the value lives, when libnvToolsExt is present.
pub fn nvtx_range(name: &str) -> Option<cudarc::nvtx::Range> {
    // SAFETY: only tries to open the library.
    if !unsafe { cudarc::nvtx::sys::is_culib_present() } {
        return None;
    }
    std::panic::catch_unwind(|| cudarc::nvtx::scoped_range(name.replace('\0', " "))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_everything_says_why() {
        // SAFETY: as above.
        if unsafe { sys::is_culib_present() } {
            eprintln!(
                "skipped: a CUDA driver is present here; the GPU path is tested on the device"
            );
            return;
        }
        assert!(context(0).unwrap_err().contains("libcuda.so not found"));
        assert_eq!(driver_version(), None);
        assert!(CudaEvents::new(0, Some(0x1234)).is_err());
        assert!(capture(true).is_err());
    }
}
