//! `--engine trtllm-py` (TensorRT-LLM's Python `LLM` API, engines/trtllm_llmapi.py)
//! against its STAND-IN, tests/trtllm_py_standin/tensorrt_llm: TensorRT-LLM cannot be
//! installed here, so the adapter runs on a module that imitates its documented
//! streaming behaviour (several tokens per update, updates from an executor thread,
//! an exception mid-stream). Known answers: the stand-in's schedule is exact, so the
//! harness must count and stamp every chunk exactly. Its runs are labelled as an
//! instrument; nothing here is a TensorRT-LLM result. Needs only the embedded
//! interpreter (the stand-in is stdlib Python): these tests always run.

mod common;

use common::{
    assert_no_process_left, error_line, harness, json, new_tag, output_tokens, records, TAG_VAR,
};
use std::path::Path;

/// `harness run --engine trtllm-py` on the stand-in, writing to `out`; callers add the
/// workload and assert.
fn standin_run(dir: &Path, out: &Path) -> assert_cmd::Command {
    let (venv, model) = common::trtllm_py_standin_env(dir);
    let mut c = harness();
    c.args(["run", "--engine", "trtllm-py", "--model"])
        .arg(&model)
        .arg("--python-env")
        .arg(&venv)
        .args([
            "--input-len",
            "8",
            "--ignore-eos",
            "--warmup",
            "0",
            "--no-progress",
        ])
        .arg("--out")
        .arg(out);
    c
}

#[test]
fn multi_token_chunks_are_counted_and_stamped_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let tag = new_tag("trtllm-py");
    let o = standin_run(tmp.path(), &out)
        .env(TAG_VAR, &tag)
        .args([
            "--batch",
            "3",
            "--num-requests",
            "6",
            "--output-len",
            "10",
            "--save-token-ids",
        ])
        .args([
            "--engine-arg",
            "standin_tokens_per_update=3",
            "--engine-arg",
            "standin_step_ms=20",
            "--engine-arg",
            "kv_cache_config={\"free_gpu_memory_fraction\": 0.5}",
        ])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_no_process_left(&tag, "a stand-in run");
    let terminal = common::terminal(&o);
    assert!(terminal.contains("STAND-IN"), "{terminal}");
    // Updates of 3, 3, 3 and 1 tokens (10 = 3 + 3 + 3 + 1), one stamp each, one
    // executor step (20 ms) apart, on the harness's clock (after submit).
    let recs = records(&out);
    assert_eq!(recs.len(), 6);
    for r in &recs {
        assert_eq!(r["token_counts"], serde_json::json!([3, 3, 3, 1]), "{r}");
        assert_eq!(output_tokens(r), 10);
        let ns: Vec<u64> = r["token_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(ns.len(), 4, "{r}");
        assert!(
            ns[0] > 0 && ns[0] < 200_000_000,
            "first update {} ns after submit",
            ns[0]
        );
        for w in ns.windows(2) {
            let gap_ms = (w[1] - w[0]) as f64 / 1e6;
            assert!(
                (10.0..60.0).contains(&gap_ms),
                "updates {gap_ms} ms apart, executor step 20 ms: {ns:?}"
            );
        }
        // The stand-in echoes the prompt; margins come with the ids (one per token).
        assert_eq!(r["token_ids"].as_array().unwrap().len(), 10);
        assert_eq!(r["top2_margins"].as_array().unwrap().len(), 10, "{r}");
        // Its perf metrics (steady clock) beside the harness's stamps: the first
        // token it reports precedes the harness seeing it.
        let e = &r["engine"];
        let first = e["first_token_ns"].as_u64().expect("perf metrics recorded");
        assert!(first <= r["submit_ns"].as_u64().unwrap() + ns[0], "{e}");
        assert!(
            e["meta"]["kv_cache_metrics.num_total_allocated_blocks"].is_number(),
            "{e}"
        );
    }
    // Labelled as an instrument everywhere; never a TensorRT-LLM result.
    let run = json(&out.join("run.json"));
    assert_eq!(run["engine"]["instrument"], true);
    assert!(run["engine"]["version"]
        .as_str()
        .unwrap()
        .ends_with("(stand-in)"));
    assert!(run["engine"]["metadata"]["llm_args"]["kv_cache_config"]
        .as_str()
        .unwrap()
        .contains("0.5"));
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(summary.contains("CALIBRATION INSTRUMENT"), "{summary}");
    // Without enable_iter_perf_stats the LLM keeps no iteration stats: none claimed.
    assert!(
        run["engine"]["scheduler"]
            .get("step_stats_source")
            .is_none(),
        "{}",
        run["engine"]
    );
}

