//! The command line: every bad input gives exit code 2, one clear line and nothing
//! written; interruptions and engine failures keep what was measured on disk.

mod common;
use assert_cmd::Command;
use common::{harness, succeeds};
use predicates::prelude::*;
use std::path::Path;

/// A run of the calibration engine that takes a few hundred ms.
fn calib(out: &Path) -> Command {
    let mut c = harness();
    c.args([
        "run",
        "--engine",
        "calibration",
        "--batch",
        "4",
        "--input-len",
        "16",
        "--output-len",
        "8",
        "--warmup",
        "0",
    ])
    .arg("--out")
    .arg(out);
    c
}

#[track_caller]
fn usage_error(mut cmd: Command, needle: &str) {
    let out = cmd.assert().code(2).get_output().clone();
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("loading"))
        .collect();
    assert_eq!(lines.len(), 1, "one line expected, got:\n{err}");
    assert!(
        lines[0].starts_with("Error: ") && lines[0].contains(needle),
        "expected '{needle}' in: {}",
        lines[0]
    );
}

#[test]
fn bad_input_exits_2_with_one_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let no_weights = tmp.path().join("empty-model");
    std::fs::create_dir(&no_weights).unwrap();
    std::fs::write(no_weights.join("config.json"), "{}").unwrap();
    let bad_jsonl = tmp.path().join("p.jsonl");
    std::fs::write(
        &bad_jsonl,
        "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n{\"prompt\": oops}\n",
    )
    .unwrap();
    let tok = tmp.path().join("tokenizer.json");
    std::fs::write(&tok, "{}").unwrap();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--engine", "nope"], "unknown engine 'nope'"),
        (vec![], "--engine is required"),
        (vec!["--engine", "calibration", "--batch", "0"], "--batch 0"),
        (
            vec!["--engine", "calibration", "--batch", "x"],
            "not a positive integer",
        ),
        (vec!["--engine", "calibration", "--rate=-1"], "--rate -1"),
        (
            vec![
                "--engine",
                "calibration",
                "--batch",
                "2",
                "--concurrency",
                "2",
            ],
            "conflict",
        ),
        (
            vec!["--engine", "calibration", "--num-requests", "0"],
            "--num-requests 0",
        ),
        (
            vec![
                "--engine",
                "calibration",
                "--num-requests",
                "4",
                "--duration",
                "2",
            ],
            "conflict",
        ),
        (
            vec!["--engine", "calibration", "--input-len", "abc"],
            "--input-len abc",
        ),
        (
            vec!["--engine", "calibration", "--question-len", "8"],
            "--question-len applies only to --dataset shared-prefix",
        ),
        (
            vec![
                "--engine",
                "calibration",
                "--dataset",
                "shared-prefix",
                "--system-prompt-len",
                "16000000",
                "--num-groups",
                "8",
            ],
            "above the limit",
        ),
        (
            vec!["--engine", "calibration", "--turns", "3"],
            "--turns applies only to --dataset conversations",
        ),
        (
            vec![
                "--engine",
                "calibration",
                "--dataset",
                "conversations",
                "--think-time",
                "soon",
            ],
            "--think-time soon",
        ),
        (
            vec![
                "--engine",
                "calibration",
                "--dataset",
                "conversations",
                "--turns",
                "5000",
            ],
            "--turns 5000 allows more than",
        ),
        (
            vec![
                "--engine",
                "calibration",
                "--dataset",
                "conversations",
                "--ramp-up-strategy",
                "linear",
                "--ramp-up-start-rps",
                "1",
                "--ramp-up-end-rps",
                "4",
                "--num-requests",
                "8",
            ],
            "use --rate R (new conversations per second)",
        ),
        (
            vec!["--engine", "calibration", "--engine-arg", "block_size=0"],
            "block size from 1 to 4096",
        ),
        (
            vec!["--engine", "calibration", "--slo", "ttft=abc"],
            "--slo",
        ),
        (
            vec!["--engine", "calibration", "--batch", "1,2"],
            "use `harness sweep`",
        ),
        (
            vec!["--engine", "calibration", "--engine-arg", "nokey"],
            "KEY=VALUE",
        ),
        (
            vec!["--engine", "calibration", "--engine-arg", "bogus=1"],
            "unknown --engine-arg 'bogus'",
        ),
        (
            vec!["--engine", "calibration", "--dataset", "sharegpt"],
            "--dataset-path",
        ),
        (
            vec![
                "--engine",
                "calibration",
                "--dataset",
                "prompts",
                "--dataset-path",
                "/nonexistent.jsonl",
            ],
            "no such file",
        ),
        (
            vec!["--engine", "calibration", "--model", "/nonexistent/model"],
            "no such file or directory",
        ),
        (vec!["--engine", "vllm"], "--model is required"),
        (
            vec!["--engine", "vllm", "--model", "/nonexistent/model"],
            "no such directory",
        ),
        (
            vec!["--engine", "vllm", "--model", no_weights.to_str().unwrap()],
            "no weights",
        ),
        (
            vec![
                "--engine",
                "calibration",
                "--python-env",
                "/nonexistent/venv",
            ],
            "--python-env applies to Python engines",
        ),
        (
            vec!["--engine", "calibration", "--config", "/nonexistent.toml"],
            "--config",
        ),
        (
            vec!["--engine", "calibration", "--dataset", "bogus"],
            "unknown --dataset",
        ),
        (
            vec!["--engine", "calibration", "--fewshot", "2"],
            "--fewshot applies only to --dataset scored and arithmetic",
        ),
        (
            vec!["--engine", "calibration", "--dataset", "scored"],
            "--dataset scored needs --dataset-path FILE",
        ),
        (
            vec![
                "--engine",
                "calibration",
                "--dataset",
                "arithmetic",
                "--dataset-path",
                bad_jsonl.to_str().unwrap(),
            ],
            "--dataset arithmetic generates its questions",
        ),
        (
            vec![
                "--engine",
                "calibration",
                "--dataset",
                "arithmetic",
                "--save-token-ids",
                "false",
            ],
            "scores the generated token ids",
        ),
    ];
    for (args, needle) in cases {
        let mut c = harness();
        c.arg("run").args(&args).arg("--out").arg(&out);
        usage_error(c, needle);
        assert!(!out.exists(), "{args:?} left {} behind", out.display());
    }
    // `parity --model [ENGINE:]DIR`: each side's model is checked before anything runs.
    let parity: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--model", "hf:/nope"], "--model /nope: no such file"),
        (vec![], "--model is required (hf needs one)"),
        (
            vec!["--model", "hf:/a", "--model", "hf:/b"],
            "--model: more than one for hf",
        ),
        (
            vec!["--logprobs", "--max-logprob-diff=-1"],
            "--max-logprob-diff -1",
        ),
    ];
    for (args, needle) in parity {
        let mut c = harness();
        c.args(["parity", "--engines", "calibration,hf"])
            .args(&args)
            .arg("--out")
            .arg(&out);
        usage_error(c, needle);
        assert!(!out.exists(), "{args:?} left {} behind", out.display());
    }
    let _ = (bad_jsonl, tok);
}

