//! TensorRT-LLM through its C++ Executor (`tensorrt_llm::executor`), in this process,
//! over the cxx bridge in `trtllm/ffi.rs` and the shim in `ffi/trtllm/`.
//!
//! This module owns the `trtllm` engine: its spec (registered in every build; without
//! the `trtllm` feature it says how to build it), the engine-directory check, the typed
//! `--engine-arg`s ([`options`]) and, with the feature, `TrtllmEngine`.
//!
//! The C++ Executor exists in TensorRT-LLM up to release 1.2.x; upstream removed it
//! (with its `gptManagerBenchmark`) afterwards, in PR #16369. The last stable release
//! that has it is 1.2.1.
//!
//! # Threads
//! TensorRT-LLM's Executor is built for one thread that enqueues and another that
//! awaits (upstream's own C++ benchmark and Python worker use it so). The engine keeps
//! the Executor; a dedicated thread blocks in `awaitResponses` and stamps each batch of
//! responses with CLOCK_MONOTONIC the moment the call returns, so tokens are timed
//! when they arrive, not when the driver next polls (a stream engine). Submits and
//! cancels run on the driver's thread, straight into the Executor: routing them through
//! the awaiting thread would hold every enqueue until the current await returns, and
//! the harness would measure that wait as time to first token.
//!
//! Each request asks for streaming and for TensorRT-LLM's `RequestPerfMetrics`; their
//! time points (arrival, first scheduled, first token, last token: steady_clock, which
//! is CLOCK_MONOTONIC on Linux) are recorded beside the harness's stamps as
//! [`EngineStamps`](super::EngineStamps), never used for the harness's metrics.
//!
//! Each `take_step_stats` drains the Executor's iteration stats
//! (`getLatestIterationStats`) into the step record (`trtllm/iteration.rs`).

#[cfg(feature = "trtllm")]
mod ffi;
#[cfg(any(feature = "trtllm", test))]
mod iteration;
pub mod options;

use super::{Availability, EngineKind, EngineSpec};
use std::path::Path;

pub use options::{Options, SchedulerPolicy};

/// Why `--engine trtllm` cannot run in a build without the feature, and the fix.
pub const NOT_BUILT: &str = "built without the trtllm feature; cargo build --release \
    --features trtllm with TRTLLM_ROOT=DIR (TensorRT-LLM 1.2.x C++ libraries and headers) \
    and CUDA_HOME=DIR (see README, TensorRT-LLM); the C++ Executor exists up to \
    TensorRT-LLM 1.2.x (removed upstream after, PR #16369), last stable release with it: 1.2.1";

/// What the test stand-in's `tensorrt_llm::executor::version()` starts with
/// (tests/trtllm_standin). A build linked against it labels every run as an instrument
/// and its device as the stand-in, so its figures can never pass for TensorRT-LLM's.
pub const STANDIN_VERSION_MARK: &str = "llm-harness stand-in";

pub static SPEC: EngineSpec = EngineSpec::new(
    // The engine directory is checked here, at load: it is not a checkpoint directory
    // (config.json and rank*.engine, no weights files), so the generic check does not fit.
    "trtllm",
    "TensorRT-LLM C++ Executor (releases up to 1.2.x) through cxx; --model ENGINE_DIR",
    EngineKind::Stream,
    super::ModelInput::CheckedAtLoad,
    availability,
    load,
);

#[cfg(not(feature = "trtllm"))]
fn availability(_: &super::EngineConfig) -> Availability {
    Availability::unusable(
        "not built in",
        super::Unavailable::NotBuilt {
            feature: "trtllm",
            how: NOT_BUILT,
        },
    )
}

#[cfg(not(feature = "trtllm"))]
fn load(c: &super::EngineConfig) -> Result<Box<dyn super::Engine>, super::EngineError> {
    // Typos in --engine-arg are reported even here, so a fixed command line only fails
    // for the build.
    Options::from_args(&c.engine_args)?;
    Err(super::EngineError::Usage(format!(
        "--engine trtllm: this harness was {NOT_BUILT}"
    )))
}

#[cfg(feature = "trtllm")]
fn availability(_: &super::EngineConfig) -> Availability {
    Availability::usable(
        format!(
            "C++ Executor linked from {}",
            env!("HARNESS_TRTLLM_LIB_DIRS")
        ),
        Some(ffi::bridge::trtllm_version()),
    )
}

#[cfg(feature = "trtllm")]
fn load(c: &super::EngineConfig) -> Result<Box<dyn super::Engine>, super::EngineError> {
    Ok(Box::new(TrtllmEngine::load(c)?))
}

