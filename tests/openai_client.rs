//! `--engine openai` against a small OpenAI-compatible server written here (a stand-in,
//! loopback only): every failure path (connection refused, HTTP 500, a malformed chunk,
//! a stream cut short, a server that hangs) becomes a failed request with its reason,
//! exact token counts from per-chunk usage, stamps at the chunks' arrival, the API key
//! sent but never written, proxy variables ignored for loopback.

#![cfg(feature = "openai")]

use assert_cmd::Command;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
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

fn chunk(w: &mut TcpStream, data: &str) -> std::io::Result<()> {
    write!(w, "{:x}\r\n{data}\r\n", data.len())?;
    w.flush()
}

fn event(json: Value) -> String {
    format!("data: {json}\n\n")
}

fn sse_head(w: &mut TcpStream) -> std::io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    w.flush()
}

fn json_reply(w: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

/// A good stream: `chunks` chunks of `per` tokens each, usage on every chunk.
fn good(w: &mut TcpStream, chunks: u64, per: u64) -> std::io::Result<()> {
    sse_head(w)?;
    for i in 1..=chunks {
        std::thread::sleep(Duration::from_millis(GAP_MS));
        let fin = if i == chunks {
            Value::from("length")
        } else {
            Value::Null
        };
        chunk(
            w,
            &event(serde_json::json!({
                "choices": [{"index": 0, "text": "ab", "finish_reason": fin}],
                "usage": {"prompt_tokens": 4, "completion_tokens": i * per, "total_tokens": 4 + i * per},
            })),
        )?;
    }
    chunk(w, "data: [DONE]\n\n")?;
    chunk(w, "")
}

/// Serves one connection's requests (keep-alive) until it closes.
fn connection(mut s: TcpStream, seen: Arc<Seen>) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (mut len, mut rid, mut auth) = (0usize, String::new(), String::new());
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "x-request-id" => rid = v.trim().to_string(),
                "authorization" => auth = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        match path.as_str() {
            "/v1/models" => json_reply(&mut s, "200 OK", r#"{"data":[{"id":"stand-in"}]}"#)?,
            "/version" => json_reply(&mut s, "200 OK", r#"{"version":"stand-in-1"}"#)?,
            "/v1/completions" => {
                seen.auth.lock().unwrap().push(auth);
                if rid == "harness-probe" {
                    good(&mut s, 2, 1)?;
                    continue;
                }
                seen.bodies
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                let n: u64 = rid.trim_start_matches("harness-").parse().unwrap_or(0);
                match n {
                    1 => json_reply(
                        &mut s,
                        "500 Internal Server Error",
                        r#"{"error":{"message":"injected failure"}}"#,
                    )?,
                    2 => {
                        sse_head(&mut s)?;
                        chunk(&mut s, "data: {not json\n\n")?;
                        chunk(&mut s, "")?;
                    }
                    3 => {
                        sse_head(&mut s)?;
                        for i in 1..=2u64 {
                            chunk(
                                &mut s,
                                &event(serde_json::json!({
                                    "choices": [{"index": 0, "text": "x", "finish_reason": null}],
                                    "usage": {"completion_tokens": i},
                                })),
                            )?;
                        }
                        // Cut short: no finish_reason, no end of the chunked body.
                        return Ok(());
                    }
                    4 => {
                        sse_head(&mut s)?;
                        // Hang: SSE comments (no tokens) until the client goes away.
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_secs(30) {
                            std::thread::sleep(Duration::from_millis(100));
                            if chunk(&mut s, ": still thinking\n\n").is_err() {
                                seen.hang_disconnected.fetch_add(1, Ordering::SeqCst);
                                return Ok(());
                            }
                        }
                        return Ok(());
                    }
                    _ => good(&mut s, 3, 2)?,
                }
            }
            _ => json_reply(&mut s, "404 Not Found", "{}")?,
        }
    }
}

/// Starts the stand-in on 127.0.0.1 and a free port.
fn stand_in() -> (u16, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || connection(c, s));
        }
    });
    (port, seen)
}

fn records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn harness() -> Command {
    Command::cargo_bin("harness").unwrap()
}

#[test]
fn every_failure_is_a_request_with_its_reason_and_good_streams_are_exact() {
    let (port, seen) = stand_in();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = harness()
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
        .timeout(Duration::from_secs(60))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&o.stderr);
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
    let o = harness()
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
        .timeout(Duration::from_secs(60))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&o.stderr);
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
    let o = harness()
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
        .arg(tmp.path().join("load"))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&o.stderr);
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