#[test]
fn malformed_prompt_file_names_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let tokenizer = tmp.path().join("tokenizer.json");
    write_tokenizer(&tokenizer);
    let bad = tmp.path().join("p.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"hello world\"}\n\n{\"prompt\": oops}\n",
    )
    .unwrap();
    let mut c = harness();
    c.args([
        "run",
        "--engine",
        "calibration",
        "--dataset",
        "prompts",
        "--dataset-path",
    ])
    .arg(&bad);
    c.arg("--tokenizer").arg(&tokenizer).arg("--out").arg(&out);
    usage_error(c, "line 3");
    assert!(!out.exists());
}

#[test]
fn a_scored_file_without_answers_a_bad_pattern_or_no_items_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let tokenizer = tmp.path().join("tokenizer.json");
    write_tokenizer(&tokenizer);
    for (lines, needle) in [
        ("{\"prompt\": \"hello\"}\n", "line 1"),
        (
            "{\"prompt\": \"hello\", \"answer\": \"1\", \"pattern\": \"(\"}\n",
            "\"pattern\" is not a valid regular expression",
        ),
        (
            "{\"question\": \"a b\", \"answer\": \"a\"}\n",
            "#### <answer>",
        ),
        ("\n\n", "no items to score"),
        ("", "no items to score"),
    ] {
        let data = tmp.path().join("scored.jsonl");
        std::fs::write(&data, lines).unwrap();
        let mut c = harness();
        c.args(["run", "--engine", "calibration", "--dataset", "scored"])
            .arg("--dataset-path")
            .arg(&data)
            .arg("--tokenizer")
            .arg(&tokenizer)
            .arg("--out")
            .arg(&out);
        usage_error(c, needle);
        assert!(!out.exists(), "{lines:?} left {} behind", out.display());
    }
}

/// A tiny word-level tokenizer.json, enough for token counting.
fn write_tokenizer(path: &Path) {
    let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":0,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"world":2,"a":3,"b":4},"unk_token":"[UNK]"}}"#;
    std::fs::write(path, json).unwrap();
}

#[test]
fn unwritable_out_dir_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    usage_error(calib(&file.join("sub")), "--out");
}

#[test]
fn existing_results_are_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    calib(&out).args(["--num-requests", "4"]).assert().success();
    let before = std::fs::read(out.join("requests.jsonl")).unwrap();
    usage_error(calib(&out), "already holds results");
    assert_eq!(std::fs::read(out.join("requests.jsonl")).unwrap(), before);
}

#[test]
fn run_writes_every_output_and_report_rerenders_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let assert = calib(&out).args(["--num-requests", "4"]).assert().success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(
        stdout.contains("CALIBRATION"),
        "instrument banner missing:\n{stdout}"
    );
    for f in [
        "run.json",
        "config.toml",
        "workload.jsonl",
        "requests.jsonl",
        "summary.json",
        "summary.csv",
        "requests.csv",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["completed"], 4);
    assert!(summary["definitions"]["ttft"].is_string());
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["status"], "completed");
    assert!(run["harness"]["git_revision"].is_string());
    std::fs::remove_file(out.join("summary.json")).unwrap();
    harness()
        .arg("report")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("batch=4"));
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(again["completed"], summary["completed"]);
    assert_eq!(again["mean_ttft_ms"], summary["mean_ttft_ms"]);
}

#[test]
fn sweep_runs_every_point_on_one_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    harness()
        .args([
            "sweep",
            "--engine",
            "calibration",
            "--batch",
            "1,2,4",
            "--input-len",
            "8",
            "--output-len",
            "4",
            "--warmup",
            "1",
            "--min-rounds",
            "3",
            "--min-duration",
            "0.2",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["points"].as_array().unwrap().len(), 3);
    assert_eq!(run["driver"]["min_rounds"], 3);
    // Floors: at least 3 whole batches and 0.2 s per point (a batch of 4-token requests
    // takes ~52 ms here, so the duration decides), every point with an interval.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    for p in summary["points"].as_array().unwrap() {
        let rounds = p["rounds"].as_u64().unwrap();
        assert!(rounds >= 3, "{p}");
        assert_eq!(
            p["completed"].as_u64().unwrap(),
            rounds * p["batch"].as_u64().unwrap()
        );
        assert!(
            p["output_throughput_ci95_low"].as_f64().unwrap()
                <= p["output_throughput_mean"].as_f64().unwrap()
        );
        assert_eq!(p["measures"]["stop"]["ended_by"], "floors");
        assert!(p["duration"].as_f64().unwrap() >= 0.2, "{p}");
        assert!(p["harness_us_per_step"].as_f64().unwrap() > 0.0);
        assert!(p["other_cpu_share_pct"].is_number());
    }
    // Every request drew its own prompt (request id = workload item): none was sent
    // twice, so no point's TTFT could come from an earlier point's prefix cache.
    for p in summary["points"].as_array().unwrap() {
        assert_eq!(p["reused_prompts"].as_f64(), Some(0.0), "{p}");
    }
    let workload = std::fs::read_to_string(out.join("workload.jsonl")).unwrap();
    let mut lines: Vec<&str> = workload.lines().collect();
    let total = lines.len();
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), total, "the workload repeats a prompt");
}

#[test]
fn config_file_and_flag_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cfg = tmp.path().join("run.toml");
    std::fs::write(&cfg, "engine = \"calibration\"\nbatch = 2\ninput-len = 8\noutput-len = 3\nwarmup = 0\nnum-requests = 4\nengine-arg = [\"decode_ms=2\"]\n").unwrap();
    harness()
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--output-len", "5"])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        saved.contains("output_len = \"5\""),
        "flag must override the file:\n{saved}"
    );
    assert!(
        saved.contains("batch = \"2\""),
        "file value must be kept:\n{saved}"
    );
    let recs = std::fs::read_to_string(out.join("requests.jsonl")).unwrap();
    assert_eq!(recs.lines().count(), 4);
    assert!(recs.lines().all(|l| l.contains("\"output_len\":5")));
    // The saved config reruns the same thing.
    let out2 = tmp.path().join("out2");
    harness()
        .args(["run", "--config"])
        .arg(out.join("config.toml"))
        .arg("--out")
        .arg(&out2)
        .assert()
        .success();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "engine = \"calibration\"\nbatchh = 2\n").unwrap();
    let mut c = harness();
    c.args(["run", "--config"])
        .arg(&bad)
        .arg("--out")
        .arg(tmp.path().join("out3"));
    usage_error(c, "line 2");
}

