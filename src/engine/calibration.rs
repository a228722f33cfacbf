//! The calibration engine: a known-answer instrument, not an inference engine.
//!
//! It produces tokens in real time on an exact, configured schedule, so tests can
//! assert that the harness measures what happened, and benches can measure the
//! harness's own overhead. Its results are always labelled as an instrument.
//!
//! # Schedule
//! The engine runs one step at a time. A step starts when the previous one ends, or,
//! when the engine was idle, at the first `poll` after work arrived (like a step
//! engine whose loop the driver drives). Scheduling is prefill-first, without mixing:
//!
//! - if requests wait and fewer than `max_batch` run, a **prefill step** admits up to
//!   the free slots (FIFO) and lasts
//!   `prefill_ms + prefill_ms_per_request·k + prefill_us_per_token·P/1000` ms
//!   (k admitted requests, P their prompt tokens); each admitted request gets its
//!   first token at the end of the step;
//! - otherwise a **decode step** lasts `decode_ms + decode_ms_per_seq·R` ms (R running
//!   requests) and gives every running request one token.
//!
//! `jitter_pct=J` stretches or shrinks every step by a seeded uniform factor in
//! `1 ± J/100` (`jitter_seed`), so its mean stays the schedule's: a known answer for
//! the confidence intervals.
//!
//! `prefix_cache_tokens=N` gives it a prefix cache of N tokens in blocks of
//! `block_size` (16), modelled on vLLM's ([`prefix_cache`]): a prefill step computes
//! only the prompt tokens not served from it (P above counts the uncomputed ones), and
//! each request reports its `cached_prompt_tokens`. Off by default (no cache, nothing
//! reported).
//!
//! `output_lag=true` returns each step's tokens with the next step (or the next poll when
//! no step follows), as vLLM does with overlapped (async) scheduling on a GPU; the
//! engine's own stamps stay at the step that produced them. It is the known answer
//! for what TTFT and ITL mean under such scheduling.
//!
//! A request finishes with `length` on its `output_len`-th token. The true end of
//! every step is reported as the engine's own stamps (`first_token_ns`,
//! `last_token_ns`), so the harness's stamps can be compared with the truth.
//!
//! With `return_token_ids`, a request's tokens echo its prompt (token k is
//! `prompt[k % len]`), the same rule as the Python test adapter, so `harness parity`
//! can be checked between the two without a model.
//!
//! # Log-probabilities
//! For `harness parity --logprobs` it scores a text by a fixed rule, the known answer:
//! at position i (from 1) with token t, `ln p = -((t + i) mod 16)/8 - logprob_offset`,
//! and its top-1 token there is t itself when `(t + i) mod 16 = 0`, else
//! `t + 1 + top1_shift`. Two runs that differ only in `logprob_offset=X` differ by
//! exactly X at every position; in `top1_shift` only where the top-1 is not the text's
//! own token.
//!
//! # On a GPU
//! `device=cuda[:N]` runs every step on CUDA device N (default 0): the step launches a
//! spin kernel for its scheduled time on the engine's own stream ([`crate::gpu::spin`])
//! and waits for it, one step per `poll`, as a GPU engine's `step()` does; the next
//! step starts at the next call, so the harness's time between calls is time the GPU
//! waits. The stream is reported to the harness like any GPU engine's, so CUDA-event
//! time per step must read the schedule. `mem_gib=G` holds G GiB of device memory for
//! the engine's life (a known answer for memory telemetry). Without a usable device,
//! `device=cuda` is refused before anything is created.
//!
//! # A declared layout
//! `tensor_parallel_size=T`, `pipeline_parallel_size=P` (vLLM's names) make it report a
//! T×P layout whose ranks are all this one process: nothing is split, the schedule is
//! unchanged, and only what the harness does with a layout (its record in `run.json`,
//! the per-device figures, `compare`'s check) meets a known answer.
//!
//! # Fault injection (engine args)
//! `fail_at_step=K` makes step K fail the whole engine; `fail_request=ID` ends that
//! request with an error at its first token; `drop_request=ID` silently never
//! schedules that request; `hang_at_step=K` stops all progress from step K on.

mod prefix_cache;

