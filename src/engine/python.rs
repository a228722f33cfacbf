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

use super::{
    registry::Availability, Engine, EngineConfig, EngineError, EngineInfo, EngineKind,
    EngineStamps, Finish, FinishReason, GenRequest, RequestId, TokenEvent,
};
use crate::clock::MonoNs;
use pyo3::exceptions::{PyImportError, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTraceback};
use std::collections::HashSet;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shared helpers every adapter imports as `harness_bridge`.
const BRIDGE: &str = include_str!("../../engines/harness_bridge.py");

/// Adapter source, module name, and the package the venv must hold (None: stdlib only).
struct Adapter {
    engine: &'static str,
    source: &'static str,
    module: &'static str,
    package: Option<&'static str>,
}

const ADAPTERS: &[Adapter] = &[
    Adapter {
        engine: "vllm",
        source: include_str!("../../engines/vllm.py"),
        module: "harness_engine_vllm",
        package: Some("vllm"),
    },
    Adapter {
        engine: "hf",
        source: include_str!("../../engines/hf.py"),
        module: "harness_engine_hf",
        package: Some("transformers"),
    },
    Adapter {
        engine: "python-test",
        source: include_str!("../../engines/test_adapter.py"),
        module: "harness_engine_test",
        package: None,
    },
];

/// The cache directory scripts/setup.sh installs into.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LLM_HARNESS_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("llm-harness")
}

/// The venv scripts/setup.sh makes for Python engines (vLLM and HF share one).
pub fn default_env() -> PathBuf {
    cache_dir().join("venvs").join("vllm")
}

fn adapter(engine: &str) -> Result<&'static Adapter, EngineError> {
    ADAPTERS
        .iter()
        .find(|a| a.engine == engine)
        .ok_or_else(|| EngineError::Usage(format!("no Python adapter named {engine}")))
}

