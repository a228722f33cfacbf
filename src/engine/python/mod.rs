//! The pyo3 bridge: every Python adapter (`engines/*.py`) runs behind this one engine.
//!
//! The adapters are compiled into the binary and loaded by module name, after the
//! engine's venv is put in front of `sys.path` and `sys.executable` /
//! `multiprocessing`'s executable point at the venv's python. An adapter answers one
//! call per engine step with a compact record: a bytes object of 4 little int64s per
//! event `[request, new_tokens, finish_code, at_ns]` and a short list of finish
//! details, so the crossing costs the same whether a step yields 1 or 64 tokens.
//!
//! The GIL is held only inside a call: between polls, and while the driver waits,
//! Python threads (stream producers, engine workers) run freely. A Python exception
//! becomes an [`EngineError`] carrying the formatted traceback; the adapters'
//! `UsageError` becomes a usage error (exit code 2).

pub mod hf;
pub mod sglang;
pub mod test_adapter;
pub mod trtllm_llmapi;
pub mod vllm;

use super::venv::{default_venv, Requirement, Venv};
use super::{
    Availability, Engine, EngineConfig, EngineError, EngineInfo, EngineKind, Finish, GenRequest,
    StepStats, TextLogprobs, TokenEvent, Unavailable,
};
use crate::core::clock::MonoNs;
use crate::core::request::{EngineStamps, FinishReason, RequestId};
use pyo3::exceptions::{PyImportError, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTraceback};
use std::collections::HashSet;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shared helpers every adapter imports as `harness_bridge`.
const BRIDGE: &str = include_str!("../../../engines/harness_bridge.py");

/// The child processes an adapter starts: found, watched, ended and reaped (SGLang's
/// scheduler, vLLM's multiprocessing workers).
const CHILD_PROCS: &str = include_str!("../../../engines/common/child_procs.py");

/// `pythonX.Y` of the interpreter this binary embeds (from pyo3's build config), so
/// envs are checked without starting Python.
const EMBEDDED_PYTHON: &str = env!("HARNESS_PYTHON");

/// One Python engine: its adapter (compiled in) and the env it runs in. Each engine's
/// module declares one and builds its [`EngineSpec`](super::EngineSpec) from it.
pub struct Adapter {
    pub engine: &'static str,
    /// `engines/FILE.py`, compiled in with `include_str!`.
    pub source: &'static str,
    /// The module name, `harness_engine_<file stem>` (the name harness_bridge.py documents).
    pub module: &'static str,
    pub requires: Requirement,
    /// Modules the adapter imports besides `harness_bridge`, as `(module name, source)`,
    /// loaded in order before it (`engines/common/*.py`, compiled in).
    pub helpers: &'static [(&'static str, &'static str)],
    /// Without `--python-env` and without its env, run on the embedded interpreter as
    /// is (the stdlib-only test adapter).
    pub env_optional: bool,
    /// Modules the adapter may put on `sys.path` for the engine's own child processes
    /// (engines/cpu_shims/...), compiled in like the adapter: written to a directory
    /// on disk at load, which the adapter finds as `harness_bridge.SHIMS_DIR`.
    pub shims: &'static [Shim],
}

/// One file of a shim package: its path under `engines/cpu_shims/` and its source.
pub struct Shim {
    pub path: &'static str,
    pub source: &'static str,
}

/// Writes `shims` under the cache (`shims/<engine>-<content hash>/`, written once and
/// renamed into place, so concurrent runs never see half a file), else under the temp
/// directory when the cache is not writable. Returns the directory.
pub fn materialize_shims(engine: &str, shims: &[Shim]) -> std::io::Result<PathBuf> {
    materialize_shims_in(
        &[
            super::venv::cache_dir().join("shims"),
            std::env::temp_dir().join("llm-harness-shims"),
        ],
        engine,
        shims,
    )
}

