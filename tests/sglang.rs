//! SGLang for real (`--engine sglang`) on the real Gemma 3 270M model, in its own venv
//! (scripts/setup.sh sglang), and the checks of what the adapter relies on: the
//! installed SGLang's API (conformance) and the project's sgl_kernel CPU stand-in
//! against a reference. All `#[ignore]`d (they need the venvs and the model), run by
//! scripts/test.sh with `-- --ignored` and LLM_HARNESS_REQUIRE_ENGINES=1. Each test
//! loads SGLang once and checks all it can from that run (a load takes 40 s or more on
//! 2 cores). Every harness run is tagged, and the test asserts that no process it
//! started outlived it.

mod common;

use common::{
    assert_no_process_left, cache, error_line, fails, harness, json, need, new_tag, output_tokens,
    records, serial, TAG_VAR,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

const SETUP: &str = "scripts/setup.sh sglang";

fn sglang_python() -> Option<PathBuf> {
    need(cache().join("venvs/sglang/bin/python"), SETUP)
}

fn model() -> Option<PathBuf> {
    need(cache().join("models/gemma-3-270m"), SETUP)
}

/// Runs one of tests/sglang/*.py with the sglang env's python; panics with its output
/// when it fails.
fn run_check(py: &Path, script: &str) -> String {
    let o = std::process::Command::new(py)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/sglang")
                .join(script),
        )
        .output()
        .unwrap();
    let text = common::terminal(&o);
    assert!(o.status.success(), "{script} failed:\n{text}");
    text
}

#[test]
#[ignore = "needs the sglang venv: scripts/test.sh sets it up and runs it"]
fn sgl_kernel_stand_in_matches_the_reference_on_random_inputs() {
    let Some(py) = sglang_python() else { return };
    let _serial = serial();
    let text = run_check(&py, "check_sgl_kernel_shim.py");
    assert!(
        text.contains("matches the reference on 300 random cases"),
        "{text}"
    );
}

#[test]
#[ignore = "needs the sglang venv: scripts/test.sh sets it up and runs it"]
fn every_sglang_name_the_adapter_uses_exists_in_the_installed_version() {
    let Some(py) = sglang_python() else { return };
    let _serial = serial();
    let text = run_check(&py, "check_sglang_api.py");
    assert!(
        text.contains("every callable, argument and field the adapter uses is there"),
        "{text}"
    );
}

