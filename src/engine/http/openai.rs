//! `--engine openai`: any OpenAI-compatible server, measured from the client side.
//!
//! Each request is one HTTP POST to `/v1/completions` (prompt as token ids, which vLLM
//! and SGLang accept) or `/v1/chat/completions` (`endpoint=chat`: the prompt decoded to
//! text with the model's tokenizer), with `stream: true`. The requests run as tasks on a
//! tokio runtime of its own (`client_threads` worker threads, default 1, like the single
//! asyncio loop of `vllm bench serve`) over one reqwest client, so connections are kept
//! alive and reused. Every server-sent event is stamped with `clock::now()`
//! (CLOCK_MONOTONIC) when the bytes that carry it are read, and the stamp travels in the
//! [`TokenEvent`]: the driver never re-stamps a stream engine's events.
//!
//! Token counts per chunk, best source first: the chunk's `token_ids` (vLLM's
//! `return_token_ids`, asked for only with `--save-token-ids`), else the change in the
//! chunk's `usage.completion_tokens` (vLLM's `stream_options.continuous_usage_stats`),
//! else one token per chunk that carries text, corrected at the end of the stream by the
//! final usage when the server sends one. A probe request at load finds out which the
//! server supports; `run.json` says how the counts were obtained.
//!
//! Failures are per request, with the reason: connection refused, an HTTP error status
//! (with the start of its body), a malformed chunk, an error object in the stream, a
//! stream that ends or breaks before a `finish_reason`. A request with no token for
//! `--request-timeout` is aborted by the driver, which drops its connection (vLLM then
//! aborts it server-side). When `max_connect_failures` requests in a row cannot connect,
//! the engine fails as a whole and the run stops, instead of failing every request of
//! the workload against a server that is gone.
//!
//! The API key comes from the environment variable named by `api_key_env` (default
//! `OPENAI_API_KEY`); only that name is recorded, never the key. Proxy variables are
//! ignored for loopback servers.

use super::options::{Key, Options};
use crate::core::clock::{self, MonoNs};
use crate::core::request::{FinishReason, RequestId};
use crate::engine::{
    Availability, Engine, EngineConfig, EngineError, EngineInfo, EngineKind, EngineSpec, Finish,
    GenRequest, SchedulerFacts, TokenEvent,
};
use crate::workload::Tokenizer;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub static SPEC: EngineSpec = EngineSpec::new(
    "openai",
    "an OpenAI-compatible server (--engine-arg base_url=URL): streamed completions, each SSE chunk stamped as it is read",
    EngineKind::Stream,
    crate::engine::ModelInput::None,
    |_| {
        Availability::usable(
            "built in (HTTP client); needs a running server: --engine-arg base_url=URL",
            None,
        )
    },
    |c| Ok(Box::new(OpenAiEngine::load(c)?)),
);

const KEYS: &[Key] = &[
    Key {
        name: "base_url",
        help: "the server, e.g. http://127.0.0.1:8000 (required)",
    },
    Key {
        name: "model",
        help: "the model name to send (default: the server's first in /v1/models)",
    },
    Key {
        name: "endpoint",
        help: "completions (default, prompt as token ids) or chat (prompt as text)",
    },
    Key {
        name: "api_key_env",
        help: "environment variable holding the API key (default OPENAI_API_KEY)",
    },
    Key {
        name: "probe",
        help:
            "send one short request at load to learn how the server reports tokens (default true)",
    },
    Key {
        name: "usage",
        help: "stream_options to ask for: continuous (default), final or none",
    },
    Key {
        name: "client_threads",
        help: "worker threads of the client's runtime (default 1)",
    },
    Key {
        name: "max_connect_failures",
        help: "requests in a row that cannot connect before the run stops (default 16; 0 = never)",
    },
    Key {
        name: "per_request_seed",
        help: "send each request's sampling seed when temperature > 0 (default true)",
    },
];

/// What to ask the server for in `stream_options`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Usage {
    /// `include_usage` and `continuous_usage_stats` (vLLM): usage on every chunk.
    Continuous,
    /// `include_usage`: one usage chunk at the end (OpenAI).
    Final,
    /// No `stream_options` at all.
    None,
}

