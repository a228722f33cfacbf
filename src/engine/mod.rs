//! The engine boundary: what an engine adapter must do, and the types that cross it.
//!
//! Engines are thin. They load a model, accept [`GenRequest`]s and, when polled, hand
//! back the [`TokenEvent`]s that happened since the last poll. They never read the
//! clock for token events unless their tokens arrive on another thread (stream
//! engines), and they never compute metrics.

pub mod calibration;
#[cfg(feature = "openai")]
pub mod http;
pub mod layout;
pub mod llamacpp;
pub mod model;
#[cfg(feature = "python")]
pub mod python;
pub mod registry;
pub mod trtllm;
pub mod venv;

use crate::core::clock::MonoNs;
pub use crate::core::logprobs::TextLogprobs;
use crate::core::measure::{Figure, Measure};
use crate::core::request::{EngineStamps, FinishReason, RequestId};
pub use crate::core::step::StepStats;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use layout::ParallelLayout;
pub use model::ModelInput;
pub use registry::Registry;

/// One generation request, as the engine sees it: token ids in, a token budget out.
#[derive(Clone, Debug)]
pub struct GenRequest {
    pub id: RequestId,
    /// Prompt token ids (shared: the same workload is replayed across sweep points).
    pub prompt: Arc<[u32]>,
    /// Tokens to generate at most: the request's `output_len` (an engine's own `max_tokens`).
    pub output_len: u32,
    /// Tokens to produce before EOS may end the request.
    pub min_tokens: u32,
    pub ignore_eos: bool,
    /// 0 means greedy.
    pub temperature: f32,
    pub seed: Option<u64>,
    /// Ask the engine to return the generated token ids at finish (parity checks), and,
    /// where it can, each token's top-2 logit margin.
    pub return_token_ids: bool,
}

/// What an engine says when a request ends.
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    pub reason: FinishReason,
    pub error: Option<String>,
    pub token_ids: Option<Vec<u32>>,
    /// Per generated token, the top-1 minus the top-2 logit where it was sampled (with
    /// `return_token_ids`, from engines that can): how close the choice was, so a parity
    /// divergence at a near-tie reads as a numerics difference, not a bug.
    pub top2_margins: Option<Vec<f32>>,
    pub engine: Option<EngineStamps>,
    /// Prompt tokens the engine served from its prefix cache instead of computing
    /// them, as the engine counts them (vLLM's `num_cached_tokens`, SGLang's
    /// `cached_tokens`); `None` where it does not say ([`SchedulerFacts`] names the
    /// source).
    pub cached_prompt_tokens: Option<u32>,
}

impl Finish {
    pub fn new(reason: FinishReason) -> Finish {
        Finish {
            reason,
            error: None,
            token_ids: None,
            top2_margins: None,
            engine: None,
            cached_prompt_tokens: None,
        }
    }
}

/// New tokens for one request (possibly zero, when only the finish is news).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEvent {
    pub request: RequestId,
    pub new_tokens: u32,
    /// Set by stream engines that stamp arrivals on their own thread; `None` means
    /// "stamp me when `poll` returns" (step engines).
    pub at: Option<MonoNs>,
    /// Boxed: most events are not finishes, and the event stays small on the hot path.
    pub finish: Option<Box<Finish>>,
}

/// How an engine delivers tokens, which decides who stamps them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// Each `poll` runs one engine step; the driver stamps its events on return.
    #[default]
    Step,
    /// Tokens arrive on another thread and are stamped there.
    Stream,
}

/// What an engine is. The typed fields are what the harness acts on (it prints the
/// notes, times steps on the CUDA stream, warns when a point outgrows the scheduler);
/// `metadata` holds the engine's other facts for `run.json` and nothing reads it back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    pub name: String,
    pub version: String,
    pub model: String,
    pub dtype: String,
    pub device: String,
    pub kind: EngineKind,
    /// Seconds from the start of loading to ready.
    pub load_time_s: f64,
    /// A test instrument (the calibration engine, a stand-in of an engine): its
    /// results measure the harness, not an engine.
    pub instrument: bool,
    /// What a user must know about this run, in the engine's words (a stand-in in
    /// use, a scheduler that is the harness's own): printed after loading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The CUDA device and stream the engine computes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda: Option<CudaPlacement>,
    /// What the engine computes with on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<HostCompute>,
    /// The engine's own scheduling limits and caches, as it reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerFacts>,
    /// How it spreads the model over devices and nodes, as it reports it (none: one
    /// device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<ParallelLayout>,
    /// Engine-specific facts for `run.json`: resolved model config, KV-cache layout,
    /// effective engine args.
    #[serde(default)]
    pub metadata: serde_json::Value,
}