/// [`materialize_shims`] under the first of `bases` that can be written.
fn materialize_shims_in(
    bases: &[PathBuf],
    engine: &str,
    shims: &[Shim],
) -> std::io::Result<PathBuf> {
    // FNV-1a over paths and sources: the same sources always land in the same place.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for s in shims {
        for b in s.path.bytes().chain([0]).chain(s.source.bytes()).chain([0]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let name = format!("{engine}-{h:016x}");
    let mut last = None;
    for base in bases {
        let dir = base.join(&name);
        if shims.iter().all(|s| dir.join(s.path).is_file()) {
            return Ok(dir);
        }
        let tmp = base.join(format!(".{name}.{}", std::process::id()));
        let written = (|| {
            let _ = std::fs::remove_dir_all(&tmp);
            for s in shims {
                let f = tmp.join(s.path);
                if let Some(parent) = f.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&f, s.source)?;
            }
            match std::fs::rename(&tmp, &dir) {
                // Another run put the same content there first.
                Err(_) if shims.iter().all(|s| dir.join(s.path).is_file()) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    Ok(())
                }
                other => other,
            }
        })();
        match written {
            Ok(()) => return Ok(dir),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no directory for the shims")))
}

impl Adapter {
    /// An adapter with no helper modules and no shims that needs its env: what an
    /// engine's file starts from; the methods below add the rest.
    pub const fn new(
        engine: &'static str,
        source: &'static str,
        module: &'static str,
        requires: Requirement,
    ) -> Self {
        Self {
            engine,
            source,
            module,
            requires,
            helpers: &[],
            env_optional: false,
            shims: &[],
        }
    }

    pub const fn helpers(mut self, helpers: &'static [(&'static str, &'static str)]) -> Self {
        self.helpers = helpers;
        self
    }

    pub const fn shims(mut self, shims: &'static [Shim]) -> Self {
        self.shims = shims;
        self
    }

    /// Runs on the embedded interpreter when its env is absent.
    pub const fn env_optional(mut self) -> Self {
        self.env_optional = true;
        self
    }

    /// `--python-env`, else the engine's own env.
    fn env_root(&self, config: &EngineConfig) -> PathBuf {
        config
            .python_env
            .clone()
            .unwrap_or_else(|| default_venv(self.requires.env))
    }

    /// The venv to use, or None to run on the embedded interpreter as is.
    fn resolve_env(&self, config: &EngineConfig) -> Result<Option<Venv>, String> {
        let root = self.env_root(config);
        if config.python_env.is_none() && self.env_optional && !root.exists() {
            return Ok(None);
        }
        Venv::check(&root, EMBEDDED_PYTHON, &self.requires).map(Some)
    }

    pub fn availability(&self, config: &EngineConfig) -> Availability {
        match self.resolve_env(config) {
            Ok(Some(env)) => env.availability("python env", &self.requires),
            Ok(None) => {
                Availability::usable(format!("embedded {EMBEDDED_PYTHON} (stdlib only)"), None)
            }
            Err(why) => Availability::unusable(
                format!("python env {}", self.env_root(config).display()),
                Unavailable::Env(why),
            ),
        }
    }

    pub fn load(&'static self, config: &EngineConfig) -> Result<Box<dyn Engine>, EngineError> {
        Ok(Box::new(PythonEngine::load(self, config)?))
    }
}

/// Turns a Python exception into an engine error with its traceback.
fn py_error(py: Python<'_>, err: PyErr, context: &str) -> EngineError {
    let kind = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let msg = err.value(py).to_string();
    if kind == "UsageError" {
        return EngineError::Usage(msg);
    }
    // traceback.format_exception reads the adapters' compiled-in source via linecache.
    let traceback = py
        .import("traceback")
        .and_then(|tb| {
            tb.call_method1(
                "format_exception",
                (err.get_type(py), err.value(py), err.traceback(py)),
            )
        })
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|lines| lines.concat().trim_end().to_string())
        .ok()
        .or_else(|| {
            err.traceback(py)
                .and_then(|tb: Bound<'_, PyTraceback>| tb.format().ok())
        });
    EngineError::Failed {
        message: format!("{context}: {kind}: {msg}"),
        traceback,
    }
}

/// Puts the venv in front of sys.path and makes every child Python the venv's python.
fn activate(py: Python<'_>, env: &Path, sp: &Path) -> PyResult<()> {
    let code = r#"
import os, site, sys
def _activate(env, sp):
    before = list(sys.path)
    site.addsitedir(sp)  # also runs the venv's .pth files
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before
    py = os.path.join(env, "bin", "python")
    sys.executable = sys._base_executable = py
    import multiprocessing
    multiprocessing.set_executable(py)
    os.environ["VIRTUAL_ENV"] = env
    os.environ["PATH"] = os.path.join(env, "bin") + os.pathsep + os.environ.get("PATH", "")
"#;
    let c = CString::new(code).map_err(|e| PyImportError::new_err(e.to_string()))?;
    let m = PyModule::from_code(py, &c, c"<harness-activate>", c"_harness_activate")?;
    m.getattr("_activate")?.call1((
        env.to_string_lossy().as_ref(),
        sp.to_string_lossy().as_ref(),
    ))?;
    Ok(())
}

fn load_module<'py>(py: Python<'py>, source: &str, name: &str) -> PyResult<Bound<'py, PyModule>> {
    let file_name = format!("<harness>/engines/{name}.py");
    // Register the source with linecache so tracebacks show the adapter's lines.
    let lines = PyList::new(py, source.split_inclusive('\n'))?;
    py.import("linecache")?
        .getattr("cache")?
        .set_item(&file_name, (source.len(), py.None(), lines, &file_name))?;
    let code = CString::new(source).map_err(|e| PyImportError::new_err(e.to_string()))?;
    let file = CString::new(file_name).map_err(|e| PyImportError::new_err(e.to_string()))?;
    let name = CString::new(name).map_err(|e| PyImportError::new_err(e.to_string()))?;
    PyModule::from_code(py, &code, &file, &name)
}