impl Usage {
    fn name(self) -> &'static str {
        match self {
            Usage::Continuous => "continuous",
            Usage::Final => "final",
            Usage::None => "none",
        }
    }

    fn stream_options(self) -> Option<Value> {
        match self {
            Usage::Continuous => {
                Some(json!({"include_usage": true, "continuous_usage_stats": true}))
            }
            Usage::Final => Some(json!({"include_usage": true})),
            Usage::None => None,
        }
    }

    /// The next weaker request, after a server refused this one.
    fn weaker(self) -> Option<Usage> {
        match self {
            Usage::Continuous => Some(Usage::Final),
            Usage::Final => Some(Usage::None),
            Usage::None => None,
        }
    }
}

/// How the client is set up; `--engine-arg`s for `openai`, chosen by the harness for
/// `vllm-server`.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://host:port`, without a trailing `/v1`.
    pub base_url: String,
    pub model: Option<String>,
    pub chat: bool,
    pub api_key_env: String,
    pub probe: bool,
    pub usage: Usage,
    pub client_threads: usize,
    pub max_connect_failures: u32,
    pub per_request_seed: bool,
    /// Chat only: the model directory whose tokenizer.json turns prompt ids into text.
    pub tokenizer_dir: Option<std::path::PathBuf>,
}

impl ClientConfig {
    pub fn new(base_url: &str) -> ClientConfig {
        ClientConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            model: None,
            chat: false,
            api_key_env: "OPENAI_API_KEY".into(),
            probe: true,
            usage: Usage::Continuous,
            client_threads: 1,
            max_connect_failures: 16,
            per_request_seed: true,
            tokenizer_dir: None,
        }
    }

    /// From `--engine-arg`s (and `--model DIR` for chat's tokenizer).
    pub fn from_engine_config(c: &EngineConfig) -> Result<ClientConfig, EngineError> {
        let o = Options::new("openai", &c.engine_args, KEYS)?;
        let Some(url) = o.str("base_url") else {
            return Err(EngineError::Usage(
                "--engine openai needs --engine-arg base_url=URL of a running OpenAI-compatible server (e.g. http://127.0.0.1:8000)".into(),
            ));
        };
        let mut cfg = ClientConfig::new(url.trim_end_matches('/').trim_end_matches("/v1"));
        check_url(&cfg.base_url)?;
        cfg.model = o.str("model").map(str::to_string);
        cfg.chat = o.choice("endpoint", &["completions", "chat"])? == Some("chat");
        if let Some(e) = o.str("api_key_env") {
            cfg.api_key_env = e.to_string();
        }
        cfg.probe = o.bool("probe")?.unwrap_or(true);
        cfg.usage = match o.choice("usage", &["continuous", "final", "none"])? {
            Some("final") => Usage::Final,
            Some("none") => Usage::None,
            _ => Usage::Continuous,
        };
        if let Some(t) = o.parse::<usize>("client_threads", "an integer from 1 to 64")? {
            if !(1..=64).contains(&t) {
                return Err(EngineError::Usage(format!(
                    "--engine-arg client_threads={t}: expected 1 to 64"
                )));
            }
            cfg.client_threads = t;
        }
        if let Some(n) = o.parse::<u32>("max_connect_failures", "a count")? {
            cfg.max_connect_failures = n;
        }
        cfg.per_request_seed = o.bool("per_request_seed")?.unwrap_or(true);
        if cfg.chat {
            match &c.model {
                Some(m) if m.join("tokenizer.json").is_file() => cfg.tokenizer_dir = Some(m.clone()),
                _ => {
                    return Err(EngineError::Usage(
                        "--engine-arg endpoint=chat sends the prompts as text: pass --model DIR with the model's tokenizer.json".into(),
                    ))
                }
            }
        }
        if !cfg.probe && cfg.model.is_none() {
            return Err(EngineError::Usage(
                "--engine-arg probe=false needs --engine-arg model=NAME (the probe is what asks the server for it)".into(),
            ));
        }
        Ok(cfg)
    }
}

