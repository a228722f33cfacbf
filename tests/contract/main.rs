//! The one engine contract, run against every engine the registry lists.
//!
//! One trial per registered engine (`cargo test --test contract -- vllm` runs one). An
//! engine is checked through the binary, as a user runs it, and through the `Engine`
//! trait, in a child process of its own:
//!
//! 1. `harness run --batch 4 --duration 600 --ignore-eos`, one request in eight made
//!    to fail (an engine's fault injection, or a prompt longer than the context it is
//!    given), interrupted once two batches have finished by a SIGINT to its whole
//!    process group, as a terminal's Ctrl-C is: it exits 130 with run.json,
//!    summary.json and every finished request kept; every completed request
//!    has exactly its output_len tokens, stamped after its submit and in order; the
//!    failing request fails alone, with its reason; the engine's own stamps are in
//!    order and never before submit; no line the engine printed (engine.log) reaches
//!    the terminal; no process the run started outlives it.
//! 2. In a child process: `abort` frees the slot. With the engine held to one request
//!    at a time where it can be, a long request is aborted after its first token, and
//!    the request queued behind it then runs to its exact length; nothing is reported
//!    for the aborted one; the timeout path of the driver is this same `abort`.
//!
//! The trials of real engines (a model loaded for minutes) are ignored in a plain
//! `cargo test`, as the project's other real-engine tests are; scripts/test.sh runs
//! them with `-- --ignored`. An engine that is not in this build skips with the reason; one that cannot run on
//! this machine skips with the reason too, and fails under
//! `LLM_HARNESS_REQUIRE_ENGINES=1` (scripts/test.sh sets it). An engine in the registry
//! without a fixture here fails: a new engine is covered the day it is registered.

#[path = "../common/mod.rs"]
mod common;
mod fixtures;