#[test]
fn injected_engine_failure_keeps_finished_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut c = calib(&out);
    // Batches of 4 × 8 tokens take 8 steps each: step 20 fails the third batch.
    c.args(["--num-requests", "16", "--engine-arg", "fail_at_step=20"]);
    let o = c.assert().code(1).get_output().clone();
    assert!(String::from_utf8_lossy(&o.stderr).contains("injected failure at step 20"));
    let recs = std::fs::read_to_string(out.join("requests.jsonl")).unwrap();
    let ok = recs
        .lines()
        .filter(|l| l.contains("\"finish_reason\":\"length\""))
        .count();
    let failed = recs
        .lines()
        .filter(|l| l.contains("\"finish_reason\":\"error\""))
        .count();
    assert_eq!((ok, failed), (8, 4), "{recs}");
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["status"], "engine_failed");
    harness().arg("report").arg(&out).assert().success();
}

#[test]
fn ctrl_c_keeps_a_valid_trace_that_report_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let bin = assert_cmd::cargo::cargo_bin("harness");
    let mut child = std::process::Command::new(bin)
        .args([
            "run",
            "--engine",
            "calibration",
            "--concurrency",
            "4",
            "--input-len",
            "8",
            "--output-len",
            "10",
            "--warmup",
            "0",
        ])
        .args(["--num-requests", "100000", "--engine-arg", "decode_ms=5"])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some requests have finished, then interrupt.
    let trace = out.join("requests.jsonl");
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&trace).map_or(0, |s| s.lines().count()) < 8 {
        assert!(t.elapsed().as_secs() < 30, "no requests finished");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let text = std::fs::read_to_string(&trace).unwrap();
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every line is valid JSON");
    }
    assert!(
        text.contains("\"finish_reason\":\"abort\""),
        "in-flight requests are listed as aborted"
    );
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["status"], "interrupted");
    harness()
        .arg("report")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("concurrency=4"));
}

#[test]
fn report_of_a_non_result_dir_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = harness();
    c.arg("report").arg(tmp.path());
    usage_error(c, "run.json");
}

#[test]
fn engines_lists_the_calibration_engine() {
    let text = succeeds(harness().arg("engines"));
    let first = text.lines().next().unwrap_or_default();
    let cells: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(&cells[..2], ["calibration", "ready"], "{text}");
    let detail = text.lines().nth(1).unwrap_or_default();
    assert!(detail.contains("step engine; built in; version"), "{text}");
    assert!(
        !text.lines().nth(2).unwrap_or_default().contains("why not"),
        "{text}"
    );
}

/// `device=cuda` on a host without a GPU: exit 2, one line naming what is missing and
/// the fix, nothing created. Bad device values are refused the same way.
#[test]
fn calibration_on_a_gpu_is_refused_where_there_is_none() {
    if Path::new("/proc/driver/nvidia").exists() {
        eprintln!("skipped: this machine has an NVIDIA driver (scripts/gpu_check.sh runs there)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut c = calib(&out);
    c.args(["--engine-arg", "device=cuda"]);
    usage_error(
        c,
        "--engine calibration cannot run here: device=cuda:0: no CUDA driver (libcuda.so not found); run it on a host with an NVIDIA GPU and driver, or drop device=",
    );
    assert!(!out.exists());
    for (arg, needle) in [
        (
            "device=gpu",
            "--engine-arg device=gpu: expected cpu, cuda or cuda:N",
        ),
        ("mem_gib=2", "--engine-arg mem_gib needs device=cuda[:N]"),
    ] {
        let mut c = calib(&out);
        c.args(["--engine-arg", arg]);
        usage_error(c, needle);
        assert!(!out.exists(), "{arg}");
    }
}

/// The product's own example without TensorRT-LLM built in: exit 2, one line saying how
/// to build it, nothing written; `harness engines` says the same.
#[cfg(not(feature = "trtllm"))]
#[test]
fn trtllm_without_the_feature_says_how_to_build_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = harness();
    c.current_dir(tmp.path())
        .args(["--engine", "trtllm", "--batch", "32"]);
    usage_error(
        c,
        "--engine trtllm cannot run here: built without the trtllm feature; cargo build --release --features trtllm with TRTLLM_ROOT=",
    );
    // Refused before anything is created: not even the default `results/` parent.
    assert!(!tmp.path().join("results").exists());

    let out = harness().arg("engines").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mine: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("trtllm "))
        .take(3)
        .collect();
    assert!(mine[0].contains("NOT USABLE"), "{text}");
    assert!(mine[1].contains("stream engine; not built in"), "{text}");
    assert!(
        mine[2].contains("why not: built without the trtllm feature")
            && mine[2].contains("the C++ Executor exists up to TensorRT-LLM 1.2.x")
            && mine[2].contains("last stable release with it: 1.2.1"),
        "{text}"
    );
}