pub struct PythonEngine {
    info: EngineInfo,
    adapter: Py<PyAny>,
    /// `harness_bridge.Profiler` while a profiler window is open.
    profiler: Option<Py<PyAny>>,
    in_flight: HashSet<RequestId>,
    shut_down: bool,
    /// What the adapter's `step()` said about its steps since the last
    /// `take_step_stats` (the optional third element of its result).
    stats: Option<StepStats>,
}

impl PythonEngine {
    pub fn load(a: &'static Adapter, config: &EngineConfig) -> Result<PythonEngine, EngineError> {
        let engine = a.engine;
        let env = a.resolve_env(config).map_err(EngineError::Usage)?;
        Python::attach(|py| {
            if let Some(env) = &env {
                activate(py, &env.root, &env.site_packages)
                    .map_err(|e| py_error(py, e, "activating the python env"))?;
            }
            let sys = py
                .import("sys")
                .map_err(|e| py_error(py, e, "import sys"))?;
            if sys.getattr("argv").and_then(|a| a.len()).unwrap_or(0) == 0 {
                let _ = sys.setattr("argv", vec!["harness"]);
            }
            let bridge = load_module(py, BRIDGE, "harness_bridge")
                .map_err(|e| py_error(py, e, "loading harness_bridge"))?;
            for (name, source) in a.helpers {
                load_module(py, source, name)
                    .map_err(|e| py_error(py, e, &format!("loading {name}")))?;
            }
            if !a.shims.is_empty() {
                let dir = materialize_shims(engine, a.shims).map_err(|e| {
                    EngineError::failed(format!("{engine}: cannot write its CPU shims: {e}"))
                })?;
                bridge
                    .setattr("SHIMS_DIR", dir.to_string_lossy().as_ref())
                    .map_err(|e| py_error(py, e, "harness_bridge.SHIMS_DIR"))?;
            }
            let module = load_module(py, a.source, a.module)
                .map_err(|e| py_error(py, e, "loading the adapter"))?;
            let model = config
                .model
                .as_ref()
                .map(|m| m.to_string_lossy().into_owned())
                .unwrap_or_default();
            let options = PyDict::new(py);
            for (k, v) in &config.engine_args {
                options
                    .set_item(k, v)
                    .map_err(|e| py_error(py, e, "engine args"))?;
            }
            let adapter = module.getattr("create").and_then(|f| f.call1((model, options))).map_err(|e| {
                if e.is_instance_of::<PyImportError>(py) {
                    let env = env.as_ref().map_or("the embedded interpreter".into(), |e| e.root.display().to_string());
                    EngineError::Usage(format!(
                        "{engine}: cannot import its Python packages from {env} ({}); run scripts/setup.sh {} or pass --python-env DIR",
                        e.value(py),
                        a.requires.env
                    ))
                } else {
                    py_error(py, e, &format!("{engine} failed to load"))
                }
            })?;
            let info = adapter
                .call_method0("info")
                .map_err(|e| py_error(py, e, "info()"))?;
            let info = parse_info(py, &info)
                .map_err(|e| py_error(py, e, "info() returned an unexpected value"))?;
            Ok(PythonEngine {
                info,
                adapter: adapter.unbind(),
                profiler: None,
                in_flight: HashSet::new(),
                shut_down: false,
                stats: None,
            })
        })
    }
}