use super::layout::{hostname, ParallelLayout, Rank};
use super::{
    Availability, CudaPlacement, EngineConfig, EngineError, EngineInfo, EngineKind, EngineSpec,
    Finish, GenRequest, SchedulerFacts, StepStats, TextLogprobs, TokenEvent, Unavailable,
};
use crate::core::clock::{self, MonoNs};
use crate::core::request::{EngineStamps, FinishReason, RequestId};
use crate::gpu::spin::{self, SpinKernel, StepDevice};
use prefix_cache::PrefixCache;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

pub static SPEC: EngineSpec = EngineSpec::new(
    "calibration",
    "known-answer instrument: tokens on an exact schedule (tests, harness overhead)",
    EngineKind::Step,
    crate::engine::ModelInput::None,
    availability,
    |c| Ok(Box::new(CalibrationEngine::load(c)?)),
);

/// Built in; with `device=cuda[:N]`, only where that device can run the spin kernel.
fn availability(config: &EngineConfig) -> Availability {
    let version = Some(env!("CARGO_PKG_VERSION").into());
    let device = config.engine_args.iter().rev().find(|(k, _)| k == "device");
    match device.map(|(_, v)| parse_device(v)) {
        Some(Ok(Some(n))) => match spin::usable(n) {
            Ok(()) => Availability::usable(format!("built in, on CUDA device {n}"), version),
            Err(why) => Availability::unusable(
                "built in",
                Unavailable::Host(format!(
                    "device=cuda:{n}: {why}; run it on a host with an NVIDIA GPU and driver, \
                     or drop device= to run on the host"
                )),
            ),
        },
        // A bad value is the schedule's to report when it loads.
        _ => Availability::usable("built in", version),
    }
}

/// `cpu`/`host`: `None`; `cuda` or `cuda:N`: the CUDA ordinal.
fn parse_device(v: &str) -> Result<Option<usize>, ()> {
    match v.to_ascii_lowercase().as_str() {
        "cpu" | "host" => Ok(None),
        "cuda" => Ok(Some(0)),
        d => d
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < 1024)
            .map(Some)
            .ok_or(()),
    }
}

/// The schedule and faults, from `--engine-arg KEY=VALUE`.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub prefill_ms: f64,
    pub prefill_ms_per_request: f64,
    pub prefill_us_per_token: f64,
    pub decode_ms: f64,
    pub decode_ms_per_seq: f64,
    /// Most requests running at once; 0 = unlimited. Others queue.
    pub max_batch: usize,
    pub fail_at_step: Option<u64>,
    pub fail_request: Option<RequestId>,
    pub drop_request: Option<RequestId>,
    pub hang_at_step: Option<u64>,
    /// Each step lasts its scheduled time × U(1 - J/100, 1 + J/100).
    pub jitter_pct: f64,
    pub jitter_seed: u64,
    /// Report a step's tokens with the next step (overlapped scheduling).
    pub output_lag: bool,
    /// Prefix cache capacity in tokens; 0: no prefix cache.
    pub prefix_cache_tokens: u64,
    /// Tokens per cached block.
    pub block_size: usize,
    /// The CUDA device the steps run on (`device=cuda:N`); `None`: on the host.
    pub device: Option<usize>,
    /// Device memory held for the engine's life, GiB (with a device).
    pub mem_gib: f64,
    /// Subtracted from every teacher-forced log-probability (see the module docs).
    pub logprob_offset: f64,
    /// Added to every top-1 token that is not the text's own.
    pub top1_shift: u32,
    /// The declared layout's tensor- and pipeline-parallel sizes (1: none).
    pub tensor_parallel_size: u32,
    pub pipeline_parallel_size: u32,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            prefill_ms: 20.0,
            prefill_ms_per_request: 1.0,
            prefill_us_per_token: 10.0,
            decode_ms: 10.0,
            decode_ms_per_seq: 0.1,
            max_batch: 0,
            fail_at_step: None,
            fail_request: None,
            drop_request: None,
            hang_at_step: None,
            jitter_pct: 0.0,
            jitter_seed: 0,
            output_lag: false,
            prefix_cache_tokens: 0,
            block_size: 16,
            device: None,
            mem_gib: 0.0,
            logprob_offset: 0.0,
            top1_shift: 0,
            tensor_parallel_size: 1,
            pipeline_parallel_size: 1,
        }
    }
}

