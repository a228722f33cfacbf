//! Load drivers: how requests are offered to an engine, and the only code that reads
//! the clock for token events.
//!
//! One loop serves every mode ([`LoadPoint`]): it submits what the mode says is due,
//! polls the engine, stamps the returned events (or keeps the stream engine's own
//! stamps), and hands every finished request to the trace writer at once. Modes
//! differ only in what is due: `batch` submits B requests when none is in flight,
//! `concurrency` tops up to C in flight, the open loops (`rate`, `ramp`, `trace`)
//! submit at arrival times ([`arrivals`]). Under `--max-concurrency` an open loop's
//! arrivals that find C requests in flight wait in a FIFO client queue and are
//! submitted as slots free; each request keeps its scheduled arrival (`intended_ns`)
//! and, when it waited, when its slot freed (`slot_free_ns`), so its queue time and
//! the driver's own lateness (schedule lag) are recomputable from `requests.jsonl`.
//! With `--dataset conversations` the modes start conversations instead of requests
//! and each sends its turns one at a time, the next prompt made from the engine's reply
//! (`chats.rs`). A point stops by its [`Stop`] rule, checked once per round; the loop
//! also times the harness's own work between engine calls ([`HarnessCost`]).

pub mod arrivals;
mod chats;
pub mod cost;
pub mod progress;

pub use chats::ConversationRun;
pub use cost::HarnessCost;

use crate::core::clock::{self, MonoNs};
use crate::core::measure::{Figure, Measure, Measures};
use crate::core::observe::StepObserver;
use crate::core::request::{FinishReason, RequestId};
use crate::engine::{Engine, EngineError, GenRequest, StepStats, TokenEvent};
use crate::host::{CpuSample, HostLoad};
use crate::trace::{RequestTrace, StepRecord, TraceError, TraceWriter};
use crate::workload::Workload;
use arrivals::RampStrategy;
use chats::Chats;
use cost::CostClock;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One load point: how requests are offered. A sweep is a list of these run on one
/// loaded engine.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LoadPoint {
    /// `batch` requests submitted at once; the next batch starts when all have finished.
    Batch { batch: u32 },
    /// Closed loop: `concurrency` requests in flight; a new one is submitted as one finishes.
    Concurrency { concurrency: u32 },
    /// Open loop: arrivals at `rate` requests/s, gamma-distributed gaps with shape
    /// `burstiness` (1 = Poisson).
    Rate {
        #[serde(with = "rate_json")]
        rate: f64,
        burstiness: f64,
    },
    /// Open loop whose rate ramps per request from `start_rps` to `end_rps` over the
    /// point's requests (`vllm bench serve --ramp-up-strategy`), gamma gaps of shape
    /// `burstiness`.
    Ramp {
        strategy: RampStrategy,
        start_rps: f64,
        end_rps: f64,
        burstiness: f64,
    },
    /// Open loop on a recorded trace's clock (`--dataset trace`): the workload's
    /// arrival offsets, every gap multiplied by `time_scale`.
    Trace { time_scale: f64 },
}

/// A rate in JSON: `--rate inf` is the string `"inf"` (JSON has no infinity, and
/// serde_json would write `null`, which then does not read back); `null` from results
/// written before reads as inf.
mod rate_json {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(rate: &f64, s: S) -> Result<S::Ok, S::Error> {
        if rate.is_infinite() {
            s.serialize_str("inf")
        } else {
            s.serialize_f64(*rate)
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rate {
        Number(f64),
        Text(String),
        Null(()),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Rate::deserialize(d)? {
            Rate::Number(r) => Ok(r),
            Rate::Text(t) if t == "inf" => Ok(f64::INFINITY),
            Rate::Text(t) => Err(serde::de::Error::custom(format!(
                "rate `{t}`: expected a number or \"inf\""
            ))),
            Rate::Null(()) => Ok(f64::INFINITY),
        }
    }
}

impl LoadPoint {
    /// `batch=8`, `concurrency=4`, `rate=2.5` (and `burstiness=B` when not Poisson).
    pub fn label(&self) -> String {
        match *self {
            LoadPoint::Batch { batch } => format!("batch={batch}"),
            LoadPoint::Concurrency { concurrency } => format!("concurrency={concurrency}"),
            LoadPoint::Rate {
                rate,
                burstiness: 1.0,
            } => format!("rate={rate}"),
            LoadPoint::Rate { rate, burstiness } => {
                format!("rate={rate},burstiness={burstiness}")
            }
            LoadPoint::Ramp {
                strategy,
                start_rps,
                end_rps,
                burstiness,
            } => {
                let b = if burstiness == 1.0 {
                    String::new()
                } else {
                    format!(",burstiness={burstiness}")
                };
                format!("ramp={}:{start_rps}:{end_rps}{b}", strategy.name())
            }
            LoadPoint::Trace { time_scale: 1.0 } => "trace".into(),
            LoadPoint::Trace { time_scale } => format!("trace,time_scale={time_scale}"),
        }
    }

    /// An open loop: requests arrive on a schedule, whatever is in flight.
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            LoadPoint::Rate { .. } | LoadPoint::Ramp { .. } | LoadPoint::Trace { .. }
        )
    }

    /// The mode's name, as used for the CLI flag and the CSV column.
    pub fn mode(&self) -> &'static str {
        match self {
            LoadPoint::Batch { .. } => "batch",
            LoadPoint::Concurrency { .. } => "concurrency",
            LoadPoint::Rate { .. } => "rate",
            LoadPoint::Ramp { .. } => "ramp",
            LoadPoint::Trace { .. } => "trace",
        }
    }

    /// The swept value (batch size, concurrency or rate; a ramp's end rate, a trace's
    /// time scale), for tables and plots.
    pub fn value(&self) -> f64 {
        match *self {
            LoadPoint::Batch { batch } => batch as f64,
            LoadPoint::Concurrency { concurrency } => concurrency as f64,
            LoadPoint::Rate { rate, .. } => rate,
            LoadPoint::Ramp { end_rps, .. } => end_rps,
            LoadPoint::Trace { time_scale } => time_scale,
        }
    }

    /// The gamma shape of an open loop's gaps (None: batch, concurrency, trace).
    pub fn burstiness(&self) -> Option<f64> {
        match *self {
            LoadPoint::Rate { burstiness, .. } | LoadPoint::Ramp { burstiness, .. } => {
                Some(burstiness)
            }
            _ => None,
        }
    }
}