/// The default build has no llama.cpp (no cmake, no libclang): it lists the engine and
/// says how to build it, and refuses to run it as bad input that writes nothing.
#[cfg(not(feature = "llamacpp"))]
#[test]
fn llamacpp_says_how_to_enable_it() {
    let text = succeeds(harness().arg("engines"));
    let at = text
        .lines()
        .position(|l| l.starts_with("llamacpp "))
        .unwrap_or_else(|| panic!("llamacpp not listed:\n{text}"));
    let block: Vec<&str> = text.lines().skip(at).take(3).collect();
    assert!(block[0].contains("NOT USABLE"), "{text}");
    assert!(
        block[2].contains("why not") && block[2].contains("--features llamacpp"),
        "{text}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("m.gguf");
    std::fs::write(&gguf, b"GGUF").unwrap();
    let mut c = harness();
    c.args(["run", "--engine", "llamacpp", "--model"])
        .arg(tmp.path().join("missing.gguf"));
    usage_error(c, "no such file or directory");
    let out = tmp.path().join("out");
    let mut c = harness();
    c.args(["run", "--engine", "llamacpp", "--model"])
        .arg(&gguf)
        .arg("--out")
        .arg(&out);
    usage_error(c, "GGUF");
    assert!(!out.exists());
    // A GGUF that passes the header check: refused for the build, with the fix.
    let mut header = b"GGUF".to_vec();
    header.extend(3u32.to_le_bytes());
    header.extend(1u64.to_le_bytes());
    header.extend(1u64.to_le_bytes());
    header.resize(256, 0);
    std::fs::write(&gguf, header).unwrap();
    let mut c = harness();
    c.args(["run", "--engine", "llamacpp", "--model"])
        .arg(&gguf)
        .arg("--out")
        .arg(&out);
    usage_error(
        c,
        "--engine llamacpp cannot run here: rebuild with `cargo build --release --features llamacpp`",
    );
    assert!(!out.exists());
}

#[test]
fn the_product_form_is_harness_run() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = [
        "--engine",
        "calibration",
        "--batch",
        "8",
        "--input-len",
        "8",
        "--output-len",
        "4",
        "--num-requests",
        "16",
        "--warmup",
        "0",
    ];
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    harness()
        .args(flags)
        .arg("--out")
        .arg(&a)
        .assert()
        .success();
    harness()
        .arg("run")
        .args(flags)
        .arg("--out")
        .arg(&b)
        .assert()
        .success();
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&a), names(&b));
    for f in ["workload.jsonl", "engine.log"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    let config = |d: &Path| {
        std::fs::read_to_string(d.join("config.toml"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("out "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(config(&a), config(&b));
    // The same requests, tokens and outcomes (timings differ, as between any two runs).
    let untimed = |d: &Path| {
        std::fs::read_to_string(d.join("requests.csv"))
            .unwrap()
            .lines()
            .map(|l| l.split(',').take(5).collect::<Vec<_>>().join(","))
            .collect::<Vec<_>>()
    };
    assert_eq!(untimed(&a), untimed(&b));
    assert_eq!(untimed(&a).len(), 17);
}

#[test]
fn a_result_directory_from_before_typed_results_still_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("old");
    std::fs::create_dir(&dir).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/result-format1");
    for f in [
        "run.json",
        "requests.jsonl",
        "config.toml",
        "workload.jsonl",
    ] {
        std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
    }
    let table = succeeds(harness().arg("report").arg(&dir));
    for label in ["batch=1", "batch=2", "CALIBRATION INSTRUMENT"] {
        assert!(table.contains(label), "{table}");
    }
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["points"][1]["completed"], 2);
    assert_eq!(s["meta"]["format"], 1);

    // The same directory with a field this harness needs removed: exit 2, naming it.
    let mut run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    run.as_object_mut().unwrap().remove("workload");
    std::fs::write(dir.join("run.json"), run.to_string()).unwrap();
    let mut c = harness();
    c.arg("report").arg(&dir);
    usage_error(c, "run.json: missing field `workload`");
}

#[test]
fn without_a_gpu_one_line_says_so_and_the_files_are_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = calib(&out)
        .args(["--num-requests", "4"])
        .assert()
        .success()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&o.stderr);
    let gpu: Vec<&str> = err
        .lines()
        .filter(|l| l.to_lowercase().contains("gpu"))
        .collect();
    if std::path::Path::new("/proc/driver/nvidia").exists() {
        eprintln!("skipped: this machine has an NVIDIA driver ({gpu:?})");
        return;
    }
    assert_eq!(gpu.len(), 1, "{err}");
    assert!(
        gpu[0].starts_with("gpu: GPU step timing off: no CUDA driver")
            && gpu[0].contains("telemetry off"),
        "{}",
        gpu[0]
    );
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "config.toml",
            "engine.log",
            "plots",
            "report.html",
            "requests.csv",
            "requests.jsonl",
            "run.json",
            "steps.jsonl",
            "summary.csv",
            "summary.json",
            "trace.json",
            "workload.jsonl"
        ]
    );
    // `harness engines` says why GPU timing is off.
    let text = succeeds(harness().arg("engines"));
    assert!(
        text.contains("CUDA driver: none (libcuda.so not found): GPU step timing off"),
        "{text}"
    );
    assert!(text.contains("NVML: unavailable"), "{text}");
}

#[test]
fn shared_prefix_hit_rate_recomputes_from_the_requests_and_names_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    harness()
        .args([
            "sweep",
            "--engine",
            "calibration",
            "--engine-arg",
            "prefix_cache_tokens=100000",
            "--dataset",
            "shared-prefix",
            "--num-groups",
            "2",
            "--prompts-per-group",
            "4",
            "--system-prompt-len",
            "64",
            "--question-len",
            "24",
            "--output-len",
            "2",
            "--group-order",
            "grouped",
            "--batch",
            "1,2",
            "--num-requests",
            "8",
            "--warmup",
            "0",
            "--fresh-cache",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let json = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(f)).unwrap()).unwrap()
    };
    let (run, summary) = (json("run.json"), json("summary.json"));
    let source = run["engine"]["scheduler"]["cached_prompt_tokens_source"]
        .as_str()
        .unwrap();
    assert!(source.contains("prefix-cache model"), "{source}");
    // Recomputed from requests.jsonl alone: cached / prompt tokens of completed requests.
    let mut per_point = [(0u64, 0u64); 2];
    for line in std::fs::read_to_string(out.join("requests.jsonl"))
        .unwrap()
        .lines()
    {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["finish_reason"], "length");
        let p = &mut per_point[r["point"].as_u64().unwrap() as usize];
        p.0 += r["cached_prompt_tokens"].as_u64().unwrap();
        p.1 += r["input_len"].as_u64().unwrap();
    }
    for (i, p) in summary["points"].as_array().unwrap().iter().enumerate() {
        let (cached, prompt) = per_point[i];
        assert_eq!(p["cached_prompt_tokens"].as_u64(), Some(cached));
        let rate = p["prefix_cache_hit_rate"].as_f64().unwrap();
        assert!((rate - cached as f64 / prompt as f64).abs() < 1e-12, "{p}");
        // The second point sends the same 8 prompts; emptied first, it hits only the
        // system prompts, as the first did.
        assert_eq!((cached, prompt), (6 * 64, 8 * 88), "point {i}");
        assert_eq!(p["fresh_cache"].as_f64(), Some(1.0));
    }
    // An engine run without a prefix cache reports no hit rate: not 0.
    let plain = tmp.path().join("plain");
    succeeds(&mut calib(&plain));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(plain.join("summary.json")).unwrap()).unwrap();
    assert!(s["points"][0]
        .get("prefix_cache_hit_rate")
        .is_none_or(|v| v.is_null()));
}