/// The layout `tensor_parallel_size`/`pipeline_parallel_size` declare (module docs):
/// every rank is this process.
fn declared_layout(s: &Schedule) -> Option<ParallelLayout> {
    let (tp, pp) = (s.tensor_parallel_size, s.pipeline_parallel_size);
    (tp * pp > 1).then(|| ParallelLayout {
        tensor_parallel: tp,
        pipeline_parallel: pp,
        data_parallel: 1,
        backend: Some("none".into()),
        ranks: (0..tp * pp)
            .map(|rank| Rank {
                rank,
                node: hostname(),
                pid: Some(std::process::id()),
                device: Some("host".into()),
                tp_rank: Some(rank % tp),
                pp_rank: Some(rank / tp),
                ..Rank::default()
            })
            .collect(),
        source: "calibration: a declared layout, every rank this process (nothing is split)".into(),
    })
}

/// Longest step any schedule value may ask for (ms): a typo must not hang a run.
const MAX_STEP_MS: f64 = 60_000.0;

const KEYS: &str = "prefill_ms, prefill_ms_per_request, prefill_us_per_token, decode_ms, \
                    decode_ms_per_seq, max_batch, fail_at_step, fail_request, drop_request, hang_at_step, \
                    jitter_pct, jitter_seed, output_lag, prefix_cache_tokens, block_size, device, \
                    mem_gib, logprob_offset, top1_shift, tensor_parallel_size, pipeline_parallel_size";

impl Schedule {
    pub fn from_args(args: &[(String, String)]) -> Result<Schedule, EngineError> {
        let mut s = Schedule::default();
        for (k, v) in args {
            let bad = |what: &str| {
                EngineError::Usage(format!(
                    "--engine-arg {k}={v}: expected {what} for the calibration engine"
                ))
            };
            let ms = |v: &str| -> Result<f64, EngineError> {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && (0.0..=MAX_STEP_MS).contains(x))
                    .ok_or_else(|| bad(&format!("a number from 0 to {MAX_STEP_MS}")))
            };
            let int = |v: &str| v.parse::<u64>().map_err(|_| bad("a non-negative integer"));
            match k.as_str() {
                "prefill_ms" => s.prefill_ms = ms(v)?,
                "prefill_ms_per_request" => s.prefill_ms_per_request = ms(v)?,
                "prefill_us_per_token" => s.prefill_us_per_token = ms(v)?,
                "decode_ms" => s.decode_ms = ms(v)?,
                "decode_ms_per_seq" => s.decode_ms_per_seq = ms(v)?,
                "max_batch" => s.max_batch = int(v)?.min(1 << 20) as usize,
                "fail_at_step" => s.fail_at_step = Some(int(v)?),
                "fail_request" => s.fail_request = Some(int(v)?),
                "drop_request" => s.drop_request = Some(int(v)?),
                "hang_at_step" => s.hang_at_step = Some(int(v)?),
                "jitter_pct" => {
                    s.jitter_pct = v
                        .parse::<f64>()
                        .ok()
                        .filter(|x| (0.0..100.0).contains(x))
                        .ok_or_else(|| bad("a percentage from 0 to below 100"))?
                }
                "jitter_seed" => s.jitter_seed = int(v)?,
                "prefix_cache_tokens" => s.prefix_cache_tokens = int(v)?,
                "block_size" => {
                    s.block_size = int(v)?
                        .try_into()
                        .ok()
                        .filter(|b| (1..=4096).contains(b))
                        .ok_or_else(|| bad("a block size from 1 to 4096 tokens"))?
                }
                "device" => s.device = parse_device(v).map_err(|()| bad("cpu, cuda or cuda:N"))?,
                "mem_gib" => {
                    s.mem_gib = v
                        .parse::<f64>()
                        .ok()
                        .filter(|x| (0.0..=spin::MAX_MEM_GIB).contains(x))
                        .ok_or_else(|| bad(&format!("GiB from 0 to {}", spin::MAX_MEM_GIB)))?
                }
                "logprob_offset" => {
                    s.logprob_offset = v
                        .parse::<f64>()
                        .ok()
                        .filter(|x| (0.0..=100.0).contains(x))
                        .ok_or_else(|| bad("a number from 0 to 100"))?
                }
                "top1_shift" => {
                    s.top1_shift = int(v)?
                        .try_into()
                        .ok()
                        .filter(|x| *x <= 1 << 20)
                        .ok_or_else(|| bad("an integer from 0 to 1048576"))?
                }
                "tensor_parallel_size" | "pipeline_parallel_size" => {
                    let n = int(v)?
                        .try_into()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| bad("a size from 1 to 64"))?;
                    if k == "tensor_parallel_size" {
                        s.tensor_parallel_size = n;
                    } else {
                        s.pipeline_parallel_size = n;
                    }
                }
                "output_lag" => {
                    s.output_lag = match v.to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => return Err(bad("true or false")),
                    }
                }
                _ => {
                    return Err(EngineError::Usage(format!(
                        "unknown --engine-arg '{k}' for the calibration engine; valid keys: {KEYS}"
                    )))
                }
            }
        }
        if s.mem_gib > 0.0 && s.device.is_none() {
            return Err(EngineError::Usage(
                "--engine-arg mem_gib needs device=cuda[:N]: it holds device memory".into(),
            ));
        }
        Ok(s)
    }

    /// The known answer for one text's teacher-forced log-probabilities (module docs).
    pub fn logprobs(&self, text: &[u32]) -> TextLogprobs {
        let mut out = TextLogprobs::default();
        for (i, &t) in text.iter().enumerate().skip(1) {
            let r = (u64::from(t) + i as u64) % 16;
            out.logprobs
                .push((-(r as f64) / 8.0 - self.logprob_offset) as f32);
            out.top1.push(if r == 0 {
                t
            } else {
                t.wrapping_add(1).wrapping_add(self.top1_shift)
            });
        }
        out
    }

    /// Duration of a prefill step admitting `requests` requests with `tokens` prompt tokens.
    pub fn prefill(&self, requests: usize, tokens: u64) -> Duration {
        let ms = self.prefill_ms
            + self.prefill_ms_per_request * requests as f64
            + self.prefill_us_per_token * tokens as f64 / 1000.0;
        step(ms)
    }

    /// Duration of a decode step with `running` requests.
    pub fn decode(&self, running: usize) -> Duration {
        step(self.decode_ms + self.decode_ms_per_seq * running as f64)
    }
}

