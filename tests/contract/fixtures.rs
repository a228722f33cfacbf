//! How each registered engine runs here for the contract: its flags, how one request
//! is made to fail, how it is held to one request at a time, and what it needs on this
//! machine (models and envs from scripts/setup.sh, stand-ins built by the tests).
//!
//! Engines with a model fail a request the way a user meets it: a prompt longer than
//! the context the engine is given (`max_model_len`, `context_length`, `n_ctx`).
//! Engines without one use their fault injection, or a stand-in's.

use super::FAIL_ID;
use crate::common;
use llm_harness::engine::{EngineConfig, Registry, Unavailable};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::path::{Path, PathBuf};

/// Why an engine's contract does not run here.
pub enum Skip {
    /// Not compiled into this build (another build in scripts/test.sh runs it).
    NotBuilt(String),
    /// Something it needs is missing on this machine (fails under
    /// LLM_HARNESS_REQUIRE_ENGINES=1).
    Missing(String),
    /// The registry lists it, this file does not.
    NoFixture,
}

pub struct Setup {
    /// `harness run` flags after `--engine E`.
    pub args: Vec<String>,
    /// Flags that make one request in eight fail (alone).
    pub fail_args: Vec<String>,
    /// Which requests those flags make fail.
    pub fails: Fails,
    pub env: Vec<(String, String)>,
    /// How far an engine's own first stamp may precede the harness's submit: stamps it
    /// converts from another clock (SGLang's wall-clock ones) carry the conversion's
    /// error; 0 for stamps taken on CLOCK_MONOTONIC.
    pub stamp_slack_ns: u64,
    /// Longest an engine takes to load on 2 cores.
    pub load_timeout_s: u64,
    pub child: ChildConfig,
    /// What must live as long as the setup (temporary files, a stand-in server).
    _keep: Vec<Box<dyn Any>>,
}

/// Which requests a run's failure flags make fail.
#[derive(Copy, Clone, Debug)]
pub enum Fails {
    /// The request with this id (fault injection).
    Id(u64),
    /// Every request whose prompt is longer than this many tokens (the context the
    /// engine was given): one prompt in eight of the prompt file.
    LongerThan(u64),
}

impl Fails {
    pub fn fails(self, id: u64, input_len: u64) -> bool {
        match self {
            Fails::Id(f) => id == f,
            Fails::LongerThan(n) => input_len > n,
        }
    }
}

/// What the abort check's child process loads and sends.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChildConfig {
    pub model: Option<PathBuf>,
    pub engine_args: Vec<(String, String)>,
    pub python_env: Option<PathBuf>,
    /// Engine args holding it to one request at a time; empty where it cannot be.
    pub one_slot: Vec<(String, String)>,
    /// A prompt, as token ids of the engine's vocabulary.
    pub prompt: Vec<u32>,
    /// The aborted request's output_len: long enough to be aborted mid-way.
    pub long_output_len: u32,
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn engine_arg_flags(args: &[(String, String)]) -> Vec<String> {
    args.iter()
        .flat_map(|(k, v)| ["--engine-arg".to_string(), format!("{k}={v}")])
        .collect()
}

fn path_flag(flag: &str, p: &Path) -> Vec<String> {
    vec![flag.to_string(), p.display().to_string()]
}

/// The context a model engine is given, in tokens.
const CONTEXT: u64 = 256;