impl EngineInfo {
    /// Devices the engine's layout spans (1 without one): what per-device figures
    /// divide by.
    pub fn devices(&self) -> u32 {
        self.layout.as_ref().map_or(1, ParallelLayout::devices)
    }
}

/// Where an engine's GPU work runs: CUDA-event step timing records its events there.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CudaPlacement {
    pub device: usize,
    /// The `CUstream` the engine computes on; `None` for the device's default stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<u64>,
}

/// What an engine computes with on the host, where it says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCompute {
    /// Compute threads (torch's intra-op threads, llama.cpp's decode threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// The CPUs its compute is bound to (`0-1`), where it binds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// CPUs it keeps for other work (vLLM's API server process), where it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_cpus: Option<String>,
}

/// An engine's own scheduling limits and caches, each only where it reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerFacts {
    /// The most requests it runs at once (vLLM's `max_num_seqs`, llama.cpp's slots);
    /// more wait in its queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
    /// Tokens its KV cache holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_caching: Option<bool>,
    /// Where each request's `cached_prompt_tokens` comes from (`vLLM
    /// RequestOutput.num_cached_tokens`); `None`: the engine does not report it, and
    /// the prefix-cache hit rate is "not reported", never 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunked_prefill: Option<bool>,
    /// Where each step record's engine fields come from and which it cannot give
    /// (`vLLM SchedulerStats + IterationStats via a stat logger; no spec decoding`);
    /// `None`: the engine reports nothing per step, and `steps.jsonl` holds only the
    /// harness's own timing of each poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_stats_source: Option<String>,
}

/// One engine this build knows: what it is, whether it can run here, and how to load
/// it. Each backend module declares its own (`calibration::SPEC`, `python::vllm::SPEC`,
/// ...) with [`EngineSpec::new`]; the [`Registry`] only collects them.
pub struct EngineSpec {
    /// The `--engine` name.
    pub name: &'static str,
    /// One line for `harness engines`.
    pub description: &'static str,
    /// How it delivers tokens (who stamps them).
    pub kind: EngineKind,
    /// What `--model` must be (checked before anything loads).
    pub model: ModelInput,
    /// Python engines: the environment it runs in, `venvs/ENV` under the cache, made by
    /// `scripts/setup.sh ENV` (the default `--python-env`).
    pub python_env: Option<&'static str>,
    /// Whether it can run here, without loading it.
    pub availability: fn(&EngineConfig) -> Availability,
    pub load: fn(&EngineConfig) -> Result<Box<dyn Engine>, EngineError>,
}

impl EngineSpec {
    /// A spec from what every engine has; what only some have is added with the
    /// builder methods, so a new optional field edits no existing spec.
    pub const fn new(
        name: &'static str,
        description: &'static str,
        kind: EngineKind,
        model: ModelInput,
        availability: fn(&EngineConfig) -> Availability,
        load: fn(&EngineConfig) -> Result<Box<dyn Engine>, EngineError>,
    ) -> EngineSpec {
        EngineSpec {
            name,
            description,
            kind,
            model,
            python_env: None,
            availability,
            load,
        }
    }

    /// Runs in the Python env `env` (`venvs/ENV`, made by `scripts/setup.sh ENV`).
    pub const fn python_env(mut self, env: &'static str) -> EngineSpec {
        self.python_env = Some(env);
        self
    }
}

