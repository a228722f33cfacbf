//! Load drivers: how requests are offered to an engine, and the only code that reads
//! the clock for token events.
//!
//! One loop serves every mode ([`LoadPoint`]): it submits what the mode says is due,
//! polls the engine, stamps the returned events (or keeps the stream engine's own
//! stamps), and appends every finished request to `requests.jsonl` at once. Modes
//! differ only in [`Driver::due`]: `batch` submits B requests when none is in flight,
//! `concurrency` tops up to C in flight, `rate` submits at seeded arrival times.

pub mod arrivals;
pub mod progress;

use crate::clock::{self, MonoNs};
use crate::engine::{Engine, EngineError, FinishReason, GenRequest, RequestId, TokenEvent};
use crate::trace::{RequestTrace, TraceError, TraceWriter};
use crate::workload::Workload;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
    Rate { rate: f64, burstiness: f64 },
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
        }
    }

    /// The mode's name, as used for the CLI flag and the CSV column.
    pub fn mode(&self) -> &'static str {
        match self {
            LoadPoint::Batch { .. } => "batch",
            LoadPoint::Concurrency { .. } => "concurrency",
            LoadPoint::Rate { .. } => "rate",
        }
    }

    /// The swept value (batch size, concurrency or rate), for tables and plots.
    pub fn value(&self) -> f64 {
        match *self {
            LoadPoint::Batch { batch } => batch as f64,
            LoadPoint::Concurrency { concurrency } => concurrency as f64,
            LoadPoint::Rate { rate, .. } => rate,
        }
    }
}

/// When a point stops submitting.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    /// Measured requests to submit.
    pub num_requests: Option<usize>,
    /// Stop submitting after this long; requests in flight still finish.
    pub duration: Option<Duration>,
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
    pub outcome: Outcome,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Trace(#[from] TraceError),
}

/// The longest a poll may block, so Ctrl-C and request timeouts are noticed promptly.
const MAX_POLL: Duration = Duration::from_millis(50);

struct Active {
    trace: RequestTrace,
    /// Last submit or token, for the request timeout.
    last_activity: MonoNs,
}

/// Requests of one phase: in flight, and finished (written up to `written`).
#[derive(Default)]
struct Book {
    active: HashMap<RequestId, Active>,
    done: Vec<RequestTrace>,
    written: usize,
}

impl Book {
    fn finish(
        &mut self,
        id: RequestId,
        at: MonoNs,
        reason: FinishReason,
        error: Option<String>,
    ) -> Option<&mut RequestTrace> {
        let mut t = self.active.remove(&id)?.trace;
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

    /// Appends newly finished requests to the trace file (measured phases only).
    fn flush(
        &mut self,
        writer: &mut Option<&mut TraceWriter>,
        progress: &progress::Progress,
    ) -> Result<(), TraceError> {
        for t in &self.done[self.written..] {
            if let Some(w) = writer.as_deref_mut() {
                w.append(t)?;
            }
            progress.inc();
        }
        self.written = self.done.len();
        Ok(())
    }
}

/// Runs load points against one engine.
pub struct Driver<'a> {
    engine: &'a mut dyn Engine,
    cancel: &'a AtomicBool,
    next_id: RequestId,
    events: Vec<TokenEvent>,
}

/// One phase (warmup or measured) of a point.
struct Phase<'w> {
    point: LoadPoint,
    point_index: u32,
    workload: &'w Workload,
    /// Workload item of the phase's first request.
    first_item: usize,
    stop: Stop,
}

