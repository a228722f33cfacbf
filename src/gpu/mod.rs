//! The GPU side of a run: CUDA-event time per engine step ([`timing`], [`cuda`]),
//! device telemetry and energy ([`telemetry`], [`energy`]), the profiler's capture
//! range and NVTX ranges, the facts `harness engines` shows, and the spin kernel the
//! calibration engine steps with on a GPU ([`spin`]). Everything is loaded
//! at run time; on a machine without a GPU each part switches itself off, the run
//! says so in one line, and nothing fails for that reason.

pub mod cuda;
pub mod energy;
pub mod spin;
pub mod telemetry;
pub mod timing;

use crate::core::measure::Measures;
use crate::core::observe::StepObserver;
use std::path::Path;
use std::time::Duration;
use timing::{EventClock, GpuTime, StepRing};

/// Event pairs in flight before a step goes untimed.
const RING: usize = 64;

/// Names of the NVIDIA GPUs the kernel driver reports, or why there are none.
pub fn describe() -> String {
    nvidia_gpus().map_or_else(|why| format!("none ({why})"), |names| names.join(", "))
}

/// The NVIDIA GPUs the kernel driver lists (`/proc/driver/nvidia/gpus`), or why none.
pub fn nvidia_gpus() -> Result<Vec<String>, String> {
    let Ok(dir) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return Err("no NVIDIA driver loaded".into());
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
        Err("driver loaded, no GPU listed".into())
    } else {
        Ok(names)
    }
}

/// The GPU facts for `harness engines`: driver, devices, NVML, and why timing is off.
pub fn status() -> Vec<String> {
    let mut lines = Vec::new();
    match cuda::driver_version() {
        Some(v) => lines.push(format!("CUDA driver {}.{}", v / 1000, (v % 1000) / 10)),
        None => lines.push("CUDA driver: none (libcuda.so not found): GPU step timing off".into()),
    }
    if let Ok(ctx) = cuda::context(0) {
        lines.push(format!("GPU 0: {}", cuda::device_facts(&ctx)));
    }
    match nvml_wrapper::Nvml::init() {
        Ok(nvml) => {
            let n = nvml.device_count().unwrap_or(0);
            let driver = nvml.sys_driver_version().unwrap_or_default();
            lines.push(format!("NVML: {n} GPU(s), driver {driver}: telemetry on"));
        }
        Err(e) => {
            let rapl = telemetry::rapl_zones(Path::new("/sys/class/powercap"));
            lines.push(format!(
                "NVML: unavailable ({e}); CPU energy: {}",
                if rapl.is_empty() {
                    "no RAPL counters exposed (/sys/class/powercap)".to_string()
                } else {
                    format!("{} RAPL zone(s)", rapl.len())
                }
            ));
        }
    }
    lines
}

/// A run's GPU instruments: step timing (when the engine runs on a CUDA device) and
/// telemetry (NVML, or RAPL on a CPU host). Generic over the event clock so the
/// whole step path is tested against a fake GPU.
pub struct Gpu<C: EventClock = cuda::CudaEvents> {
    ring: Option<(StepRing<C>, String)>,
    measured: bool,
    /// The point in progress, its steps and tokens so far (for NVTX range names).
    label: String,
    steps: u64,
    tokens: u64,
    /// Of the ring's timed steps, those already handed to the driver.
    handed: usize,
    /// NVTX range of the whole point while a profiler window is open.
    point_range: Option<cudarc::nvtx::Range>,
    /// NVTX range of the step in flight (only while a profiler window is open).
    step_range: Option<cudarc::nvtx::Range>,
    capture: bool,
}

impl Gpu {
    /// Sets up what this machine supports. `cuda` is the engine's `(device, stream)`
    /// when it computes on a GPU; `csv` is where telemetry samples go. Returns the step
    /// observer, the telemetry sampler (on its own thread), and one line saying what is
    /// on and what is off.
    pub fn start(
        cuda: Option<(usize, Option<u64>)>,
        csv: &Path,
        period: Duration,
    ) -> (Gpu, Option<telemetry::Sampler>, String) {
        let mut said = Vec::new();
        let ring = match cuda {
            Some((device, stream)) => match cuda::CudaEvents::new(device, stream).and_then(|ev| {
                let d = ev.described.clone();
                StepRing::new(ev, RING).map(|r| (r, d))
            }) {
                Ok((r, d)) => {
                    said.push(format!("GPU step timing on {d}"));
                    Some((r, d))
                }
                Err(e) => {
                    said.push(format!("GPU step timing off: {e}"));
                    None
                }
            },
            None => {
                let why = cuda::context(0)
                    .err()
                    .unwrap_or_else(|| "the engine does not run on a CUDA device".into());
                said.push(format!("GPU step timing off: {why}"));
                None
            }
        };
        let sampler = match telemetry::Sampler::start(csv, period) {
            Ok(s) => {
                said.push(format!("{} telemetry of {}", s.kind, s.devices.join(", ")));
                Some(s)
            }
            Err(e) => {
                said.push(format!("telemetry off: {e}"));
                None
            }
        };
        (
            Gpu::with_ring(ring),
            sampler,
            format!("gpu: {}", said.join("; ")),
        )
    }
}