/// With enable_iter_perf_stats the steps carry the LLM's iteration stats (get_stats),
/// which the stand-in computes from its schedule: every prompt prefilled once, every
/// token after a request's first decoded once, one KV block per request.
#[test]
fn iteration_stats_reach_the_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let (n, input, output) = (6u64, 8u64, 10u64);
    standin_run(tmp.path(), &out)
        .args(["--batch", "3", "--num-requests", "6", "--output-len", "10"])
        .args([
            "--engine-arg",
            "enable_iter_perf_stats=true",
            "--engine-arg",
            "standin_tokens_per_update=2",
            "--engine-arg",
            "standin_step_ms=10",
        ])
        .assert()
        .success();
    let run = json(&out.join("run.json"));
    let source = run["engine"]["scheduler"]["step_stats_source"].as_str();
    assert!(
        source.unwrap_or("").contains("LLM.get_stats"),
        "{}",
        run["engine"]
    );
    let steps = common::steps(&out);
    let sum = |k: &str| -> u64 { steps.iter().filter_map(|s| s[k].as_u64()).sum() };
    let produced: u64 = records(&out).iter().map(output_tokens).sum();
    assert_eq!(produced, n * output);
    assert_eq!(sum("prefill_requests"), n, "{steps:?}");
    assert_eq!(sum("prefill_tokens"), n * input);
    assert_eq!(sum("decode_requests"), produced - n);
    assert_eq!(sum("decode_tokens"), produced - n);
    assert_eq!(sum("preempted"), 0);
    // Two tokens per update: two iterations per executor step, ten per request.
    assert!(sum("engine_steps") >= 2 * output, "{steps:?}");
    let gauge = |s: &serde_json::Value, k: &str| s[k].as_f64();
    assert!(steps
        .iter()
        .all(|s| gauge(s, "running") <= Some(3.0) && gauge(s, "waiting") <= Some(0.0)));
    let kv = steps
        .iter()
        .filter_map(|s| gauge(s, "kv_usage"))
        .fold(0.0, f64::max);
    assert_eq!(kv, 0.003, "{steps:?}");
    // The last iteration's stats may come with an earlier step than its last token.
    let last = steps
        .iter()
        .rev()
        .find(|s| s.get("running").is_some())
        .unwrap();
    assert_eq!(
        (gauge(last, "running"), gauge(last, "kv_usage")),
        (Some(0.0), Some(0.0)),
        "{last}"
    );
}

#[test]
fn an_exception_mid_stream_fails_that_request_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fail");
    let args = ["--batch", "2", "--num-requests", "4", "--output-len", "6"];
    standin_run(tmp.path(), &out)
        .args(args)
        .args(["--engine-arg", "standin_fail_request=2"])
        .assert()
        .code(1);
    let recs = records(&out);
    assert_eq!(recs.len(), 4);
    let failed: Vec<_> = recs
        .iter()
        .filter(|r| r["finish_reason"] == "error")
        .collect();
    assert_eq!(failed.len(), 1, "{recs:?}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("stand-in executor error in request 2"),
        "{failed:?}"
    );
    let ok: Vec<_> = recs
        .iter()
        .filter(|r| r["finish_reason"] == "length")
        .collect();
    assert_eq!(ok.len(), 3);
    assert!(ok.iter().all(|r| output_tokens(r) == 6));
}

#[test]
fn engine_args_are_typed_with_close_match_hints() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bad");
    let o = standin_run(tmp.path(), &out)
        .args(["--engine-arg", "max_batch_sise=4"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&o.stderr);
    let line = error_line(&err);
    assert!(
        line.contains("max_batch_sise") && line.contains("max_batch_size"),
        "{err}"
    );
    assert!(!out.exists(), "a usage error left {}", out.display());
}

#[test]
fn harness_engines_says_why_trtllm_py_is_not_usable_here() {
    // An empty cache: no trtllm-py env there, as on any machine these tests run on.
    let tmp = tempfile::tempdir().unwrap();
    let o = harness()
        .env("LLM_HARNESS_CACHE", tmp.path())
        .arg("engines")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&o.stdout).to_string();
    let mine: Vec<&str> = listing
        .lines()
        .skip_while(|l| !l.starts_with("trtllm-py"))
        .take(3)
        .collect();
    assert!(mine[0].contains("NOT USABLE"), "{listing}");
    assert!(
        mine[2].contains("cannot be installed from the package registries")
            && mine[2].contains("--python-env"),
        "{listing}"
    );
}