/// When a point stops submitting: an exact amount, or floors under a cap.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    /// Exactly this many measured requests (overrides the floors).
    pub num_requests: Option<usize>,
    /// Submit for exactly this long; requests in flight still finish (overrides the floors).
    pub duration: Option<Duration>,
    /// Floors, both met before the point stops: rounds (batch mode: whole batches;
    /// otherwise measured requests, and at least one wave of C in closed loop)...
    pub min_rounds: u32,
    /// ...and seconds since the point's first submit.
    pub min_duration: Duration,
    /// The cap: no new round starts after this long, floors met or not.
    pub max_duration: Duration,
}

impl Stop {
    /// Exactly `n` requests (warmup, tests, benches).
    pub fn requests(n: usize) -> Stop {
        Stop {
            num_requests: Some(n),
            duration: None,
            min_rounds: 1,
            min_duration: Duration::ZERO,
            max_duration: Duration::MAX,
        }
    }
}

/// Sampling settings every request of a run shares.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub ignore_eos: bool,
    pub temperature: f32,
    /// Base sampling seed; request `id` samples with `seed + id`.
    pub seed: Option<u64>,
    pub return_token_ids: bool,
}

impl Sampling {
    /// Greedy, every request to its exact output_len (EOS ignored), seed 0, no token
    /// ids kept: the sampling of known-answer runs and benchmarks.
    pub const EXACT_GREEDY: Sampling = Sampling {
        ignore_eos: true,
        temperature: 0.0,
        seed: Some(0),
        return_token_ids: false,
    };
}

/// A profiler window over the first `steps` engine steps of a point's measured phase.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfilePlan {
    /// Where the engine writes its trace.
    pub dir: PathBuf,
    pub steps: u64,
}

#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// Requests run before each point's measured ones, under the same load, and excluded.
    pub warmup: usize,
    pub stop: Stop,
    /// A request with no token for this long is aborted and marked `timeout`.
    pub request_timeout: Duration,
    pub sampling: Sampling,
    /// Seeds the arrival process of `rate` points (mixed with the point index).
    pub seed: u64,
    /// A profiler window on this point (`--profile`).
    pub profile: Option<ProfilePlan>,
    /// Empty the engine's prefix cache after the warmup (`--fresh-cache`).
    pub fresh_cache: bool,
    /// Open loops: at most this many requests in flight; later arrivals wait in a FIFO
    /// client queue (`--max-concurrency`).
    pub max_concurrency: Option<u32>,
    /// Record every measured step in `steps.jsonl` (the timeline; `--no-timeline`
    /// turns it off).
    pub timeline: bool,
}

impl DriverOptions {
    /// `n` requests, no warmup, [`Sampling::EXACT_GREEDY`], a 600 s request timeout:
    /// a point as benchmarks and tests drive it, changed field by field from here.
    pub fn requests(n: usize) -> Self {
        Self {
            warmup: 0,
            stop: Stop::requests(n),
            request_timeout: Duration::from_secs(600),
            sampling: Sampling::EXACT_GREEDY,
            seed: 0,
            profile: None,
            fresh_cache: false,
            max_concurrency: None,
            timeline: true,
        }
    }
}

/// How a point ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed,
    /// Ctrl-C: submitting stopped and in-flight requests were aborted.
    Interrupted,
    /// The engine failed as a whole; in-flight requests were marked failed with this.
    EngineFailed(String),
}

pub struct PointRun {
    pub records: Vec<RequestTrace>,
    /// The measured phase's step records (with the timeline on).
    pub steps: Vec<StepRecord>,
    pub outcome: Outcome,
    /// How the measured phase went (absent when the warmup did not complete).
    pub end: Option<PointEnd>,
    pub cost: Option<HarnessCost>,
    pub host: Option<HostLoad>,
    /// What the observer and the profiler window measured.
    pub measures: Measures,
}

/// What stopped a point submitting.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// `--num-requests` were submitted.
    #[serde(alias = "num-requests")]
    NumRequests,
    /// `--duration` was over.
    Duration,
    /// `--min-rounds` and `--min-duration` were both met.
    #[default]
    Floors,
    /// `--max-duration` was reached, floors met or not.
    #[serde(alias = "max-duration")]
    MaxDuration,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The engine failed as a whole.
    #[serde(alias = "engine-failed")]
    EngineFailed,
    /// The trace's last line was replayed.
    TraceEnd,
}

impl EndedBy {
    /// How a point line says it: `--max-duration reached`.
    pub fn describe(self) -> &'static str {
        match self {
            EndedBy::NumRequests => "--num-requests done",
            EndedBy::Duration => "--duration over",
            EndedBy::Floors => "floors met",
            EndedBy::MaxDuration => "--max-duration reached",
            EndedBy::Interrupted => "interrupted",
            EndedBy::EngineFailed => "the engine failed",
            EndedBy::TraceEnd => "the trace ended",
        }
    }
}

/// Why and when a point stopped submitting, and how much of the workload it reused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PointEnd {
    /// Rounds started: batches in batch mode, requests otherwise.
    pub rounds: u64,
    pub requests: u64,
    /// Seconds from the first submit to the last.
    pub submit_s: f64,
    pub ended_by: EndedBy,
    pub min_rounds: u32,
    /// Requests that reused a prompt already sent in this run (the workload ran out).
    pub reused_prompts: u64,
}

impl Measure for PointEnd {
    const NAME: &'static str = "stop";
    const DEFINITION: &'static str = "how the point ended: rounds started (batches in \
        batch mode, else requests), seconds from its first submit to its last, and what \
        stopped it: the floors (--min-rounds and --min-duration both met), --max-duration, \
        or an exact --num-requests / --duration; reused_prompts counts requests whose \
        prompt was already sent in this run (the built workload ran out), which a \
        prefix cache can serve faster";

    fn figures(&self) -> Vec<Figure> {
        vec![
            Figure::new("rounds_started", Some(self.rounds as f64), ""),
            Figure::new("submit_s", Some(self.submit_s), "s"),
            Figure::new("reused_prompts", Some(self.reused_prompts as f64), ""),
        ]
    }

    fn warning(&self) -> Option<String> {
        let mut w = Vec::new();
        if self.ended_by == EndedBy::MaxDuration && self.rounds < u64::from(self.min_rounds) {
            w.push(format!(
                "only {} of {} rounds before --max-duration",
                self.rounds, self.min_rounds
            ));
        }
        if self.reused_prompts > 0 {
            w.push(format!(
                "{} requests reused prompts (a prefix cache may shorten their TTFT)",
                self.reused_prompts
            ));
        }
        (!w.is_empty()).then(|| w.join("; "))
    }
}

