//! `trace.json`: a run's timeline in the Chrome / Perfetto trace-event format. It is
//! checked against the format (the fields each phase type needs, spans that do not
//! overlap on a track) and against the raw records it renders: every step of
//! `steps.jsonl` with its composition, every request's spans at its own stamps, every
//! token event. `harness report` rewrites the same file from the result directory.

mod common;
use common::{fails, harness, succeeds};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks the trace-event format: an object with `traceEvents`, each event with the
/// fields its phase type needs.
fn check_format(trace: &Value) {
    assert_eq!(trace["displayTimeUnit"], "ms");
    for e in trace["traceEvents"].as_array().unwrap() {
        let ph = e["ph"].as_str().unwrap();
        assert!(e["name"].is_string() && e["pid"].is_u64(), "{e}");
        match ph {
            "M" => assert!(e["args"].is_object(), "{e}"),
            "X" => {
                assert!(e["tid"].is_u64(), "{e}");
                assert!(e["ts"].as_f64().unwrap() >= 0.0, "{e}");
                assert!(e["dur"].as_f64().unwrap() >= 0.0, "{e}");
            }
            "i" => {
                assert!(e["tid"].is_u64() && e["ts"].is_number(), "{e}");
                assert_eq!(e["s"], "t");
            }
            "C" => {
                assert!(e["ts"].is_number(), "{e}");
                let args = e["args"].as_object().unwrap();
                assert!(
                    !args.is_empty() && args.values().all(Value::is_number),
                    "{e}"
                );
            }
            other => panic!("unexpected phase {other}: {e}"),
        }
    }
}

#[test]
fn trace_json_is_a_valid_trace_of_every_step_request_and_token() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // An open loop (queued spans) onto an engine that queues past 4 (waiting counts).
    succeeds(
        harness()
            .args([
                "sweep",
                "--engine",
                "calibration",
                "--rate",
                "40,inf",
                "--num-requests",
                "24",
                "--input-len",
                "32",
                "--output-len",
                "8",
                "--engine-arg",
                "max_batch=4",
                "--engine-arg",
                "decode_ms=2",
            ])
            .arg("--out")
            .arg(&out),
    );
    let trace: Value =
        serde_json::from_slice(&std::fs::read(out.join("trace.json")).unwrap()).unwrap();
    check_format(&trace);
    let origin = trace["otherData"]["origin_monotonic_ns"].as_u64().unwrap();
    assert_eq!(trace["otherData"]["clock"], "CLOCK_MONOTONIC");
    let us = |ns: u64| (ns - origin) as f64 / 1e3;
    let events = trace["traceEvents"].as_array().unwrap();
    let steps = lines(&out.join("steps.jsonl"));
    let requests = lines(&out.join("requests.jsonl"));

    // Steps: one span each on track 1 of its point's process, no two overlapping.
    let spans: Vec<&Value> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "step")
        .collect();
    assert_eq!(spans.len(), steps.len());
    for (span, rec) in spans.iter().zip(&steps) {
        assert_eq!(span["pid"], rec["point"].as_u64().unwrap() + 1);
        assert_eq!(span["tid"], 1);
        let start = rec["start_ns"].as_u64().unwrap();
        let end = rec["end_ns"].as_u64().unwrap();
        assert!((span["ts"].as_f64().unwrap() - us(start)).abs() < 1e-3);
        assert!((span["dur"].as_f64().unwrap() - (end - start) as f64 / 1e3).abs() < 1e-3);
        for k in [
            "step",
            "in_flight",
            "tokens",
            "running",
            "waiting",
            "prefill_requests",
            "prefill_tokens",
            "decode_requests",
            "decode_tokens",
        ] {
            assert_eq!(span["args"][k], rec[k], "{k} of {rec}");
        }
    }
    for w in spans.windows(2) {
        if w[0]["pid"] == w[1]["pid"] {
            let end = w[0]["ts"].as_f64().unwrap() + w[0]["dur"].as_f64().unwrap();
            assert!(w[1]["ts"].as_f64().unwrap() >= end - 1e-3, "steps overlap");
        }
    }
    // Counters: the engine's queue where it reports one; it did queue past max_batch.
    let waiting: Vec<f64> = events
        .iter()
        .filter(|e| e["ph"] == "C" && e["name"] == "waiting")
        .map(|e| e["args"]["waiting"].as_f64().unwrap())
        .collect();
    // (A poll woken by an arrival before the engine's step ended has no engine fields.)
    assert_eq!(
        waiting.len(),
        steps.iter().filter(|s| s["waiting"].is_u64()).count()
    );
    assert!(waiting.iter().any(|&w| w > 0.0));

    // Requests: their spans at their own stamps, a token instant per token event.
    let mut by_tid: BTreeMap<(u64, u64), Vec<&Value>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e["ph"] != "M" && e["tid"].as_u64() >= Some(100))
    {
        by_tid
            .entry((e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
            .or_default()
            .push(e);
    }
    assert_eq!(by_tid.len(), requests.len());
    let mut queued = 0;
    for r in &requests {
        let key = (
            r["point"].as_u64().unwrap() + 1,
            100 + r["id"].as_u64().unwrap(),
        );
        let evs = &by_tid[&key];
        let find = |name: &str| evs.iter().find(|e| e["name"] == name).copied();
        let submit = r["submit_ns"].as_u64().unwrap();
        let offsets: Vec<u64> = r["token_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let first = submit + offsets[0];
        let finish = r["finish_ns"].as_u64().unwrap();
        let prefill = find("prefill").unwrap();
        assert!((prefill["ts"].as_f64().unwrap() - us(submit)).abs() < 1e-3);
        assert!((prefill["dur"].as_f64().unwrap() - (first - submit) as f64 / 1e3).abs() < 1e-3);
        let decode = find("decode").unwrap();
        assert!((decode["ts"].as_f64().unwrap() - us(first)).abs() < 1e-3);
        assert!((decode["dur"].as_f64().unwrap() - (finish - first) as f64 / 1e3).abs() < 1e-3);
        assert_eq!(decode["args"]["finish_reason"], r["finish_reason"]);
        if let Some(i) = r["intended_ns"].as_u64().filter(|&i| i < submit) {
            let q = find("queued").unwrap();
            assert!((q["ts"].as_f64().unwrap() - us(i)).abs() < 1e-3);
            queued += 1;
        }
        let tokens: Vec<f64> = evs
            .iter()
            .filter(|e| e["ph"] == "i")
            .map(|e| e["ts"].as_f64().unwrap())
            .collect();
        assert_eq!(tokens.len(), offsets.len());
        for (t, off) in tokens.iter().zip(&offsets) {
            assert!((t - us(submit + off)).abs() < 1e-3);
        }
    }
    assert!(
        queued > 0,
        "the inf point queues every arrival behind the first"
    );
    // The report has a step figure per point.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("steps-rate_40"),
        "step plot missing from report.html"
    );

    // `harness report` renders the same trace from the directory's files.
    let before = std::fs::read(out.join("trace.json")).unwrap();
    std::fs::remove_file(out.join("trace.json")).unwrap();
    succeeds(harness().arg("report").arg(&out));
    assert_eq!(std::fs::read(out.join("trace.json")).unwrap(), before);

    // A malformed steps.jsonl is one line naming the file and the line, exit 2.
    let steps_file = out.join("steps.jsonl");
    let mut text = std::fs::read_to_string(&steps_file).unwrap();
    text.insert_str(0, "{not json\n");
    std::fs::write(&steps_file, text).unwrap();
    let err = fails(harness().arg("report").arg(&out), 2);
    assert!(
        err.contains("steps.jsonl") && err.contains("line 1"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