impl std::fmt::Debug for EngineSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Whether an engine can run on this machine, on what, and why not.
#[derive(Clone, Debug, PartialEq)]
pub struct Availability {
    /// What it runs on: `built in`, `python env /…/venvs/vllm`.
    pub runtime: String,
    /// The engine's version, where it can be read without loading the engine.
    pub version: Option<String>,
    /// Why it cannot run here, with the fix; `None` when it can.
    pub problem: Option<Unavailable>,
}

/// Why an engine cannot run here; each says the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// Not compiled into this build: `how` names the cargo feature and what it needs.
    #[error("{how}")]
    NotBuilt {
        feature: &'static str,
        how: &'static str,
    },
    /// Its Python environment is missing, broken, or lacks the engine's packages.
    #[error("{0}")]
    Env(String),
    /// It cannot be installed or run on this kind of machine.
    #[error("{0}")]
    Host(String),
}

impl Availability {
    pub fn usable(runtime: impl Into<String>, version: Option<String>) -> Availability {
        Availability {
            runtime: runtime.into(),
            version,
            problem: None,
        }
    }

    pub fn unusable(runtime: impl Into<String>, problem: Unavailable) -> Availability {
        Availability {
            runtime: runtime.into(),
            version: None,
            problem: Some(problem),
        }
    }

    pub fn is_usable(&self) -> bool {
        self.problem.is_none()
    }
}

/// Everything an engine needs to load, validated before any engine loads.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    pub model: Option<PathBuf>,
    /// `--engine-arg KEY=VALUE`, in order.
    pub engine_args: Vec<(String, String)>,
    /// `--python-env DIR` for embedded Python engines.
    pub python_env: Option<PathBuf>,
    /// The run's result directory, for logs an engine keeps beside `engine.log` (a
    /// managed server's `server.log`); `None` outside a run.
    pub log_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad user input found while loading (unknown engine arg, unusable model): exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The engine failed; `traceback` holds the engine's own stack (a Python traceback).
    #[error("{message}")]
    Failed {
        message: String,
        traceback: Option<String>,
    },
}

impl EngineError {
    pub fn failed(message: impl Into<String>) -> EngineError {
        EngineError::Failed {
            message: message.into(),
            traceback: None,
        }
    }

    /// The message with the engine's traceback, for the per-request error text.
    pub fn detail(&self) -> String {
        match self {
            EngineError::Failed {
                message,
                traceback: Some(tb),
            } => format!("{message}\n{tb}"),
            other => other.to_string(),
        }
    }
}

/// What a profiler window captured (`--profile`): the trace file, how many engine steps
/// it covered, and the operators that took the most self time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub trace_file: PathBuf,
    pub steps: u64,
    pub window_s: f64,
    /// How it was taken (`torch.profiler (CPU) around each adapter step`).
    pub method: String,
    /// Top operators, most self time first.
    pub ops: Vec<OpTime>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpTime {
    pub name: String,
    pub calls: u64,
    pub self_ms: f64,
}

impl Profile {
    /// The top-operators table: self time, calls and share of the window.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:>10} {:>8} {:>7}  operator ({} steps, {:.3} s window; {})\n",
            "self ms", "calls", "share", self.steps, self.window_s, self.method
        );
        for o in &self.ops {
            let share = if self.window_s > 0.0 {
                o.self_ms / 1e3 / self.window_s * 100.0
            } else {
                0.0
            };
            out.push_str(&format!(
                "{:>10.2} {:>8} {:>6.1}%  {}\n",
                o.self_ms, o.calls, share, o.name
            ));
        }
        out
    }
}

impl Measure for Profile {
    const NAME: &'static str = "profile";
    const DEFINITION: &'static str =
        "a profiler window over the first --profile-steps engine steps \
        of the measured phase (after warmup): the trace file (Chrome/Perfetto JSON), the steps and \
        seconds it covered, and the top operators by self time with their share of the window; \
        the point's figures include the profiler's own overhead for those steps";

    fn figures(&self) -> Vec<Figure> {
        let top = self.ops.first();
        vec![
            Figure::new("profile_steps", Some(self.steps as f64), ""),
            Figure::new("profile_window_s", Some(self.window_s), "s"),
            Figure::new(
                "profile_top_op_share_pct",
                top.filter(|_| self.window_s > 0.0)
                    .map(|o| o.self_ms / 1e3 / self.window_s * 100.0),
                "%",
            ),
        ]
    }