fn check_url(base: &str) -> Result<reqwest::Url, EngineError> {
    let url = reqwest::Url::parse(base).map_err(|e| {
        EngineError::Usage(format!(
            "--engine-arg base_url={base}: not a URL ({e}); e.g. http://127.0.0.1:8000"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(EngineError::Usage(format!(
            "--engine-arg base_url={base}: expected http://HOST:PORT or https://HOST:PORT"
        )));
    }
    Ok(url)
}

/// Loopback hosts get no proxy, whatever the environment says.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An error with its causes ("error sending request: client error (Connect): tcp
/// connect error: Connection refused (os error 111)"), repeated parts dropped.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// At most `n` characters of `s`, on one line.
fn excerpt(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > n {
        format!("{}…", one.chars().take(n).collect::<String>())
    } else {
        one
    }
}

/// What one SSE event said.
#[derive(Debug, Default, PartialEq)]
struct Chunk {
    /// The chunk has a choice (a usage-only final chunk has none).
    has_choice: bool,
    text: bool,
    token_ids: Option<Vec<u32>>,
    finish: Option<String>,
    usage_completion: Option<u64>,
    /// `usage.prompt_tokens_details.cached_tokens`, where the server sends it.
    cached_prompt: Option<u64>,
}

/// Parses one event's data; `Err` is the failure text.
fn parse_chunk(data: &str, chat: bool) -> Result<Chunk, String> {
    let v: Value = serde_json::from_str(data).map_err(|e| {
        format!(
            "malformed SSE chunk (not JSON: {e}): {}",
            excerpt(data, 200)
        )
    })?;
    if let Some(err) = v.get("error") {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| err.to_string(), str::to_string);
        return Err(format!(
            "the server reported an error mid-stream: {}",
            excerpt(&msg, 300)
        ));
    }
    let choices = v.get("choices").and_then(Value::as_array);
    let usage = v
        .get("usage")
        .and_then(|u| u.get("completion_tokens"))
        .and_then(Value::as_u64);
    if choices.is_none() && usage.is_none() {
        return Err(format!(
            "malformed SSE chunk (no choices and no usage): {}",
            excerpt(data, 200)
        ));
    }
    let cached_prompt = v
        .get("usage")
        .and_then(|u| u.get("prompt_tokens_details"))
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64);
    let mut c = Chunk {
        usage_completion: usage,
        cached_prompt,
        ..Chunk::default()
    };
    if let Some(first) = choices.and_then(|a| a.first()) {
        c.has_choice = true;
        let text = if chat {
            let d = first.get("delta");
            d.and_then(|d| d.get("content"))
                .or_else(|| d.and_then(|d| d.get("reasoning_content")))
        } else {
            first.get("text")
        };
        c.text = text.and_then(Value::as_str).is_some_and(|t| !t.is_empty());
        if let Some(ids) = first.get("token_ids").filter(|v| !v.is_null()) {
            let ids: Vec<u32> = serde_json::from_value(ids.clone()).map_err(|e| {
                format!(
                    "malformed SSE chunk (token_ids: {e}): {}",
                    excerpt(data, 200)
                )
            })?;
            c.token_ids = Some(ids);
        }
        c.finish = first
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    Ok(c)
}

fn finish_reason(s: &str) -> (FinishReason, Option<String>) {
    match s {
        "length" => (FinishReason::Length, None),
        "stop" => (FinishReason::Stop, None),
        "abort" => (
            FinishReason::Abort,
            Some("the server aborted the request (finish_reason abort)".into()),
        ),
        other => (
            FinishReason::Error,
            Some(format!(
                "the server ended the request with finish_reason '{other}'"
            )),
        ),
    }
}

/// How a stream ended, when it did not fail.
enum End {
    Done,
    Eof,
}

/// Everything the request tasks share.
struct Client {
    http: reqwest::Client,
    /// The endpoint URL requests are POSTed to.
    url: String,
    model: String,
    chat: bool,
    api_key: Option<String>,
    usage: Usage,
    per_request_seed: bool,
    tokenizer: Option<Tokenizer>,
    /// The probe saw `usage.prompt_tokens_details.cached_tokens`: each request reports
    /// its cached prompt tokens (a server that never sends them reports none, not 0).
    cached_tokens: bool,
    /// Requests in a row that could not connect, and the last such error.
    connect_streak: AtomicU32,
    last_connect_error: Mutex<String>,
}

impl Client {
    fn post(&self, body: &Value, request_id: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(&self.url)
            .header("X-Request-Id", request_id)
            .json(body);
        if let Some(k) = &self.api_key {
            r = r.bearer_auth(k);
        }
        r
    }

    fn body(&self, req: &GenRequest) -> Result<Value, String> {
        let mut b = json!({
            "model": self.model,
            "stream": true,
            "temperature": req.temperature,
        });
        if self.chat {
            let tok = self
                .tokenizer
                .as_ref()
                .ok_or("no tokenizer for chat prompts")?;
            // The chat template adds the model's own special tokens.
            let prefix = tok.special_prefix().len();
            let ids = req
                .prompt
                .get(prefix.min(req.prompt.len())..)
                .unwrap_or(&[]);
            let text = tok.decode(ids).map_err(|e| e.to_string())?;
            b["messages"] = json!([{"role": "user", "content": text}]);
            b["max_completion_tokens"] = json!(req.output_len);
        } else {
            b["prompt"] = json!(&*req.prompt);
            b["max_tokens"] = json!(req.output_len);
        }
        if let Some(so) = self.usage.stream_options() {
            b["stream_options"] = so;
        }
        // vLLM/SGLang extensions: sent only when they change something.
        if req.ignore_eos {
            b["ignore_eos"] = json!(true);
        }
        if req.min_tokens > 0 {
            b["min_tokens"] = json!(req.min_tokens);
        }
        if req.return_token_ids {
            b["return_token_ids"] = json!(true);
        }
        if let (Some(s), true) = (req.seed, req.temperature > 0.0 && self.per_request_seed) {
            b["seed"] = json!(s);
        }
        Ok(b)
    }

    /// Sends `body` and calls `on_chunk(chunk, at)` for every event, `at` being when
    /// the bytes carrying it were read. Returns how the stream ended, or the failure.
    async fn stream(
        &self,
        body: &Value,
        request_id: &str,
        mut on_chunk: impl FnMut(Chunk, MonoNs) -> Result<(), String>,
        tokens_so_far: impl Fn() -> u64,
    ) -> Result<End, String> {
        let resp = match self.post(body, request_id).send().await {
            Ok(r) => r,
            Err(e) => {
                let text = chain(&e);
                if e.is_connect() {
                    self.connect_streak.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut l) = self.last_connect_error.lock() {
                        l.clone_from(&text);
                    }
                    return Err(format!("cannot connect to {}: {text}", self.url));
                }
                return Err(format!("request to {} failed: {text}", self.url));
            }
        };
        self.connect_streak.store(0, Ordering::SeqCst);
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(format!(
                "HTTP {status} from {}: {}",
                self.url,
                excerpt(&body, 300)
            ));
        }
        let stamp = Arc::new(AtomicU64::new(0));
        let s = stamp.clone();
        let mut events = resp
            .bytes_stream()
            .map(move |chunk| {
                // The moment the bytes were read; every event parsed from them shares it.
                s.store(clock::now().0, Ordering::Relaxed);
                chunk
            })
            .eventsource();
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(eventsource_stream::EventStreamError::Transport(e)) => {
                    return Err(format!(
                        "the stream broke after {} tokens: {}",
                        tokens_so_far(),
                        chain(&e)
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "malformed SSE stream after {} tokens: {e}",
                        tokens_so_far()
                    ))
                }
            };
            let at = MonoNs(stamp.load(Ordering::Relaxed));
            let data = ev.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                return Ok(End::Done);
            }
            on_chunk(parse_chunk(data, self.chat)?, at)?;
        }
        Ok(End::Eof)
    }
}

