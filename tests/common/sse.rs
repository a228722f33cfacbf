//! A small HTTP/1.1 server on loopback for the OpenAI-compatible engine's tests: it
//! reads each request of a keep-alive connection and hands it to a handler, which
//! answers with JSON or a chunked SSE stream written with the helpers here.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// One request as the handler sees it.
pub struct Request {
    pub path: String,
    /// `X-Request-Id` (the harness sends `harness-<request id>`).
    pub request_id: String,
    pub authorization: String,
    pub body: Vec<u8>,
}

impl Request {
    /// The harness's request id, from `X-Request-Id: harness-N`.
    pub fn harness_id(&self) -> Option<u64> {
        self.request_id.strip_prefix("harness-")?.parse().ok()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What a handler returns: `Ok(true)` to keep serving the connection, `Ok(false)` to
/// close it (a stream cut short).
pub type Served = std::io::Result<bool>;

/// Starts the server on 127.0.0.1 and a free port; every connection gets a thread.
pub fn serve<H>(handler: H) -> u16
where
    H: Fn(&Request, &mut TcpStream) -> Served + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let h = handler.clone();
            std::thread::spawn(move || connection(c, &*h));
        }
    });
    port
}

fn connection<H>(mut s: TcpStream, handler: &H) -> std::io::Result<()>
where
    H: Fn(&Request, &mut TcpStream) -> Served,
{
    let mut r = BufReader::new(s.try_clone()?);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (mut len, mut request_id, mut authorization) = (0usize, String::new(), String::new());
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
                "x-request-id" => request_id = v.trim().to_string(),
                "authorization" => authorization = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        let req = Request {
            path,
            request_id,
            authorization,
            body,
        };
        if !handler(&req, &mut s)? {
            return Ok(());
        }
    }
}

/// One piece of a chunked body.
pub fn chunk(w: &mut TcpStream, data: &str) -> std::io::Result<()> {
    write!(w, "{:x}\r\n{data}\r\n", data.len())?;
    w.flush()
}

/// An SSE event carrying `json`.
pub fn event(json: Value) -> String {
    format!("data: {json}\n\n")
}

/// The head of a streamed (SSE, chunked) response.
pub fn sse_head(w: &mut TcpStream) -> std::io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    w.flush()
}

/// The end of a stream: `[DONE]` and the last chunk.
pub fn sse_done(w: &mut TcpStream) -> std::io::Result<()> {
    chunk(w, "data: [DONE]\n\n")?;
    chunk(w, "")
}

pub fn json_reply(w: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

/// `/v1/models` and `/version`, as any server the engine connects to answers them;
/// `None` for other paths.
pub fn discovery(req: &Request, w: &mut TcpStream) -> Option<Served> {
    match req.path.as_str() {
        "/v1/models" => {
            Some(json_reply(w, "200 OK", r#"{"data":[{"id":"stand-in"}]}"#).map(|_| true))
        }
        "/version" => Some(json_reply(w, "200 OK", r#"{"version":"stand-in-1"}"#).map(|_| true)),
        "/v1/completions" => None,
        _ => Some(json_reply(w, "404 Not Found", "{}").map(|_| true)),
    }
}

/// A completion streamed `per` tokens a chunk until `total`, `gap` apart, with the
/// running usage on every chunk (the engine's exact count) and `length` at the end.
/// The prompt tokens every [`stream_tokens`] stream's usage says were cached.
pub const CACHED_TOKENS: u64 = 2;

pub fn stream_tokens(
    w: &mut TcpStream,
    total: u64,
    per: u64,
    gap: std::time::Duration,
) -> std::io::Result<()> {
    sse_head(w)?;
    let mut sent = 0;
    while sent < total {
        std::thread::sleep(gap);
        sent = (sent + per).min(total);
        let fin = if sent == total {
            Value::from("length")
        } else {
            Value::Null
        };
        chunk(
            w,
            &event(serde_json::json!({
                "choices": [{"index": 0, "text": "ab", "finish_reason": fin}],
                "usage": {
                    "prompt_tokens": 4,
                    "completion_tokens": sent,
                    "total_tokens": 4 + sent,
                    "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
                },
            })),
        )?;
    }
    sse_done(w)
}