/// What `--fresh-cache` did before a point's measured requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreshCache {
    /// The engine emptied its prefix cache.
    pub emptied: bool,
    /// Why not, when it did not: the engine cannot, or its error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
}

impl Measure for FreshCache {
    const NAME: &'static str = "fresh_cache";
    const DEFINITION: &'static str = "--fresh-cache: whether the engine emptied its prefix \
        cache after the point's warmup and before its measured requests (vLLM \
        reset_prefix_cache(), SGLang flush_cache(), the calibration engine's model), so \
        no prompt cached by an earlier point or the warmup is hit; 1 emptied, 0 not \
        (why_not says why)";

    fn figures(&self) -> Vec<Figure> {
        vec![Figure::new(
            "fresh_cache",
            Some(if self.emptied { 1.0 } else { 0.0 }),
            "",
        )]
    }

    fn warning(&self) -> Option<String> {
        self.why_not
            .as_ref()
            .map(|w| format!("--fresh-cache: the prefix cache was not emptied ({w})"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Trace(#[from] TraceError),
}

/// The longest a poll may block, so Ctrl-C and request timeouts are noticed promptly.
const MAX_POLL: Duration = Duration::from_millis(50);

/// Most open-loop arrivals submitted in one pass of the loop (an `inf` rate is due all
/// at once; this bounds the pass, the next pass takes the rest).
const MAX_DUE: usize = 4096;

/// Token events held before they are recorded: the most a phase keeps (2 MiB).
const MAX_PENDING: usize = 1 << 16;

struct Active {
    trace: RequestTrace,
    /// Last submit or token, for the request timeout.
    last_activity: MonoNs,
}

/// A token event of a live request, received and not yet recorded in its trace.
struct Pending {
    request: RequestId,
    tokens: u32,
    /// The event's time (the engine's stamp, else the driver's).
    at: MonoNs,
    /// When the driver received it (the request's activity, for its timeout).
    stamp: MonoNs,
}

/// Which of a phase's requests are live: one bit per request id from the phase's
/// first (ids only grow), so checking a batch's events touches one cache line.
#[derive(Default)]
struct LiveBits {
    base: Option<RequestId>,
    words: Vec<u64>,
}

impl LiveBits {
    fn set(&mut self, id: RequestId, live: bool) {
        let base = *self.base.get_or_insert(id);
        let Some(i) = id.checked_sub(base).map(|i| i as usize) else {
            return;
        };
        if i / 64 >= self.words.len() {
            self.words.resize(i / 64 + 1, 0);
        }
        if live {
            self.words[i / 64] |= 1 << (i % 64);
        } else {
            self.words[i / 64] &= !(1 << (i % 64));
        }
    }

    fn get(&self, id: RequestId) -> bool {
        let Some(i) = self
            .base
            .and_then(|b| id.checked_sub(b))
            .map(|i| i as usize)
        else {
            return false;
        };
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// Requests of one phase: in flight, and finished (`done`: in a measured phase, those
/// not yet handed to the writer; in warmup, all of them; the progress line has
/// counted the first `counted`).
///
/// The engine's step evicts the driver's data from the CPU caches, so what a token
/// event costs the driver is the cache lines it touches. Events are therefore
/// appended to `pending`, one sequential log, and recorded into their requests'
/// traces in one pass ([`Book::record`]) before anything reads a trace: when a
/// request finishes or times out, or the log is full. In batch mode that is once per
/// batch, with every trace hot while it is filled. The stamps are the same as
/// recording each event when it arrives.
#[derive(Default)]
struct Book {
    /// Keyed by the driver's own sequential ids (Fx hashing: one multiply); boxed so
    /// the table itself stays a few cache lines for a whole batch.
    active: FxHashMap<RequestId, Box<Active>>,
    /// The keys of `active`, as bits.
    live: LiveBits,
    pending: Vec<Pending>,
    done: Vec<RequestTrace>,
    counted: usize,
    /// Of `done`, those whose conversations have been moved on.
    advanced: usize,
}

impl Book {
    /// Logs a live request's token event (false: the request is not live, the event
    /// of an aborted or expired request that arrived late).
    fn receive(&mut self, request: RequestId, tokens: u32, at: MonoNs, stamp: MonoNs) -> bool {
        if !self.live.get(request) {
            return false;
        }
        if self.pending.len() >= MAX_PENDING {
            self.record();
        }
        self.pending.push(Pending {
            request,
            tokens,
            at,
            stamp,
        });
        true
    }

    fn admit(&mut self, trace: RequestTrace) {
        self.live.set(trace.id, true);
        let last_activity = trace.submit_ns;
        self.active.insert(
            trace.id,
            Box::new(Active {
                trace,
                last_activity,
            }),
        );
    }

    /// Records every logged event into its request's trace, in arrival order.
    fn record(&mut self) {
        for p in self.pending.drain(..) {
            // Live when logged, and nothing ends a request before this pass.
            if let Some(a) = self.active.get_mut(&p.request) {
                a.trace.record_tokens(p.tokens, p.at);
                a.last_activity = p.stamp;
            }
        }
    }

    fn finish(
        &mut self,
        id: RequestId,
        at: MonoNs,
        reason: FinishReason,
        error: Option<String>,
    ) -> Option<&mut RequestTrace> {
        self.record();
        let mut t = self.active.remove(&id)?.trace;
        self.live.set(id, false);
        t.finish_ns = Some(at);
        t.finish_reason = Some(reason);
        t.error = error;
        self.done.push(t);
        self.done.last_mut()
    }

    /// Ends every in-flight request with `reason`.
    fn finish_all(&mut self, reason: FinishReason, why: &str) -> Vec<RequestId> {
        let now = clock::now();
        let ids: Vec<RequestId> = self.active.keys().copied().collect();
        for &id in &ids {
            self.finish(id, now, reason, Some(why.to_string()));
        }
        ids
    }

    /// Hands newly finished requests to the trace writer (measured phases only), in
    /// one message, and counts them on the progress line; true when there were any.
    fn flush(
        &mut self,
        writer: &mut Option<&mut TraceWriter>,
        progress: &progress::Progress,
    ) -> Result<bool, TraceError> {
        let new = self.done.len() - self.counted;
        if new == 0 {
            return Ok(false);
        }
        progress.inc(new as u64);
        match writer.as_deref_mut() {
            Some(w) => {
                w.append(std::mem::take(&mut self.done))?;
                self.counted = 0;
                self.advanced = 0;
            }
            None => self.counted = self.done.len(),
        }
        Ok(true)
    }
}

/// Step records waiting for the writer: handed over with the next finished requests
/// (one wake of the writer thread for both) or when [`STEP_BATCH`] have gathered, so
/// the file is never more than that many steps behind.
struct Timeline {
    point: u32,
    next: u64,
    /// When the previous poll returned (the phase start, at first).
    last_end: MonoNs,
    pending: Vec<StepRecord>,
    /// With GPU step timing: records wait for their GPU time, which resolves a few
    /// steps later; `gpu` collects the resolved (step, ms).
    gpu_timed: bool,
    gpu: Vec<(u64, f64)>,
}

/// With GPU step timing, the newest records kept back at a flush: the timing ring's
/// size, beyond which a step is resolved or was left untimed.
const GPU_LAG_STEPS: usize = 64;

/// Step records handed to the writer at once, at most.
const STEP_BATCH: usize = 256;

impl Timeline {
    fn new(point: u32, t0: MonoNs) -> Timeline {
        Timeline {
            point,
            next: 0,
            last_end: t0,
            pending: Vec::with_capacity(STEP_BATCH),
            gpu_timed: false,
            gpu: Vec::new(),
        }
    }

    /// Takes the observer's newly resolved GPU times into the records still held.
    fn gpu_times(&mut self, observer: Option<&mut (dyn StepObserver + '_)>, wait: bool) {
        let Some(o) = observer.filter(|_| self.gpu_timed) else {
            return;
        };
        o.take_step_gpu_ms(wait, &mut self.gpu);
        let first = self.pending.first().map_or(0, |r| r.step);
        for (step, ms) in self.gpu.drain(..) {
            if let Some(r) = step
                .checked_sub(first)
                .and_then(|i| self.pending.get_mut(i as usize))
            {
                r.gpu_ms = Some(ms);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        start: MonoNs,
        end: MonoNs,
        in_flight: usize,
        events: u64,
        tokens: u64,
        finished: u32,
        stats: Option<StepStats>,
    ) {
        let sat = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        self.pending.push(StepRecord {
            point: self.point,
            step: self.next,
            start_ns: start,
            end_ns: end,
            gap_ns: start.since(self.last_end),
            in_flight: sat(in_flight as u64),
            events: sat(events),
            tokens: sat(tokens),
            finished,
            gpu_ms: None,
            engine: stats.unwrap_or_default(),
        });
        self.next += 1;
        self.last_end = end;
    }

    fn full(&self) -> bool {
        self.pending.len() >= STEP_BATCH + if self.gpu_timed { GPU_LAG_STEPS } else { 0 }
    }

    /// Hands the held records to the writer; with GPU timing, all but the newest
    /// [`GPU_LAG_STEPS`] unless `all` (the phase is over).
    fn flush(&mut self, w: &mut TraceWriter, all: bool) -> Result<(), TraceError> {
        let keep = if self.gpu_timed && !all {
            GPU_LAG_STEPS
        } else {
            0
        };
        if self.pending.len() <= keep {
            return Ok(());
        }
        // The records kept back go into a buffer of full size, so the next steps push
        // without growing it.
        let mut rest = Vec::with_capacity(STEP_BATCH + keep);
        rest.extend(self.pending.drain(self.pending.len() - keep..));
        let batch = std::mem::replace(&mut self.pending, rest);
        w.append_steps(batch)
    }
}

/// The arrival offsets of an open-loop phase (None: batch and concurrency). `next_id`
/// is the phase's first workload item, where a trace's replay starts.
fn arrival_source<'w>(
    phase: &Phase<'w>,
    opts: &DriverOptions,
    next_id: RequestId,
) -> Option<Box<dyn Iterator<Item = u64> + 'w>> {
    let seed = opts.seed ^ u64::from(phase.point_index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    match phase.point {
        LoadPoint::Batch { .. } | LoadPoint::Concurrency { .. } => None,
        LoadPoint::Rate { rate, burstiness } => {
            Some(Box::new(arrivals::Arrivals::new(rate, burstiness, seed)))
        }
        LoadPoint::Ramp {
            strategy,
            start_rps,
            end_rps,
            burstiness,
        } => Some(Box::new(arrivals::Ramp::new(
            strategy,
            start_rps,
            end_rps,
            burstiness,
            phase.stop.num_requests.unwrap_or(1),
            seed,
        ))),
        LoadPoint::Trace { time_scale } => {
            let offsets = phase.workload.arrivals_ns.as_deref().unwrap_or(&[]);
            let from = usize::try_from(next_id).unwrap_or(usize::MAX);
            Some(Box::new(arrivals::TraceClock::new(
                offsets, from, time_scale,
            )))
        }
    }
}

/// Runs load points against one engine.
pub struct Driver<'a> {
    engine: &'a mut dyn Engine,
    cancel: &'a AtomicBool,
    next_id: RequestId,
    events: Vec<TokenEvent>,
    observer: Option<&'a mut dyn StepObserver>,
    /// The next conversation's number (`--dataset conversations`): run-wide, like
    /// request ids, so each conversation of the workload is started once while it lasts.
    next_conversation: u64,
}

/// One phase (warmup or measured) of a point.
struct Phase<'w> {
    point: LoadPoint,
    point_index: u32,
    workload: &'w Workload,
    stop: Stop,
    /// The measured phase: its requests are written, its cost and load recorded.
    measured: bool,
}

/// Where a request sits in its phase: its batch (batch mode) and, in an open loop, the
/// arrival it was due at.
#[derive(Copy, Clone)]
struct Slot {
    round: Option<u32>,
    intended: Option<MonoNs>,
    /// When its slot freed, if after `intended` (it waited for `--max-concurrency`).
    slot_free: Option<MonoNs>,
}

/// Where a phase is in its stop rule.
struct Progression {
    /// The point's index (each request's `point`).
    point: u32,
    /// Requests the stop rule let in: submitted, or (open loops) arrived and queued.
    issued: usize,
    /// Requests submitted.
    submitted: usize,
    /// Rounds started: batches (batch mode) or requests.
    rounds: u64,
    last_submit: MonoNs,
    reused: u64,
}

impl<'a> Driver<'a> {
    pub fn new(engine: &'a mut dyn Engine, cancel: &'a AtomicBool) -> Driver<'a> {
        Driver {
            engine,
            cancel,
            next_id: 0,
            events: Vec::with_capacity(256),
            observer: None,
            next_conversation: 0,
        }
    }

    /// Lets `observer` watch every step (GPU timing).
    pub fn observe(mut self, observer: &'a mut dyn StepObserver) -> Driver<'a> {
        self.observer = Some(observer);
        self
    }

    /// Runs warmup, then the measured requests of one point. Measured requests are
    /// handed to `writer` as they finish and returned.
    ///
    /// Every request of a run, warmup and every point included, takes the next
    /// workload item (request id = item index), so no prompt is sent twice while the
    /// workload lasts: a prefix cache cannot serve a later point from an earlier one.
    /// Conversations are taken the same way, the next conversation of the workload for
    /// each one started.
    pub fn run_point(
        &mut self,
        point_index: u32,
        point: LoadPoint,
        workload: &Workload,
        opts: &DriverOptions,
        writer: &mut TraceWriter,
        progress: &progress::Progress,
    ) -> Result<PointRun, DriverError> {
        if opts.warmup > 0 {
            progress.phase(&format!("{} warmup", point.label()), Some(opts.warmup));
            let warm = Phase {
                point,
                point_index,
                workload,
                stop: Stop::requests(opts.warmup),
                measured: false,
            };
            let run = self.run_phase(&warm, opts, None, progress)?;
            if run.outcome != Outcome::Completed {
                return Ok(PointRun {
                    records: Vec::new(),
                    steps: Vec::new(),
                    ..run
                });
            }
        }
        let fresh = opts.fresh_cache.then(|| self.empty_prefix_cache());
        progress.phase(&point.label(), opts.stop.num_requests);
        let measured = Phase {
            point,
            point_index,
            workload,
            stop: opts.stop,
            measured: true,
        };
        let mut run = self.run_phase(&measured, opts, Some(writer), progress)?;
        if let Some(f) = fresh {
            run.measures.add(&f);
        }
        Ok(run)
    }

    /// Asks the engine to empty its prefix cache (`--fresh-cache`).
    fn empty_prefix_cache(&mut self) -> FreshCache {
        let name = self.engine.info().name.clone();
        let why_not = match self.engine.reset_prefix_cache() {
            Ok(true) => None,
            Ok(false) => Some(format!("the {name} engine cannot empty its prefix cache")),
            Err(e) => Some(format!("the {name} engine failed to: {e}")),
        };
        FreshCache {
            emptied: why_not.is_none(),
            why_not,
        }
    }

    /// Whether the phase starts another round (or, in the open and closed loops,
    /// submits another request) at `now`, and if not, why.
    fn keep_going(phase: &Phase, p: &Progression, t0: MonoNs, now: MonoNs) -> Result<(), EndedBy> {
        let s = &phase.stop;
        let elapsed = Duration::from_nanos(now.since(t0));
        if let Some(n) = s.num_requests {
            return if p.issued < n {
                Ok(())
            } else {
                Err(EndedBy::NumRequests)
            };
        }
        if let Some(d) = s.duration {
            return if elapsed < d {
                Ok(())
            } else {
                Err(EndedBy::Duration)
            };
        }
        // A closed loop reaches its concurrency only after one full wave.
        let min_rounds = match phase.point {
            LoadPoint::Concurrency { concurrency } => u64::from(s.min_rounds.max(concurrency)),
            _ => u64::from(s.min_rounds),
        };
        if p.rounds >= min_rounds && elapsed >= s.min_duration {
            Err(EndedBy::Floors)
        } else if elapsed >= s.max_duration {
            Err(EndedBy::MaxDuration)
        } else {
            Ok(())
        }
    }

    fn run_phase(
        &mut self,
        phase: &Phase,
        opts: &DriverOptions,
        mut writer: Option<&mut TraceWriter>,
        progress: &progress::Progress,
    ) -> Result<PointRun, DriverError> {
        let mut book = Book::default();
        let host_start = phase.measured.then(CpuSample::now);
        if phase.measured {
            // Starts the engine's own counters from zero for this phase.
            let _ = self.engine.take_counters();
        }
        let mut cost = CostClock::default();
        let t0 = clock::now();
        let mut arrivals = arrival_source(phase, opts, self.next_id).map(Iterator::peekable);
        let mut due_at: Vec<u64> = Vec::new();
        // Open loops: arrivals (offsets after t0) not yet submitted, in arrival order;
        // at most what the stop rule lets arrive.
        let mut queue: VecDeque<u64> = VecDeque::new();
        let slots = opts.max_concurrency.map_or(usize::MAX, |c| c as usize);
        // When the driver last saw a request end: the moment a slot freed.
        let mut freed_at = t0;
        let mut p = Progression {
            point: phase.point_index,
            issued: 0,
            submitted: 0,
            rounds: 0,
            last_submit: t0,
            reused: 0,
        };
        let mut ended_by: Option<EndedBy> = None;
        let mut last_timeout_check = t0;
        // A timeout is noticed within 5 % of it (50 ms at least, 1 s at most): each
        // check walks every live request, which is not worth doing every step.
        let check_every = (opts.request_timeout / 20)
            .clamp(MAX_POLL, Duration::from_secs(1))
            .as_nanos() as u64;
        let mut measures = Measures::default();
        let layout = phase.workload.conversations.as_ref();
        let mut chats = Chats::default();
        let mut timeline = (phase.measured && opts.timeline && writer.is_some())
            .then(|| Timeline::new(phase.point_index, t0));
        if timeline.is_some() {
            // What the engine kept from earlier steps (the warmup's) is not this phase's.
            let _ = self.engine.take_step_stats();
        }
        if let Some(o) = self.observer.as_deref_mut() {
            o.phase_started(&phase.point.label(), phase.measured);
            if let Some(tl) = timeline.as_mut() {
                tl.gpu_timed = o.times_steps();
            }
        }
        let mut window = match (&opts.profile, phase.measured) {
            (Some(plan), true) => self.open_profile(plan, phase, progress),
            _ => None,
        };
        let outcome = 'phase: loop {
            if self.cancel.load(Ordering::Relaxed) {
                for id in book.finish_all(FinishReason::Abort, "interrupted (Ctrl-C)") {
                    // Best effort: the engine is about to be shut down anyway.
                    let _ = self.engine.abort(id);
                }
                ended_by.get_or_insert(EndedBy::Interrupted);
                break Outcome::Interrupted;
            }
            let now = clock::now();
            if ended_by.is_none() {
                // What the mode wants submitted now (for rate: the arrivals now due).
                due_at.clear();
                // Conversation workloads start conversations: a batch is B of them, a
                // closed loop keeps C open.
                let idle = book.active.is_empty() && chats.is_empty();
                let open = match layout {
                    Some(_) => chats.open(),
                    None => book.active.len(),
                };
                let due = match (phase.point, arrivals.as_mut()) {
                    // A batch starts only when the last one has finished.
                    (LoadPoint::Batch { batch }, _) if idle => batch as usize,
                    (LoadPoint::Batch { .. }, _) => 0,
                    (LoadPoint::Concurrency { concurrency }, _) => {
                        (concurrency as usize).saturating_sub(open)
                    }
                    (_, Some(a)) => {
                        let elapsed = now.since(t0);
                        while due_at.len() < MAX_DUE {
                            match a.next_if(|&o| o <= elapsed) {
                                Some(o) => due_at.push(o),
                                None => break,
                            }
                        }
                        due_at.len()
                    }
                    (_, None) => 0,
                };
                if due == 0 && arrivals.as_mut().is_some_and(|a| a.peek().is_none()) {
                    ended_by = Some(EndedBy::TraceEnd);
                } else if due > 0 || idle {
                    // The stop rule is checked once per round (a whole batch, or the
                    // requests due at this instant), never in the middle of a batch.
                    match Self::keep_going(phase, &p, t0, now) {
                        Err(why) => ended_by = Some(why),
                        Ok(()) if layout.is_some() => {
                            self.start_conversations(phase, &mut chats, &mut p, due, &due_at, t0);
                        }
                        Ok(()) => {
                            let n = match phase.stop.num_requests {
                                Some(limit) => due.min(limit.saturating_sub(p.issued)),
                                None => due,
                            };
                            let round = match phase.point {
                                LoadPoint::Batch { .. } if n > 0 => {
                                    p.rounds += 1;
                                    Some((p.rounds - 1) as u32)
                                }
                                _ => {
                                    p.rounds += n as u64;
                                    None
                                }
                            };
                            p.issued += n;
                            if phase.point.is_open() {
                                // Submitted below, as slots allow.
                                queue.extend(&due_at[..n]);
                            } else {
                                for _ in 0..n {
                                    let slot = Slot {
                                        round,
                                        intended: None,
                                        slot_free: None,
                                    };
                                    let submitted = self.submit_next(
                                        phase, opts, &mut book, &mut p, slot, &mut cost,
                                    );
                                    if let Err(e) = submitted {
                                        let msg = e.detail();
                                        book.finish_all(FinishReason::Error, &msg);
                                        ended_by = Some(EndedBy::EngineFailed);
                                        break 'phase Outcome::EngineFailed(msg);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            // Conversations' turns now due, earliest first, into the free slots.
            if layout.is_some() {
                let now = clock::now();
                while book.active.len() < slots {
                    let Some(turn) = chats.pop_due(now, |i| phase.workload.items[i].prompt.clone())
                    else {
                        break;
                    };
                    let intended = turn.intended;
                    let slot = Slot {
                        round: turn.round,
                        intended,
                        slot_free: intended
                            .filter(|&i| opts.max_concurrency.is_some() && freed_at > i)
                            .map(|_| freed_at),
                    };
                    let (conversation, turn_index) = (turn.conversation, turn.turn);
                    let save_prompt = opts.sampling.return_token_ids;
                    let prompt = turn.prompt;
                    let output_len = phase.workload.items[turn.item].output_len;
                    let id = self.next_id;
                    let submitted = self.submit(
                        opts,
                        &mut book,
                        &mut p,
                        (prompt.clone(), output_len, true),
                        slot,
                        &mut cost,
                        |t| {
                            t.conversation = Some(conversation);
                            t.turn = Some(turn_index);
                            t.prompt_token_ids = save_prompt.then(|| prompt.to_vec());
                        },
                    );
                    chats.sent(id, conversation);
                    if let Err(e) = submitted {
                        let msg = e.detail();
                        book.finish_all(FinishReason::Error, &msg);
                        ended_by = Some(EndedBy::EngineFailed);
                        break 'phase Outcome::EngineFailed(msg);
                    }
                }
            }
            // The open loop's queue, oldest first, into the free slots (all of it
            // without --max-concurrency).
            while book.active.len() < slots {
                let Some(o) = queue.pop_front() else { break };
                let intended = MonoNs(t0.0.saturating_add(o));
                let slot = Slot {
                    round: None,
                    intended: Some(intended),
                    slot_free: (freed_at > intended).then_some(freed_at),
                };
                let submitted = self.submit_next(phase, opts, &mut book, &mut p, slot, &mut cost);
                if let Err(e) = submitted {
                    let msg = e.detail();
                    book.finish_all(FinishReason::Error, &msg);
                    ended_by = Some(EndedBy::EngineFailed);
                    break 'phase Outcome::EngineFailed(msg);
                }
            }
            if book.active.is_empty() && queue.is_empty() && chats.is_empty() && ended_by.is_some()
            {
                break Outcome::Completed;
            }
            // Wait for the engine, but not past the next arrival or conversation turn.
            let mut timeout = MAX_POLL;
            if ended_by.is_none() {
                if let Some(&next) = arrivals.as_mut().and_then(|a| a.peek()) {
                    timeout = timeout.min(Duration::from_nanos(
                        MonoNs(t0.0.saturating_add(next)).since(clock::now()),
                    ));
                }
            }
            // (A turn waiting for a slot is woken by the finish that frees one.)
            if let Some(due) = chats.next_due().filter(|_| book.active.len() < slots) {
                timeout = timeout.min(Duration::from_nanos(MonoNs(due).since(clock::now())));
            }
            // The last pass's finished requests go to the writer just before the engine
            // is called, so it writes them while the driver waits in the engine.
            if book.flush(&mut writer, progress)? {
                if let (Some(tl), Some(w)) = (timeline.as_mut(), writer.as_deref_mut()) {
                    tl.flush(w, false)?;
                }
            }
            self.events.clear();
            let busy = !book.active.is_empty();
            if busy {
                if let Some(o) = self.observer.as_deref_mut() {
                    o.before_step();
                }
            }
            let before = clock::now();
            let polled = self.engine.poll(timeout, &mut self.events);
            let stamp = clock::now();
            cost.engine_call(stamp.since(before), busy);
            let (events, mut tokens) = (self.events.len() as u64, 0u64);
            let live = book.active.len();
            let mut finished = 0u32;
            for ev in self.events.drain(..) {
                let at = ev.at.unwrap_or(stamp);
                if !book.receive(ev.request, ev.new_tokens, at, stamp) {
                    continue;
                }
                tokens += u64::from(ev.new_tokens);
                if let Some(f) = ev.finish {
                    finished += 1;
                    let f = *f;
                    if let Some(t) = book.finish(ev.request, at, f.reason, f.error) {
                        t.engine = f.engine;
                        t.token_ids = f.token_ids;
                        t.top2_margins = f.top2_margins;
                        t.cached_prompt_tokens = f.cached_prompt_tokens;
                    }
                }
            }
            if book.active.len() < live {
                freed_at = stamp;
            }
            if busy {
                cost.step(events, tokens);
                if let Some(tl) = timeline.as_mut() {
                    let stats = self.engine.take_step_stats();
                    tl.step(before, stamp, live, events, tokens, finished, stats);
                    tl.gpu_times(self.observer.as_deref_mut(), false);
                    if tl.full() {
                        if let Some(w) = writer.as_deref_mut() {
                            tl.flush(w, false)?;
                        }
                    }
                }
                if let Some(o) = self.observer.as_deref_mut() {
                    o.after_step(stamp.since(before), tokens);
                }
                if let Some(left) = window.as_mut() {
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        window = None;
                        self.close_profile(&mut measures, progress);
                    }
                }
            } else if let Some(tl) = timeline.as_mut() {
                // An idle wait for arrivals is not the driver's time before the next step.
                tl.last_end = stamp;
            }
            if let Err(e) = polled {
                let msg = e.detail();
                book.finish_all(FinishReason::Error, &msg);
                ended_by = Some(EndedBy::EngineFailed);
                break Outcome::EngineFailed(msg);
            }
            if stamp.since(last_timeout_check) > check_every {
                last_timeout_check = stamp;
                let live = book.active.len();
                self.expire(&mut book, stamp, opts.request_timeout, &mut cost);
                if book.active.len() < live {
                    freed_at = stamp;
                }
            }
            // Finished turns move their conversations on (before the writer takes them).
            if let Some(layout) = layout {
                for t in &mut book.done[book.advanced..] {
                    chats.finished(t, layout, opts.sampling.return_token_ids);
                }
                book.advanced = book.done.len();
            }
        };
        book.flush(&mut writer, progress)?;
        if let (Some(tl), Some(w)) = (timeline.as_mut(), writer.as_deref_mut()) {
            tl.gpu_times(self.observer.as_deref_mut(), true);
            tl.flush(w, true)?;
        }
        if window.is_some() {
            self.close_profile(&mut measures, progress);
        }
        if phase.measured {
            if let Some(o) = self.observer.as_deref_mut() {
                o.phase_finished(&mut measures);
            }
        }
        if phase.measured && layout.is_some() {
            measures.add(&chats.stats);
        }
        if phase.measured {
            // The engine's own counters over this phase, beside the harness's figures.
            if let Some(c) = self.engine.take_counters() {
                measures.add(&c);
            }
        }
        let end = clock::now();
        // After `end`: the writer's last lines are its time, not the loop's.
        let (records, steps, writer_cpu_s) = match writer {
            Some(w) => {
                let synced = w.sync()?;
                (synced.records, synced.steps, Some(synced.cpu_s))
            }
            None => (book.done, Vec::new(), None),
        };
        Ok(PointRun {
            records,
            steps,
            outcome,
            end: phase.measured.then(|| PointEnd {
                rounds: p.rounds,
                requests: p.submitted as u64,
                submit_s: p.last_submit.since(t0) as f64 / 1e9,
                ended_by: ended_by.unwrap_or_default(),
                min_rounds: phase.stop.min_rounds,
                reused_prompts: p.reused,
            }),
            cost: phase.measured.then(|| HarnessCost {
                writer_cpu_s,
                ..cost.finish(end.since(t0))
            }),
            host: host_start.map(|h| h.until(&CpuSample::now())),
            measures,
        })
    }

    /// Opens a profiler window for the phase; returns the steps it is to cover, or
    /// None (with a line saying why) when the engine has no profiler or it failed.
    fn open_profile(
        &mut self,
        plan: &ProfilePlan,
        phase: &Phase,
        progress: &progress::Progress,
    ) -> Option<u64> {
        let label = phase.point.label().replace(['=', ','], "-");
        match self.engine.profile_start(&plan.dir, &label) {
            Ok(true) => {
                if let Some(o) = self.observer.as_deref_mut() {
                    o.profile_window(true);
                }
                Some(plan.steps.max(1))
            }
            Ok(false) => {
                progress.println(&format!(
                    "{}: the {} engine has no profiler; --profile skipped",
                    phase.point.label(),
                    self.engine.info().name
                ));
                None
            }
            Err(e) => {
                progress.println(&format!(
                    "{}: the profiler did not start: {e}",
                    phase.point.label()
                ));
                None
            }
        }
    }

    fn close_profile(&mut self, measures: &mut Measures, progress: &progress::Progress) {
        if let Some(o) = self.observer.as_deref_mut() {
            o.profile_window(false);
        }
        match self.engine.profile_stop() {
            Ok(Some(p)) => {
                progress.println(&p.table());
                measures.add(&p);
            }
            Ok(None) => {}
            Err(e) => progress.println(&format!("the profiler did not stop cleanly: {e}")),
        }
    }

    /// Submits the next request of the phase (the next workload item of the run).
    fn submit_next(
        &mut self,
        phase: &Phase,
        opts: &DriverOptions,
        book: &mut Book,
        p: &mut Progression,
        slot: Slot,
        cost: &mut CostClock,
    ) -> Result<(), EngineError> {
        let index = self.next_id as usize;
        if index >= phase.workload.len() {
            p.reused += 1;
        }
        let item = phase.workload.get(index);
        let what = (
            item.prompt.clone(),
            item.output_len,
            opts.sampling.return_token_ids,
        );
        self.submit(opts, book, p, what, slot, cost, |_| {})
    }

    /// Opens up to `due` conversations (`--dataset conversations`), each reserving its
    /// turns against `--num-requests`; in an open loop the k-th opens at arrival
    /// `due_at[k]`.
    fn start_conversations(
        &mut self,
        phase: &Phase,
        chats: &mut Chats,
        p: &mut Progression,
        due: usize,
        due_at: &[u64],
        t0: MonoNs,
    ) {
        let Some(layout) = phase.workload.conversations.as_ref() else {
            return;
        };
        let batch = matches!(phase.point, LoadPoint::Batch { .. });
        let round = batch.then_some(p.rounds as u32);
        let mut started = 0;
        for k in 0..due {
            let limit = phase
                .stop
                .num_requests
                .map_or(usize::MAX, |n| n.saturating_sub(p.issued));
            if limit == 0 {
                break;
            }
            let serial = self.next_conversation;
            let arrival = due_at.get(k).map(|&o| MonoNs(t0.0.saturating_add(o)));
            let turns = chats.start(layout, serial, limit, round, arrival);
            self.next_conversation += 1;
            if usize::try_from(serial).unwrap_or(usize::MAX) >= layout.count() {
                p.reused += turns as u64;
            }
            p.issued += turns;
            if !batch {
                p.rounds += turns as u64;
            }
            started += 1;
        }
        if batch && started > 0 {
            p.rounds += 1;
        }
    }

    /// Submits one request: `what` is its prompt, token budget and whether the engine
    /// returns its token ids; `decorate` fills the trace's workload fields.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        opts: &DriverOptions,
        book: &mut Book,
        p: &mut Progression,
        what: (Arc<[u32]>, u32, bool),
        slot: Slot,
        cost: &mut CostClock,
        decorate: impl FnOnce(&mut RequestTrace),
    ) -> Result<(), EngineError> {
        let (prompt, output_len, return_token_ids) = what;
        let req = GenRequest {
            id: self.next_id,
            prompt,
            output_len,
            min_tokens: if opts.sampling.ignore_eos {
                output_len
            } else {
                0
            },
            ignore_eos: opts.sampling.ignore_eos,
            temperature: opts.sampling.temperature,
            // Distinct per request, so identical prompts do not sample identically.
            seed: opts.sampling.seed.map(|s| s.wrapping_add(self.next_id)),
            return_token_ids,
        };
        self.next_id += 1;
        let at = clock::now();
        let mut trace =
            RequestTrace::new(req.id, p.point, req.prompt.len() as u32, req.output_len, at);
        trace.round = slot.round;
        trace.intended_ns = slot.intended;
        trace.slot_free_ns = slot.slot_free;
        decorate(&mut trace);
        p.submitted += 1;
        p.last_submit = at;
        book.admit(trace);
        let r = self.engine.submit(&req);
        cost.engine_call(clock::now().since(at), true);
        r
    }

    /// Aborts and marks `timeout` every request with no token for `timeout`.
    fn expire(&mut self, book: &mut Book, now: MonoNs, timeout: Duration, cost: &mut CostClock) {
        let limit = timeout.as_nanos() as u64;
        book.record();
        let expired: Vec<RequestId> = book
            .active
            .iter()
            .filter(|(_, a)| now.since(a.last_activity) > limit)
            .map(|(&id, _)| id)
            .collect();
        let why = format!(
            "no token for {:.1} s (--request-timeout)",
            timeout.as_secs_f64()
        );
        for id in expired {
            let at = clock::now();
            let _ = self.engine.abort(id);
            cost.engine_call(clock::now().since(at), true);
            book.finish(id, now, FinishReason::Timeout, Some(why.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(book: &mut Book, id: RequestId) {
        book.admit(RequestTrace::new(id, 0, 4, 8, MonoNs(1_000)));
    }

    #[test]
    fn logged_events_are_in_the_trace_when_it_finishes_and_late_ones_are_not() {
        let mut book = Book::default();
        for id in [3, 4] {
            admitted(&mut book, id);
        }
        assert!(book.receive(3, 1, MonoNs(1_100), MonoNs(1_150)));
        assert!(book.receive(4, 2, MonoNs(1_200), MonoNs(1_250)));
        assert!(book.receive(3, 1, MonoNs(1_300), MonoNs(1_350)));
        let t = book
            .finish(3, MonoNs(1_300), FinishReason::Length, None)
            .unwrap();
        assert_eq!(t.token_ns, vec![100, 300]);
        assert_eq!(t.token_counts, None);
        // 3 is gone: its late event is refused; 4 keeps its event and its activity.
        assert!(!book.receive(3, 1, MonoNs(1_400), MonoNs(1_400)));
        assert!(!book.receive(99, 1, MonoNs(1_400), MonoNs(1_400)));
        book.record();
        assert_eq!(book.active[&4].trace.token_ns, vec![200]);
        assert_eq!(book.active[&4].trace.token_counts, Some(vec![2]));
        assert_eq!(book.active[&4].last_activity, MonoNs(1_250));
        assert!(book.pending.is_empty());
    }

    #[test]
    fn the_log_is_bounded() {
        let mut book = Book::default();
        admitted(&mut book, 0);
        for k in 0..(MAX_PENDING as u64 + 10) {
            book.receive(0, 1, MonoNs(2_000 + k), MonoNs(2_000 + k));
        }
        assert!(book.pending.len() <= MAX_PENDING);
        book.record();
        assert_eq!(
            book.active[&0].trace.output_tokens(),
            MAX_PENDING as u64 + 10
        );
    }

    #[test]
    fn an_infinite_rate_reads_back() {
        let p = LoadPoint::Rate {
            rate: f64::INFINITY,
            burstiness: 1.0,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("\"inf\""), "{text}");
        assert_eq!(serde_json::from_str::<LoadPoint>(&text).unwrap(), p);
        let legacy = r#"{"mode":"rate","rate":null,"burstiness":1.0}"#;
        assert_eq!(serde_json::from_str::<LoadPoint>(legacy).unwrap(), p);
        let finite = r#"{"mode":"rate","rate":2.5,"burstiness":1.0}"#;
        assert!(matches!(
            serde_json::from_str::<LoadPoint>(finite).unwrap(),
            LoadPoint::Rate { rate, .. } if rate == 2.5
        ));
        assert!(serde_json::from_str::<LoadPoint>(
            r#"{"mode":"rate","rate":"fast","burstiness":1.0}"#
        )
        .is_err());
    }

    #[test]
    fn live_bits_follow_ids_from_the_first() {
        let mut live = LiveBits::default();
        assert!(!live.get(0));
        for id in [100, 163, 164, 1_000] {
            live.set(id, true);
        }
        assert!(live.get(100) && live.get(163) && live.get(164) && live.get(1_000));
        assert!(!live.get(99) && !live.get(101) && !live.get(1_001) && !live.get(u64::MAX));
        live.set(164, false);
        assert!(!live.get(164) && live.get(163));
    }
}
