//! GPU time per engine step, from a pair of CUDA events around each step, without
//! ever synchronising the device on the hot path: events go into a ring and are read
//! a few steps later, once the GPU has passed them. A step whose slot is still busy
//! when the ring comes round is left untimed (and counted), never waited for. At the
//! end of a point the rest is resolved (a synchronisation, off the hot path).
//!
//! The ring is generic over [`EventClock`] so its bookkeeping is tested with a fake
//! clock; [`super::cuda`] provides the real one.

use crate::core::measure::{Figure, Measure};
use crate::core::stats::percentile;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What the ring needs from the GPU.
pub trait EventClock {
    type Event;
    fn new_event(&mut self) -> Result<Self::Event, String>;
    /// Records `e` on the stream the engine computes on.
    fn record(&mut self, e: &Self::Event) -> Result<(), String>;
    /// Whether the work before `e` has finished; never blocks.
    fn is_complete(&self, e: &Self::Event) -> Result<bool, String>;
    /// Milliseconds from `a` to `b` (may wait for `b`: only called once it is complete,
    /// or at the end of a point).
    fn elapsed_ms(&self, a: &Self::Event, b: &Self::Event) -> Result<f64, String>;
}

struct Slot<E> {
    begin: E,
    end: E,
    /// The step's number in the phase, from 0.
    step: u64,
    host_ns: u64,
    tokens: u64,
}

/// One timed step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepTime {
    /// The step's number in the phase, from 0.
    pub step: u64,
    pub gpu_ms: f64,
    pub host_ms: f64,
    pub tokens: u64,
}

/// A ring of event pairs around engine steps.
pub struct StepRing<C: EventClock> {
    clock: C,
    slots: Vec<Slot<C::Event>>,
    /// Slot indices recorded and not yet read, oldest first.
    pending: VecDeque<usize>,
    /// The slot whose begin event is recorded, while a step runs.
    open: Option<usize>,
    next: usize,
    done: Vec<StepTime>,
    /// Steps left untimed because their slot was still in flight.
    pub skipped: u64,
    /// The first error, after which the ring stops timing.
    pub error: Option<String>,
}