/// A step of `ms` milliseconds, capped so no schedule asks for more than an hour.
fn step(ms: f64) -> Duration {
    Duration::from_nanos((ms.clamp(0.0, 3.6e6) * 1e6).round() as u64)
}

impl Schedule {
    /// `d` stretched by this step's jitter factor.
    fn jittered(&self, d: Duration, rng: &mut rand_chacha::ChaCha8Rng) -> Duration {
        if self.jitter_pct == 0.0 {
            return d;
        }
        use rand::Rng;
        let j = self.jitter_pct / 100.0;
        d.mul_f64(rng.random_range(1.0 - j..=1.0 + j))
    }
}

struct Waiting {
    id: RequestId,
    prompt: Arc<[u32]>,
    output_len: u32,
    /// Return the token ids (they echo the prompt).
    echo: bool,
}

struct Running {
    id: RequestId,
    generated: u32,
    output_len: u32,
    first_token: MonoNs,
    prompt: Arc<[u32]>,
    echo: bool,
    /// Prompt tokens served from the prefix cache (with one).
    cached: Option<u32>,
}

struct Step {
    number: u64,
    starts_at: MonoNs,
    ends_at: MonoNs,
    /// Prompt tokens the step computes, and those its admissions looked up in the
    /// prefix cache and found there (prefill steps).
    prefill_tokens: u64,
    prefix_queried: u64,
    prefix_hits: u64,
    /// Prefill steps emit first tokens for these; decode steps for all running.
    admitted: Option<Vec<Running>>,
}