/// `lib/pythonX.Y/site-packages` of a venv, for the interpreter this binary embeds.
fn site_packages(env: &Path) -> Result<PathBuf, String> {
    let (major, minor) = Python::attach(|py| {
        let v = py.version_info();
        (v.major, v.minor)
    });
    let sp = env
        .join("lib")
        .join(format!("python{major}.{minor}"))
        .join("site-packages");
    if sp.is_dir() {
        return Ok(sp);
    }
    let found: Vec<String> = std::fs::read_dir(env.join("lib"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    Err(if found.is_empty() {
        format!("--python-env {}: not a Python venv (no lib/python*/site-packages); run scripts/setup.sh or pass a venv", env.display())
    } else {
        format!(
            "--python-env {}: made for {} but this harness embeds python{major}.{minor}; re-create it with scripts/setup.sh",
            env.display(),
            found.join(", ")
        )
    })
}

/// A checked venv: its root and the site-packages for the embedded interpreter.
struct Venv {
    root: PathBuf,
    site_packages: PathBuf,
}

/// The venv to use for `engine`, or None to run on the embedded interpreter as is.
fn resolve_env(a: &Adapter, config: &EngineConfig) -> Result<Option<Venv>, String> {
    let env = match (&config.python_env, a.package) {
        (Some(e), _) => e.clone(),
        (None, None) if !default_env().exists() => return Ok(None),
        (None, _) => default_env(),
    };
    if !env.join("bin").join("python").exists() {
        return Err(format!(
            "no Python env for {} at {}: run scripts/setup.sh (it makes {}) or pass --python-env DIR",
            a.engine,
            env.display(),
            default_env().display()
        ));
    }
    let sp = site_packages(&env)?;
    if let Some(pkg) = a.package {
        if !sp.join(pkg).is_dir() {
            return Err(format!(
                "--python-env {}: has no '{pkg}' package; run scripts/setup.sh or pass the venv that has it",
                env.display()
            ));
        }
    }
    Ok(Some(Venv {
        root: env,
        site_packages: sp,
    }))
}

pub fn availability(engine: &str, config: &EngineConfig) -> Availability {
    let a = match adapter(engine) {
        Ok(a) => a,
        Err(e) => return Availability::Unusable(e.to_string()),
    };
    match resolve_env(a, config) {
        Ok(Some(env)) => Availability::Usable(format!("python env {}", env.root.display())),
        Ok(None) => Availability::Usable("embedded interpreter (stdlib only)".into()),
        Err(why) => Availability::Unusable(why),
    }
}

pub fn load(engine: &str, config: &EngineConfig) -> Result<Box<dyn Engine>, EngineError> {
    Ok(Box::new(PythonEngine::load(engine, config)?))
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
    in_flight: HashSet<RequestId>,
    shut_down: bool,
}

impl PythonEngine {
    pub fn load(engine: &str, config: &EngineConfig) -> Result<PythonEngine, EngineError> {
        let a = adapter(engine)?;
        let env = resolve_env(a, config).map_err(EngineError::Usage)?;
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
            load_module(py, BRIDGE, "harness_bridge")
                .map_err(|e| py_error(py, e, "loading harness_bridge"))?;
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
                        "{engine}: cannot import its Python packages from {env} ({}); run scripts/setup.sh or pass --python-env DIR",
                        e.value(py)
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
                in_flight: HashSet::new(),
                shut_down: false,
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
    let metadata = match info.get_item("metadata") {
        Ok(m) => {
            let text: String = json.call_method1("dumps", (m,))?.extract()?;
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
        }
        Err(_) => serde_json::Value::Null,
    };
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
        instrument: false,
        metadata,
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

fn ns(d: &Bound<'_, PyDict>, k: &str) -> Option<MonoNs> {
    let v: i64 = d.get_item(k).ok()??.extract().ok()?;
    (v > 0).then_some(MonoNs(v as u64))
}

/// Decodes one step's `(bytes, [(rid, dict), ...])` into events.
fn decode_step(ret: &Bound<'_, PyAny>, out: &mut Vec<TokenEvent>) -> PyResult<()> {
    let (packed, extras): (Bound<'_, PyBytes>, Bound<'_, PyList>) = ret.extract()?;
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
        if let Some(e) = d.get_item("error")?.filter(|v| !v.is_none()) {
            f.error = Some(e.str()?.to_string());
        }
        if let Some(e) = d.get_item("engine")?.filter(|v| !v.is_none()) {
            let e = e.cast_into::<PyDict>()?;
            f.engine = Some(EngineStamps {
                queued_ns: ns(&e, "queued_ns"),
                scheduled_ns: ns(&e, "scheduled_ns"),
                first_token_ns: ns(&e, "first_token_ns"),
                last_token_ns: ns(&e, "last_token_ns"),
            });
        }
    }
    Ok(())
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
                    req.max_tokens,
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
            let ret = self
                .adapter
                .call_method1(py, "step", (timeout.as_secs_f64(),))?;
            decode_step(ret.bind(py), out)
        });
        if let Err(e) = res {
            return Err(Python::attach(|py| {
                if e.is_instance_of::<PyKeyboardInterrupt>(py) {
                    EngineError::failed("interrupted inside the engine (KeyboardInterrupt)")
                } else {
                    py_error(py, e, "step")
                }
            }));
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

    fn abort(&mut self, id: RequestId) -> Result<(), EngineError> {
        self.in_flight.remove(&id);
        Python::attach(|py| {
            self.adapter
                .call_method1(py, "abort", (id,))
                .map(|_| ())
                .map_err(|e| py_error(py, e, "abort"))
        })
    }

    fn shutdown(&mut self) -> Result<(), EngineError> {
        if std::mem::replace(&mut self.shut_down, true) {
            return Ok(());
        }
        self.in_flight.clear();
        Python::attach(|py| {
            let r = self
                .adapter
                .call_method0(py, "shutdown")
                .map(|_| ())
                .map_err(|e| py_error(py, e, "shutdown"));
            // Collect now, so engine threads and memory go before the harness reports.
            let _ = py.import("gc").and_then(|gc| gc.call_method0("collect"));
            r
        })
    }
}

impl Drop for PythonEngine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