fn parse_info(py: Python<'_>, info: &Bound<'_, PyAny>) -> PyResult<EngineInfo> {
    let get = |k: &str| -> PyResult<String> {
        match info.get_item(k) {
            Ok(v) if !v.is_none() => Ok(v.str()?.to_string()),
            _ => Ok(String::new()),
        }
    };
    let json = py.import("json")?;
    // A key's value as JSON (`None` when absent), through Python's json module.
    let value = |k: &str| -> PyResult<serde_json::Value> {
        match info.get_item(k) {
            Ok(m) if !m.is_none() => {
                let text: String = json.call_method1("dumps", (m,))?.extract()?;
                Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
            }
            _ => Ok(serde_json::Value::Null),
        }
    };
    // A typed part of info(), or a ValueError naming it.
    fn typed<T: serde::de::DeserializeOwned>(
        key: &str,
        v: serde_json::Value,
    ) -> PyResult<Option<T>> {
        if v.is_null() {
            return Ok(None);
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("info()['{key}']: {e}")))
    }
    Ok(EngineInfo {
        name: get("name")?,
        version: get("version")?,
        model: get("model")?,
        dtype: get("dtype")?,
        device: get("device")?,
        kind: if get("kind")? == "stream" {
            EngineKind::Stream
        } else {
            EngineKind::Step
        },
        load_time_s: 0.0,
        // An adapter running against a stand-in of its engine says so: its figures
        // measure the harness, never the engine.
        instrument: info
            .get_item("instrument")
            .ok()
            .is_some_and(|v| v.is_truthy().unwrap_or(false)),
        notes: typed("notes", value("notes")?)?.unwrap_or_default(),
        cuda: typed("cuda", value("cuda")?)?,
        compute: typed("compute", value("compute")?)?,
        scheduler: typed("scheduler", value("scheduler")?)?,
        layout: typed("layout", value("layout")?)?,
        metadata: value("metadata")?,
    })
}

/// Finish codes shared with harness_bridge.py.
fn finish_reason(code: i64) -> Option<FinishReason> {
    match code {
        0 => Some(FinishReason::Length),
        1 => Some(FinishReason::Stop),
        2 => Some(FinishReason::Abort),
        3 => Some(FinishReason::Error),
        _ => None,
    }
}

/// The engine's own per-request figures (`engine["meta"]`, a JSON-able dict), as JSON.
fn engine_meta(
    e: &Bound<'_, PyDict>,
) -> PyResult<Option<serde_json::Map<String, serde_json::Value>>> {
    let Some(m) = e.get_item("meta")?.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let text: String = e
        .py()
        .import("json")?
        .call_method1("dumps", (m,))?
        .extract()?;
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
        _ => Err(pyo3::exceptions::PyValueError::new_err(
            "engine['meta'] must be a dict of JSON values",
        )),
    }
}

fn ns(d: &Bound<'_, PyDict>, k: &str) -> Option<MonoNs> {
    let v: i64 = d.get_item(k).ok()??.extract().ok()?;
    (v > 0).then_some(MonoNs(v as u64))
}