impl<C: EventClock> StepRing<C> {
    pub fn new(mut clock: C, size: usize) -> Result<StepRing<C>, String> {
        let slots = (0..size.max(2))
            .map(|_| {
                Ok(Slot {
                    begin: clock.new_event()?,
                    end: clock.new_event()?,
                    step: 0,
                    host_ns: 0,
                    tokens: 0,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(StepRing {
            clock,
            slots,
            pending: VecDeque::new(),
            open: None,
            next: 0,
            done: Vec::new(),
            skipped: 0,
            error: None,
        })
    }

    fn fail(&mut self, e: String) {
        self.error.get_or_insert(e);
        self.open = None;
    }

    /// Reads every pending slot the GPU has passed, oldest first; stops at the first
    /// that is not complete (later ones cannot be either: one stream, in order).
    fn harvest(&mut self) {
        while let Some(&i) = self.pending.front() {
            match self.clock.is_complete(&self.slots[i].end) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => return self.fail(e),
            }
            self.pending.pop_front();
            let s = &self.slots[i];
            match self.clock.elapsed_ms(&s.begin, &s.end) {
                Ok(ms) => self.done.push(StepTime {
                    step: s.step,
                    gpu_ms: ms,
                    host_ms: s.host_ns as f64 / 1e6,
                    tokens: s.tokens,
                }),
                Err(e) => return self.fail(e),
            }
        }
    }

    /// Before engine step number `step` of the phase.
    pub fn begin(&mut self, step: u64) {
        if self.error.is_some() {
            return;
        }
        self.harvest();
        let i = self.next;
        if self.pending.contains(&i) {
            self.skipped += 1;
            return;
        }
        if let Err(e) = self.clock.record(&self.slots[i].begin) {
            return self.fail(e);
        }
        self.slots[i].step = step;
        self.open = Some(i);
        self.next = (i + 1) % self.slots.len();
    }

    /// After the step: its host time and the tokens it produced.
    pub fn end(&mut self, host_ns: u64, tokens: u64) {
        let Some(i) = self.open.take() else { return };
        if let Err(e) = self.clock.record(&self.slots[i].end) {
            return self.fail(e);
        }
        self.slots[i].host_ns = host_ns;
        self.slots[i].tokens = tokens;
        self.pending.push_back(i);
    }

    /// The steps timed so far in this phase (resolved without waiting).
    pub fn timed(&mut self) -> &[StepTime] {
        self.harvest();
        &self.done
    }

    /// Resolves what is still pending (waits for the GPU: call between points).
    pub fn resolve_all(&mut self) {
        while let Some(i) = self.pending.pop_front() {
            if self.error.is_some() {
                break;
            }
            let s = &self.slots[i];
            match self.clock.elapsed_ms(&s.begin, &s.end) {
                Ok(ms) => self.done.push(StepTime {
                    step: s.step,
                    gpu_ms: ms,
                    host_ms: s.host_ns as f64 / 1e6,
                    tokens: s.tokens,
                }),
                Err(e) => self.fail(e),
            }
        }
        self.pending.clear();
    }

    /// Resolves what is still pending and returns the point's steps.
    pub fn finish(&mut self) -> Vec<StepTime> {
        self.resolve_all();
        std::mem::take(&mut self.done)
    }
}

/// GPU time per step over a point's measured phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuTime {
    pub steps: u64,
    pub skipped: u64,
    pub gpu_ms_mean: Option<f64>,
    pub gpu_ms_p50: Option<f64>,
    pub gpu_ms_p99: Option<f64>,
    pub host_ms_mean: Option<f64>,
    /// 1 − Σ GPU time / Σ host time of the timed steps.
    pub host_overhead: Option<f64>,
    pub gpu_ms_per_token: Option<f64>,
    /// Where the events were recorded (the engine's stream, or the legacy default one).
    pub stream: String,
}

impl GpuTime {
    pub fn of(steps: &[StepTime], skipped: u64, stream: &str) -> GpuTime {
        let mut gpu: Vec<f64> = steps.iter().map(|s| s.gpu_ms).collect();
        gpu.sort_by(f64::total_cmp);
        let n = steps.len() as f64;
        let (sum_gpu, sum_host, tokens) = steps.iter().fold((0.0, 0.0, 0u64), |a, s| {
            (a.0 + s.gpu_ms, a.1 + s.host_ms, a.2 + s.tokens)
        });
        GpuTime {
            steps: steps.len() as u64,
            skipped,
            gpu_ms_mean: (n > 0.0).then(|| sum_gpu / n),
            gpu_ms_p50: percentile(&gpu, 50.0),
            gpu_ms_p99: percentile(&gpu, 99.0),
            host_ms_mean: (n > 0.0).then(|| sum_host / n),
            host_overhead: (sum_host > 0.0).then(|| 1.0 - sum_gpu / sum_host),
            gpu_ms_per_token: (tokens > 0).then(|| sum_gpu / tokens as f64),
            stream: stream.to_string(),
        }
    }
}

impl Measure for GpuTime {
    const NAME: &'static str = "gpu_time";
    const DEFINITION: &'static str = "CUDA events recorded on the engine's stream (or the legacy \
        default stream, as stated) before and after every engine step of the measured phase, read \
        back a few steps later without synchronising: gpu_ms per step (mean, p50, p99), the host \
        wall time of the same steps, host_overhead = 1 - sum(GPU) / sum(host), GPU ms per output \
        token; steps whose ring slot was still in flight are left untimed and counted";

    fn figures(&self) -> Vec<Figure> {
        vec![
            Figure::new("gpu_ms_per_step", self.gpu_ms_mean, "ms")
                .column("GPU ms/step", 2)
                .brief(),
            Figure::new("p50_gpu_ms_per_step", self.gpu_ms_p50, "ms"),
            Figure::new("p99_gpu_ms_per_step", self.gpu_ms_p99, "ms"),
            Figure::new("host_ms_per_step", self.host_ms_mean, "ms"),
            Figure::new(
                "host_overhead_pct",
                self.host_overhead.map(|o| o * 100.0),
                "%",
            )
            .column("host overhead %", 0),
            Figure::new("gpu_ms_per_token", self.gpu_ms_per_token, "ms"),
            Figure::new("gpu_steps_timed", Some(self.steps as f64), ""),
        ]
    }

    fn warning(&self) -> Option<String> {
        (self.skipped > 0)
            .then(|| format!("{} steps not GPU-timed (event ring full)", self.skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A fake GPU: an event completes once `gpu_now` passes the time it was recorded
    /// at plus the GPU work queued before it.
    #[derive(Clone, Default)]
    struct Fake {
        gpu_now: Rc<Cell<f64>>,
        queued_until: Rc<Cell<f64>>,
        step_ms: f64,
        /// Steps begun so far.
        begun: Rc<Cell<u64>>,
    }

    #[derive(Default)]
    struct Ev(Cell<Option<f64>>);

    impl EventClock for Fake {
        type Event = Ev;
        fn new_event(&mut self) -> Result<Ev, String> {
            Ok(Ev::default())
        }
        fn record(&mut self, e: &Ev) -> Result<(), String> {
            // A begin event marks where this step's GPU work starts; an end, where it
            // ends: each step queues `step_ms` of work after the previous one.
            e.0.set(Some(self.queued_until.get().max(self.gpu_now.get())));
            Ok(())
        }
        fn is_complete(&self, e: &Ev) -> Result<bool, String> {
            Ok(e.0.get().is_some_and(|t| t <= self.gpu_now.get()))
        }
        fn elapsed_ms(&self, a: &Ev, b: &Ev) -> Result<f64, String> {
            Ok(b.0.get().unwrap_or(0.0) - a.0.get().unwrap_or(0.0))
        }
    }

    /// One engine step: begin, queue `step_ms` of GPU work, end.
    fn step(ring: &mut StepRing<Fake>, fake: &Fake, host_ms: f64) {
        ring.begin(fake.begun.get());
        fake.begun.set(fake.begun.get() + 1);
        let start = fake.queued_until.get().max(fake.gpu_now.get());
        fake.queued_until.set(start + fake.step_ms);
        ring.end((host_ms * 1e6) as u64, 2);
    }

    #[test]
    fn steps_resolve_later_without_waiting_and_all_at_the_end() {
        let fake = Fake {
            step_ms: 4.0,
            ..Default::default()
        };
        let mut ring = StepRing::new(fake.clone(), 4).unwrap();
        // The GPU keeps up: each step's events are read at the next step.
        for _ in 0..3 {
            step(&mut ring, &fake, 5.0);
            fake.gpu_now.set(fake.queued_until.get());
        }
        assert_eq!(ring.done.len(), 2, "read one step late, never waited for");
        let steps = ring.finish();
        assert_eq!(steps.len(), 3);
        assert!(steps
            .iter()
            .all(|s| (s.gpu_ms - 4.0).abs() < 1e-9 && s.host_ms == 5.0));
        let t = GpuTime::of(&steps, ring.skipped, "torch current stream");
        assert_eq!(t.steps, 3);
        assert!((t.host_overhead.unwrap() - 0.2).abs() < 1e-9, "{t:?}");
        assert!((t.gpu_ms_per_token.unwrap() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_full_ring_skips_steps_instead_of_synchronising() {
        let fake = Fake {
            step_ms: 10.0,
            ..Default::default()
        };
        let mut ring = StepRing::new(fake.clone(), 2).unwrap();
        // The GPU is stuck: nothing completes; the third step finds both slots busy.
        for _ in 0..3 {
            step(&mut ring, &fake, 1.0);
        }
        assert_eq!(ring.skipped, 1);
        let steps = ring.finish();
        assert_eq!(steps.len(), 2);
        let t = GpuTime::of(&steps, ring.skipped, "legacy default stream");
        assert!(t.warning().unwrap().contains("1 steps not GPU-timed"));
        assert_eq!(GpuTime::of(&[], 0, "x").gpu_ms_mean, None);
    }
}
