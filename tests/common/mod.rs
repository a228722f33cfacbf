//! Helpers shared by the test files: the cache, the harness command and its exit,
//! results files, and the process-tree check.

#![allow(dead_code)] // each test file uses its own subset

pub mod sse;

use serde_json::Value;
use std::path::{Path, PathBuf};

pub fn cache() -> PathBuf {
    std::env::var_os("LLM_HARNESS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/llm-harness"))
}

/// LLM_HARNESS_REQUIRE_ENGINES=1 (scripts/test.sh sets it): an engine test that
/// cannot run fails instead of skipping, so CI never skips silently.
pub fn require_engines() -> bool {
    std::env::var("LLM_HARNESS_REQUIRE_ENGINES").is_ok_and(|v| v == "1")
}

/// `path` when it exists, else None after printing why (or a panic under
/// [`require_engines`]).
pub fn need(path: PathBuf, setup: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let why = format!("{} missing: run {setup}", path.display());
    if require_engines() {
        panic!("{why} (LLM_HARNESS_REQUIRE_ENGINES=1)");
    }
    eprintln!("skipped: {why}");
    None
}

/// Real engines load one at a time: two on 2 cores would distort each other's timing.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The harness binary, without colour, so tests read plain text.
pub fn harness() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("harness").unwrap();
    c.env("NO_COLOR", "1");
    c
}

