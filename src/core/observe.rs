//! What watches engine steps from the driver's side, and the driver that calls it:
//! the trait crosses from the driver to the instruments (GPU step timing, NVTX), so it
//! lives below both.

use super::measure::Measures;

/// Something that watches each engine step from the driver's side (GPU step timing,
/// NVTX ranges): told when a phase starts, around every step with requests in flight,
/// when a profiler window opens or closes, and asked for its measurements at the end
/// of a measured phase.
pub trait StepObserver {
    /// A phase of the point `label` (`batch=8`) starts.
    fn phase_started(&mut self, _label: &str, _measured: bool) {}
    fn before_step(&mut self) {}
    /// After the step: the host time of the engine call and the tokens it produced.
    fn after_step(&mut self, _host_ns: u64, _tokens: u64) {}
    fn profile_window(&mut self, _open: bool) {}
    /// Whether it times each measured step on the device (then the driver holds step
    /// records back until their GPU time is known).
    fn times_steps(&self) -> bool {
        false
    }
    /// The GPU time of measured steps resolved since the last call, as (step number in
    /// the phase from 0, ms); with `wait`, every step still in flight is resolved first
    /// (the phase is over).
    fn take_step_gpu_ms(&mut self, _wait: bool, _out: &mut Vec<(u64, f64)>) {}
    fn phase_finished(&mut self, _measures: &mut Measures) {}
}