/// One request's counting state.
#[derive(Default)]
struct Counter {
    counted: u64,
    /// The last `usage.completion_tokens` seen, when the server sends it per chunk.
    usage_seen: Option<u64>,
    ids: Vec<u32>,
    /// A finish_reason waiting for the final usage (counts were estimated).
    pending: Option<String>,
    finished: bool,
    /// The last `usage.prompt_tokens_details.cached_tokens` seen.
    cached: Option<u64>,
}

impl Counter {
    /// Tokens this chunk carried: its token ids, else the usage delta, else one per
    /// chunk with text.
    fn count(&mut self, c: &Chunk) -> u64 {
        let n = if let Some(ids) = &c.token_ids {
            ids.len() as u64
        } else if let (Some(u), true) = (c.usage_completion, c.has_choice) {
            u.saturating_sub(self.usage_seen.unwrap_or(0))
        } else {
            u64::from(c.has_choice && c.text)
        };
        if c.has_choice {
            if let Some(u) = c.usage_completion {
                self.usage_seen = Some(u);
            }
        }
        if let Some(ids) = &c.token_ids {
            self.ids.extend_from_slice(ids);
        }
        self.counted += n;
        n
    }
}

/// Sends one request's events to the engine's channel.
async fn run_request(client: Arc<Client>, req: GenRequest, tx: Sender<TokenEvent>) {
    let id = req.id;
    let send = |n: u64, at: MonoNs, finish: Option<Finish>| {
        // The receiver lives as long as the engine; a send after shutdown is moot.
        let _ = tx.send(TokenEvent {
            request: id,
            new_tokens: n.min(u64::from(u32::MAX)) as u32,
            at: Some(at),
            finish: finish.map(Box::new),
        });
    };
    let fail = |why: String| {
        let mut f = Finish::new(FinishReason::Error);
        f.error = Some(why);
        send(0, clock::now(), Some(f));
    };
    let body = match client.body(&req) {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot build the request: {e}")),
    };
    // A Mutex, not a RefCell: the task's future must be Send (never contended).
    let counter = Mutex::new(Counter::default());
    let want_ids = req.return_token_ids;
    let report_cached = client.cached_tokens;
    let finish = |reason: &str, ids: Vec<u32>, cached: Option<u64>| {
        let (r, error) = finish_reason(reason);
        let mut f = Finish::new(r);
        f.error = error;
        f.token_ids = (want_ids && !ids.is_empty()).then_some(ids);
        f.cached_prompt_tokens = cached
            .filter(|_| report_cached)
            .map(|c| u32::try_from(c).unwrap_or(u32::MAX));
        f
    };
    let on_chunk = |c: Chunk, at: MonoNs| -> Result<(), String> {
        let Ok(mut k) = counter.lock() else {
            return Ok(());
        };
        if k.finished {
            return Ok(());
        }
        if c.cached_prompt.is_some() {
            k.cached = c.cached_prompt;
        }
        if !c.has_choice {
            // The final usage chunk: it corrects estimated counts.
            if let (Some(reason), Some(total)) = (k.pending.take(), c.usage_completion) {
                let extra = total.saturating_sub(k.counted);
                k.counted += extra;
                k.finished = true;
                let ids = std::mem::take(&mut k.ids);
                send(extra, at, Some(finish(&reason, ids, k.cached)));
            }
            return Ok(());
        }
        let n = k.count(&c);
        match c.finish {
            Some(reason) if c.token_ids.is_some() || c.usage_completion.is_some() => {
                // Exact counts: the request ends with this chunk.
                k.finished = true;
                let ids = std::mem::take(&mut k.ids);
                send(n, at, Some(finish(&reason, ids, k.cached)));
            }
            Some(reason) => {
                if n > 0 {
                    send(n, at, None);
                }
                k.pending = Some(reason);
            }
            None if n > 0 => send(n, at, None),
            None => {}
        }
        Ok(())
    };
    let tokens = || counter.lock().map_or(0, |k| k.counted);
    let request_id = format!("harness-{id}");
    let ended = client.stream(&body, &request_id, on_chunk, tokens).await;
    let Ok(mut k) = counter.lock() else {
        return fail("the request's counter was poisoned".into());
    };
    if k.finished {
        return;
    }
    match (ended, k.pending.take()) {
        // A finish_reason came, and no final usage to correct the estimate.
        (Ok(_), Some(reason)) => {
            let ids = std::mem::take(&mut k.ids);
            send(0, clock::now(), Some(finish(&reason, ids, k.cached)));
        }
        (Ok(End::Done), None) => fail(format!(
            "[DONE] after {} tokens without a finish_reason",
            k.counted
        )),
        (Ok(End::Eof), None) => fail(format!(
            "the stream ended after {} tokens without a finish_reason (truncated)",
            k.counted
        )),
        (Err(e), _) => fail(e),
    }
}

