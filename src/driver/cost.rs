//! What a point cost the harness itself, measured in every run: the driver's host
//! time between engine calls (submitting, stamping, tracing, handing finished requests
//! to the writer, checking timeouts) beside the time spent inside the engine, and the
//! writer thread's CPU time for serializing and writing `requests.jsonl`. hyperfine calibrates
//! its own overhead once; an in-process instrument can do better and time it for
//! every step of every point.

use crate::core::measure::{Figure, Measure};
use serde::{Deserialize, Serialize};

/// The harness's own cost over a point's measured phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HarnessCost {
    /// Polls with requests in flight: engine steps (step engines) or drains of
    /// arrivals (stream engines).
    pub steps: u64,
    /// Token events the driver stamped and recorded.
    pub token_events: u64,
    pub tokens: u64,
    /// Seconds of the phase.
    pub wall_s: f64,
    /// Seconds inside engine calls (submit, poll, abort) with requests in flight.
    pub engine_s: f64,
    /// Seconds inside polls with nothing in flight (an open loop waiting for arrivals).
    pub idle_s: f64,
    /// Everything else: the harness's own host time (`wall - engine - idle`).
    pub harness_s: f64,
    /// CPU seconds of the trace-writer thread (serializing and writing the phase's
    /// requests), off the driver's loop; absent in results from before it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_cpu_s: Option<f64>,
}

impl HarnessCost {
    pub fn harness_us_per_step(&self) -> Option<f64> {
        (self.steps > 0).then(|| self.harness_s * 1e6 / self.steps as f64)
    }

    pub fn harness_ns_per_token(&self) -> Option<f64> {
        (self.tokens > 0).then(|| self.harness_s * 1e9 / self.tokens as f64)
    }

    pub fn engine_ms_per_step(&self) -> Option<f64> {
        (self.steps > 0).then(|| self.engine_s * 1e3 / self.steps as f64)
    }

    pub fn writer_cpu_us_per_step(&self) -> Option<f64> {
        let cpu = self.writer_cpu_s?;
        (self.steps > 0).then(|| cpu * 1e6 / self.steps as f64)
    }
}

impl Measure for HarnessCost {
    const NAME: &'static str = "harness_cost";
    const DEFINITION: &'static str = "the harness's own host time in the measured phase: \
        wall time - time inside engine calls (submit, poll, abort) - idle waits for \
        arrivals, i.e. the driver's stamping, tracing and bookkeeping between polls; \
        harness_us_per_step = that / engine steps (polls with requests in flight); \
        harness_ns_per_token = that / output tokens; engine_ms_per_step = time inside \
        engine calls / steps; harness_share = that / wall time (percent); \
        writer_cpu_us_per_step = CPU time of the trace-writer thread, which serializes \
        and writes requests.jsonl beside the loop, / steps";

    fn figures(&self) -> Vec<Figure> {
        vec![
            Figure::new("harness_us_per_step", self.harness_us_per_step(), "us")
                .column("harness us/step", 1),
            Figure::new("harness_ns_per_token", self.harness_ns_per_token(), "ns"),
            Figure::new("engine_ms_per_step", self.engine_ms_per_step(), "ms")
                .column("engine ms/step", 2),
            Figure::new(
                "harness_share_pct",
                (self.wall_s > 0.0).then(|| self.harness_s / self.wall_s * 100.0),
                "%",
            )
            .column("harness %", 1)
            .brief(),
            Figure::new("engine_steps", Some(self.steps as f64), ""),
            Figure::new(
                "writer_cpu_us_per_step",
                self.writer_cpu_us_per_step(),
                "us",
            ),
        ]
    }
}

/// Accumulates a [`HarnessCost`] from the driver's loop: two clock reads per engine
/// call, nothing else.
#[derive(Default)]
pub(crate) struct CostClock {
    pub cost: HarnessCost,
    engine_ns: u64,
    idle_ns: u64,
}

impl CostClock {
    /// A call into the engine that took `ns`; `busy` when requests were in flight.
    pub fn engine_call(&mut self, ns: u64, busy: bool) {
        if busy {
            self.engine_ns += ns;
        } else {
            self.idle_ns += ns;
        }
    }

    pub fn step(&mut self, events: u64, tokens: u64) {
        self.cost.steps += 1;
        self.cost.token_events += events;
        self.cost.tokens += tokens;
    }

    pub fn finish(mut self, wall_ns: u64) -> HarnessCost {
        let c = &mut self.cost;
        c.wall_s = wall_ns as f64 / 1e9;
        c.engine_s = self.engine_ns as f64 / 1e9;
        c.idle_s = self.idle_ns as f64 / 1e9;
        c.harness_s = wall_ns.saturating_sub(self.engine_ns + self.idle_ns) as f64 / 1e9;
        self.cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_time_is_what_the_engine_did_not_take() {
        let mut c = CostClock::default();
        c.engine_call(7_000_000, true);
        c.engine_call(1_000_000, false);
        c.step(4, 4);
        c.step(2, 3);
        let cost = c.finish(10_000_000);
        assert_eq!(cost.steps, 2);
        assert!((cost.harness_s - 0.002).abs() < 1e-12);
        assert!((cost.harness_us_per_step().unwrap() - 1000.0).abs() < 1e-9);
        assert!((cost.harness_ns_per_token().unwrap() - 2e6 / 7.0).abs() < 1e-6);
        assert!((cost.engine_ms_per_step().unwrap() - 3.5).abs() < 1e-12);
        assert_eq!(HarnessCost::default().harness_us_per_step(), None);
        assert_eq!(cost.writer_cpu_us_per_step(), None);
        let written = HarnessCost {
            writer_cpu_s: Some(0.000_5),
            ..cost
        };
        assert!((written.writer_cpu_us_per_step().unwrap() - 250.0).abs() < 1e-9);
    }
}