/// A step-stats dict (harness_bridge.StepStats) as [`StepStats`]: each key one of its
/// fields, `None` values skipped; an unknown key or a value of the wrong type is a
/// ValueError naming it, so an adapter's typo fails its first step, not silently.
fn parse_step_stats(d: &Bound<'_, PyDict>) -> PyResult<StepStats> {
    let mut s = StepStats::default();
    for (k, v) in d.iter() {
        if v.is_none() {
            continue;
        }
        let key: String = k.extract()?;
        let bad =
            |e: PyErr| pyo3::exceptions::PyValueError::new_err(format!("step stats['{key}']: {e}"));
        match key.as_str() {
            "engine_steps" => s.engine_steps = Some(v.extract().map_err(bad)?),
            "running" => s.running = Some(v.extract().map_err(bad)?),
            "waiting" => s.waiting = Some(v.extract().map_err(bad)?),
            "preempted" => s.preempted = Some(v.extract().map_err(bad)?),
            "prefill_requests" => s.prefill_requests = Some(v.extract().map_err(bad)?),
            "prefill_tokens" => s.prefill_tokens = Some(v.extract().map_err(bad)?),
            "decode_requests" => s.decode_requests = Some(v.extract().map_err(bad)?),
            "decode_tokens" => s.decode_tokens = Some(v.extract().map_err(bad)?),
            "kv_usage" => {
                let u: f64 = v.extract().map_err(bad)?;
                // A share: an engine's rounding past 1 is clamped, a NaN dropped.
                s.kv_usage = u.is_finite().then(|| u.clamp(0.0, 1.0));
            }
            "prefix_queried" => s.prefix_queried = Some(v.extract().map_err(bad)?),
            "prefix_hits" => s.prefix_hits = Some(v.extract().map_err(bad)?),
            "spec_draft_tokens" => s.spec_draft_tokens = Some(v.extract().map_err(bad)?),
            "spec_accepted_tokens" => s.spec_accepted_tokens = Some(v.extract().map_err(bad)?),
            "engine_ms" => {
                let ms: f64 = v.extract().map_err(bad)?;
                s.engine_ms = (ms.is_finite() && ms >= 0.0).then_some(ms);
            }
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "step stats: unknown field '{key}'"
                )))
            }
        }
    }
    Ok(s)
}

