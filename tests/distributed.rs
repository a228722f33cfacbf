//! Models over several ranks through the engines' own distributed backends, for real:
//! vLLM's CPU build at `tensor_parallel_size=2` with its multiprocessing executor on
//! the real Gemma 3 270M (two worker processes, each bound to its own CPU).
//!
//! `#[ignore]`d like every real-engine test (they need the vllm venv and the model
//! from scripts/setup.sh); scripts/test.sh runs them. Each loads vLLM at TP=2 once per
//! thing it checks that needs its own run (success, Ctrl-C, a killed worker).

mod common;

use common::{
    assert_no_process_left, cache, error_line, harness, json, new_tag, records, serial, TAG_VAR,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn model() -> Option<PathBuf> {
    common::need(cache().join("venvs/vllm/bin/python"), "scripts/setup.sh")?;
    let m = cache().join("models/gemma-3-270m");
    common::need(m.join("model.safetensors"), "scripts/setup.sh").map(|_| m)
}

/// The ranks of a run's layout, as run.json holds them.
fn ranks(dir: &Path) -> Vec<serde_json::Value> {
    let run = json(&dir.join("run.json"));
    run["engine"]["layout"]["ranks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
#[ignore = "needs the vllm venv and the real model (scripts/setup.sh); scripts/test.sh runs it"]
fn vllm_tp2_gives_tp1s_greedy_tokens_reports_both_ranks_and_leaves_no_process() {
    let Some(model) = model() else { return };
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("parity");
    let tag = new_tag("vllm-tp2-parity");
    let t = Instant::now();
    // The same engine twice: side 2 at TP=2 (the parity command's side prefix).
    let o = harness()
        .env(TAG_VAR, &tag)
        .args(["parity", "--engines", "vllm,vllm", "--model"])
        .arg(&model)
        .args(["--engine-arg", "2:tensor_parallel_size=2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let text = common::terminal(&o);
    eprintln!(
        "vLLM parity TP=1 vs TP=2: {:.0} s\n{text}",
        t.elapsed().as_secs_f64()
    );
    assert_no_process_left(&tag, "vLLM parity at TP=2");
    // Greedy fp32 ids identical at TP=2 (measured: every token of every prompt).
    assert_eq!(o.status.code(), Some(0), "{text}");
    let (one, two) = (ranks(&out.join("1-vllm")), ranks(&out.join("2-vllm")));
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(two.len(), 2, "{two:?}");
    let layout = &json(&out.join("2-vllm/run.json"))["engine"]["layout"];
    assert_eq!(layout["tensor_parallel"], 2);
    assert_eq!(layout["backend"], "mp");
    assert_eq!(
        two.iter()
            .map(|r| r["tp_rank"].as_u64())
            .collect::<Vec<_>>(),
        [Some(0), Some(1)]
    );
    // Two worker processes, neither the harness's own (with TP=1 the rank is).
    let pids: Vec<u64> = two.iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    assert_ne!(pids[0], pids[1]);
    assert!(two
        .iter()
        .all(|r| r["device"] == "cpu" && r["node"].is_string()));
    // The per-device figure is there at TP=2 only.
    let s2 = json(&out.join("2-vllm/summary.json"));
    let per = s2["output_throughput_per_device"].as_f64().unwrap();
    let whole = s2["output_throughput"].as_f64().unwrap();
    assert!(
        (per - whole / 2.0).abs() < 1e-9 * whole,
        "{per} vs {whole} / 2"
    );
    assert!(json(&out.join("1-vllm/summary.json"))
        .get("output_throughput_per_device")
        .is_none());
    // The harness set vLLM's CPU binding, one CPU set per rank, and says so.
    let notes = json(&out.join("2-vllm/run.json"))["engine"]["notes"].to_string();
    assert!(notes.contains("VLLM_CPU_OMP_THREADS_BIND="), "{notes}");
}

/// The worker processes of the tagged harness run (vLLM names them `VLLM::Worker_TP…`).
fn workers(tag: &str) -> Vec<i32> {
    common::tagged(tag)
        .into_iter()
        .filter(|(_, _, name)| name.starts_with("VLLM::Worker"))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Starts a TP=2 run of 16 requests (64 tokens each, batches of 4), and returns it once
/// its first batch is on disk.
fn start_tp2(model: &Path, out: &Path, tag: &str) -> std::process::Child {
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("harness"))
        .env(TAG_VAR, tag)
        .env("NO_COLOR", "1")
        .args(["run", "--engine", "vllm", "--model"])
        .arg(model)
        .args(["--engine-arg", "tensor_parallel_size=2", "--batch", "4"])
        .args(["--input-len", "32", "--output-len", "64", "--ignore-eos"])
        .args(["--num-requests", "16", "--warmup", "0", "--no-progress"])
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let requests = out.join("requests.jsonl");
    while std::fs::read_to_string(&requests)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 4
    {
        assert!(
            t.elapsed().as_secs() < 300,
            "the TP=2 run never finished a batch"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

fn stderr_of(child: std::process::Child) -> (Option<i32>, String) {
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs the vllm venv and the real model (scripts/setup.sh); scripts/test.sh runs it"]
fn vllm_tp2_ctrl_c_and_a_killed_worker_keep_the_results_and_leave_no_process() {
    let Some(model) = model() else { return };
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();

    // Ctrl-C mid-run: exit 130, the finished batch kept, every worker gone.
    let out = tmp.path().join("interrupted");
    let tag = new_tag("vllm-tp2-ctrl-c");
    let child = start_tp2(&model, &out, &tag);
    assert_eq!(workers(&tag).len(), 2, "{:?}", common::tagged(&tag));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (code, err) = stderr_of(child);
    assert_eq!(code, Some(130), "{err}");
    assert_no_process_left(&tag, "Ctrl-C at TP=2");
    let recs = records(&out);
    assert!(
        recs.iter()
            .filter(|r| r["finish_reason"] == "length")
            .count()
            >= 4,
        "{recs:?}"
    );
    assert_eq!(json(&out.join("run.json"))["status"], "interrupted");

    // A worker killed mid-run: the in-flight requests fail with the reason, the
    // finished ones stay, exit 1, and the other worker does not outlive the run.
    let out = tmp.path().join("killed");
    let tag = new_tag("vllm-tp2-kill");
    let child = start_tp2(&model, &out, &tag);
    let w = workers(&tag);
    assert_eq!(w.len(), 2, "{:?}", common::tagged(&tag));
    // SAFETY: a worker process of our own child's engine.
    unsafe { libc::kill(*w.iter().max().unwrap(), libc::SIGKILL) };
    let (code, err) = stderr_of(child);
    eprintln!("{err}");
    assert_eq!(code, Some(1), "{err}");
    assert_no_process_left(&tag, "a killed worker at TP=2");
    let recs = records(&out);
    let done = recs
        .iter()
        .filter(|r| r["finish_reason"] == "length")
        .count();
    let failed: Vec<_> = recs
        .iter()
        .filter(|r| r["finish_reason"] == "error")
        .collect();
    assert!(done >= 4, "{recs:?}");
    assert!(!failed.is_empty(), "{recs:?}");
    assert!(
        failed
            .iter()
            .all(|r| r["error"].as_str().is_some_and(|e| !e.is_empty())),
        "{failed:?}"
    );
    assert_eq!(json(&out.join("run.json"))["status"], "engine_failed");
}

#[test]
#[ignore = "needs the vllm venv and the real model (scripts/setup.sh); scripts/test.sh runs it"]
fn vllm_on_ray_is_refused_on_the_cpu_before_a_cluster_starts() {
    let Some(model) = model() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ray");
    let tag = new_tag("vllm-ray-cpu");
    let o = harness()
        .env(TAG_VAR, &tag)
        .args(["run", "--engine", "vllm", "--model"])
        .arg(&model)
        .args(["--engine-arg", "tensor_parallel_size=2"])
        .args(["--engine-arg", "distributed_executor_backend=ray", "--out"])
        .arg(&out)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        error_line(&err).contains("does not support Ray")
            && error_line(&err).contains("distributed_executor_backend=mp"),
        "{err}"
    );
    assert!(!out.exists(), "a usage error left {}", out.display());
    assert_no_process_left(&tag, "a refused Ray run");
}