    fn warning(&self) -> Option<String> {
        Some(format!(
            "profiled: its first {} steps ran under the profiler (trace {})",
            self.steps,
            self.trace_file.display()
        ))
    }
}

/// An inference engine behind the harness. See the module docs for the contract.
pub trait Engine {
    fn info(&self) -> &EngineInfo;

    /// Queues a request. The driver stamps the submit time just before this call.
    fn submit(&mut self, req: &GenRequest) -> Result<(), EngineError>;

    /// Drives the engine once (one step for step engines) or drains stream arrivals,
    /// waiting at most `timeout` when nothing is ready; appends events to `out`.
    fn poll(&mut self, timeout: Duration, out: &mut Vec<TokenEvent>) -> Result<(), EngineError>;

    /// Requests submitted and not yet finished.
    fn in_flight(&self) -> usize;

    /// Stops a request (timeout, Ctrl-C). Its finish, if any, is not reported.
    fn abort(&mut self, id: RequestId) -> Result<(), EngineError>;

    /// Releases the engine and anything it started (threads, child processes).
    fn shutdown(&mut self) -> Result<(), EngineError>;

    /// Starts the engine's profiler, writing into `dir`, for the point `label`.
    /// `Ok(false)`: this engine has no profiler (the default).
    fn profile_start(&mut self, _dir: &std::path::Path, _label: &str) -> Result<bool, EngineError> {
        Ok(false)
    }

    /// Stops the profiler started by [`Engine::profile_start`].
    fn profile_stop(&mut self) -> Result<Option<Profile>, EngineError> {
        Ok(None)
    }

    /// Empties the engine's prefix cache, so the next point starts cold
    /// (`--fresh-cache`). `Ok(false)`: this engine cannot (the default).
    fn reset_prefix_cache(&mut self) -> Result<bool, EngineError> {
        Ok(false)
    }

    /// What the engine says about the step(s) the last `poll` ran (see [`StepStats`]),
    /// taken once; `None` where it keeps no per-step record (the default). Called by
    /// the driver after every poll with requests in flight, so it must be cheap: an
    /// engine collects the stats while it steps and hands them over here.
    fn take_step_stats(&mut self) -> Option<StepStats> {
        None
    }

    /// Teacher forcing, with nothing in flight: for each of `texts` (token ids), the
    /// log-probability the model gives each token after the tokens before it, and its
    /// top-1 token there ([`TextLogprobs`], `harness parity --logprobs`), from the
    /// engine's own API. `Ok(None)`: this engine cannot (the default).
    fn prompt_logprobs(
        &mut self,
        _texts: &[Vec<u32>],
    ) -> Result<Option<Vec<TextLogprobs>>, EngineError> {
        Ok(None)
    }

    /// The engine's own counters since the previous call (llama.cpp's perf data), or
    /// None when it keeps none. The driver calls it when a measured phase starts and
    /// when it ends, and records the second answer beside its own figures.
    fn take_counters(&mut self) -> Option<EngineCounters> {
        None
    }
}

/// An engine's own counters over a measured phase (see [`Engine::take_counters`]):
/// what the engine says it did, beside what the harness measured; never used to
/// compute the harness's metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineCounters {
    /// Where the figures come from and how the engine counts them.
    pub source: String,
    pub figures: Vec<EngineFigure>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineFigure {
    /// Flat key in summary.json and summary.csv (prefixed `engine_`).
    pub key: String,
    pub value: f64,
    pub unit: String,
}

impl Measure for EngineCounters {
    const NAME: &'static str = "engine_counters";
    const DEFINITION: &'static str = "the engine's own counters over the measured phase \
        (read when it starts and when it ends), reported as the engine counts them (its \
        `source` says how), beside and independent of the harness's stamps";

    fn figures(&self) -> Vec<Figure> {
        self.figures
            .iter()
            .map(|f| Figure::new(&f.key, Some(f.value), &f.unit))
            .collect()
    }
}