/// Eight prompts, one per line, seven short and one of a thousand words, far past a
/// 256-token context. The workload shuffles them and repeats the order: each eight
/// requests hold one that fails.
fn prompt_file(dir: &Path) -> PathBuf {
    let p = dir.join("prompts.txt");
    let lines: Vec<String> = (0..8u64)
        .map(|i| {
            if i == FAIL_ID {
                "a very long prompt ".repeat(250)
            } else {
                format!("Question {i}: what is the capital of France, and why?")
            }
        })
        .collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// `path` or a skip saying which setup makes it.
fn need(path: PathBuf, setup: &str) -> Result<PathBuf, Skip> {
    if path.exists() {
        Ok(path)
    } else {
        Err(Skip::Missing(format!(
            "{} missing: run {setup}",
            path.display()
        )))
    }
}

fn tokenize(model: &Path, text: &str) -> Vec<u32> {
    llm_harness::workload::Tokenizer::from_file(&model.join("tokenizer.json"))
        .unwrap()
        .encode(text)
        .unwrap()
}

/// A model engine: its model, a context of [`CONTEXT`] tokens set with `context`, the
/// prompt file one line of which does not fit it, and `one_slot`.
fn with_model(
    model: PathBuf,
    context: &[(&str, &str)],
    one_slot: &[(&str, &str)],
    load_timeout_s: u64,
) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = prompt_file(tmp.path());
    let engine_args = kv(context);
    let mut args = path_flag("--model", &model);
    args.extend(engine_arg_flags(&engine_args));
    let mut fail_args = vec!["--dataset".to_string(), "prompts".to_string()];
    fail_args.extend(path_flag("--dataset-path", &prompts));
    let prompt = tokenize(&model, "The capital of France is");
    Setup {
        args,
        fail_args,
        fails: Fails::LongerThan(CONTEXT),
        env: Vec::new(),
        stamp_slack_ns: 0,
        load_timeout_s,
        child: ChildConfig {
            model: Some(model),
            engine_args,
            one_slot: kv(one_slot),
            prompt,
            long_output_len: 200,
            ..Default::default()
        },
        _keep: vec![Box::new(tmp)],
    }
}

/// A model-free engine: its own engine args, those that fail request FAIL_ID.
fn without_model(
    engine_args: &[(&str, &str)],
    fail: &[(&str, &str)],
    one_slot: &[(&str, &str)],
) -> Setup {
    let engine_args = kv(engine_args);
    Setup {
        args: engine_arg_flags(&engine_args),
        fail_args: engine_arg_flags(&kv(fail)),
        fails: Fails::Id(FAIL_ID),
        env: Vec::new(),
        stamp_slack_ns: 0,
        load_timeout_s: 60,
        child: ChildConfig {
            engine_args,
            one_slot: kv(one_slot),
            prompt: (100..116).collect(),
            long_output_len: 2000,
            ..Default::default()
        },
        _keep: Vec::new(),
    }
}

/// Whether `engine`'s fixture loads a real engine and model (minutes on 2 cores).
pub fn real_engine(engine: &str) -> bool {
    matches!(
        engine,
        "vllm" | "vllm-server" | "hf" | "sglang" | "llamacpp"
    )
}

/// The fixture of `engine`, after checking it can run here.
pub fn setup(engine: &str) -> Result<Setup, Skip> {
    let fail = FAIL_ID.to_string();
    let cache = common::cache();
    let tiny = || need(cache.join("models/tiny-gemma3"), "scripts/setup.sh");
    let vllm_env = || need(cache.join("venvs/vllm"), "scripts/setup.sh");
    let setup = match engine {
        "calibration" => without_model(
            &[("prefill_ms", "5"), ("decode_ms", "5")],
            &[("fail_request", &fail)],
            &[("max_batch", "1")],
        ),
        "python-test" => without_model(
            &[
                ("mode", "stream"),
                ("step_ms", "5"),
                ("spawn_child", "true"),
            ],
            &[("fail_request", &fail)],
            &[],
        ),
        "vllm" => {
            vllm_env()?;
            with_model(
                tiny()?,
                &[("max_model_len", "256")],
                &[("max_num_seqs", "1")],
                300,
            )
        }
        "vllm-server" => {
            vllm_env()?;
            with_model(
                tiny()?,
                &[("max_model_len", "256")],
                &[("max_num_seqs", "1")],
                400,
            )
        }
        "hf" => {
            vllm_env()?;
            with_model(
                tiny()?,
                &[("max_model_len", "256")],
                &[("max_batch", "1")],
                300,
            )
        }
        "sglang" => {
            need(cache.join("venvs/sglang"), "scripts/setup.sh sglang")?;
            let mut s = with_model(
                tiny()?,
                &[("context_length", "256")],
                &[("max_running_requests", "1")],
                600,
            );
            // SGLang's queued/finished stamps are wall clock converted back to
            // CLOCK_MONOTONIC with its own offset, read at a slightly different moment.
            s.stamp_slack_ns = 1_000_000;
            s
        }
        "llamacpp" => {
            let dir = need(cache.join("models/gemma-3-270m-gguf"), "scripts/setup.sh")?;
            // 512 cells over 2 slots: 256 tokens a request.
            with_model(
                dir,
                &[("n_ctx", "512"), ("n_parallel", "2")],
                &[("n_parallel", "1")],
                120,
            )
        }
        "openai" => openai_standin(),
        "trtllm" => trtllm_standin(),
        "trtllm-py" => trtllm_py_standin(),
        _ => return Err(Skip::NoFixture),
    };
    let spec = Registry::builtin().find(engine).ok_or(Skip::NoFixture)?;
    let config = EngineConfig {
        model: setup.child.model.clone(),
        engine_args: setup.child.engine_args.clone(),
        python_env: setup.child.python_env.clone(),
        log_dir: None,
    };
    match (spec.availability)(&config).problem {
        None => Ok(setup),
        Some(p @ Unavailable::NotBuilt { .. }) => Err(Skip::NotBuilt(p.to_string())),
        Some(p) => Err(Skip::Missing(p.to_string())),
    }
}