/// What the probe request found out.
struct Probe {
    usage: Usage,
    per_chunk_usage: bool,
    final_usage: bool,
    chunks: usize,
    /// Some chunk's usage carried `prompt_tokens_details.cached_tokens`.
    cached_tokens: bool,
}

pub struct OpenAiEngine {
    info: EngineInfo,
    client: Arc<Client>,
    runtime: Option<tokio::runtime::Runtime>,
    tx: Sender<TokenEvent>,
    rx: Receiver<TokenEvent>,
    tasks: HashMap<RequestId, tokio::task::AbortHandle>,
    max_connect_failures: u32,
}

impl OpenAiEngine {
    pub fn load(c: &EngineConfig) -> Result<OpenAiEngine, EngineError> {
        OpenAiEngine::connect(ClientConfig::from_engine_config(c)?, "openai")
    }

    /// Builds the client, asks the server for its model and version, and probes how
    /// it reports tokens (unless told not to). `name` is the engine's name in results.
    pub fn connect(cfg: ClientConfig, name: &str) -> Result<OpenAiEngine, EngineError> {
        let url = check_url(&cfg.base_url)?;
        let loopback = is_loopback(&url);
        let mut builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(300));
        if loopback {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| {
            EngineError::failed(format!("cannot build the HTTP client: {}", chain(&e)))
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.client_threads)
            .thread_name("harness-http")
            .enable_all()
            .build()
            .map_err(|e| {
                EngineError::failed(format!("cannot start the HTTP client runtime: {e}"))
            })?;
        let api_key = std::env::var(&cfg.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        let tokenizer = cfg
            .tokenizer_dir
            .as_deref()
            .map(Tokenizer::from_model_dir)
            .transpose()
            .map_err(|e| EngineError::Usage(e.to_string()))?;
        let base = cfg.base_url.clone();
        let auth = |r: reqwest::RequestBuilder| match &api_key {
            Some(k) => r.bearer_auth(k),
            None => r,
        };
        let key_hint = format!(
            "set the API key in ${} (or name its variable with --engine-arg api_key_env=VAR)",
            cfg.api_key_env
        );
        // The served model: given, else the first the server lists (as vllm bench serve).
        let model = match &cfg.model {
            Some(m) => m.clone(),
            None => runtime.block_on(async {
                let r = auth(http.get(format!("{base}/v1/models")))
                    .send()
                    .await
                    .map_err(|e| {
                        EngineError::failed(format!(
                            "cannot reach the server at {base}: {}; is it running?",
                            chain(&e)
                        ))
                    })?;
                let status = r.status();
                if status.as_u16() == 401 || status.as_u16() == 403 {
                    return Err(EngineError::Usage(format!(
                        "{base}/v1/models answered HTTP {status}: {key_hint}"
                    )));
                }
                let text = r.text().await.unwrap_or_default();
                serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["data"][0]["id"].as_str().map(str::to_string))
                    .ok_or_else(|| {
                        EngineError::failed(format!(
                            "{base}/v1/models (HTTP {status}) lists no model; name it with --engine-arg model=NAME"
                        ))
                    })
            })?,
        };
        let version = runtime.block_on(async {
            let r = auth(http.get(format!("{base}/version")))
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            let v: Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
            v["version"].as_str().map(str::to_string)
        });
        let endpoint = if cfg.chat {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        };
        let mut client = Client {
            http,
            url: format!("{base}{endpoint}"),
            model: model.clone(),
            chat: cfg.chat,
            api_key,
            usage: cfg.usage,
            per_request_seed: cfg.per_request_seed,
            tokenizer,
            cached_tokens: false,
            connect_streak: AtomicU32::new(0),
            last_connect_error: Mutex::new(String::new()),
        };
        let probe = if cfg.probe {
            Some(runtime.block_on(probe(&mut client, &key_hint))?)
        } else {
            None
        };
        client.cached_tokens = probe.as_ref().is_some_and(|p| p.cached_tokens);
        let counts = match &probe {
            None => format!(
                "not probed (probe=false): stream_options usage={} assumed; per chunk: token ids if the server returns them, else the change in usage.completion_tokens, else one token per chunk with text",
                cfg.usage.name()
            ),
            Some(p) if p.per_chunk_usage => "exact: each chunk's usage.completion_tokens minus the previous (stream_options.continuous_usage_stats); token ids per chunk instead with --save-token-ids".into(),
            Some(p) if p.final_usage => "estimated per chunk: the server sends no per-chunk usage, so each chunk with text counts as one token; each request's total is corrected by its final usage, the difference added at the end of its stream".into(),
            Some(_) => "estimated: the server sends no usage, so each chunk with text counts as one token".into(),
        };
        let mut metadata = json!({
            "base_url": base,
            "endpoint": endpoint,
            "model": model,
            "server_version": version,
            "token_counts": &counts,
            "stream_options": client.usage.stream_options(),
            "stamps": "each SSE event stamped with CLOCK_MONOTONIC when the bytes carrying it were read, on the client runtime's thread",
            "client": format!("reqwest 0.12 (rustls), keep-alive pool, tokio runtime with {} worker thread(s), one task per request", cfg.client_threads),
            "proxy": if loopback { "none (loopback: proxy variables ignored)" } else { "from the environment (HTTP(S)_PROXY, NO_PROXY)" },
            "api_key": if client.api_key.is_some() { format!("from ${}", cfg.api_key_env) } else { format!("none (${} unset)", cfg.api_key_env) },
            "request_id_header": "X-Request-Id: harness-<request id>",
            "max_connect_failures": cfg.max_connect_failures,
        });
        if let Some(p) = &probe {
            metadata["probe"] = json!({
                "usage_accepted": p.usage.name(),
                "per_chunk_usage": p.per_chunk_usage,
                "final_usage": p.final_usage,
                "chunks": p.chunks,
                "cached_tokens": p.cached_tokens,
            });
        }
        let (tx, rx) = mpsc::channel();
        Ok(OpenAiEngine {
            info: EngineInfo {
                name: name.to_string(),
                version: version.unwrap_or_else(|| "unknown".into()),
                model,
                dtype: String::new(),
                device: format!("server at {base}"),
                kind: EngineKind::Stream,
                // A count that is not exact changes what every figure means.
                notes: if counts.starts_with("exact") {
                    Vec::new()
                } else {
                    vec![format!("token counts {counts}")]
                },
                metadata,
                scheduler: client.cached_tokens.then(|| SchedulerFacts {
                    cached_prompt_tokens_source: Some(
                        "the server's usage.prompt_tokens_details.cached_tokens (seen in the probe's usage; vLLM sends it with --enable-prompt-tokens-details)".into(),
                    ),
                    ..SchedulerFacts::default()
                }),
                ..Default::default()
            },
            client: Arc::new(client),
            runtime: Some(runtime),
            tx,
            rx,
            tasks: HashMap::new(),
            max_connect_failures: cfg.max_connect_failures,
        })
    }