use common::{assert_no_process_left, new_tag, output_tokens, records, TAG_VAR};
use fixtures::{Setup, Skip};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use llm_harness::core::request::FinishReason;
use llm_harness::engine::{Engine, EngineConfig, GenRequest, Registry, TokenEvent};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The request a fault-injecting fixture makes fail (its first batch: ids 0..4, no
/// warmup).
pub const FAIL_ID: u64 = 2;
/// Tokens every request of the binary run generates.
const OUTPUT_LEN: u32 = 8;
/// The child process's engine, as the environment variable names it.
const CHILD: &str = "LLM_HARNESS_CONTRACT_CHILD";

fn main() {
    if let Ok(engine) = std::env::var(CHILD) {
        child(&engine);
        return;
    }
    let args = Arguments::from_args();
    let trials = Registry::builtin()
        .specs()
        .iter()
        .map(|spec| {
            let name = spec.name;
            // Real engines load a real model for minutes: like every real-engine test,
            // they run with `-- --ignored` (scripts/test.sh), not in a plain `cargo test`.
            Trial::ignorable_test(name, move || contract(name))
                .with_ignored_flag(fixtures::real_engine(name))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// The whole contract for one engine; an engine that cannot run here is ignored, with
/// the reason.
fn contract(engine: &'static str) -> Result<Completion, Failed> {
    let setup = match fixtures::setup(engine) {
        Ok(s) => s,
        Err(Skip::NotBuilt(why)) => {
            return Ok(Completion::ignored_with(format!("not in this build: {why}")));
        }
        Err(Skip::Missing(why)) => {
            if common::require_engines() {
                return Err(format!(
                    "{engine} cannot run here: {why} (LLM_HARNESS_REQUIRE_ENGINES=1)"
                )
                .into());
            }
            return Ok(Completion::ignored_with(why));
        }
        Err(Skip::NoFixture) => {
            return Err(format!(
                "the registry lists {engine} but tests/contract/fixtures.rs has no fixture for it: add one, so the contract covers it"
            )
            .into())
        }
    };
    // Real engines share the machine's cores: one at a time.
    let _serial = common::serial();
    let t = Instant::now();
    binary_run(engine, &setup)?;
    eprintln!(
        "{engine}: binary run checked in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    abort_in_a_child(engine, &setup)?;
    eprintln!(
        "{engine}: abort checked in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(Completion::Completed)
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

/// Part 1: the run a user makes, interrupted.
fn binary_run(engine: &str, setup: &Setup) -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("run");
    let tag = new_tag(&format!("contract-{engine}"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    // A process group of its own, signalled as a whole, as a terminal signals the
    // foreground group: an engine's children (SGLang's scheduler, a managed server)
    // get the SIGINT too, unless they block it, and the harness must still end well.
    cmd.process_group(0)
        .args(["run", "--engine", engine])
        .args(&setup.args)
        .args(&setup.fail_args)
        .args([
            "--batch",
            "4",
            "--duration",
            "600",
            "--warmup",
            "0",
            "--ignore-eos",
        ])
        .args(["--output-len", &OUTPUT_LEN.to_string(), "--no-progress"])
        .args(["--request-timeout", "300"])
        .arg("--out")
        .arg(&out)
        .env(TAG_VAR, &tag)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &setup.env {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    // Two whole batches written, then Ctrl-C.
    let written = |dir: &Path| -> usize {
        std::fs::read_to_string(dir.join("requests.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let t = Instant::now();
    let limit = Duration::from_secs(setup.load_timeout_s + 300);
    while written(&out) < 8 {
        if t.elapsed() > limit {
            // SAFETY: kill has no memory effects; the group is our child's.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let o = child.wait_with_output()?;
            return Err(format!(
                "{engine}: no two batches written within {} s:\n{}",
                limit.as_secs(),
                String::from_utf8_lossy(&o.stderr)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGINT) };
    let o = wait_with_limit(child, Duration::from_secs(120))?;
    let terminal = common::terminal(&o);
    ensure!(
        o.status.code() == Some(130),
        "{engine}: exit {:?} after Ctrl-C, expected 130:\n{terminal}",
        o.status.code()
    );
    assert_no_process_left(&tag, &format!("{engine}'s interrupted run"));

    // Results kept.
    let run = common::json(&out.join("run.json"));
    ensure!(
        run["status"] == "interrupted",
        "{engine}: run.json status {}",
        run["status"]
    );
    let summary = common::json(&out.join("summary.json"));
    ensure!(
        summary["points"].as_array().is_some_and(|p| p.len() == 1),
        "{engine}: summary.json has no point"
    );

    // Exact counts, the failing request alone, the stamps.
    let recs = records(&out);
    ensure!(recs.len() >= 8, "{engine}: {} requests kept", recs.len());
    let slack = setup.stamp_slack_ns;
    for r in &recs {
        let id = r["id"].as_u64().unwrap_or(u64::MAX);
        let reason = r["finish_reason"].as_str().unwrap_or("none");
        if setup.fails.fails(id, r["input_len"].as_u64().unwrap_or(0)) {
            ensure!(
                reason == "error",
                "{engine}: request {id} was to fail ({:?}), it ended {reason}: {r}",
                setup.fails
            );
            ensure!(
                r["error"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{engine}: the failed request carries no reason: {r}"
            );
            continue;
        }
        if reason == "abort" {
            // Only what was in flight when Ctrl-C came: the batch after the first two.
            ensure!(
                id >= 8,
                "{engine}: request {id} aborted, but it ran before the interrupt: {r}"
            );
            continue;
        }
        ensure!(
            reason == "length",
            "{engine}: request {id} ended {reason}, not length: {r}"
        );
        ensure!(
            output_tokens(r) == u64::from(OUTPUT_LEN),
            "{engine}: request {id} has {} tokens, asked for {OUTPUT_LEN} with --ignore-eos",
            output_tokens(r)
        );
        let ns: Vec<u64> = r["token_ns"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        ensure!(
            ns.first().is_some_and(|&f| f > 0),
            "{engine}: request {id}'s first token is stamped at (or clamped to) its submit: {ns:?}"
        );
        ensure!(
            ns.windows(2).all(|w| w[1] > w[0]),
            "{engine}: request {id}'s token stamps are not increasing: {ns:?}"
        );
        engine_stamps_in_order(engine, r, slack)?;
        // Prefix-cache hits: from exactly the engines that name their source, never
        // more than the prompt.
        let source = run["engine"]["scheduler"]["cached_prompt_tokens_source"].as_str();
        match (r["cached_prompt_tokens"].as_u64(), source) {
            (Some(c), Some(_)) => ensure!(
                c <= r["input_len"].as_u64().unwrap_or(0),
                "{engine}: request {id} has {c} cached prompt tokens, more than its prompt: {r}"
            ),
            (None, None) => {}
            (c, s) => {
                return Err(format!(
                    "{engine}: request {id} reports cached prompt tokens {c:?} but the engine \
                     names the source {s:?}"
                )
                .into())
            }
        }
    }
    // The first two batches completed, but for the failing request.
    let done = recs
        .iter()
        .filter(|r| r["id"].as_u64().is_some_and(|id| id < 8) && r["finish_reason"] == "length")
        .count();
    ensure!(
        done == 7,
        "{engine}: {done} of the first 8 requests completed, expected 7"
    );

    // Nothing the engine printed reached the terminal.
    let log = std::fs::read_to_string(out.join("engine.log")).unwrap_or_default();
    let leaked: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| l.len() > 12 && terminal.lines().any(|t| t.trim() == *l))
        .take(3)
        .collect();
    ensure!(
        leaked.is_empty(),
        "{engine}: engine output on the terminal: {leaked:?}"
    );
    Ok(())
}

/// The engine's own stamps: in order, and none before the harness's submit (less the
/// slack of stamps an engine converts from another clock).
fn engine_stamps_in_order(engine: &str, r: &Value, slack_ns: u64) -> Result<(), Failed> {
    let e = &r["engine"];
    if !e.is_object() {
        return Ok(());
    }
    let submit = r["submit_ns"].as_u64().unwrap_or(0);
    let stamps: Vec<(&str, u64)> = [
        "queued_ns",
        "scheduled_ns",
        "first_token_ns",
        "last_token_ns",
    ]
    .into_iter()
    .filter_map(|k| e[k].as_u64().map(|v| (k, v)))
    .collect();
    for w in stamps.windows(2) {
        ensure!(
            w[0].1 <= w[1].1,
            "{engine}: engine stamps out of order ({} after {}): {e}",
            w[0].0,
            w[1].0
        );
    }
    if let Some((k, first)) = stamps.first() {
        ensure!(
            first + slack_ns >= submit,
            "{engine}: the engine's {k} is {} ns before the harness's submit: {r}",
            submit - first
        );
    }
    Ok(())
}

fn wait_with_limit(
    mut child: std::process::Child,
    limit: Duration,
) -> Result<std::process::Output, Failed> {
    let t = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output()?;
            return Err(format!(
                "still running {} s after Ctrl-C:\n{}",
                limit.as_secs(),
                String::from_utf8_lossy(&o.stderr)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Part 2, from the parent: runs the child and checks it left nothing behind.
fn abort_in_a_child(engine: &str, setup: &Setup) -> Result<(), Failed> {
    let tag = new_tag(&format!("contract-{engine}-abort"));
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(CHILD, engine)
        .env(
            "LLM_HARNESS_CONTRACT_CONFIG",
            serde_json::to_string(&setup.child)?,
        )
        .env(TAG_VAR, &tag)
        .stdin(Stdio::null());
    for (k, v) in &setup.env {
        cmd.env(k, v);
    }
    let o = cmd.output()?;
    assert_no_process_left(&tag, &format!("{engine}'s abort check"));
    let text = common::terminal(&o);
    ensure!(
        o.status.success(),
        "{engine}: the abort check failed:\n{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("contract:")) {
        eprintln!("{engine}: {line}");
    }
    Ok(())
}

/// What the child has seen of each request.
#[derive(Default)]
struct Watch {
    events: Vec<TokenEvent>,
    tokens: std::collections::HashMap<u64, u32>,
    finished: std::collections::HashMap<u64, FinishReason>,
}

impl Watch {
    fn tokens(&self, id: u64) -> u32 {
        self.tokens.get(&id).copied().unwrap_or(0)
    }

    /// Polls `e` until `done`, at most 300 s.
    fn poll_until(
        &mut self,
        engine: &str,
        e: &mut Box<dyn Engine>,
        what: &str,
        done: impl Fn(&Watch) -> bool,
    ) {
        let t = Instant::now();
        while !done(self) {
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "{engine}: no {what} within 300 s"
            );
            self.events.clear();
            e.poll(Duration::from_millis(20), &mut self.events)
                .unwrap_or_else(|err| panic!("{engine}: poll failed: {}", err.detail()));
            for ev in &self.events {
                *self.tokens.entry(ev.request).or_default() += ev.new_tokens;
                if let Some(f) = &ev.finish {
                    self.finished.insert(ev.request, f.reason);
                }
            }
        }
    }
}

/// Part 2, in the child: loads the engine through its spec and aborts a request.
fn child(engine: &str) {
    let cfg: fixtures::ChildConfig =
        serde_json::from_str(&std::env::var("LLM_HARNESS_CONTRACT_CONFIG").unwrap()).unwrap();
    let spec = Registry::builtin().find(engine).unwrap();
    let config = EngineConfig {
        model: cfg.model.clone(),
        engine_args: cfg
            .engine_args
            .iter()
            .chain(&cfg.one_slot)
            .cloned()
            .collect(),
        python_env: cfg.python_env.clone(),
        log_dir: None,
    };
    let mut e = (spec.load)(&config)
        .unwrap_or_else(|err| panic!("{engine} did not load: {}", err.detail()));
    let prompt: std::sync::Arc<[u32]> = cfg.prompt.clone().into();
    let req = |id: u64, output_len: u32| GenRequest {
        id,
        prompt: prompt.clone(),
        output_len,
        min_tokens: output_len,
        ignore_eos: true,
        temperature: 0.0,
        seed: Some(id),
        return_token_ids: false,
    };
    let mut w = Watch::default();
    // A long request, then a short one queued behind it (one slot, where the engine
    // can be held to one).
    e.submit(&req(100, cfg.long_output_len)).unwrap();
    e.submit(&req(101, 4)).unwrap();
    w.poll_until(engine, &mut e, "first token of the long request", |w| {
        w.tokens(100) > 0
    });
    assert!(
        !w.finished.contains_key(&100),
        "{engine}: the long request finished before it could be aborted"
    );
    e.abort(100)
        .unwrap_or_else(|err| panic!("{engine}: abort failed: {}", err.detail()));
    assert_eq!(
        e.in_flight(),
        1,
        "{engine}: in flight after aborting one of two"
    );
    let before = w.tokens(100);
    w.poll_until(engine, &mut e, "finish of the queued request", |w| {
        w.finished.contains_key(&101)
    });
    assert_eq!(
        (w.finished[&101], w.tokens(101)),
        (FinishReason::Length, 4),
        "{engine}: the request behind the aborted one"
    );
    assert!(
        !w.finished.contains_key(&100),
        "{engine}: a finish was reported for the aborted request"
    );
    // And the engine goes on.
    e.submit(&req(102, 4)).unwrap();
    w.poll_until(engine, &mut e, "finish of the next request", |w| {
        w.finished.contains_key(&102)
    });
    assert_eq!(
        (w.finished[&102], w.tokens(102)),
        (FinishReason::Length, 4),
        "{engine}: after the abort"
    );
    assert_eq!(e.in_flight(), 0);
    e.shutdown()
        .unwrap_or_else(|err| panic!("{engine}: shutdown failed: {}", err.detail()));
    println!(
        "contract: aborted after {before} token(s){}; the queued request then ran 4 tokens",
        if cfg.one_slot.is_empty() {
            " (the engine cannot be held to one request at a time: the queue part is vacuous)"
        } else {
            " with the engine held to one request at a time"
        }
    );
}
