//! `harness search`: capacity under SLOs by bisection, against the calibration
//! engine's exact schedule (a known answer), and its bad inputs.
//!
//! Concurrency: with `max_batch=M`, a closed loop of C <= M requests never queues
//! (TTFT = one prefill step, 10 ms here), while at C = M + k every cycle admits k
//! requests that waited a whole request (50 ms) first. An SLO on TTFT between the two
//! (35 ms) makes a probe fail as soon as C > M (k/M = 1/4 of requests late against a
//! target of 0.9), so the capacity is exactly M.
//!
//! Rate: with `max_batch=1`, a request takes D = prefill + 4 decode steps = 40 ms, so
//! the engine serves 1/D = 25 requests/s. Below it, arrivals (near-constant gaps,
//! burstiness 1000) never wait; above it, request k waits k·(D - 1/rate), which
//! passes the 12 ms TTFT slack for the 11 requests of 12 that a 0.9 target needs
//! only up to 25.8 requests/s. So the answer lies within one resolution step (1
//! request/s) of 25.

mod common;
use common::{fails, harness, json, records, succeeds};
use serde_json::Value;
use std::path::Path;

/// One measurement at a time: the calibration engine runs in real time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn engine_args(prefill_ms: f64, decode_ms: f64, max_batch: u32) -> Vec<String> {
    [
        format!("prefill_ms={prefill_ms}"),
        "prefill_ms_per_request=0".into(),
        "prefill_us_per_token=0".into(),
        format!("decode_ms={decode_ms}"),
        "decode_ms_per_seq=0".into(),
        format!("max_batch={max_batch}"),
    ]
    .into_iter()
    .flat_map(|a| ["--engine-arg".to_string(), a])
    .collect()
}

fn search(out: &Path) -> assert_cmd::Command {
    let mut c = harness();
    c.args(["search", "--engine", "calibration", "--no-progress"])
        .args(["--input-len", "8", "--output-len", "5"])
        .arg("--out")
        .arg(out);
    c
}

/// Each probe's good fraction, recomputed from requests.jsonl alone: the requests of
/// its point, good when they finished (length or stop) with TTFT within `ttft_ms`.
fn good_from_requests(dir: &Path, ttft_ms: f64) -> Vec<(u64, u64)> {
    let mut per: Vec<(u64, u64)> = Vec::new();
    for r in records(dir) {
        let i = r["point"].as_u64().unwrap() as usize;
        if per.len() <= i {
            per.resize(i + 1, (0, 0));
        }
        per[i].0 += 1;
        let ok = matches!(r["finish_reason"].as_str(), Some("length" | "stop"));
        let ttft = r["token_ns"][0].as_u64().map(|t| t as f64 / 1e6);
        if ok && ttft.is_some_and(|t| t <= ttft_ms) {
            per[i].1 += 1;
        }
    }
    per
}

/// The probes of summary.json agree with requests.jsonl and with their verdicts.
fn check_probes(out: &Path, ttft_ms: f64, target: f64) -> Value {
    let s = json(&out.join("summary.json"));
    let search = s["search"].clone();
    let probes = search["probes"].as_array().unwrap();
    let counted = good_from_requests(out, ttft_ms);
    assert_eq!(probes.len(), counted.len(), "{search}");
    assert_eq!(s["points"].as_array().unwrap().len(), probes.len());
    for (p, &(n, good)) in probes.iter().zip(&counted) {
        assert_eq!(p["requests"].as_u64(), Some(n), "{p}");
        assert_eq!(p["good_requests"].as_u64(), Some(good), "{p}");
        let pass = good as f64 / n as f64 >= target;
        assert_eq!(p["verdict"], if pass { "pass" } else { "fail" }, "{p}");
    }
    search
}

#[test]
fn concurrency_search_finds_the_engines_batch_limit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let t = std::time::Instant::now();
    let stdout = succeeds(
        search(&out)
            .args(["--search", "concurrency=1:16", "--slo", "ttft=35"])
            .args(["--num-requests", "16"])
            .args(engine_args(10.0, 10.0, 4)),
    );
    eprintln!("concurrency search: {:.1} s", t.elapsed().as_secs_f64());
    let search = check_probes(&out, 35.0, 0.9);
    assert_eq!(search["outcome"], "found", "{search}");
    assert_eq!(search["highest_passing"], 4.0, "{search}");
    assert_eq!(search["lowest_failing"], 5.0, "{search}");
    let probed: Vec<f64> = search["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(probed, [1.0, 16.0, 8.0, 4.0, 6.0, 5.0]);
    assert_eq!(search["dimension"], "concurrency");
    assert_eq!(search["bracket"], serde_json::json!([1.0, 16.0]));
    assert_eq!(search["resolution"], 1.0);
    assert_eq!(search["min_good_fraction"], 0.9);
    assert_eq!(search["slo"]["ttft_ms"], 35.0);
    let line = "bisection on concurrency over [1, 16], resolution 1, a probe passes when good requests / requests >= 0.9 under ttft <= 35 ms: capacity concurrency=4 (concurrency=5 fails); 6 probes";
    assert_eq!(search["description"], line);
    assert!(stdout.contains(line), "{stdout}");
    // run.json states the search; its points are the probes, in order.
    let run = json(&out.join("run.json"));
    assert_eq!(run["search"]["dimension"], "concurrency");
    assert_eq!(run["points"].as_array().map(Vec::len), Some(6));
    assert_eq!(
        run["driver"]["warmup"],
        serde_json::json!([1, 16, 8, 4, 6, 5])
    );
    // config.toml re-runs the run's flags (no load list of the bracket's ends).
    let toml = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(!toml.contains("concurrency"), "{toml}");

    // `harness report` re-renders the same answer from the directory.
    std::fs::remove_file(out.join("summary.json")).unwrap();
    let again = succeeds(harness().arg("report").arg(&out));
    assert!(again.contains(line), "{again}");
    let rerendered = json(&out.join("summary.json"));
    assert!(rerendered["search"] == search, "{}", rerendered["search"]);
}