/// An OpenAI-compatible server on loopback: every completion streams its max_tokens
/// one token a chunk, 20 ms apart, with exact per-chunk usage; request FAIL_ID gets a
/// 500.
fn openai_standin() -> Setup {
    use common::sse;
    let port = sse::serve(|req, w| {
        if let Some(served) = sse::discovery(req, w) {
            return served;
        }
        if req.harness_id() == Some(FAIL_ID) {
            sse::json_reply(
                w,
                "500 Internal Server Error",
                r#"{"error":{"message":"injected failure"}}"#,
            )?;
            return Ok(true);
        }
        let body = req.json();
        let n = body["max_tokens"]
            .as_u64()
            .or_else(|| body["max_completion_tokens"].as_u64())
            .unwrap_or(1);
        // The client going away (an abort) ends the stream early.
        Ok(sse::stream_tokens(w, n, 1, std::time::Duration::from_millis(20)).is_ok())
    });
    let mut s = without_model(&[], &[], &[]);
    let url = format!("http://127.0.0.1:{port}/v1");
    s.args = vec!["--engine-arg".into(), format!("base_url={url}")];
    s.child.engine_args = kv(&[("base_url", &url)]);
    s.child.long_output_len = 500;
    s
}

/// TensorRT-LLM's C++ Executor on the test stand-in (a `--features trtllm-standin`
/// build): an engine directory whose standin.cfg fails request FAIL_ID.
fn trtllm_standin() -> Setup {
    let dir = common::trtllm_standin_engine_dir(&format!(
        "prefill_ms=5\ndecode_ms=5\nerror_client={FAIL_ID}\n"
    ));
    let mut s = without_model(&[], &[], &[("max_batch_size", "1")]);
    s.args = path_flag("--model", dir.path());
    s.child.model = Some(dir.path().to_path_buf());
    s._keep.push(Box::new(dir));
    s
}

/// TensorRT-LLM's LLM API on its Python stand-in (tests/trtllm_py_standin), in a venv
/// of this interpreter whose only package is the stand-in; it fails the FAIL_ID+1-th
/// request it receives (counting from 1), after its first update.
fn trtllm_py_standin() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (venv, model) = common::trtllm_py_standin_env(tmp.path());
    let nth = (FAIL_ID + 1).to_string();
    let engine_args = kv(&[("standin_step_ms", "5")]);
    let mut args = path_flag("--model", &model);
    args.extend(path_flag("--python-env", &venv));
    args.extend(engine_arg_flags(&engine_args));
    // Its word-level vocabulary has six words: short synthetic prompts.
    args.extend(["--input-len".to_string(), "8".to_string()]);
    Setup {
        args,
        fail_args: engine_arg_flags(&kv(&[("standin_fail_request", &nth)])),
        fails: Fails::Id(FAIL_ID),
        env: Vec::new(),
        stamp_slack_ns: 0,
        load_timeout_s: 60,
        child: ChildConfig {
            model: Some(model),
            engine_args,
            python_env: Some(venv),
            one_slot: Vec::new(),
            prompt: vec![1, 2, 3, 4, 5],
            long_output_len: 2000,
        },
        _keep: vec![Box::new(tmp)],
    }
}