pub struct CalibrationEngine {
    info: EngineInfo,
    schedule: Schedule,
    waiting: VecDeque<Waiting>,
    running: Vec<Running>,
    dropped: usize,
    step: Option<Step>,
    steps_done: u64,
    jitter: rand_chacha::ChaCha8Rng,
    /// With `output_lag`: the last step's events, returned with the next.
    held: Vec<TokenEvent>,
    /// The end of the last engine call, and the time between calls so far.
    last_return: Option<MonoNs>,
    between_calls_ns: u64,
    /// The most a wait for a step's end overran it: the host's, not the caller's, delay.
    max_oversleep_ns: u64,
    prefix_cache: Option<PrefixCache>,
    /// What the steps since the last `take_step_stats` did.
    stats: Option<StepStats>,
    /// Where each step's work runs, with `device=cuda`.
    device: Option<Box<dyn StepDevice>>,
}

impl CalibrationEngine {
    pub fn load(config: &EngineConfig) -> Result<CalibrationEngine, EngineError> {
        let schedule = Schedule::from_args(&config.engine_args)?;
        let (device, mem_gib) = (schedule.device, schedule.mem_gib);
        let engine = CalibrationEngine::new(schedule);
        Ok(match device {
            None => engine,
            Some(n) => engine.on_device(Box::new(
                SpinKernel::open(n, mem_gib).map_err(EngineError::failed)?,
            )),
        })
    }

    /// Runs every step's work on `device` (see the module docs: On a GPU).
    pub fn on_device(mut self, device: Box<dyn StepDevice>) -> CalibrationEngine {
        let (ordinal, stream) = device.placement();
        self.info.cuda = Some(CudaPlacement {
            device: ordinal,
            stream: Some(stream),
        });
        self.info.device = format!("cuda:{ordinal}");
        self.info.notes.push(format!(
            "each step is a spin kernel for its scheduled time, waited for: {}",
            device.describe()
        ));
        self.device = Some(device);
        self
    }

    pub fn new(schedule: Schedule) -> CalibrationEngine {
        let metadata = serde_json::json!({
            "schedule": {
                "prefill_ms": schedule.prefill_ms,
                "prefill_ms_per_request": schedule.prefill_ms_per_request,
                "prefill_us_per_token": schedule.prefill_us_per_token,
                "decode_ms": schedule.decode_ms,
                "decode_ms_per_seq": schedule.decode_ms_per_seq,
                "max_batch": schedule.max_batch,
                "jitter_pct": schedule.jitter_pct,
                "jitter_seed": schedule.jitter_seed,
                "output_lag": schedule.output_lag,
                "prefix_cache_tokens": schedule.prefix_cache_tokens,
                "block_size": schedule.block_size,
                "device": schedule.device.map_or("host".to_string(), |n| format!("cuda:{n}")),
                "mem_gib": schedule.mem_gib,
            },
        });
        let cached = schedule.prefix_cache_tokens > 0;
        let prefix_cache =
            cached.then(|| PrefixCache::new(schedule.prefix_cache_tokens, schedule.block_size));
        CalibrationEngine {
            info: EngineInfo {
                name: "calibration".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                model: "none (synthetic schedule)".into(),
                dtype: "-".into(),
                device: "host".into(),
                kind: EngineKind::Step,
                instrument: true,
                notes: vec![
                    "known-answer instrument: prefill-first steps on an exact real-time \
                     schedule; its figures measure the harness, not an inference engine"
                        .into(),
                ],
                scheduler: Some(SchedulerFacts {
                    max_running: u32::try_from(schedule.max_batch).ok().filter(|&m| m > 0),
                    prefix_caching: Some(cached),
                    cached_prompt_tokens_source: cached.then(|| {
                        format!(
                            "calibration: its prefix-cache model ({} tokens in blocks of {}, LRU)",
                            schedule.prefix_cache_tokens, schedule.block_size
                        )
                    }),
                    step_stats_source: Some(
                        "calibration: its own schedule (running and waiting after the step, \
                         prefill and decode per step, the step's scheduled time; it never \
                         preempts and models no KV cache, so kv_usage is absent)"
                            .into(),
                    ),
                    ..Default::default()
                }),
                layout: declared_layout(&schedule),
                metadata,
                ..Default::default()
            },
            waiting: VecDeque::new(),
            running: Vec::new(),
            dropped: 0,
            step: None,
            steps_done: 0,
            jitter: {
                use rand::SeedableRng;
                rand_chacha::ChaCha8Rng::seed_from_u64(schedule.jitter_seed)
            },
            schedule,
            held: Vec::new(),
            last_return: None,
            between_calls_ns: 0,
            max_oversleep_ns: 0,
            prefix_cache,
            stats: None,
            device: None,
        }
    }