#[test]
#[ignore = "needs the sglang venv and the real model: scripts/test.sh sets them up and runs it"]
fn sglang_real_model_sweep_exact_counts_meta_info_and_no_process_left() {
    let (Some(model), Some(_)) = (model(), sglang_python()) else {
        return;
    };
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let tag = new_tag("sglang-sweep");
    let t = Instant::now();
    let o = harness()
        .env(TAG_VAR, &tag)
        .args(["sweep", "--engine", "sglang", "--model"])
        .arg(&model)
        .args([
            "--batch",
            "1,8",
            "--input-len",
            "32",
            "--output-len",
            "8",
            "--ignore-eos",
        ])
        .args([
            "--warmup",
            "1",
            "--min-rounds",
            "2",
            "--min-duration",
            "0",
            "--no-progress",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .get_output()
        .clone();
    eprintln!(
        "sglang sweep 1,8 on the real model: {:.0} s",
        t.elapsed().as_secs_f64()
    );
    assert_no_process_left(&tag, "a successful SGLang sweep");
    let terminal = common::terminal(&o);
    // The load output says where the model runs and which kernels stand in.
    assert!(terminal.contains("loaded sglang 0.5.23"), "{terminal}");
    assert!(
        terminal.contains("scheduler and detokenizer run in child processes"),
        "{terminal}"
    );
    assert!(
        terminal.contains("SGLang CPU path with the project's torch implementation of 1 kernel op (assign_req_to_token_pool_cpu)"),
        "{terminal}"
    );
    // Two whole batches per point, every request exactly 8 tokens, each chunk stamped.
    let recs = records(&out);
    assert_eq!(recs.len(), 2 * (1 + 8));
    for r in &recs {
        assert_eq!(output_tokens(r), 8, "request {}", r["id"]);
        assert_eq!(r["input_len"], 32);
        assert_eq!(r["finish_reason"], "length");
        let stamps: Vec<u64> = r["token_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
        // SGLang's own figures beside the harness's stamps, on the same clock: its
        // first token can only precede the harness seeing it.
        let e = &r["engine"];
        let meta = e["meta"].as_object().expect("SGLang's meta_info recorded");
        for k in [
            "request_received_ts",
            "first_token_latency",
            "queue_time",
            "completion_tokens",
            "cached_tokens",
        ] {
            assert!(meta.contains_key(k), "meta_info lacks {k}: {meta:?}");
        }
        assert_eq!(meta["completion_tokens"], 8);
        let submit = r["submit_ns"].as_u64().unwrap();
        let first_seen = submit + stamps[0];
        let sglang_first = e["first_token_ns"]
            .as_u64()
            .expect("first_token_ns converted");
        let received = e["queued_ns"].as_u64().unwrap();
        assert!(
            received + 1_000_000 >= submit,
            "SGLang received request {} before it was submitted",
            r["id"]
        );
        assert!(
            sglang_first <= first_seen + 1_000_000,
            "SGLang's first token after the harness saw it"
        );
        assert!(
            first_seen - sglang_first < 1_000_000_000,
            "clocks apart: {} ns",
            first_seen - sglang_first
        );
    }
    let s = json(&out.join("summary.json"));
    assert_eq!(s["points"].as_array().unwrap().len(), 2);
    let run = json(&out.join("run.json"));
    let m = &run["engine"]["metadata"];
    assert_eq!(m["kernels"]["stand_in"], true, "{m}");
    assert_eq!(m["kernels"]["ops"][0], "assign_req_to_token_pool_cpu");
    assert_eq!(m["engine_args"]["dtype"], "float32");
    assert!(m["engine_stamps"]
        .as_str()
        .unwrap()
        .contains("CLOCK_MONOTONIC"));
    assert_eq!(
        m["processes"]["child_pids"].as_array().unwrap().len(),
        2,
        "{m}"
    );
    // The scheduling facts the harness acts on, as SGLang reports them: its scheduler's
    // own running limit (it sizes one when the args leave it unset), the KV cache its
    // memory fraction bought, the radix cache (prefix caching) and chunked prefill on
    // by default.
    let sched = &run["engine"]["scheduler"];
    assert!(sched["max_running"].as_u64().unwrap() > 0, "{sched}");
    assert_eq!(
        sched["kv_cache_tokens"], m["kv_cache"]["max_total_num_tokens"],
        "{sched}"
    );
    assert_eq!(sched["prefix_caching"], true, "{sched}");
    assert_eq!(sched["chunked_prefill"], true, "{sched}");
    let notes = run["engine"]["notes"].as_array().unwrap();
    assert!(
        notes[0]
            .as_str()
            .unwrap()
            .contains("scheduler and detokenizer run in child processes"),
        "{notes:?}"
    );
    // SGLang's log went to engine.log, not the terminal.
    assert!(!terminal.contains("UserWarning"), "{terminal}");
    assert!(sched["step_stats_source"]
        .as_str()
        .is_some_and(|s| s.contains("load snapshot")));
    sglang_steps_agree_with_the_trace(&out, &recs);
}

/// steps.jsonl of an SGLang sweep against its requests: the scheduler's load snapshots
/// land in the polls that read them, and their prefill counter adds up to the prompt
/// tokens the radix cache did not serve.
fn sglang_steps_agree_with_the_trace(out: &Path, recs: &[serde_json::Value]) {
    let steps = common::steps(out);
    for (point, batch) in [(0u64, 1u64), (1, 8)] {
        let steps: Vec<_> = steps.iter().filter(|st| st["point"] == point).collect();
        let reqs: Vec<_> = recs.iter().filter(|r| r["point"] == point).collect();
        let snapshots: Vec<_> = steps
            .iter()
            .filter(|st| st.get("running").is_some())
            .collect();
        // A snapshot per decode step, read by the poll its tokens came in: most polls
        // with tokens carry one.
        let with_tokens = steps
            .iter()
            .filter(|st| st["tokens"].as_u64() > Some(0))
            .count();
        assert!(
            snapshots.len() * 2 >= with_tokens,
            "point {point}: {} snapshots for {with_tokens} polls with tokens",
            snapshots.len()
        );
        for st in &snapshots {
            let kv = st["kv_usage"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&kv), "{st}");
            assert!(st["running"].as_u64().unwrap() <= batch, "{st}");
            assert_eq!(st["waiting"], 0, "{st}");
            // What SGLang's snapshot does not have stays absent.
            for k in ["engine_steps", "preempted", "decode_tokens", "prefix_hits"] {
                assert!(st.get(k).is_none(), "{k} in {st}");
            }
        }
        let peak = snapshots
            .iter()
            .filter_map(|st| st["running"].as_u64())
            .max();
        assert_eq!(peak, Some(batch), "point {point}");
        let prefill: u64 = steps
            .iter()
            .filter_map(|st| st["prefill_tokens"].as_u64())
            .sum();
        let uncached: u64 = reqs
            .iter()
            .map(|r| r["input_len"].as_u64().unwrap() - r["cached_prompt_tokens"].as_u64().unwrap())
            .sum();
        assert_eq!(prefill, uncached, "point {point}");
    }
}

/// `harness parity --engines ENGINES` on the real model in fp32: every token agrees.
fn parity_agrees(engines: &str) {
    let (Some(model), Some(_)) = (model(), sglang_python()) else {
        return;
    };
    let _serial = serial();
    let tag = new_tag("sglang-parity");
    let o = harness()
        .env(TAG_VAR, &tag)
        .args(["parity", "--engines", engines, "--model"])
        .arg(&model)
        .args(["--output-len", "24"])
        .assert()
        .get_output()
        .clone();
    let text = common::terminal(&o);
    eprintln!("{text}");
    assert_no_process_left(&tag, engines);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("identical leading tokens: 144/144"), "{text}");
}

#[test]
#[ignore = "needs the vllm and sglang venvs and the real model: scripts/test.sh sets them up and runs it"]
fn sglang_and_vllm_agree_on_every_token_in_fp32() {
    parity_agrees("vllm,sglang");
}

#[test]
#[ignore = "needs the vllm and sglang venvs and the real model: scripts/test.sh sets them up and runs it"]
fn sglang_and_hf_agree_on_every_token_in_fp32() {
    parity_agrees("hf,sglang");
}

#[test]
#[ignore = "needs the sglang venv and the real model: scripts/test.sh sets them up and runs it"]
fn a_failing_sglang_start_up_exits_1_with_its_results_dir_and_no_process_left() {
    let (Some(model), Some(_)) = (model(), sglang_python()) else {
        return;
    };
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fail");
    let tag = new_tag("sglang-fail");
    // Far too little memory for the KV cache: SGLang's scheduler fails at start-up and
    // its process sends the host SIGQUIT (which would kill an unprotected harness).
    let err = fails(
        harness()
            .env(TAG_VAR, &tag)
            .args(["run", "--engine", "sglang", "--model"])
            .arg(&model)
            .args([
                "--engine-arg",
                "mem_fraction_static=0.0001",
                "--no-progress",
                "--out",
            ])
            .arg(&out),
        1,
    );
    assert_no_process_left(&tag, "a failed SGLang start-up");
    let line = error_line(&err);
    assert!(line.contains("engine sglang failed to load"), "{err}");
    assert!(
        out.join("engine.log").is_file(),
        "the results directory went: {err}"
    );
    assert!(err.contains("results:"), "{err}");
}

#[test]
#[ignore = "needs the sglang venv and the real model: scripts/test.sh sets them up and runs it"]
fn sglang_conversations_resend_the_engines_replies_and_hit_its_radix_cache_by_turn() {
    let (Some(model), Some(_)) = (model(), sglang_python()) else {
        return;
    };
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("conversations");
    common::run_conversations("sglang", &model, &out);
    let rates = common::check_conversation_run(&out, 3, true);
    eprintln!("sglang conversations: prefix-cache hit rate by turn {rates:?}");
    let run = json(&out.join("run.json"));
    let source = run["engine"]["scheduler"]["cached_prompt_tokens_source"]
        .as_str()
        .unwrap();
    assert!(source.contains("cached_tokens"), "{source}");
}