/// What `--model` must hold for `--engine trtllm`.
const ENGINE_DIR_HELP: &str =
    "pass a TensorRT-LLM engine directory (config.json and rank0.engine, from trtllm-build; see README)";

/// A TensorRT-LLM engine directory, checked: `config.json` (as `trtllm-build` writes it)
/// and one `rank*.engine` per rank, for one rank.
#[derive(Clone, Debug)]
pub struct EngineDir {
    /// What the run metadata shows of config.json.
    pub summary: serde_json::Value,
    pub dtype: Option<String>,
    pub vocab_size: Option<u32>,
}

impl EngineDir {
    pub fn open(dir: &Path) -> Result<EngineDir, String> {
        let shown = dir.display();
        if !dir.is_dir() {
            return Err(format!(
                "--model {shown}: no such directory; {ENGINE_DIR_HELP}"
            ));
        }
        let config = dir.join("config.json");
        let text = std::fs::read_to_string(&config).map_err(|e| {
            format!("--model {shown}: cannot read config.json ({e}); {ENGINE_DIR_HELP}")
        })?;
        let engines = std::fs::read_dir(dir)
            .map_err(|e| format!("--model {shown}: {e}"))?
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("rank") && n.ends_with(".engine")
            })
            .count();
        if engines == 0 {
            return Err(format!(
                "--model {shown}: no rank0.engine, so not an engine directory (a Hugging Face \
                 checkpoint must be built with trtllm-build first); {ENGINE_DIR_HELP}"
            ));
        }
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            format!("--model {shown}: config.json is not JSON ({e}); {ENGINE_DIR_HELP}")
        })?;
        let pretrained = &json["pretrained_config"];
        let build = &json["build_config"];
        let world = pretrained["mapping"]["world_size"].as_u64().unwrap_or(1);
        if world != 1 {
            return Err(format!(
                "--model {shown}: an engine for {world} GPUs (mapping.world_size); the harness drives \
                 one-rank engines in its own process: build with --tp_size 1 --pp_size 1"
            ));
        }
        let dtype = pretrained["dtype"].as_str().map(str::to_string);
        let vocab_size = pretrained["vocab_size"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok());
        let summary = serde_json::json!({
            "engine_dir": dir.display().to_string(),
            "version": json["version"],
            "architecture": pretrained["architecture"],
            "dtype": pretrained["dtype"],
            "vocab_size": pretrained["vocab_size"],
            "max_batch_size": build["max_batch_size"],
            "max_input_len": build["max_input_len"],
            "max_seq_len": build["max_seq_len"],
            "max_num_tokens": build["max_num_tokens"],
        });
        Ok(EngineDir {
            summary,
            dtype,
            vocab_size,
        })
    }
}

#[cfg(feature = "trtllm")]
pub use engine::TrtllmEngine;

#[cfg(feature = "trtllm")]
mod engine {
    use super::ffi::{self, bridge};
    use super::iteration::{self, Problem};
    use super::{EngineDir, Options, ENGINE_DIR_HELP, STANDIN_VERSION_MARK};
    use crate::core::clock::{self, MonoNs};
    use crate::core::request::RequestId;
    use crate::engine::{
        Engine, EngineConfig, EngineError, EngineInfo, EngineKind, Finish, GenRequest,
        SchedulerFacts, StepStats, TokenEvent,
    };
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// How long one `awaitResponses` may block: the awaiting thread notices shutdown
    /// within this. Responses end the wait at once, so it does not delay tokens.
    const AWAIT_MS: u32 = 20;

    type SharedExecutor = Arc<cxx::UniquePtr<bridge::Executor>>;

    /// What the awaiting thread hands the engine.
    enum Arrival {
        /// One `awaitResponses` batch, stamped when the call returned.
        Responses {
            at: MonoNs,
            records: Vec<bridge::ResponseRecord>,
        },
        /// `awaitResponses` threw; the thread has ended.
        Failed(String),
    }

    /// A request in flight, by the Executor's id.
    struct InFlight {
        id: RequestId,
        /// Collected when the request asked for its token ids.
        token_ids: Option<Vec<u32>>,
    }

    pub struct TrtllmEngine {
        info: EngineInfo,
        options: Options,
        vocab_size: Option<u32>,
        exec: SharedExecutor,
        arrivals: Receiver<Arrival>,
        awaiter: Option<JoinHandle<()>>,
        stop: Arc<AtomicBool>,
        by_executor_id: HashMap<u64, InFlight>,
        executor_id: HashMap<RequestId, u64>,
        /// The Executor's iteration stats, read into step stats at each take.
        iterations: iteration::Reader,
        /// Whether engine.log already says why some iteration stats were left out
        /// (once: the reason repeats on every take).
        iterations_warned: bool,
        shut_down: bool,
    }