    /// Time spent outside this engine between its calls (the caller's own time
    /// between a call's return and the next call), measured from this side of the
    /// boundary: the known answer for the driver's `harness_cost`.
    pub fn time_between_calls(&self) -> Duration {
        Duration::from_nanos(self.between_calls_ns)
    }

    /// The longest time this engine woke late from waiting for a step's end: how far
    /// the host (not the caller) kept it off its schedule. Known-answer tests measure
    /// again when this exceeds what their tolerance leaves for it.
    pub fn max_oversleep(&self) -> Duration {
        Duration::from_nanos(self.max_oversleep_ns)
    }

    /// Records how late a wait for `woke_for` returned, read at `now`.
    fn note_oversleep(&mut self, woke_for: MonoNs, now: MonoNs) {
        self.max_oversleep_ns = self.max_oversleep_ns.max(now.since(woke_for));
    }

    fn enter(&mut self) {
        if let Some(r) = self.last_return {
            self.between_calls_ns += clock::now().since(r);
        }
    }

    fn leave(&mut self) {
        self.last_return = Some(clock::now());
    }

    fn free_slots(&self) -> usize {
        match self.schedule.max_batch {
            0 => usize::MAX,
            m => m.saturating_sub(self.running.len()),
        }
    }

    /// Plans the next step starting at `start`, if there is work.
    fn plan(&mut self, start: MonoNs) {
        let number = self.steps_done + 1;
        if self.schedule.hang_at_step.is_some_and(|h| number >= h) {
            return;
        }
        let slots = self.free_slots();
        if !self.waiting.is_empty() && slots > 0 {
            let k = slots.min(self.waiting.len());
            let admitted: Vec<Waiting> = self.waiting.drain(..k).collect();
            // In admission order, so a request hits the blocks of one admitted before it.
            let cached: Vec<Option<u32>> = admitted
                .iter()
                .map(|w| {
                    self.prefix_cache.as_mut().map(|c| {
                        let hit = c.lookup(&w.prompt);
                        c.insert(&w.prompt);
                        hit
                    })
                })
                .collect();
            let tokens = admitted
                .iter()
                .zip(&cached)
                .map(|(w, c)| (w.prompt.len() as u64).saturating_sub(u64::from(c.unwrap_or(0))))
                .sum();
            let ends_at = start.plus(
                self.schedule
                    .jittered(self.schedule.prefill(k, tokens), &mut self.jitter),
            );
            let admitted: Vec<Running> = admitted
                .into_iter()
                .zip(cached)
                .map(|(w, cached)| Running {
                    id: w.id,
                    generated: 0,
                    output_len: w.output_len,
                    first_token: ends_at,
                    prompt: w.prompt,
                    echo: w.echo,
                    cached,
                })
                .collect();
            let queried = self
                .prefix_cache
                .as_ref()
                .map_or(0, |_| admitted.iter().map(|r| r.prompt.len() as u64).sum());
            let hits = admitted
                .iter()
                .map(|r| u64::from(r.cached.unwrap_or(0)))
                .sum();
            self.step = Some(Step {
                number,
                starts_at: start,
                ends_at,
                prefill_tokens: tokens,
                prefix_queried: queried,
                prefix_hits: hits,
                admitted: Some(admitted),
            });
        } else if !self.running.is_empty() {
            let ends_at = start.plus(
                self.schedule
                    .jittered(self.schedule.decode(self.running.len()), &mut self.jitter),
            );
            self.step = Some(Step {
                number,
                starts_at: start,
                ends_at,
                prefill_tokens: 0,
                prefix_queried: 0,
                prefix_hits: 0,
                admitted: None,
            });
        }
    }