#[test]
fn conversation_figures_by_turn_recompute_from_the_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let stdout = succeeds(
        harness()
            .args([
                "run",
                "--engine",
                "calibration",
                "--engine-arg",
                "prefix_cache_tokens=100000",
                "--engine-arg",
                "prefill_us_per_token=200",
                "--dataset",
                "conversations",
                "--turns",
                "3",
                "--input-len",
                "24",
                "--output-len",
                "8",
                "--think-time",
                "5",
                "--concurrency",
                "2",
                "--num-requests",
                "12",
                "--warmup",
                "0",
                "--save-token-ids",
            ])
            .arg("--out")
            .arg(&out),
    );
    assert!(stdout.contains("By turn"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let recs = common::records(&out);
    assert_eq!(recs.len(), 12);
    // Recomputed from requests.jsonl alone, by turn: TTFT (first token offset), the
    // prompt tokens sent and cached / prompt tokens.
    let mut by_turn: std::collections::BTreeMap<u64, Vec<&serde_json::Value>> = Default::default();
    for r in &recs {
        by_turn
            .entry(r["turn"].as_u64().unwrap())
            .or_default()
            .push(r);
    }
    let rows: Vec<csv::StringRecord> = csv::Reader::from_path(out.join("turns.csv"))
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 3);
    let turns = summary["by_turn"].as_array().unwrap();
    for (k, rs) in &by_turn {
        let n = rs.len() as f64;
        let ttft: f64 = rs
            .iter()
            .map(|r| r["token_ns"][0].as_f64().unwrap() / 1e6)
            .sum::<f64>()
            / n;
        let input: f64 = rs
            .iter()
            .map(|r| r["input_len"].as_f64().unwrap())
            .sum::<f64>()
            / n;
        let cached: u64 = rs
            .iter()
            .map(|r| r["cached_prompt_tokens"].as_u64().unwrap())
            .sum();
        let prompt: u64 = rs.iter().map(|r| r["input_len"].as_u64().unwrap()).sum();
        // Turn k's prompt: k · (24 + 8) tokens of context, then 24 of its own.
        assert_eq!(input, 24.0 + 32.0 * *k as f64, "turn {k}");
        let t = &turns[*k as usize];
        assert_eq!(t["turn"].as_u64(), Some(*k));
        assert!(
            (t["ttft"]["mean"].as_f64().unwrap() - ttft).abs() < 1e-9,
            "turn {k}"
        );
        assert_eq!(t["input_len"]["mean"].as_f64(), Some(input));
        let rate = cached as f64 / prompt as f64;
        assert!((t["prefix_cache_hit_rate"].as_f64().unwrap() - rate).abs() < 1e-12);
        let row = &rows[*k as usize];
        assert_eq!(row[2].parse::<u64>().unwrap(), *k);
        assert!((row[5].parse::<f64>().unwrap() - ttft).abs() < 1e-9);
        assert!((row[10].parse::<f64>().unwrap() - rate).abs() < 1e-12);
    }
    // The hit rate grows by turn: each turn resends the conversation so far.
    let rates: Vec<f64> = turns
        .iter()
        .map(|t| t["prefix_cache_hit_rate"].as_f64().unwrap())
        .collect();
    assert!(
        rates[0] == 0.0 && rates[1] > 0.0 && rates[2] > rates[1],
        "{rates:?}"
    );
    // A later turn's prompt is the previous prompt + its reply + the next user message
    // from workload.jsonl; it is due 5 ms after the previous finish.
    let workload: Vec<serde_json::Value> = std::fs::read_to_string(out.join("workload.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in recs.iter().filter(|r| r["turn"].as_u64() > Some(0)) {
        let (c, k) = (r["conversation"].as_u64(), r["turn"].as_u64().unwrap());
        let prev = recs
            .iter()
            .find(|p| p["conversation"].as_u64() == c && p["turn"].as_u64() == Some(k - 1))
            .unwrap();
        let user = workload
            .iter()
            .find(|w| w["conversation"].as_u64() == c && w["turn"].as_u64() == Some(k))
            .unwrap();
        let ids = |v: &serde_json::Value| -> Vec<u64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect()
        };
        let mut want = ids(&prev["prompt_token_ids"]);
        want.extend(ids(&prev["token_ids"]));
        want.extend(ids(&user["user_token_ids"]));
        assert_eq!(ids(&r["prompt_token_ids"]), want);
        assert_eq!(user["think_ns"].as_u64(), Some(5_000_000));
        let due = r["intended_ns"].as_u64().unwrap();
        assert_eq!(due, prev["finish_ns"].as_u64().unwrap() + 5_000_000);
    }
    let c = &summary["conversations"];
    assert_eq!(
        (c["count"].as_u64(), c["completed"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(summary["conversations_started"].as_f64(), Some(4.0));
    // requests.csv carries the conversation and turn.
    let head = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    assert!(
        head.starts_with("id,point,conversation,turn,input_len"),
        "{head}"
    );
}

#[test]
fn step_figures_recompute_from_the_step_records_and_no_timeline_turns_them_off() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    harness()
        .args([
            "sweep",
            "--engine",
            "calibration",
            "--concurrency",
            "2,6",
            "--num-requests",
            "12",
            "--input-len",
            "16",
            "--output-len",
            "6",
            "--engine-arg",
            "max_batch=4",
            "--engine-arg",
            "decode_ms=2",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(name)).unwrap()).unwrap()
    };
    let summary = json("summary.json");
    let steps = common::steps(&out);
    let requests = std::fs::read_to_string(out.join("requests.jsonl")).unwrap();
    for (i, p) in summary["points"].as_array().unwrap().iter().enumerate() {
        let mine: Vec<&serde_json::Value> =
            steps.iter().filter(|s| s["point"] == i as u64).collect();
        assert_eq!(p["steps"].as_f64(), Some(mine.len() as f64), "{p}");
        let n = |s: &serde_json::Value, k: &str| s[k].as_f64().unwrap();
        // Batch = prefill + decode requests, weighted by gap + call.
        let (mut sum, mut w) = (0.0, 0.0);
        for s in &mine {
            let t = n(s, "gap_ns") + n(s, "end_ns") - n(s, "start_ns");
            // A record that folds several engine steps counts their mean.
            let folded = n(s, "engine_steps");
            sum += (n(s, "prefill_requests") + n(s, "decode_requests")) / folded * t;
            w += t;
        }
        let batch = p["step_batch_mean"].as_f64().unwrap();
        assert!((batch - sum / w).abs() < 1e-9, "{batch} vs {}", sum / w);
        let prefill = mine.iter().filter(|s| n(s, "prefill_tokens") > 0.0).count();
        let share = p["prefill_step_share_pct"].as_f64().unwrap();
        assert!((share - 100.0 * prefill as f64 / mine.len() as f64).abs() < 1e-9);
        assert_eq!(p["preemptions"].as_f64(), Some(0.0));
        // Every output token came from a prefill (the first) or a decode step.
        let first: f64 = mine.iter().map(|s| n(s, "prefill_requests")).sum();
        let decoded: f64 = mine.iter().map(|s| n(s, "decode_tokens")).sum();
        assert_eq!(first + decoded, p["total_output_tokens"].as_f64().unwrap());
        assert_eq!(
            first as usize,
            requests
                .lines()
                .filter(|l| l.contains(&format!("\"point\":{i},")))
                .count()
        );
    }
    assert!(summary["definitions"]["steps"]
        .as_str()
        .unwrap()
        .contains("step_batch_mean"));

    let off = tmp.path().join("off");
    let mut c = calib(&off);
    c.arg("--no-timeline").assert().success();
    assert_eq!(
        std::fs::read_to_string(off.join("steps.jsonl")).unwrap(),
        ""
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(off.join("summary.json")).unwrap()).unwrap();
    assert!(summary["points"][0].get("step_batch_mean").is_none());
}

/// A vllm env holding vLLM's CUDA build (what scripts/setup.sh makes on a GPU host) on a
/// host without a GPU: `harness engines` names the build and why it cannot run, HF in
/// the same env stays usable, and a run is refused before anything is created.
#[cfg(feature = "python")]
#[test]
fn a_cuda_build_of_vllm_is_named_and_refused_without_a_gpu() {
    if Path::new("/proc/driver/nvidia/gpus").exists() {
        eprintln!("skipped: this machine has an NVIDIA GPU");
        return;
    }
    let listing = succeeds(harness().arg("engines"));
    let python = listing
        .split("; embedded ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("the embedded interpreter in `harness engines`")
        .to_string();
    let cache = tempfile::tempdir().unwrap();
    let venv = cache.path().join("venvs/vllm");
    let sp = venv.join("lib").join(&python).join("site-packages");
    for pkg in ["vllm", "transformers", "vllm-0.32.0.dist-info"] {
        std::fs::create_dir_all(sp.join(pkg)).unwrap();
    }
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    std::fs::write(venv.join("bin/python"), "").unwrap();
    std::fs::write(venv.join(".harness-variant"), "cuda\n").unwrap();

    let mut c = harness();
    c.env("LLM_HARNESS_CACHE", cache.path()).arg("engines");
    let text = succeeds(&mut c);
    let block = |name: &str| -> String {
        let start = text.find(&format!("\n{name} ")).map_or(0, |i| i + 1);
        text[start..].lines().take(3).collect::<Vec<_>>().join("\n")
    };
    let vllm = block("vllm");
    assert!(
        vllm.contains("NOT USABLE") && vllm.contains("(cuda build)"),
        "{vllm}"
    );
    assert!(
        vllm.contains(
            "why not: the vllm env holds the engine's CUDA build and this host has no NVIDIA GPU"
        ),
        "{vllm}"
    );
    let hf = block("hf");
    assert!(hf.contains("ready") && hf.contains("(cuda build)"), "{hf}");

    let model = cache.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    std::fs::write(model.join("model.safetensors"), "").unwrap();
    let out = cache.path().join("out");
    let mut c = harness();
    c.env("LLM_HARNESS_CACHE", cache.path())
        .args(["run", "--engine", "vllm", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&out);
    usage_error(
        c,
        "--engine vllm cannot run here: the vllm env holds the engine's CUDA build and this host has no NVIDIA GPU (no NVIDIA driver loaded); make the CPU build with scripts/setup.sh vllm --cpu",
    );
    assert!(!out.exists());
}

/// A word-level tokenizer whose words include the numbers 0..=20, so a scored
/// dataset's prompts (and the calibration engine's echo of them) decode to text.
fn write_number_tokenizer(path: &Path) {
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    for (i, w) in ["the", "answer", "is"].iter().enumerate() {
        vocab.insert(w.to_string(), (i + 1).into());
    }
    for n in 0..=20u32 {
        vocab.insert(n.to_string(), (n + 4).into());
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 0, "content": "[UNK]", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(path, json.to_string()).unwrap();
}

/// Five scored items whose verdicts under the calibration engine's echo are known: 3
/// right (7; 12 = 12.0; the first match, 5), one wrong (8 against 9), one unanswered.
fn write_scored_items(path: &Path) {
    let p = r#""pattern": "answer is (\\d+)""#;
    std::fs::write(
        path,
        [
            format!(r#"{{"prompt": "the answer is 7", "answer": "7", {p}}}"#),
            format!(r#"{{"prompt": "the answer is 8", "answer": 9, {p}}}"#),
            r#"{"prompt": "the answer is 12", "answer": "12.0"}"#.to_string(),
            format!(r#"{{"prompt": "the the the", "answer": "3", {p}}}"#),
            format!(r#"{{"prompt": "answer is 5 the answer is 6", "answer": "5", {p}}}"#),
        ]
        .join("\n"),
    )
    .unwrap();
}

#[test]
fn a_scored_calibration_run_has_the_exact_accuracy() {
    // The calibration engine echoes each prompt (token k is prompt[k % len]), so each
    // item's verdict is known: 3 of these 5 are right (7; 12 = 12.0; the first match, 5),
    // one is wrong (8 against 9) and one has no answer.
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = tmp.path().join("tokenizer.json");
    write_number_tokenizer(&tokenizer);
    let data = tmp.path().join("scored.jsonl");
    write_scored_items(&data);
    let run = |out: &Path| {
        let mut c = harness();
        c.args([
            "run",
            "--engine",
            "calibration",
            "--dataset",
            "scored",
            "--batch",
            "5",
            "--num-requests",
            "10",
            "--output-len",
            "8",
            "--warmup",
            "0",
        ])
        .arg("--dataset-path")
        .arg(&data)
        .arg("--tokenizer")
        .arg(&tokenizer)
        .arg("--out")
        .arg(out);
        let o = c.assert().success().get_output().clone();
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let stdout = run(&a);
    assert!(
        stdout.contains("accuracy 6/10 = 0.600 [0.313, 0.832]"),
        "{stdout}"
    );
    let scores: Vec<serde_json::Value> = std::fs::read_to_string(a.join("scores.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(scores.len(), 10);
    assert_eq!(scores.iter().filter(|s| s["correct"] == true).count(), 6);
    let none: Vec<_> = scores.iter().filter(|s| s["answer"].is_null()).collect();
    assert_eq!(none.len(), 2);
    assert!(
        none.iter()
            .all(|s| s["output"] == "the the the the the the the the"),
        "{none:?}"
    );
    assert!(scores
        .iter()
        .any(|s| s["reference"] == "12" && s["answer"] == "12" && s["correct"] == true));
    let json = |d: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap()
    };
    let s = json(&a);
    // Wilson 95 % for 6 of 10: [0.31267, 0.83182].
    assert_eq!(s["accuracy"], 0.6);
    assert!(
        (s["accuracy_ci95_low"].as_f64().unwrap() - 0.31267).abs() < 1e-4,
        "{s}"
    );
    assert!(
        (s["accuracy_ci95_high"].as_f64().unwrap() - 0.83182).abs() < 1e-4,
        "{s}"
    );
    assert!(s["definitions"]["accuracy"]
        .as_str()
        .unwrap()
        .contains("Wilson"));
    // `harness report` recounts scores.jsonl to the same figures.
    std::fs::remove_file(a.join("summary.json")).unwrap();
    harness().arg("report").arg(&a).assert().success();
    let again = json(&a);
    for k in ["accuracy", "accuracy_ci95_low", "accuracy_ci95_high"] {
        assert_eq!(again[k], s[k], "{k}");
    }
    // `harness compare` shows accuracy beside throughput.
    run(&b);
    let o = harness()
        .arg("compare")
        .arg(&a)
        .arg(&b)
        .assert()
        .success()
        .get_output()
        .clone();
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("accuracy") && table.contains("×1.00 within spread"),
        "{table}"
    );
    // An unscored run has no accuracy key.
    let plain = tmp.path().join("plain");
    calib(&plain)
        .args(["--num-requests", "4"])
        .assert()
        .success();
    assert!(json(&plain).get("accuracy").is_none());
    assert!(!plain.join("scores.jsonl").exists());
}

/// `harness variants` over a scored workload: `--model DIR` (a tokenizer.json only; the
/// calibration engine loads nothing) is the default model, and its tokenizer goes to
/// every child.
fn variants(tmp: &Path, out: &Path, variants: &[&str]) -> Command {
    let model = tmp.join("model");
    std::fs::create_dir_all(&model).unwrap();
    write_number_tokenizer(&model.join("tokenizer.json"));
    let data = tmp.join("scored.jsonl");
    write_scored_items(&data);
    let mut c = harness();
    c.args([
        "variants",
        "--dataset",
        "scored",
        "--batch",
        "5",
        "--num-requests",
        "10",
        "--output-len",
        "8",
        "--warmup",
        "0",
        "--no-progress",
    ])
    .arg("--dataset-path")
    .arg(&data)
    .arg("--model")
    .arg(&model)
    .arg("--out")
    .arg(out);
    for v in variants {
        c.args(["--variant", v]);
    }
    c
}

/// The table row of `label` (its cells, trimmed).
fn table_row<'a>(text: &'a str, label: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>())
        .find(|c| c.get(1) == Some(&label))
        .unwrap_or_else(|| panic!("no row {label} in:\n{text}"))
}

#[test]
fn variants_put_each_setting_side_by_side_with_its_exact_accuracy() {
    // Two decode schedules of the calibration engine: the same echo (so 6 of 10 right
    // on both, see `write_scored_items`), TPOT decode_ms + 0.1 ms × 5 running = 2.5 and
    // 8.5 ms.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let stdout = succeeds(&mut variants(
        tmp.path(),
        &out,
        &[
            "calibration:decode_ms=2,label=fast",
            "calibration:decode_ms=8,label=slow",
        ],
    ));
    let text = stdout
        .split("Variants: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no variants table in:\n{stdout}"));
    assert!(
        text.starts_with("2 engine settings on one workload: scored"),
        "{text}"
    );
    let tokenizer = tmp.path().join("model/tokenizer.json");
    assert!(
        text.contains(&format!(
            "Tokenizer: {} (the first variant's",
            tokenizer.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("| variant | engine")
            && text.contains("| load s | point   | out tok/s | TTFT p50 (ms) | TPOT p50 (ms) |"),
        "{text}"
    );
    for label in ["fast", "slow"] {
        let row = table_row(text, label);
        // variant, engine, dtype, load s, point, 3 figures, accuracy, exit.
        assert_eq!(
            row[2],
            format!("calibration {}", env!("CARGO_PKG_VERSION")),
            "{row:?}"
        );
        assert_eq!((row[3], row[5]), ("-", "batch=5"), "{row:?}");
        assert!(row[4].parse::<f64>().is_ok(), "load s: {row:?}");
        assert_eq!(row[9], "6/10 = 0.600 [0.313, 0.832]", "{row:?}");
        assert_eq!(row[10], "0", "{row:?}");
    }
    // The method is in the output, and compare's table over the same directories.
    assert!(text.contains("Wilson 95 % interval") && text.contains("engine.load_time_s"));
    assert!(
        text.contains("harness compare over the same directories"),
        "{text}"
    );
    assert!(
        text.contains(&format!("calibration {} (slow)", env!("CARGO_PKG_VERSION")))
            && text.contains("×1.00 within spread"),
        "{text}"
    );
    let saved = std::fs::read_to_string(out.join("variants.txt")).unwrap();
    assert!(
        saved.contains("Variants: 2 engine settings") && stdout.contains(&saved),
        "{saved}"
    );
    let v = common::json(&out.join("variants.json"));
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    for (row, (label, dir, tpot)) in rows
        .iter()
        .zip([("fast", "01-fast", 2.5), ("slow", "02-slow", 8.5)])
    {
        assert_eq!(
            (row["variant"].as_str(), row["dir"].as_str()),
            (Some(label), Some(dir))
        );
        assert_eq!(row["engine"], "calibration");
        assert_eq!(row["dtype"], "-");
        assert_eq!(
            row["engine_args"][0],
            format!("decode_ms={}", if label == "fast" { 2 } else { 8 })
        );
        assert!(row["load_time_s"].as_f64().unwrap() >= 0.0, "{row}");
        assert_eq!(row["point"], "batch=5");
        assert_eq!(row["exit_code"], 0);
        assert_eq!(
            (
                row["accuracy_correct"].as_u64(),
                row["accuracy_scored"].as_u64()
            ),
            (Some(6), Some(10))
        );
        assert_eq!(row["accuracy"], 0.6);
        assert!(
            (row["accuracy_ci95_low"].as_f64().unwrap() - 0.31267).abs() < 1e-4,
            "{row}"
        );
        // The schedule's TPOT within the host's wakeup noise (a late first-token
        // stamp shortens it, a late step lengthens it; all of cli.rs runs at once on
        // few cores), well apart from the other variant's 6 ms away.
        let t = row["median_tpot_ms"].as_f64().unwrap();
        assert!((t - tpot).abs() < 2.5, "{label}: TPOT {t}, schedule {tpot}");
        assert!(row["output_throughput"].as_f64().unwrap() > 0.0, "{row}");
        // Each child ran with the shared tokenizer, so both were sent the same ids.
        let run = common::json(&out.join(dir).join("run.json"));
        assert_eq!(run["tokenizer"], tokenizer.display().to_string(), "{dir}");
    }
    assert_eq!(
        v["variants"][1]["spec"],
        "calibration:decode_ms=8,label=slow"
    );
    assert!(v["definitions"].as_str().unwrap().contains("TPOT p50 (ms)"));
    assert_eq!(
        std::fs::read(out.join("01-fast/workload.jsonl")).unwrap(),
        std::fs::read(out.join("02-slow/workload.jsonl")).unwrap()
    );
}

#[test]
fn a_failing_variant_keeps_its_row_and_the_command_exits_1() {
    // Request 0 (item 0, a right answer) fails on the second variant: 5 of 9 scored.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = variants(
        tmp.path(),
        &out,
        &["calibration", "calibration:fail_request=0"],
    )
    .assert()
    .code(1)
    .get_output()
    .clone();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let ok = table_row(&text, "calibration");
    assert_eq!(
        (ok[9], ok[10]),
        ("6/10 = 0.600 [0.313, 0.832]", "0"),
        "{text}"
    );
    let failed = table_row(&text, "calibration:fail_request=0");
    assert_eq!(
        (failed[9], failed[10]),
        ("5/9 = 0.556 [0.267, 0.811]", "1"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 of 2 variants failed"));
    let v = common::json(&out.join("variants.json"));
    assert_eq!(v["rows"][1]["exit_code"], 1);
    assert!(out.join("02-calibration-fail_request=0/run.json").is_file());
}

#[test]
fn bad_variants_exit_2_with_one_line_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    for (vs, extra, needle) in [
        (
            vec!["calibration"],
            vec![],
            "--variant given 1 time(s): give at least 2",
        ),
        (
            vec!["calibration", "nope:x=1"],
            vec![],
            "--variant nope:x=1: unknown engine 'nope'",
        ),
        (
            vec!["calibration", "calibration:decode_ms"],
            vec![],
            "--variant 'calibration:decode_ms': 'decode_ms' is not KEY=VALUE",
        ),
        (
            vec!["calibration", "calibration:model=/nonexistent"],
            vec![],
            "--variant calibration:model=/nonexistent: --model /nonexistent: no such file",
        ),
        (
            vec!["calibration", "calibration"],
            vec![],
            "its label 'calibration' is also calibration's",
        ),
        (
            vec!["calibration", "calibration:label=b"],
            vec!["--engine", "calibration"],
            "each --variant names its engine",
        ),
        (
            vec!["calibration", "calibration:label=b"],
            vec!["--python-env", "/tmp"],
            "give it per variant (--variant ENGINE:python-env=DIR)",
        ),
    ] {
        let mut c = variants(tmp.path(), &out, &vs);
        c.args(extra);
        usage_error(c, needle);
        assert!(!out.exists(), "{needle}: {} was created", out.display());
    }
}

#[test]
fn every_variant_is_sent_the_first_variants_tokenizer() {
    // Two models with different tokenizer.json files: both children get the first's,
    // so their prompts are the same ids, and the difference is warned about.
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for m in [&a, &b] {
        std::fs::create_dir(m).unwrap();
        write_number_tokenizer(&m.join("tokenizer.json"));
    }
    let mut other = common::json(&b.join("tokenizer.json"));
    other["model"]["vocab"]["extra"] = 25.into();
    std::fs::write(b.join("tokenizer.json"), other.to_string()).unwrap();
    let out = tmp.path().join("out");
    let o = harness()
        .args([
            "variants",
            "--batch",
            "2",
            "--num-requests",
            "2",
            "--input-len",
            "4",
            "--output-len",
            "2",
            "--no-progress",
            "--variant",
        ])
        .arg(format!("calibration:model={}", a.display()))
        .arg("--variant")
        .arg(format!("calibration:model={},label=b", b.display()))
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .get_output()
        .clone();
    let shared = a.join("tokenizer.json").display().to_string();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "warning: variant b: its model's {} differs from {shared}",
            b.join("tokenizer.json").display()
        )),
        "{err}"
    );
    let dirs: Vec<_> = ["01-", "02-b"]
        .iter()
        .map(|p| {
            std::fs::read_dir(&out)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|d| d.is_dir() && d.file_name().unwrap().to_string_lossy().starts_with(p))
                .unwrap()
        })
        .collect();
    for d in &dirs {
        assert_eq!(
            common::json(&d.join("run.json"))["tokenizer"],
            shared,
            "{}",
            d.display()
        );
    }
    assert_eq!(
        std::fs::read(dirs[0].join("workload.jsonl")).unwrap(),
        std::fs::read(dirs[1].join("workload.jsonl")).unwrap()
    );
}

/// The calibration engine's declared layout (tensor_parallel_size × pipeline_parallel_size,
/// every rank this process) is the known answer for what the harness does with one: it is
/// in run.json, the per-device figure is the point's figure over the devices (recomputed
/// here from requests.jsonl), and `compare` holds layouts equal unless told.
#[test]
fn a_layout_is_recorded_divides_the_per_device_figure_and_compare_holds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, four) = (tmp.path().join("tp1"), tmp.path().join("tp2pp2"));
    calib(&one).args(["--num-requests", "8"]).assert().success();
    let said = common::terminal(
        calib(&four)
            .args([
                "--num-requests",
                "8",
                "--engine-arg",
                "tensor_parallel_size=2",
                "--engine-arg",
                "pipeline_parallel_size=2",
            ])
            .assert()
            .success()
            .get_output(),
    );
    assert!(
        said.contains("layout: tp2 pp2 dp1 over none: 4 ranks on 1 node"),
        "{said}"
    );
    let run = common::json(&four.join("run.json"));
    let layout = &run["engine"]["layout"];
    assert_eq!(
        (&layout["tensor_parallel"], &layout["pipeline_parallel"]),
        (&2.into(), &2.into())
    );
    let ranks = layout["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 4);
    assert!(ranks
        .iter()
        .all(|r| r["pid"] == ranks[0]["pid"] && r["pid"].as_u64() > Some(0)));
    assert_eq!(
        ranks
            .iter()
            .map(|r| r["tp_rank"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 0, 1]
    );
    // Recomputed from the records: output tokens / (last finish - first submit) / 4.
    let recs = common::records(&four);
    let tokens: u64 = recs.iter().map(common::output_tokens).sum();
    let first = recs
        .iter()
        .map(|r| r["submit_ns"].as_u64().unwrap())
        .min()
        .unwrap();
    let last = recs
        .iter()
        .map(|r| r["finish_ns"].as_u64().unwrap())
        .max()
        .unwrap();
    let truth = tokens as f64 / ((last - first) as f64 / 1e9) / 4.0;
    let s = common::json(&four.join("summary.json"));
    let per_device = s["output_throughput_per_device"].as_f64().unwrap();
    assert!(
        (per_device - truth).abs() < 1e-9 * truth,
        "{per_device} vs {truth}"
    );
    assert_eq!(
        per_device,
        s["output_throughput"].as_f64().unwrap() / 4.0,
        "{s}"
    );
    // One device: no per-device key, no layout.
    let plain = common::json(&one.join("summary.json"));
    assert!(
        plain.get("output_throughput_per_device").is_none(),
        "{plain}"
    );
    assert!(common::json(&one.join("run.json"))["engine"]
        .get("layout")
        .is_none());
    // compare refuses the two layouts, then labels them when told.
    let mut refused = harness();
    refused.arg("compare").arg(&one).arg(&four);
    usage_error(
        refused,
        "ran the layout tp2 pp2 dp1 and tp1 ran tp1 pp1 dp1",
    );
    let table = succeeds(
        harness()
            .arg("compare")
            .arg(&one)
            .arg(&four)
            .arg("--allow-different-layouts")
            .arg("--out")
            .arg(tmp.path().join("cmp")),
    );
    assert!(
        table.contains("[tp2 pp2 dp1]") && table.contains("[tp1 pp1 dp1]"),
        "{table}"
    );
}