    pub fn info_mut(&mut self) -> &mut EngineInfo {
        &mut self.info
    }
}

/// One short greedy request: which `stream_options` the server accepts and whether it
/// reports usage per chunk. A server that refuses the stream options (HTTP 400) is
/// asked again with weaker ones.
async fn probe(client: &mut Client, key_hint: &str) -> Result<Probe, EngineError> {
    loop {
        let mut body = json!({"model": client.model, "stream": true, "temperature": 0.0});
        if client.chat {
            body["messages"] = json!([{"role": "user", "content": "Hello"}]);
            body["max_completion_tokens"] = json!(4);
        } else {
            body["prompt"] = json!("Hello");
            body["max_tokens"] = json!(4);
        }
        if let Some(so) = client.usage.stream_options() {
            body["stream_options"] = so;
        }
        let (mut chunks, mut per_chunk, mut final_usage) = (0usize, false, false);
        let mut cached = false;
        let r = client
            .stream(
                &body,
                "harness-probe",
                |c, _| {
                    cached |= c.cached_prompt.is_some();
                    if c.has_choice {
                        chunks += 1;
                        per_chunk |= c.usage_completion.is_some();
                    } else {
                        final_usage |= c.usage_completion.is_some();
                    }
                    Ok(())
                },
                || 0,
            )
            .await;
        match r {
            Ok(_) => {
                return Ok(Probe {
                    usage: client.usage,
                    per_chunk_usage: per_chunk,
                    final_usage,
                    chunks,
                    cached_tokens: cached,
                })
            }
            Err(e) if e.starts_with("HTTP 400") => match client.usage.weaker() {
                Some(w) => client.usage = w,
                None => {
                    return Err(EngineError::failed(format!(
                        "the probe request was refused: {e}"
                    )))
                }
            },
            Err(e) if e.starts_with("HTTP 401") || e.starts_with("HTTP 403") => {
                return Err(EngineError::Usage(format!("{e}; {key_hint}")))
            }
            Err(e) => {
                return Err(EngineError::failed(format!(
                    "the probe request failed: {e} (--engine-arg probe=false skips it)"
                )))
            }
        }
    }
}