    /// Applies a finished step: emits its tokens and finishes requests at their budget.
    fn complete(&mut self, step: Step, out: &mut Vec<TokenEvent>) -> Result<(), EngineError> {
        self.steps_done = step.number;
        if self.schedule.fail_at_step == Some(step.number) {
            return Err(EngineError::failed(format!(
                "calibration engine: injected failure at step {}",
                step.number
            )));
        }
        let mut stats = StepStats::one_step();
        let from = match step.admitted {
            // Only the just-admitted requests advance in a prefill step.
            Some(mut admitted) => {
                // On a device the step ends when its work is seen done, not as planned.
                for r in &mut admitted {
                    r.first_token = step.ends_at;
                }
                stats.prefill_requests = Some(admitted.len() as u32);
                stats.prefill_tokens = Some(u32::try_from(step.prefill_tokens).unwrap_or(u32::MAX));
                stats.decode_requests = Some(0);
                stats.decode_tokens = Some(0);
                let from = self.running.len();
                self.running.extend(admitted);
                from
            }
            None => {
                let r = self.running.len() as u32;
                stats.prefill_requests = Some(0);
                stats.prefill_tokens = Some(0);
                stats.decode_requests = Some(r);
                stats.decode_tokens = Some(r);
                0
            }
        };
        if self.prefix_cache.is_some() {
            stats.prefix_queried = Some(step.prefix_queried);
            stats.prefix_hits = Some(step.prefix_hits);
        }
        self.advance(from, step.ends_at, out);
        stats.running = Some(self.running.len() as u32);
        stats.waiting = Some((self.waiting.len() + self.dropped) as u32);
        stats.preempted = Some(0);
        stats.engine_ms = Some(step.ends_at.since(step.starts_at) as f64 / 1e6);
        StepStats::fold(&mut self.stats, stats);
        Ok(())
    }