/// Runs `cmd`, asserts it succeeded, and returns what it wrote to stdout.
#[track_caller]
pub fn succeeds(cmd: &mut assert_cmd::Command) -> String {
    let o = cmd.assert().success().get_output().clone();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `cmd`, asserts its exit code, and returns what it wrote to stderr.
#[track_caller]
pub fn fails(cmd: &mut assert_cmd::Command, code: i32) -> String {
    let o = cmd.assert().code(code).get_output().clone();
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What a command printed, stdout then stderr, as one text (what a terminal shows).
pub fn terminal(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

pub fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// The lines of a JSON-lines file of a result directory.
pub fn jsonl(dir: &Path, file: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn records(dir: &Path) -> Vec<Value> {
    jsonl(dir, "requests.jsonl")
}

/// The step records (`steps.jsonl`).
pub fn steps(dir: &Path) -> Vec<Value> {
    jsonl(dir, "steps.jsonl")
}

/// The `Error: ...` line a failed harness run printed (empty when there is none).
pub fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("Error:"))
        .unwrap_or_default()
}

/// Driver options of the known-answer runs: `num` requests after `warmup`, greedy,
/// ignoring EOS, seeded.
/// Each request's TTFT (first token - submit) in ms, sorted: the waves of a batch.
pub fn sorted_ttfts_ms(records: &[llm_harness::trace::RequestTrace]) -> Vec<f64> {
    let mut t: Vec<f64> = records.iter().map(|r| r.token_ns[0] as f64 / 1e6).collect();
    t.sort_by(f64::total_cmp);
    t
}

/// A measured figure against the schedule's truth: within 1 (ms, tokens/s) + 2 %.
#[track_caller]
pub fn close(what: &str, measured: Option<f64>, truth: f64) {
    let m = measured.unwrap_or(f64::NAN);
    let tol = 1.0 + 0.02 * truth;
    assert!(
        (m - truth).abs() <= tol,
        "{what}: measured {m:.3}, truth {truth:.3} (tolerance ±{tol:.3})"
    );
}

pub fn driver_opts(num: usize, warmup: usize) -> llm_harness::driver::DriverOptions {
    llm_harness::driver::DriverOptions {
        warmup,
        request_timeout: std::time::Duration::from_secs(5),
        seed: 7,
        ..llm_harness::driver::DriverOptions::requests(num)
    }
}

pub fn output_tokens(r: &Value) -> u64 {
    match r["token_counts"].as_array() {
        Some(c) => c.iter().map(|n| n.as_u64().unwrap()).sum(),
        None => r["token_ns"].as_array().unwrap().len() as u64,
    }
}

/// Tags a harness command's process tree: every process it starts inherits this
/// environment variable, so [`tagged`] finds them all, whoever their parent is now.
pub const TAG_VAR: &str = "LLM_HARNESS_TEST_TAG";

pub fn new_tag(what: &str) -> String {
    format!(
        "{what}-{}-{:?}",
        std::process::id(),
        std::time::Instant::now()
    )
}

/// Processes (pid, state, name) whose environment holds `TAG_VAR=tag`. A zombie's
/// environment cannot be read, so zombies are not listed: once the harness has exited
/// its own zombies are gone with it, and what this finds is what outlived it.
pub fn tagged(tag: &str) -> Vec<(i32, char, String)> {
    let needle = format!("{TAG_VAR}={tag}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next())
            .unwrap_or('?');
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        out.push((pid, state, name));
    }
    out
}

/// Asserts that nothing the tagged command started outlived it.
/// A process that is exiting may still be listed for a moment: retried for 5 s.
pub fn assert_no_process_left(tag: &str, what: &str) {
    let t = std::time::Instant::now();
    loop {
        let left = tagged(tag);
        if left.is_empty() {
            return;
        }
        if t.elapsed().as_secs() >= 5 {
            panic!("{what}: processes left behind (pid, state, name): {left:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A venv at `dir` of this interpreter with no packages (bin/python and an empty
/// site-packages); returns its site-packages.
pub fn bare_venv(dir: &Path) -> PathBuf {
    let v = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}'); print(sys.executable)",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(v.stdout).unwrap();
    let mut lines = text.lines();
    let (pydir, exe) = (lines.next().unwrap(), lines.next().unwrap());
    let sp = dir.join("lib").join(pydir).join("site-packages");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(&sp).unwrap();
    std::os::unix::fs::symlink(exe, dir.join("bin/python")).unwrap();
    sp
}

/// A venv of this interpreter whose only package is the TensorRT-LLM Python stand-in
/// (tests/trtllm_py_standin/tensorrt_llm, linked), and a checkpoint directory for
/// `--model` (the stand-in reads nothing from it; the harness reads its tokenizer for
/// the workload): `(venv, model)`.
pub fn trtllm_py_standin_env(dir: &Path) -> (PathBuf, PathBuf) {
    let venv = dir.join("venv");
    let sp = bare_venv(&venv);
    let standin =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/trtllm_py_standin/tensorrt_llm");
    std::os::unix::fs::symlink(standin, sp.join("tensorrt_llm")).unwrap();
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    std::fs::write(model.join("model.safetensors"), "").unwrap();
    // A word-level tokenizer, enough for synthetic prompts of exact token counts.
    std::fs::write(
        model.join("tokenizer.json"),
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1,"b":2,"hello":3,"world":4,"the":5},"unk_token":"[UNK]"}}"#,
    )
    .unwrap();
    (venv, model)
}

/// An engine directory for the TensorRT-LLM C++ stand-in (tests/trtllm_standin), as
/// trtllm-build writes one (config.json, rank0.engine), with `standin_cfg` as the
/// stand-in's schedule and faults (standin.cfg).
pub fn trtllm_standin_engine_dir(standin_cfg: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("config.json"),
        r#"{"version": "stand-in", "pretrained_config": {"architecture": "StandInForTests",
            "dtype": "float16", "vocab_size": 32000, "mapping": {"world_size": 1}},
            "build_config": {"max_batch_size": 64, "max_input_len": 1024, "max_seq_len": 2048,
            "max_num_tokens": 8192}}"#,
    )
    .unwrap();
    std::fs::write(d.path().join("rank0.engine"), "").unwrap();
    std::fs::write(d.path().join("standin.cfg"), standin_cfg).unwrap();
    d
}