/// Decodes one step's `(bytes, [(rid, dict), ...])` or `(bytes, extras, stats)` into
/// events, and returns the stats dict (None or absent: the adapter reports none).
fn decode_step(ret: &Bound<'_, PyAny>, out: &mut Vec<TokenEvent>) -> PyResult<Option<StepStats>> {
    let tuple = ret.cast::<pyo3::types::PyTuple>()?;
    let stats = match tuple.len() {
        2 => None,
        3 => {
            let s = tuple.get_item(2)?;
            if s.is_none() {
                None
            } else {
                Some(parse_step_stats(s.cast::<PyDict>()?)?)
            }
        }
        n => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "step() returned a {n}-tuple; expected (bytes, extras) or (bytes, extras, stats)"
            )))
        }
    };
    let packed = tuple.get_item(0)?;
    let packed = packed.cast::<PyBytes>()?;
    let extras = tuple.get_item(1)?;
    let extras = extras.cast::<PyList>()?;
    let bytes = packed.as_bytes();
    let start = out.len();
    for rec in bytes.chunks_exact(32) {
        let f = |i: usize| i64::from_le_bytes(rec[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        out.push(TokenEvent {
            request: f(0) as RequestId,
            new_tokens: f(1).max(0) as u32,
            at: (f(3) > 0).then(|| MonoNs(f(3) as u64)),
            finish: finish_reason(f(2)).map(|r| Box::new(Finish::new(r))),
        });
    }
    for item in extras.iter() {
        let (rid, d): (u64, Bound<'_, PyDict>) = item.extract()?;
        let Some(ev) = out[start..]
            .iter_mut()
            .rev()
            .find(|e| e.request == rid && e.finish.is_some())
        else {
            continue;
        };
        let Some(f) = ev.finish.as_deref_mut() else {
            continue;
        };
        if let Some(ids) = d.get_item("token_ids")?.filter(|v| !v.is_none()) {
            f.token_ids = Some(ids.extract()?);
        }
        if let Some(m) = d.get_item("top2_margins")?.filter(|v| !v.is_none()) {
            f.top2_margins = Some(m.extract()?);
        }
        if let Some(e) = d.get_item("error")?.filter(|v| !v.is_none()) {
            f.error = Some(e.str()?.to_string());
        }
        if let Some(c) = d.get_item("cached_prompt_tokens")?.filter(|v| !v.is_none()) {
            f.cached_prompt_tokens = Some(c.extract()?);
        }
        if let Some(e) = d.get_item("engine")?.filter(|v| !v.is_none()) {
            let e = e.cast_into::<PyDict>()?;
            f.engine = Some(EngineStamps {
                queued_ns: ns(&e, "queued_ns"),
                scheduled_ns: ns(&e, "scheduled_ns"),
                first_token_ns: ns(&e, "first_token_ns"),
                last_token_ns: ns(&e, "last_token_ns"),
                meta: engine_meta(&e)?,
            });
        }
    }
    Ok(stats)
}

impl Engine for PythonEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn submit(&mut self, req: &GenRequest) -> Result<(), EngineError> {
        Python::attach(|py| {
            let prompt = PyList::new(py, req.prompt.iter())?;
            self.adapter.call_method1(
                py,
                "submit",
                (
                    req.id,
                    prompt,
                    req.output_len,
                    req.min_tokens,
                    req.ignore_eos,
                    req.temperature,
                    req.seed,
                    req.return_token_ids,
                ),
            )?;
            Ok(())
        })
        .map_err(|e: PyErr| Python::attach(|py| py_error(py, e, "submit")))?;
        self.in_flight.insert(req.id);
        Ok(())
    }

    fn poll(&mut self, timeout: Duration, out: &mut Vec<TokenEvent>) -> Result<(), EngineError> {
        let start = out.len();
        let res = Python::attach(|py| {
            let ret = match &self.profiler {
                // Each step inside the profiler's `harness.step` range.
                Some(p) => p.call_method1(
                    py,
                    "step",
                    (self.adapter.getattr(py, "step")?, timeout.as_secs_f64()),
                )?,
                None => self
                    .adapter
                    .call_method1(py, "step", (timeout.as_secs_f64(),))?,
            };
            decode_step(ret.bind(py), out)
        });
        match res {
            // Polls the driver did not take stats after (none in flight) fold in.
            Ok(Some(stats)) => StepStats::fold(&mut self.stats, stats),
            Ok(None) => {}
            Err(e) => {
                return Err(Python::attach(|py| {
                    if e.is_instance_of::<PyKeyboardInterrupt>(py) {
                        EngineError::failed("interrupted inside the engine (KeyboardInterrupt)")
                    } else {
                        py_error(py, e, "step")
                    }
                }));
            }
        }
        for ev in &out[start..] {
            if ev.finish.is_some() {
                self.in_flight.remove(&ev.request);
            }
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn take_step_stats(&mut self) -> Option<StepStats> {
        self.stats.take()
    }

    fn abort(&mut self, id: RequestId) -> Result<(), EngineError> {
        self.in_flight.remove(&id);
        Python::attach(|py| {
            self.adapter
                .call_method1(py, "abort", (id,))
                .map(|_| ())
                .map_err(|e| py_error(py, e, "abort"))
        })
    }

    fn profile_start(&mut self, dir: &Path, label: &str) -> Result<bool, EngineError> {
        self.start_profiler(dir, label)
    }

    fn prompt_logprobs(
        &mut self,
        texts: &[Vec<u32>],
    ) -> Result<Option<Vec<TextLogprobs>>, EngineError> {
        Python::attach(|py| {
            let ret = self
                .adapter
                .call_method1(py, "prompt_logprobs", (texts.to_vec(),))?;
            let ret = ret.bind(py);
            if ret.is_none() {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(texts.len());
            for item in ret.try_iter()? {
                let (logprobs, top1): (Vec<f32>, Vec<u32>) = item?.extract()?;
                out.push(TextLogprobs { logprobs, top1 });
            }
            Ok(Some(out))
        })
        .map_err(|e: PyErr| Python::attach(|py| py_error(py, e, "prompt_logprobs")))
    }

    fn reset_prefix_cache(&mut self) -> Result<bool, EngineError> {
        Python::attach(|py| {
            self.adapter
                .call_method0(py, "reset_prefix_cache")
                .and_then(|r| r.extract::<bool>(py))
                .map_err(|e| py_error(py, e, "reset_prefix_cache"))
        })
    }

    fn profile_stop(&mut self) -> Result<Option<super::Profile>, EngineError> {
        self.stop_profiler()
    }

    fn shutdown(&mut self) -> Result<(), EngineError> {
        if std::mem::replace(&mut self.shut_down, true) {
            return Ok(());
        }
        let _ = self.stop_profiler();
        self.in_flight.clear();
        Python::attach(|py| {
            let r = self
                .adapter
                .call_method0(py, "shutdown")
                .map(|_| ())
                .map_err(|e| py_error(py, e, "shutdown"));
            // Collect now, so engine threads and memory go before the harness reports.
            let _ = py.import("gc").and_then(|gc| gc.call_method0("collect"));
            // Python buffers its own stdout: put it in engine.log before fd 1 returns
            // to the terminal.
            if let Ok(sys) = py.import("sys") {
                for stream in ["stdout", "stderr"] {
                    let _ = sys.getattr(stream).and_then(|s| s.call_method0("flush"));
                }
            }
            r
        })
    }
}

impl PythonEngine {
    fn start_profiler(&mut self, dir: &Path, label: &str) -> Result<bool, EngineError> {
        let p = Python::attach(|py| {
            py.import("harness_bridge")
                .and_then(|m| {
                    m.getattr("Profiler")?
                        .call1((dir.to_string_lossy().as_ref(), label))
                })
                .map(|p| p.unbind())
                .map_err(|e| py_error(py, e, "starting the profiler"))
        })?;
        self.profiler = Some(p);
        Ok(true)
    }

    fn stop_profiler(&mut self) -> Result<Option<super::Profile>, EngineError> {
        let Some(p) = self.profiler.take() else {
            return Ok(None);
        };
        Python::attach(|py| {
            let d = p
                .call_method0(py, "stop")
                .map_err(|e| py_error(py, e, "stopping the profiler"))?;
            let d = d.bind(py);
            let get = |k: &str| d.get_item(k).map_err(|e| py_error(py, e, "profile"));
            let mut ops = Vec::new();
            for o in get("ops")?
                .try_iter()
                .map_err(|e| py_error(py, e, "profile ops"))?
            {
                let o = o.map_err(|e| py_error(py, e, "profile ops"))?;
                let field = |k: &str| o.get_item(k).map_err(|e| py_error(py, e, "profile op"));
                ops.push(super::OpTime {
                    name: field("name")?
                        .str()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    calls: field("calls")?.extract().unwrap_or(0),
                    self_ms: field("self_us")?.extract::<f64>().unwrap_or(0.0) / 1e3,
                });
            }
            Ok(Some(super::Profile {
                trace_file: get("trace_file")?
                    .extract::<String>()
                    .unwrap_or_default()
                    .into(),
                steps: get("steps")?.extract().unwrap_or(0),
                window_s: get("window_ns")?.extract::<f64>().unwrap_or(0.0) / 1e9,
                method: get("method")?.extract().unwrap_or_default(),
                ops,
            }))
        })
    }
}

impl Drop for PythonEngine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[Shim] = &[Shim {
        path: "pkg/__init__.py",
        source: "X = 1\n",
    }];
    const B: &[Shim] = &[Shim {
        path: "pkg/__init__.py",
        source: "X = 2\n",
    }];

    #[test]
    fn shims_land_once_per_content_and_skip_an_unwritable_base() {
        let tmp = tempfile::tempdir().unwrap();
        // A file where a directory should be: that base cannot be written.
        let blocked = tmp.path().join("blocked");
        std::fs::write(&blocked, "").unwrap();
        let ok = tmp.path().join("ok");
        let bases = [blocked.join("shims"), ok.clone()];
        let a = materialize_shims_in(&bases, "e", A).unwrap();
        assert!(a.starts_with(&ok), "{}", a.display());
        assert_eq!(
            std::fs::read_to_string(a.join("pkg/__init__.py")).unwrap(),
            "X = 1\n"
        );
        assert_eq!(materialize_shims_in(&bases, "e", A).unwrap(), a);
        let b = materialize_shims_in(&bases, "e", B).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            std::fs::read_to_string(b.join("pkg/__init__.py")).unwrap(),
            "X = 2\n"
        );
        // No half-written temporary directory is left beside them.
        let names: Vec<String> = std::fs::read_dir(&ok)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        assert!(materialize_shims_in(&[blocked.join("x")], "e", A).is_err());
    }
}