    fn failed(what: &str, e: &cxx::Exception) -> EngineError {
        EngineError::failed(format!("TensorRT-LLM {what}: {}", e.what()))
    }

    impl TrtllmEngine {
        pub fn load(config: &EngineConfig) -> Result<TrtllmEngine, EngineError> {
            let options = Options::from_args(&config.engine_args)?;
            let dir = config.model.as_deref().ok_or_else(|| {
                EngineError::Usage(format!(
                    "--model is required for --engine trtllm; {ENGINE_DIR_HELP}"
                ))
            })?;
            let engine_dir = EngineDir::open(dir).map_err(EngineError::Usage)?;
            let path = dir.to_str().ok_or_else(|| {
                EngineError::Usage(format!(
                    "--model {}: the path is not UTF-8; move the engine directory",
                    dir.display()
                ))
            })?;
            let settings = bridge::ExecutorSettings::from(&options);
            let exec = bridge::create_executor(path, &settings)
                .map_err(|e| failed(&format!("Executor({})", dir.display()), &e))?;
            if exec.is_null() {
                return Err(EngineError::failed(
                    "TensorRT-LLM: the shim returned no Executor",
                ));
            }
            let version = bridge::trtllm_version();
            let standin = version.starts_with(STANDIN_VERSION_MARK);
            let exec: SharedExecutor = Arc::new(exec);
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, arrivals) = mpsc::channel();
            let awaiter = {
                let (exec, stop) = (exec.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("trtllm-await".into())
                    .spawn(move || await_loop(&exec, &stop, &tx))
                    .map_err(|e| {
                        EngineError::failed(format!("cannot start the awaiting thread: {e}"))
                    })?
            };
            let metadata = serde_json::json!({
                "engine": engine_dir.summary,
                "executor": options.to_json(),
                "requests": {
                    "streaming": true,
                    "return_perf_metrics": true,
                    "greedy": "top_k 1 when --temperature is 0",
                    "ignore_eos": "end_id -1 and min_tokens = max tokens",
                },
            });
            let mut notes = Vec::new();
            if standin {
                notes.push(
                    "linked against the llm-harness test stand-in of tensorrt_llm::executor \
                     (tests/trtllm_standin), not TensorRT-LLM: its figures measure the harness"
                        .to_string(),
                );
            }
            if options.end_id.is_none() {
                notes.push(
                    "no --engine-arg end_id=ID: only the token budget ends a request (the \
                     Executor has no tokenizer to find EOS)"
                        .to_string(),
                );
            }
            let max_running = options.max_batch_size.or_else(|| {
                engine_dir.summary["max_batch_size"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
            });
            Ok(TrtllmEngine {
                info: EngineInfo {
                    name: "trtllm".into(),
                    version,
                    model: dir.display().to_string(),
                    dtype: engine_dir.dtype.clone().unwrap_or_else(|| "-".into()),
                    device: if standin { "host (stand-in)" } else { "cuda" }.into(),
                    kind: EngineKind::Stream,
                    instrument: standin,
                    notes,
                    scheduler: Some(SchedulerFacts {
                        max_running,
                        prefix_caching: Some(options.enable_block_reuse),
                        chunked_prefill: Some(options.enable_chunked_context),
                        step_stats_source: Some(iteration::SOURCE.into()),
                        ..Default::default()
                    }),
                    metadata,
                    ..Default::default()
                },
                options,
                vocab_size: engine_dir.vocab_size,
                exec,
                arrivals,
                awaiter: Some(awaiter),
                stop,
                by_executor_id: HashMap::new(),
                executor_id: HashMap::new(),
                iterations: iteration::Reader::default(),
                iterations_warned: false,
                shut_down: false,
            })
        }

        /// The Executor's iteration stats since the last call, one JSON text each.
        pub fn iteration_stats(&self) -> Result<Vec<String>, EngineError> {
            self.exec
                .latest_iteration_stats()
                .map_err(|e| failed("getLatestIterationStats", &e))
        }

        /// Says once, in engine.log, why iteration stats were left out of the steps.
        fn warn_iterations(&mut self, problems: &[String]) {
            if std::mem::replace(&mut self.iterations_warned, true) {
                return;
            }
            for p in problems {
                eprintln!(
                    "[llm-harness] TensorRT-LLM iteration stats: {p} (steps.jsonl lacks them)"
                );
            }
        }

        /// Turns one arrival into token events for the requests still in flight.
        fn take(&mut self, arrival: Arrival, out: &mut Vec<TokenEvent>) -> Result<(), EngineError> {
            let (at, records) = match arrival {
                Arrival::Responses { at, records } => (at, records),
                Arrival::Failed(msg) => {
                    return Err(EngineError::failed(format!(
                        "TensorRT-LLM awaitResponses: {msg}"
                    )))
                }
            };
            for r in &records {
                // Unknown: a response to a request the harness aborted.
                let Some(req) = self.by_executor_id.get_mut(&r.request_id) else {
                    continue;
                };
                if let Some(ids) = &mut req.token_ids {
                    ids.extend(r.tokens.iter().map(|&t| t.max(0) as u32));
                }
                let finish = ffi::finish_of(r).map(|(reason, error)| {
                    let mut f = Finish::new(reason);
                    f.error = error;
                    f.engine = r.has_perf.then(|| (&r.perf).into());
                    f.token_ids = req.token_ids.take();
                    Box::new(f)
                });
                let id = req.id;
                if finish.is_some() {
                    self.by_executor_id.remove(&r.request_id);
                    self.executor_id.remove(&id);
                }
                out.push(TokenEvent {
                    request: id,
                    new_tokens: r.tokens.len() as u32,
                    at: Some(at),
                    finish,
                });
            }
            Ok(())
        }
    }

