//! `--engine openai` against a small OpenAI-compatible server written here (a stand-in,
//! loopback only): every failure path (connection refused, HTTP 500, a malformed chunk,
//! a stream cut short, a server that hangs) becomes a failed request with its reason,
//! exact token counts from per-chunk usage, stamps at the chunks' arrival, the API key
//! sent but never written, proxy variables ignored for loopback.

#![cfg(feature = "openai")]

mod common;

use common::sse::{self, chunk, event, sse_head};
use common::{fails, harness, records};
use serde_json::Value;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the stand-in saw.
#[derive(Default)]
struct Seen {
    /// Authorization headers of completion requests.
    auth: Mutex<Vec<String>>,
    /// Request bodies of measured completions.
    bodies: Mutex<Vec<Value>>,
    /// The hanging request's client went away (the harness aborted it).
    hang_disconnected: AtomicUsize,
}

/// Gap between the chunks of a good stream.
const GAP_MS: u64 = 40;

/// Request 1 gets an HTTP 500, 2 a malformed chunk, 3 a stream cut short, 4 hangs;
/// every other streams 3 chunks of 2 tokens, 40 ms apart.
fn handle(req: &sse::Request, s: &mut std::net::TcpStream, seen: &Seen) -> sse::Served {
    if let Some(served) = sse::discovery(req, s) {
        return served;
    }
    seen.auth.lock().unwrap().push(req.authorization.clone());
    let gap = Duration::from_millis(GAP_MS);
    if req.request_id == "harness-probe" {
        sse::stream_tokens(s, 2, 1, gap)?;
        return Ok(true);
    }
    seen.bodies.lock().unwrap().push(req.json());
    match req.harness_id().unwrap_or(0) {
        1 => sse::json_reply(
            s,
            "500 Internal Server Error",
            r#"{"error":{"message":"injected failure"}}"#,
        )?,
        2 => {
            sse_head(s)?;
            chunk(s, "data: {not json\n\n")?;
            chunk(s, "")?;
        }
        3 => {
            sse_head(s)?;
            for i in 1..=2u64 {
                chunk(
                    s,
                    &event(serde_json::json!({
                        "choices": [{"index": 0, "text": "x", "finish_reason": null}],
                        "usage": {"completion_tokens": i},
                    })),
                )?;
            }
            // Cut short: no finish_reason, no end of the chunked body.
            return Ok(false);
        }
        4 => {
            sse_head(s)?;
            // Hang: SSE comments (no tokens) until the client goes away.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(100));
                if chunk(s, ": still thinking\n\n").is_err() {
                    seen.hang_disconnected.fetch_add(1, Ordering::SeqCst);
                    return Ok(false);
                }
            }
            return Ok(false);
        }
        _ => sse::stream_tokens(s, 6, 2, gap)?,
    }
    Ok(true)
}

/// Starts the stand-in on 127.0.0.1 and a free port.
fn stand_in() -> (u16, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    (sse::serve(move |req, w| handle(req, w, &s)), seen)
}