impl Engine for OpenAiEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn submit(&mut self, req: &GenRequest) -> Result<(), EngineError> {
        let Some(rt) = &self.runtime else {
            return Err(EngineError::failed("submit after shutdown"));
        };
        let task = rt.spawn(run_request(
            self.client.clone(),
            req.clone(),
            self.tx.clone(),
        ));
        self.tasks.insert(req.id, task.abort_handle());
        Ok(())
    }

    fn poll(&mut self, timeout: Duration, out: &mut Vec<TokenEvent>) -> Result<(), EngineError> {
        let mut take = |ev: TokenEvent, out: &mut Vec<TokenEvent>| {
            // Events of aborted requests are dropped here.
            if !self.tasks.contains_key(&ev.request) {
                return;
            }
            if ev.finish.is_some() {
                self.tasks.remove(&ev.request);
            }
            out.push(ev);
        };
        match self.rx.recv_timeout(timeout) {
            Ok(ev) => take(ev, out),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(EngineError::failed(
                    "the HTTP client's event channel closed",
                ))
            }
        }
        while let Ok(ev) = self.rx.try_recv() {
            take(ev, out);
        }
        let streak = self.client.connect_streak.load(Ordering::SeqCst);
        if self.max_connect_failures > 0 && streak >= self.max_connect_failures {
            let last = self
                .client
                .last_connect_error
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default();
            return Err(EngineError::failed(format!(
                "{streak} requests in a row could not connect to {} (last: {last}); the server is down or unreachable (--engine-arg max_connect_failures=N changes the limit)",
                self.client.url
            )));
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    fn abort(&mut self, id: RequestId) -> Result<(), EngineError> {
        // Dropping the task drops its connection: the server sees the client go.
        if let Some(t) = self.tasks.remove(&id) {
            t.abort();
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), EngineError> {
        for (_, t) in self.tasks.drain() {
            t.abort();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        Ok(())
    }
}

impl Drop for OpenAiEngine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_parse_and_failures_are_named() {
        let c = parse_chunk(
            r#"{"choices":[{"text":" the","finish_reason":null}],"usage":{"completion_tokens":3}}"#,
            false,
        )
        .unwrap();
        assert!(c.has_choice && c.text && c.finish.is_none());
        assert_eq!(c.usage_completion, Some(3));
        let c = parse_chunk(
            r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
            true,
        )
        .unwrap();
        assert!(c.text && c.finish.as_deref() == Some("stop"));
        let c = parse_chunk(r#"{"choices":[],"usage":{"completion_tokens":9}}"#, false).unwrap();
        assert!(!c.has_choice && c.usage_completion == Some(9));
        assert_eq!(c.cached_prompt, None, "not sent: not 0");
        let c = parse_chunk(
            r#"{"choices":[],"usage":{"completion_tokens":9,"prompt_tokens_details":{"cached_tokens":32}}}"#,
            false,
        )
        .unwrap();
        assert_eq!(c.cached_prompt, Some(32));
        let e = parse_chunk("{not json", false).unwrap_err();
        assert!(e.starts_with("malformed SSE chunk (not JSON"), "{e}");
        let e = parse_chunk(r#"{"id":1}"#, false).unwrap_err();
        assert!(e.contains("no choices and no usage"), "{e}");
        let e = parse_chunk(r#"{"error":{"message":"boom","code":500}}"#, false).unwrap_err();
        assert_eq!(e, "the server reported an error mid-stream: boom");
    }

    #[test]
    fn counts_prefer_token_ids_then_usage_then_chunks() {
        let mut k = Counter::default();
        let with = |ids: Option<Vec<u32>>, usage: Option<u64>| Chunk {
            has_choice: true,
            text: true,
            token_ids: ids,
            finish: None,
            usage_completion: usage,
            cached_prompt: None,
        };
        assert_eq!(k.count(&with(None, Some(2))), 2);
        assert_eq!(k.count(&with(None, Some(5))), 3);
        assert_eq!(k.count(&with(Some(vec![7, 8]), Some(7))), 2);
        assert_eq!(k.ids, [7, 8]);
        let mut k = Counter::default();
        assert_eq!(k.count(&with(None, None)), 1);
        let empty = Chunk {
            has_choice: true,
            ..Chunk::default()
        };
        assert_eq!(k.count(&empty), 0);
        assert_eq!(k.counted, 1);
    }

    #[test]
    fn options_need_a_url_and_check_it() {
        let cfg = |kv: &[(&str, &str)]| EngineConfig {
            engine_args: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let e = ClientConfig::from_engine_config(&cfg(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs --engine-arg base_url=URL"), "{e}");
        let e = ClientConfig::from_engine_config(&cfg(&[("base_url", "ftp://x")])).unwrap_err();
        assert!(e.to_string().contains("expected http://"), "{e}");
        let c = ClientConfig::from_engine_config(&cfg(&[("base_url", "http://127.0.0.1:9/v1/")]))
            .unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:9");
        let e = ClientConfig::from_engine_config(&cfg(&[
            ("base_url", "http://h"),
            ("endpoint", "chat"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("tokenizer.json"), "{e}");
        let e =
            ClientConfig::from_engine_config(&cfg(&[("base_url", "http://h"), ("probe", "false")]))
                .unwrap_err();
        assert!(e.to_string().contains("model=NAME"), "{e}");
        assert!(is_loopback(
            &reqwest::Url::parse("http://localhost:1").unwrap()
        ));
        assert!(is_loopback(&reqwest::Url::parse("http://[::1]:1").unwrap()));
        assert!(!is_loopback(
            &reqwest::Url::parse("http://10.0.0.1:1").unwrap()
        ));
    }
}