#[test]
fn rate_search_finds_the_engines_service_rate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let t = std::time::Instant::now();
    succeeds(
        search(&out)
            .args(["--search", "rate=10:50", "--resolution", "1"])
            .args(["--slo", "ttft=20", "--burstiness", "1000"])
            .args(["--num-requests", "12", "--warmup", "0"])
            .args(engine_args(8.0, 8.0, 1)),
    );
    eprintln!("rate search: {:.1} s", t.elapsed().as_secs_f64());
    let search = check_probes(&out, 20.0, 0.9);
    eprintln!("{}", search["description"]);
    assert_eq!(search["outcome"], "found", "{search}");
    let p = search["highest_passing"].as_f64().unwrap();
    let f = search["lowest_failing"].as_f64().unwrap();
    // 1/D = 25 requests/s; the queue allowance of 12 requests lifts the schedule's
    // boundary to 25.8 at most.
    assert!(
        f - p <= 1.0 && (24.0..=25.8).contains(&p) && f > 25.0,
        "{search}"
    );
}

#[test]
fn the_bracket_ends_decide_none_feasible_and_at_least_hi() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    // Every request queues behind a 50 ms request at concurrency 2 with max_batch 1.
    let none = tmp.path().join("none");
    succeeds(
        search(&none)
            .args(["--search", "concurrency=2:8", "--slo", "ttft=35"])
            .args(["--num-requests", "8"])
            .args(engine_args(10.0, 10.0, 1)),
    );
    let s = check_probes(&none, 35.0, 0.9);
    assert_eq!(s["outcome"], "none_feasible", "{s}");
    assert_eq!(s["probes"].as_array().map(Vec::len), Some(1));
    assert_eq!(s["highest_passing"], Value::Null);
    // Nothing queues below max_batch 8.
    let all = tmp.path().join("all");
    let stdout = succeeds(
        search(&all)
            .args(["--search", "concurrency=1:4", "--slo", "ttft=35"])
            .args(["--num-requests", "8"])
            .args(engine_args(10.0, 10.0, 8)),
    );
    let s = check_probes(&all, 35.0, 0.9);
    assert_eq!(s["outcome"], "at_least_hi", "{s}");
    assert_eq!(s["highest_passing"], 4.0);
    assert!(stdout.contains("capacity >= concurrency=4"), "{stdout}");
}

#[test]
fn an_engine_failure_ends_the_search_and_keeps_every_probe() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Probe 1 (concurrency=1, 4 + 1 warmup requests of 5 steps each) ends at step 25;
    // step 30 fails the second probe.
    let err = fails(
        search(&out)
            .args(["--search", "concurrency=1:8", "--slo", "ttft=35"])
            .args(["--num-requests", "4", "--engine-arg", "fail_at_step=30"])
            .args(engine_args(10.0, 10.0, 8)),
        1,
    );
    assert!(err.contains("injected failure at step 30"), "{err}");
    let s = json(&out.join("summary.json"));
    let search = &s["search"];
    assert_eq!(search["outcome"], "unfinished", "{search}");
    let probes = search["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 2, "{search}");
    assert_eq!(probes[0]["verdict"], "pass");
    assert_eq!(probes[1]["verdict"], "cut_short");
    assert_eq!(search["highest_passing"], 1.0);
    assert_eq!(json(&out.join("run.json"))["status"], "engine_failed");
    let again = succeeds(harness().arg("report").arg(&out));
    assert!(
        again.contains("unfinished; so far highest passing concurrency=1"),
        "{again}"
    );
}

#[test]
fn bad_searches_exit_2_with_one_line_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    for (args, needle) in [
        (vec!["--slo", "ttft=100"], "needs --search DIM=LO:HI"),
        (vec!["--search", "concurrency=1:8"], "needs --slo"),
        (
            vec!["--search", "concurrency=8:1", "--slo", "ttft=1"],
            "LO must be below HI",
        ),
        (
            vec!["--search", "concurrency=0:8", "--slo", "ttft=1"],
            "not an integer from 1",
        ),
        (
            vec!["--search", "concurrency=1.5:8", "--slo", "ttft=1"],
            "not an integer from 1",
        ),
        (
            vec!["--search", "rate=0:8", "--slo", "ttft=1"],
            "not a number of requests/s",
        ),
        (
            vec!["--search", "batch=1:8", "--slo", "ttft=1"],
            "not a searchable load",
        ),
        (
            vec![
                "--search",
                "concurrency=1:8",
                "--slo",
                "ttft=1",
                "--resolution",
                "0",
            ],
            "--resolution 0",
        ),
        (
            vec!["--search", "rate=1:8", "--slo", "ttft=1", "--resolution=-2"],
            "--resolution -2",
        ),
        (
            vec![
                "--search",
                "rate=1:8",
                "--slo",
                "ttft=1",
                "--min-good-fraction",
                "2",
            ],
            "--min-good-fraction 2",
        ),
        (
            vec![
                "--search",
                "concurrency=1:8",
                "--slo",
                "ttft=1",
                "--concurrency",
                "4",
            ],
            "--concurrency conflicts with --search",
        ),
        (
            vec!["--search", "rate=1:8", "--slo", "ttft=1", "--batch", "1,2"],
            "--batch conflicts with --search",
        ),
    ] {
        let err = fails(search(&out).args(&args), 2);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(
            lines[0].starts_with("Error: ") && lines[0].contains(needle),
            "{args:?}: expected '{needle}' in {}",
            lines[0]
        );
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}