impl<C: EventClock> Gpu<C> {
    /// Step timing on `clock`'s events (`stream` says where they are recorded).
    pub fn timing(clock: C, stream: impl Into<String>) -> Result<Gpu<C>, String> {
        Ok(Gpu::with_ring(Some((
            StepRing::new(clock, RING)?,
            stream.into(),
        ))))
    }

    fn with_ring(ring: Option<(StepRing<C>, String)>) -> Gpu<C> {
        Gpu {
            ring,
            measured: false,
            label: String::new(),
            handed: 0,
            steps: 0,
            tokens: 0,
            point_range: None,
            step_range: None,
            capture: false,
        }
    }
}

/// The NVTX range of one step: the point (its load), the step's number and the
/// tokens the point has produced before it, so nsys timelines read by load.
pub fn step_range_name(label: &str, step: u64, tokens: u64) -> String {
    format!("{label} step {step} ({tokens} tokens before)")
}

impl<C: EventClock> StepObserver for Gpu<C> {
    fn phase_started(&mut self, label: &str, measured: bool) {
        self.measured = measured;
        self.label = label.to_string();
        self.steps = 0;
        self.tokens = 0;
        self.handed = 0;
    }

    fn before_step(&mut self) {
        self.steps += 1;
        if self.capture {
            self.step_range =
                cuda::nvtx_range(&step_range_name(&self.label, self.steps, self.tokens));
        }
        if self.measured {
            if let Some((r, _)) = &mut self.ring {
                // The driver numbers the phase's busy polls from 0, as it calls this.
                r.begin(self.steps - 1);
            }
        }
    }

    fn after_step(&mut self, host_ns: u64, tokens: u64) {
        self.tokens += tokens;
        if self.measured {
            if let Some((r, _)) = &mut self.ring {
                r.end(host_ns, tokens);
            }
        }
        self.step_range = None;
    }

    fn profile_window(&mut self, open: bool) {
        if self.ring.is_some() {
            self.capture = open && cuda::capture(true).is_ok();
            self.point_range = if self.capture {
                cuda::nvtx_range(&format!("{} (profiled steps)", self.label))
            } else {
                None
            };
            if !open {
                let _ = cuda::capture(false);
            }
        }
    }

    fn times_steps(&self) -> bool {
        self.measured && self.ring.as_ref().is_some_and(|(r, _)| r.error.is_none())
    }

    fn take_step_gpu_ms(&mut self, wait: bool, out: &mut Vec<(u64, f64)>) {
        if !self.measured {
            return;
        }
        if let Some((r, _)) = &mut self.ring {
            if wait {
                r.resolve_all();
            }
            let timed = r.timed();
            out.extend(
                timed[self.handed.min(timed.len())..]
                    .iter()
                    .map(|t| (t.step, t.gpu_ms)),
            );
            self.handed = timed.len();
        }
    }

    fn phase_finished(&mut self, measures: &mut Measures) {
        if let Some((r, stream)) = &mut self.ring {
            let steps = r.finish();
            let t = GpuTime::of(&steps, std::mem::take(&mut r.skipped), stream);
            measures.add(&t);
        }
        self.measured = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvtx_step_names_carry_the_load_and_the_tokens() {
        assert_eq!(
            step_range_name("batch=32", 12, 384),
            "batch=32 step 12 (384 tokens before)"
        );
    }

    #[test]
    fn off_without_a_gpu_in_one_line() {
        if std::path::Path::new("/proc/driver/nvidia").exists() {
            eprintln!("skipped: this machine has an NVIDIA driver");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (mut gpu, sampler, said) = Gpu::start(
            Some((0, Some(0x10))),
            &d.path().join("gpu.csv"),
            Duration::from_millis(100),
        );
        assert!(
            said.starts_with("gpu: GPU step timing off: no CUDA driver"),
            "{said}"
        );
        assert!(!said.contains('\n'));
        // Telemetry only where RAPL exists (not on these VMs): then no gpu.csv either.
        assert_eq!(sampler.is_some(), d.path().join("gpu.csv").exists());
        // The observer is inert: no measurement without a ring.
        gpu.phase_started("batch=1", true);
        gpu.before_step();
        gpu.after_step(1_000_000, 1);
        let mut m = Measures::default();
        gpu.phase_finished(&mut m);
        assert!(m.0.is_empty());
    }
}