    /// The awaiting thread: blocks in `awaitResponses` and stamps what it returns.
    fn await_loop(exec: &SharedExecutor, stop: &AtomicBool, tx: &Sender<Arrival>) {
        while !stop.load(Ordering::Acquire) {
            let got = exec.await_responses(AWAIT_MS);
            let at = clock::now();
            let arrival = match got {
                Ok(records) if records.is_empty() => continue,
                Ok(records) => Arrival::Responses { at, records },
                Err(e) => Arrival::Failed(e.what().to_string()),
            };
            let ended = matches!(arrival, Arrival::Failed(_));
            if tx.send(arrival).is_err() || ended {
                return;
            }
        }
    }

    impl Engine for TrtllmEngine {
        fn info(&self) -> &EngineInfo {
            &self.info
        }

        fn submit(&mut self, req: &GenRequest) -> Result<(), EngineError> {
            let limit = self.vocab_size.unwrap_or(i32::MAX as u32);
            let tokens: Vec<i32> = req
                .prompt
                .iter()
                .map(|&t| i32::try_from(t).ok().filter(|&t| (t as u32) < limit))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    EngineError::failed(format!(
                        "request {}: a prompt token id is outside the engine's vocabulary \
                         ({limit} ids); pass --tokenizer with the model's tokenizer.json",
                        req.id
                    ))
                })?;
            let params = ffi::request_params(req, &self.options);
            let executor_id = self
                .exec
                .enqueue(&tokens, &params)
                .map_err(|e| failed("enqueueRequest", &e))?;
            self.by_executor_id.insert(
                executor_id,
                InFlight {
                    id: req.id,
                    token_ids: req.return_token_ids.then(Vec::new),
                },
            );
            self.executor_id.insert(req.id, executor_id);
            Ok(())
        }