/// Runs `engine` on `model` through 2 conversations of 3 turns (64-token user
/// messages, 16-token replies, 2 at a time, token ids saved) into `out`, and asserts
/// it succeeded and left no process behind.
pub fn run_conversations(engine: &str, model: &Path, out: &Path) {
    let tag = new_tag(&format!("{engine}-conversations"));
    harness()
        .env(TAG_VAR, &tag)
        .args(["run", "--engine", engine, "--model"])
        .arg(model)
        .args([
            "--dataset",
            "conversations",
            "--turns",
            "3",
            "--input-len",
            "64",
            "--output-len",
            "16",
            "--ignore-eos",
            "--concurrency",
            "2",
            "--num-requests",
            "6",
            "--warmup",
            "0",
            "--save-token-ids",
            "--no-progress",
        ])
        .arg("--out")
        .arg(out)
        .assert()
        .success();
    assert_no_process_left(&tag, &format!("a {engine} conversations run"));
}

/// A `--dataset conversations --save-token-ids` run's result in `out`, checked as a
/// real engine must pass it: every later turn's prompt is the previous turn's prompt +
/// the ids the engine generated for it + the next user message of `workload.jsonl`;
/// the engine reports cached prompt tokens for every turn, never more of a later turn
/// than the conversation had sent and received before it (with `whole_prompt`, at
/// least the previous prompt: a cache of 1-token pages, SGLang's), and the hit rate
/// never falls by turn and ends above 0. Returns the hit rate by turn.
pub fn check_conversation_run(out: &Path, turns: usize, whole_prompt: bool) -> Vec<f64> {
    let recs = records(out);
    let workload: Vec<Value> = std::fs::read_to_string(out.join("workload.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap_or_else(|| panic!("not a list of ids: {v}"))
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    let turn_of = |c: Option<u64>, k: u64| {
        recs.iter()
            .find(|r| r["conversation"].as_u64() == c && r["turn"].as_u64() == Some(k))
    };
    for r in &recs {
        assert_eq!(r["finish_reason"], "length", "{r}");
        let (c, k) = (r["conversation"].as_u64(), r["turn"].as_u64().unwrap());
        let user = workload
            .iter()
            .find(|w| w["conversation"].as_u64() == c && w["turn"].as_u64() == Some(k))
            .unwrap();
        let prompt = ids(&r["prompt_token_ids"]);
        assert_eq!(prompt.len() as u64, r["input_len"].as_u64().unwrap());
        let cached = r["cached_prompt_tokens"]
            .as_u64()
            .unwrap_or_else(|| panic!("no cached_prompt_tokens: {r}"));
        assert!(cached < prompt.len() as u64, "{r}");
        if k == 0 {
            assert_eq!(prompt, ids(&user["user_token_ids"]));
            continue;
        }
        let prev = turn_of(c, k - 1).unwrap();
        let mut want = ids(&prev["prompt_token_ids"]);
        want.extend(ids(&prev["token_ids"]));
        want.extend(ids(&user["user_token_ids"]));
        assert_eq!(prompt, want, "conversation {c:?} turn {k}");
        let prev_len = prev["input_len"].as_u64().unwrap();
        let before = prev_len + output_tokens(prev);
        assert!(
            cached <= before,
            "turn {k} found {cached} tokens cached, more than the {before} sent and received before it"
        );
        assert!(
            !whole_prompt || cached >= prev_len,
            "turn {k} found {cached} of the previous prompt's {prev_len} tokens cached"
        );
    }
    let summary = json(&out.join("summary.json"));
    let rates: Vec<f64> = summary["by_turn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["prefix_cache_hit_rate"].as_f64().unwrap())
        .collect();
    assert_eq!(rates.len(), turns, "{summary}");
    assert!(
        rates.windows(2).all(|w| w[1] >= w[0]) && rates[turns - 1] > 0.0,
        "the hit rate grows by turn: {rates:?}"
    );
    rates
}