#[test]
fn every_failure_is_a_request_with_its_reason_and_good_streams_are_exact() {
    let (port, seen) = stand_in();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let err = fails(
        harness()
            .args(["run", "--engine", "openai", "--engine-arg"])
            .arg(format!("base_url=http://127.0.0.1:{port}/v1"))
            .args([
                "--concurrency",
                "6",
                "--num-requests",
                "6",
                "--output-len",
                "6",
            ])
            .args([
                "--ignore-eos",
                "--warmup",
                "0",
                "--request-timeout",
                "1.5",
                "--no-progress",
            ])
            .arg("--out")
            .arg(&out)
            // A proxy that does not exist: loopback must not go through it.
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("http_proxy", "http://127.0.0.1:9")
            .env("LLM_HARNESS_TEST_KEY", "sekrit-key-123")
            .args(["--engine-arg", "api_key_env=LLM_HARNESS_TEST_KEY"])
            .timeout(Duration::from_secs(60)),
        1,
    );
    assert!(err.contains("4 of 6 requests failed"), "{err}");
    let recs = records(&out);
    let by = |id: u64| recs.iter().find(|r| r["id"] == id).unwrap();
    let error = |id: u64| by(id)["error"].as_str().unwrap_or_default().to_string();
    // Good streams: 3 chunks of 2 tokens, counted exactly from the per-chunk usage, and
    // stamped as they arrived (one chunk every 40 ms).
    for id in [0, 5] {
        let r = by(id);
        assert_eq!(r["finish_reason"], "length", "{r}");
        assert_eq!(r["token_counts"], serde_json::json!([2, 2, 2]), "{r}");
        let t: Vec<f64> = r["token_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() / 1e6)
            .collect();
        for w in t.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                (GAP_MS as f64 * 0.8..GAP_MS as f64 * 3.0).contains(&gap),
                "gap {gap} ms in {t:?}"
            );
        }
        assert!(t[0] >= GAP_MS as f64 * 0.8, "first chunk at {} ms", t[0]);
        // The server's usage.prompt_tokens_details.cached_tokens, as it said it.
        assert_eq!(r["cached_prompt_tokens"].as_u64(), Some(sse::CACHED_TOKENS));
    }
    assert_eq!(by(1)["finish_reason"], "error");
    assert!(
        error(1).contains("HTTP 500") && error(1).contains("injected failure"),
        "{}",
        error(1)
    );
    assert!(
        error(2).starts_with("malformed SSE chunk (not JSON"),
        "{}",
        error(2)
    );
    assert!(error(3).contains("after 2 tokens"), "{}", error(3));
    assert_eq!(by(4)["finish_reason"], "timeout", "{}", by(4));
    // The abort dropped the hanging request's connection.
    let t = Instant::now();
    while seen.hang_disconnected.load(Ordering::SeqCst) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the hanging request's connection stayed open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // What was sent: token ids as the prompt, ignore_eos, continuous usage; the key as a
    // bearer token, never written anywhere in the results.
    let bodies = seen.bodies.lock().unwrap();
    let b = &bodies[0];
    assert!(
        b["prompt"]
            .as_array()
            .is_some_and(|p| p.iter().all(Value::is_u64)),
        "{b}"
    );
    assert_eq!(b["stream"], true);
    assert_eq!(b["ignore_eos"], true);
    assert_eq!(b["stream_options"]["continuous_usage_stats"], true);
    assert!(seen
        .auth
        .lock()
        .unwrap()
        .iter()
        .all(|a| a == "Bearer sekrit-key-123"));
    for f in std::fs::read_dir(&out).unwrap().flatten() {
        if f.path().is_file() {
            let text = String::from_utf8_lossy(&std::fs::read(f.path()).unwrap()).to_string();
            assert!(
                !text.contains("sekrit"),
                "the API key is in {}",
                f.path().display()
            );
        }
    }
    let run: Value = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    let m = &run["engine"]["metadata"];
    assert_eq!(run["engine"]["name"], "openai");
    assert_eq!(run["engine"]["version"], "stand-in-1");
    assert_eq!(run["engine"]["model"], "stand-in");
    assert!(
        m["token_counts"].as_str().unwrap().starts_with("exact"),
        "{m}"
    );
    assert_eq!(m["api_key"], "from $LLM_HARNESS_TEST_KEY");
    assert_eq!(m["probe"]["cached_tokens"], true);
    let source = run["engine"]["scheduler"]["cached_prompt_tokens_source"]
        .as_str()
        .unwrap();
    assert!(
        source.contains("prompt_tokens_details.cached_tokens"),
        "{source}"
    );
    assert!(m["proxy"].as_str().unwrap().contains("loopback"));
}

#[test]
fn a_refused_connection_fails_each_request_then_stops_the_run() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("refused");
    let err = fails(
        harness()
            .args(["run", "--engine", "openai", "--engine-arg"])
            .arg(format!("base_url=http://127.0.0.1:{port}"))
            .args(["--engine-arg", "probe=false", "--engine-arg", "model=m"])
            .args(["--engine-arg", "max_connect_failures=4"])
            .args([
                "--concurrency",
                "2",
                "--num-requests",
                "50",
                "--output-len",
                "4",
                "--warmup",
                "0",
            ])
            .arg("--no-progress")
            .arg("--out")
            .arg(&out)
            .timeout(Duration::from_secs(60)),
        1,
    );
    assert!(err.contains("requests in a row could not connect"), "{err}");
    let recs = records(&out);
    assert!(
        recs.len() < 50,
        "the run went on against a server that is not there"
    );
    assert!(recs.iter().all(|r| r["finish_reason"] == "error"));
    let e = recs[0]["error"].as_str().unwrap();
    assert!(
        e.contains("cannot connect") && e.to_lowercase().contains("refused"),
        "{e}"
    );

    // With the probe (the default), the load itself says the server is not there.
    let err = fails(
        harness()
            .args(["run", "--engine", "openai", "--engine-arg"])
            .arg(format!("base_url=http://127.0.0.1:{port}"))
            .args([
                "--num-requests",
                "1",
                "--warmup",
                "0",
                "--no-progress",
                "--out",
            ])
            .arg(tmp.path().join("load")),
        1,
    );
    assert!(
        err.contains("cannot reach the server") && err.contains("is it running?"),
        "{err}"
    );
}

#[test]
fn bad_openai_args_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec![], "needs --engine-arg base_url=URL"),
        (
            vec!["base_url=http://127.0.0.1:1", "modle=x"],
            "did you mean model?",
        ),
        (vec!["base_url=nonsense"], "not a URL"),
        (
            vec!["base_url=http://127.0.0.1:1", "usage=sometimes"],
            "continuous, final, none",
        ),
    ] {
        let out = tmp.path().join("bad");
        let mut c = harness();
        c.args(["run", "--engine", "openai", "--num-requests", "1", "--out"])
            .arg(&out);
        for a in &args {
            c.args(["--engine-arg", a]);
        }
        let o = c.assert().code(2).get_output().clone();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists(), "a usage error left {}", out.display());
    }
}