        fn poll(
            &mut self,
            timeout: Duration,
            out: &mut Vec<TokenEvent>,
        ) -> Result<(), EngineError> {
            let first = match self.arrivals.recv_timeout(timeout) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(EngineError::failed(
                        "TensorRT-LLM: the thread awaiting responses has ended",
                    ))
                }
            };
            self.take(first, out)?;
            while let Ok(a) = self.arrivals.try_recv() {
                self.take(a, out)?;
            }
            Ok(())
        }

        fn take_step_stats(&mut self) -> Option<StepStats> {
            // Read here, not in `poll`: the driver takes stats only after polls that
            // brought events, and the Executor keeps what is new until then.
            let texts = match self.iteration_stats() {
                Ok(texts) => texts,
                Err(e) => {
                    self.warn_iterations(&[e.to_string()]);
                    return None;
                }
            };
            let mut held = None;
            let problems = self.iterations.fold(&texts, &mut held);
            if !problems.is_empty() {
                let said: Vec<String> = problems.iter().map(Problem::to_string).collect();
                self.warn_iterations(&said);
            }
            held
        }

        fn in_flight(&self) -> usize {
            self.by_executor_id.len()
        }

        fn abort(&mut self, id: RequestId) -> Result<(), EngineError> {
            let Some(executor_id) = self.executor_id.remove(&id) else {
                return Ok(());
            };
            self.by_executor_id.remove(&executor_id);
            self.exec
                .cancel(executor_id)
                .map_err(|e| failed("cancelRequest", &e))
        }

        fn shutdown(&mut self) -> Result<(), EngineError> {
            if std::mem::replace(&mut self.shut_down, true) {
                return Ok(());
            }
            // Cancelled first, so the Executor's shutdown does not wait for them.
            for &executor_id in self.by_executor_id.keys() {
                let _ = self.exec.cancel(executor_id);
            }
            self.by_executor_id.clear();
            self.executor_id.clear();
            self.stop.store(true, Ordering::Release);
            if let Some(h) = self.awaiter.take() {
                let _ = h.join();
            }
            // What no step record took of the engine's per-iteration view goes to its
            // log (engine.log).
            if let Ok(stats) = self.iteration_stats() {
                for s in stats {
                    eprintln!("[trtllm iteration stats] {s}");
                }
            }
            self.exec.shutdown().map_err(|e| failed("shutdown", &e))
        }
    }

    impl Drop for TrtllmEngine {
        fn drop(&mut self) {
            let _ = self.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine_dir(config: &str, engine: bool) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), config).unwrap();
        if engine {
            std::fs::write(d.path().join("rank0.engine"), "").unwrap();
        }
        d
    }

    #[test]
    fn an_engine_dir_has_config_and_rank_engines() {
        let d = tempfile::tempdir().unwrap();
        let e = EngineDir::open(&d.path().join("x")).unwrap_err();
        assert!(
            e.contains("no such directory") && e.contains("trtllm-build"),
            "{e}"
        );
        let e = EngineDir::open(d.path()).unwrap_err();
        assert!(e.contains("cannot read config.json"), "{e}");
        // A Hugging Face checkpoint: config.json and weights, no engine.
        let hf = engine_dir("{}", false);
        std::fs::write(hf.path().join("model.safetensors"), "").unwrap();
        let e = EngineDir::open(hf.path()).unwrap_err();
        assert!(
            e.contains("no rank0.engine") && e.contains("built with trtllm-build"),
            "{e}"
        );
        let e = EngineDir::open(engine_dir("not json", true).path()).unwrap_err();
        assert!(e.contains("config.json is not JSON"), "{e}");
        let e = EngineDir::open(
            engine_dir(
                r#"{"pretrained_config": {"mapping": {"world_size": 2}}}"#,
                true,
            )
            .path(),
        )
        .unwrap_err();
        assert!(e.contains("an engine for 2 GPUs"), "{e}");
    }

    #[test]
    fn the_engine_config_is_summarized() {
        let d = engine_dir(
            r#"{"version": "1.2.1", "pretrained_config": {"architecture": "LlamaForCausalLM",
                "dtype": "float16", "vocab_size": 32000, "mapping": {"world_size": 1}},
                "build_config": {"max_batch_size": 64, "max_input_len": 1024,
                "max_seq_len": 2048, "max_num_tokens": 8192}}"#,
            true,
        );
        let e = EngineDir::open(d.path()).unwrap();
        assert_eq!(e.dtype.as_deref(), Some("float16"));
        assert_eq!(e.vocab_size, Some(32000));
        assert_eq!(e.summary["architecture"], "LlamaForCausalLM");
        assert_eq!(e.summary["max_batch_size"], 64);
        assert_eq!(e.summary["version"], "1.2.1");
    }

    #[cfg(not(feature = "trtllm"))]
    #[test]
    fn without_the_feature_it_says_how_to_build() {
        let a = (SPEC.availability)(&Default::default());
        assert!(!a.is_usable());
        let p = a.problem.unwrap();
        assert!(matches!(
            p,
            crate::engine::Unavailable::NotBuilt {
                feature: "trtllm",
                ..
            }
        ));
        // The wording is the point: it says how to build it.
        let p = p.to_string();
        assert!(
            p.contains("--features trtllm") && p.contains("TRTLLM_ROOT"),
            "{p}"
        );
        assert!(p.contains("1.2.1"), "{p}");
        let Err(crate::engine::EngineError::Usage(m)) = (SPEC.load)(&Default::default()) else {
            panic!("expected a usage error");
        };
        assert!(m.starts_with("--engine trtllm: this harness was built without the trtllm feature"));
        assert!(!m.contains('\n'));
        // A typo is still named as one.
        let c = crate::engine::EngineConfig {
            engine_args: vec![("max_batch".into(), "8".into())],
            ..Default::default()
        };
        let Err(crate::engine::EngineError::Usage(m)) = (SPEC.load)(&c) else {
            panic!("expected a usage error");
        };
        assert!(m.contains("did you mean 'max_batch_size'"), "{m}");
    }
}