    fn advance(&mut self, from: usize, end: MonoNs, out: &mut Vec<TokenEvent>) {
        let fail_request = self.schedule.fail_request;
        let mut i = from;
        while i < self.running.len() {
            let r = &mut self.running[i];
            r.generated += 1;
            let failed = fail_request == Some(r.id);
            let done = failed || r.generated >= r.output_len;
            let finish = done.then(|| {
                let mut f = Finish::new(if failed {
                    FinishReason::Error
                } else {
                    FinishReason::Length
                });
                if failed {
                    f.error = Some(format!(
                        "calibration engine: injected failure of request {}",
                        r.id
                    ));
                }
                f.engine = Some(EngineStamps {
                    first_token_ns: Some(r.first_token),
                    last_token_ns: Some(end),
                    ..Default::default()
                });
                // The output's ids, once, for the caller and the cache alike.
                let output =
                    (r.echo || self.prefix_cache.is_some()).then(|| echo(&r.prompt, r.generated));
                if let (Some(c), Some(out)) = (self.prefix_cache.as_mut(), &output) {
                    c.insert(&[&r.prompt[..], out.as_slice()].concat());
                }
                f.token_ids = output.filter(|_| r.echo);
                f.cached_prompt_tokens = r.cached;
                Box::new(f)
            });
            out.push(TokenEvent {
                request: r.id,
                new_tokens: if failed { 0 } else { 1 },
                at: None,
                finish,
            });
            if done {
                self.running.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

/// A request's first `n` output tokens: its prompt, echoed (`prompt[k % len]`).
fn echo(prompt: &[u32], n: u32) -> Vec<u32> {
    if prompt.is_empty() {
        return Vec::new();
    }
    (0..n as usize).map(|k| prompt[k % prompt.len()]).collect()
}

impl CalibrationEngine {
    fn submit_inner(&mut self, req: &GenRequest) -> Result<(), EngineError> {
        if self.schedule.drop_request == Some(req.id) {
            self.dropped += 1;
            return Ok(());
        }
        if req.output_len == 0 {
            return Err(EngineError::failed("output_len must be at least 1"));
        }
        self.waiting.push_back(Waiting {
            id: req.id,
            prompt: req.prompt.clone(),
            output_len: req.output_len,
            echo: req.return_token_ids && !req.prompt.is_empty(),
        });
        Ok(())
    }

    fn poll_inner(
        &mut self,
        timeout: Duration,
        out: &mut Vec<TokenEvent>,
    ) -> Result<(), EngineError> {
        if self.device.is_some() {
            return self.poll_on_device(timeout, out);
        }
        let now = clock::now();
        let deadline = now.plus(timeout);
        if self.step.is_none() {
            self.plan(now);
        }
        let Some(ends_at) = self.step.as_ref().map(|s| s.ends_at) else {
            if !self.held.is_empty() {
                // No step follows: what was held comes back now.
                out.append(&mut self.held);
                return Ok(());
            }
            clock::sleep_until(deadline);
            return Ok(());
        };
        if ends_at > deadline {
            clock::sleep_until(deadline);
            self.note_oversleep(deadline, clock::now());
            return Ok(());
        }
        let slept = ends_at > now;
        clock::sleep_until(ends_at);
        let now = clock::now();
        if slept {
            self.note_oversleep(ends_at, now);
        }
        // Catch up on every step that ended while the caller was away: the schedule
        // runs on the engine's own clock, not on the caller's.
        while let Some(step) = self.step.take_if(|s| s.ends_at <= now) {
            let end = step.ends_at;
            self.emit(step, out)?;
            self.plan(end);
        }
        Ok(())
    }

    /// One step per call: its work is launched on the device and waited for, and the
    /// step ends when the wait returns. The next step is planned at the next call.
    fn poll_on_device(
        &mut self,
        timeout: Duration,
        out: &mut Vec<TokenEvent>,
    ) -> Result<(), EngineError> {
        let now = clock::now();
        if self.step.is_none() {
            self.plan(now);
        }
        let Some(mut step) = self.step.take() else {
            if self.held.is_empty() {
                clock::sleep_until(now.plus(timeout));
            } else {
                out.append(&mut self.held);
            }
            return Ok(());
        };
        let ns = step.ends_at.since(step.starts_at);
        if let Some(d) = self.device.as_mut() {
            d.launch(ns)
                .and_then(|()| d.wait())
                .map_err(EngineError::failed)?;
        }
        step.ends_at = clock::now();
        self.emit(step, out)
    }

    /// Completes `step` and hands out its events (with `output_lag`, the previous
    /// step's, holding this one's for the next).
    fn emit(&mut self, step: Step, out: &mut Vec<TokenEvent>) -> Result<(), EngineError> {
        if self.schedule.output_lag {
            let mut fresh = Vec::new();
            self.complete(step, &mut fresh)?;
            out.append(&mut self.held);
            self.held = fresh;
            Ok(())
        } else {
            self.complete(step, out)
        }
    }

    fn abort_inner(&mut self, id: RequestId) {
        self.waiting.retain(|w| w.id != id);
        self.running.retain(|r| r.id != id);
        if let Some(Step {
            admitted: Some(a), ..
        }) = &mut self.step
        {
            a.retain(|r| r.id != id);
        }
        if self.schedule.drop_request == Some(id) {
            self.dropped = self.dropped.saturating_sub(1);
        }
    }
}

impl super::Engine for CalibrationEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn submit(&mut self, req: &GenRequest) -> Result<(), EngineError> {
        self.enter();
        let r = self.submit_inner(req);
        self.leave();
        r
    }

    fn poll(&mut self, timeout: Duration, out: &mut Vec<TokenEvent>) -> Result<(), EngineError> {
        self.enter();
        let r = self.poll_inner(timeout, out);
        self.leave();
        r
    }

    fn in_flight(&self) -> usize {
        let held = self.held.iter().filter(|e| e.finish.is_some()).count();
        self.waiting.len() + self.running.len() + self.dropped + held
    }

    fn abort(&mut self, id: RequestId) -> Result<(), EngineError> {
        self.enter();
        self.abort_inner(id);
        self.leave();
        Ok(())
    }

    fn take_step_stats(&mut self) -> Option<StepStats> {
        self.stats.take()
    }

    fn prompt_logprobs(
        &mut self,
        texts: &[Vec<u32>],
    ) -> Result<Option<Vec<TextLogprobs>>, EngineError> {
        Ok(Some(
            texts.iter().map(|t| self.schedule.logprobs(t)).collect(),
        ))
    }

    fn reset_prefix_cache(&mut self) -> Result<bool, EngineError> {
        Ok(match self.prefix_cache.as_mut() {
            Some(c) => {
                c.clear();
                true
            }
            None => false,
        })
    }

    fn shutdown(&mut self) -> Result<(), EngineError> {
        self.held.clear();
        self.waiting.clear();
        self.running.clear();
        self.step = None;
        Ok(())
    }
}