impl<'a> Driver<'a> {
    pub fn new(engine: &'a mut dyn Engine, cancel: &'a AtomicBool) -> Driver<'a> {
        Driver {
            engine,
            cancel,
            next_id: 0,
            events: Vec::with_capacity(256),
        }
    }

    /// Runs warmup, then the measured requests of one point. Measured requests are
    /// appended to `writer` as they finish and returned.
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
                first_item: 0,
                stop: Stop {
                    num_requests: Some(opts.warmup),
                    duration: None,
                },
            };
            let run = self.run_phase(&warm, opts, None, progress)?;
            if run.outcome != Outcome::Completed {
                return Ok(PointRun {
                    records: Vec::new(),
                    outcome: run.outcome,
                });
            }
        }
        progress.phase(&point.label(), opts.stop.num_requests);
        let measured = Phase {
            point,
            point_index,
            workload,
            first_item: opts.warmup,
            stop: opts.stop,
        };
        self.run_phase(&measured, opts, Some(writer), progress)
    }

    fn run_phase(
        &mut self,
        phase: &Phase,
        opts: &DriverOptions,
        mut writer: Option<&mut TraceWriter>,
        progress: &progress::Progress,
    ) -> Result<PointRun, DriverError> {
        let mut book = Book::default();
        let is_rate = matches!(phase.point, LoadPoint::Rate { .. });
        let t0 = clock::now();
        let end_submit = phase.stop.duration.map(|d| t0.plus(d));
        let arrivals = match phase.point {
            LoadPoint::Rate { rate, burstiness } => {
                // Duration-bound open-loop runs need enough arrivals to fill the window.
                let n = phase.stop.num_requests.unwrap_or_else(|| {
                    let secs = phase.stop.duration.map_or(0.0, |d| d.as_secs_f64());
                    ((rate * secs * 2.0).ceil() as usize).max(1000)
                });
                let seed =
                    opts.seed ^ u64::from(phase.point_index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                arrivals::arrival_offsets(rate, burstiness, seed, n)
            }
            _ => Vec::new(),
        };
        let limit = match phase.stop.num_requests {
            Some(n) => n,
            None if is_rate => arrivals.len(),
            None => usize::MAX,
        };
        let mut submitted = 0usize;
        let mut last_timeout_check = t0;
        let outcome = loop {
            if self.cancel.load(Ordering::Relaxed) {
                for id in book.finish_all(FinishReason::Abort, "interrupted (Ctrl-C)") {
                    // Best effort: the engine is about to be shut down anyway.
                    let _ = self.engine.abort(id);
                }
                break Outcome::Interrupted;
            }
            let now = clock::now();
            let stopped = submitted >= limit || end_submit.is_some_and(|e| now >= e);
            if !stopped {
                let due = Self::due(
                    phase.point,
                    book.active.len(),
                    submitted,
                    &arrivals,
                    t0,
                    now,
                )
                .min(limit - submitted);
                for _ in 0..due {
                    let item = phase.workload.get(phase.first_item + submitted);
                    let req = GenRequest {
                        id: self.next_id,
                        prompt: item.prompt.clone(),
                        max_tokens: item.output_len,
                        min_tokens: if opts.sampling.ignore_eos {
                            item.output_len
                        } else {
                            0
                        },
                        ignore_eos: opts.sampling.ignore_eos,
                        temperature: opts.sampling.temperature,
                        // Distinct per request, so identical prompts do not sample identically.
                        seed: opts.sampling.seed.map(|s| s.wrapping_add(self.next_id)),
                        return_token_ids: opts.sampling.return_token_ids,
                    };
                    self.next_id += 1;
                    let at = clock::now();
                    let mut trace = RequestTrace::new(
                        req.id,
                        phase.point_index,
                        req.prompt.len() as u32,
                        req.max_tokens,
                        at,
                    );
                    if is_rate {
                        trace.intended_ns = arrivals.get(submitted).map(|&o| MonoNs(t0.0 + o));
                    }
                    submitted += 1;
                    book.active.insert(
                        req.id,
                        Active {
                            trace,
                            last_activity: at,
                        },
                    );
                    if let Err(e) = self.engine.submit(&req) {
                        return self.engine_failed(book, e, writer, progress);
                    }
                }
            }
            if book.active.is_empty() && (stopped || submitted >= limit) {
                break Outcome::Completed;
            }
            // Wait for the engine, but not past the next arrival.
            let mut timeout = MAX_POLL;
            if let (false, Some(&next)) = (stopped, arrivals.get(submitted)) {
                timeout = timeout.min(Duration::from_nanos(
                    MonoNs(t0.0 + next).since(clock::now()),
                ));
            }
            self.events.clear();
            let polled = self.engine.poll(timeout, &mut self.events);
            let stamp = clock::now();
            for ev in self.events.drain(..) {
                // A missing entry is an aborted or expired request's late event.
                let Some(a) = book.active.get_mut(&ev.request) else {
                    continue;
                };
                let at = ev.at.unwrap_or(stamp);
                a.trace.record_tokens(ev.new_tokens, at);
                a.last_activity = stamp;
                if let Some(f) = ev.finish {
                    let f = *f;
                    if let Some(t) = book.finish(ev.request, at, f.reason, f.error) {
                        t.engine = f.engine;
                        t.token_ids = f.token_ids;
                    }
                }
            }
            if let Err(e) = polled {
                return self.engine_failed(book, e, writer, progress);
            }
            if stamp.since(last_timeout_check) > MAX_POLL.as_nanos() as u64 {
                last_timeout_check = stamp;
                self.expire(&mut book, stamp, opts.request_timeout);
            }
            book.flush(&mut writer, progress)?;
        };
        book.flush(&mut writer, progress)?;
        Ok(PointRun {
            records: book.done,
            outcome,
        })
    }

    /// The engine failed as a whole: every in-flight request fails with its reason.
    fn engine_failed(
        &mut self,
        mut book: Book,
        e: EngineError,
        mut writer: Option<&mut TraceWriter>,
        progress: &progress::Progress,
    ) -> Result<PointRun, DriverError> {
        let msg = e.detail();
        book.finish_all(FinishReason::Error, &msg);
        book.flush(&mut writer, progress)?;
        Ok(PointRun {
            records: book.done,
            outcome: Outcome::EngineFailed(msg),
        })
    }

    /// How many requests the mode wants submitted right now.
    fn due(
        point: LoadPoint,
        in_flight: usize,
        submitted: usize,
        arrivals: &[u64],
        t0: MonoNs,
        now: MonoNs,
    ) -> usize {
        match point {
            LoadPoint::Batch { batch } if in_flight == 0 => batch as usize,
            LoadPoint::Batch { .. } => 0,
            LoadPoint::Concurrency { concurrency } => {
                (concurrency as usize).saturating_sub(in_flight)
            }
            LoadPoint::Rate { .. } => {
                let elapsed = now.since(t0);
                arrivals
                    .get(submitted..)
                    .unwrap_or(&[])
                    .iter()
                    .take_while(|&&o| o <= elapsed)
                    .count()
            }
        }
    }

    /// Aborts and marks `timeout` every request with no token for `timeout`.
    fn expire(&mut self, book: &mut Book, now: MonoNs, timeout: Duration) {
        let limit = timeout.as_nanos() as u64;
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
            let _ = self.engine.abort(id);
            book.finish(id, now, FinishReason::Timeout, Some(why.clone()));
        }
    }
}
