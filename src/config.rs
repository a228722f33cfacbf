//! The validated run configuration: flags merged over an optional TOML file, every
//! value checked before any engine loads. Errors are one line naming the flag and the
//! fix; they end the program with exit code 2.

use crate::cli::{RunArgs, Spec};
use crate::driver::{DriverOptions, LoadPoint, Sampling, Stop};
use crate::engine::{registry, EngineConfig, EngineSpec};
use crate::metrics::{parse_slo, Slo};
use crate::workload::{parse_length, LengthDist, WorkloadSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Everything a run needs, validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub engine: &'static EngineSpec,
    pub engine_config: EngineConfig,
    /// tokenizer.json for the workload (None: synthetic ids without a model).
    pub tokenizer: Option<PathBuf>,
    pub workload: WorkloadSpec,
    pub points: Vec<LoadPoint>,
    /// Driver options shared by every point; see [`RunConfig::driver_for`].
    pub driver: DriverOptions,
    /// `--warmup` as given (None: one wave of each point).
    pub warmup: Option<usize>,
    pub slo: Slo,
    pub out: PathBuf,
    pub progress: bool,
    /// The merged flags, saved with the results as `config.toml` (re-runnable with --config).
    pub effective: RunArgs,
}

impl RunConfig {
    /// Driver options for one point: `--num-requests` and `--warmup` as given, else
    /// one wave of warmup and [`default_requests`] of that point.
    pub fn driver_for(&self, p: LoadPoint) -> DriverOptions {
        let mut d = self.driver.clone();
        if d.stop.num_requests.is_none() && d.stop.duration.is_none() {
            d.stop.num_requests = Some(default_requests(p));
        }
        d.warmup = self.warmup.unwrap_or_else(|| default_warmup(p));
        d
    }

    /// Workload items the largest point needs (a --duration run cycles through 1024).
    pub fn workload_size(&self) -> usize {
        self.points
            .iter()
            .map(|&p| {
                let d = self.driver_for(p);
                d.warmup + d.stop.num_requests.unwrap_or(1024)
            })
            .max()
            .unwrap_or(1)
    }
}

/// Reads `--config FILE` (if any) and lays the flags over it.
pub fn merge(cli: RunArgs) -> Result<RunArgs, ConfigError> {
    let Some(path) = cli.config.clone() else {
        return Ok(cli);
    };
    let text = std::fs::read_to_string(&path).or_else(|e| {
        err(format!(
            "--config {}: {e}; pass an existing TOML file",
            path.display()
        ))
    })?;
    let file: RunArgs = toml::from_str(&text).or_else(|e| {
        let msg = e.message().replace('\n', " ");
        let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
        err(match line {
            Some(l) => format!("--config {} line {l}: {msg}; keys are the flag names (e.g. engine, batch, input-len)", path.display()),
            None => format!("--config {}: {msg}", path.display()),
        })
    })?;
    macro_rules! over {
        ($($f:ident),*) => { RunArgs { $($f: cli.$f.or(file.$f),)* engine_arg: if cli.engine_arg.is_empty() { file.engine_arg } else { cli.engine_arg }, config: cli.config } };
    }
    Ok(over!(
        engine,
        model,
        tokenizer,
        python_env,
        batch,
        concurrency,
        rate,
        burstiness,
        dataset,
        dataset_path,
        input_len,
        output_len,
        seed,
        num_requests,
        duration,
        warmup,
        ignore_eos,
        temperature,
        request_timeout,
        slo,
        out,
        no_progress
    ))
}

/// `1,2,4` → [1, 2, 4], each a positive integer.
fn int_list(flag: &str, s: &Spec) -> Result<Vec<u32>, ConfigError> {
    s.0.split(',')
        .map(|v| match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => err(format!(
                "--{flag} {}: '{}' is not a positive integer; give N or a list N,N,..",
                s.0,
                v.trim()
            )),
        })
        .collect()
}

fn rate_list(s: &Spec) -> Result<Vec<f64>, ConfigError> {
    s.0.split(',')
        .map(|v| match v.trim().parse::<f64>() {
            Ok(r) if r > 0.0 && !r.is_nan() => Ok(r),
            _ => err(format!(
                "--rate {}: '{}' is not a positive number of requests/s (or inf)",
                s.0,
                v.trim()
            )),
        })
        .collect()
}

fn positive(flag: &str, v: Option<f64>) -> Result<Option<f64>, ConfigError> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => {
            err(format!("--{flag} {x}: must be a positive number"))
        }
        _ => Ok(v),
    }
}

fn length(flag: &str, s: &Spec) -> Result<LengthDist, ConfigError> {
    parse_length(&s.0).or_else(|e| err(format!("--{flag} {}: {e}", s.0)))
}

/// The model directory must hold a config and weights before an engine is asked to load it.
pub fn check_model_dir(dir: &Path) -> Result<(), ConfigError> {
    if !dir.is_dir() {
        return err(format!(
            "--model {}: no such directory; pass a model directory (scripts/setup.sh builds one)",
            dir.display()
        ));
    }
    if !dir.join("config.json").is_file() {
        return err(format!(
            "--model {}: no config.json; pass a Hugging Face-style checkpoint directory",
            dir.display()
        ));
    }
    let has_weights = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.ends_with(".safetensors") || n.ends_with(".bin") || n.ends_with(".pt")
            })
        })
        .unwrap_or(false);
    if !has_weights {
        return err(format!(
            "--model {}: no weights (*.safetensors or *.bin); rebuild the model (scripts/setup.sh)",
            dir.display()
        ));
    }
    Ok(())
}

/// Validates merged flags. `sweep` allows lists of load values; `run` takes one.
pub fn validate(a: RunArgs, sweep: bool) -> Result<RunConfig, ConfigError> {
    let names = registry::engine_names();
    let Some(engine_name) = a.engine.as_deref() else {
        return err(format!(
            "--engine is required; one of: {names} (see `harness engines`)"
        ));
    };
    let Some(engine) = registry::find_engine(engine_name) else {
        return err(format!(
            "unknown engine '{engine_name}'; known engines: {names} (see `harness engines`)"
        ));
    };
    if engine.needs_model {
        match &a.model {
            None => return err(format!("--model is required for --engine {engine_name}; pass a model directory (scripts/setup.sh builds one)")),
            Some(m) => check_model_dir(m)?,
        }
    } else if let Some(m) = &a.model {
        if !m.exists() {
            return err(format!("--model {}: no such directory", m.display()));
        }
    }
    let mut engine_args = Vec::new();
    for kv in &a.engine_arg {
        match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                engine_args.push((k.trim().to_string(), v.trim().to_string()))
            }
            _ => {
                return err(format!(
                    "--engine-arg '{kv}': expected KEY=VALUE (e.g. max_num_seqs=64)"
                ))
            }
        }
    }
    if let Some(env) = &a.python_env {
        if !env.join("bin").is_dir() {
            return err(format!("--python-env {}: not a Python venv (no bin/); pass a venv made by scripts/setup.sh", env.display()));
        }
    }

    // Load points: exactly one mode.
    let given: Vec<&str> = [
        ("batch", &a.batch),
        ("concurrency", &a.concurrency),
        ("rate", &a.rate),
    ]
    .iter()
    .filter(|(_, v)| v.is_some())
    .map(|(n, _)| *n)
    .collect();
    if given.len() > 1 {
        return err(format!(
            "--{} and --{} conflict: give one load mode",
            given[0], given[1]
        ));
    }
    let burstiness = positive("burstiness", a.burstiness)?.unwrap_or(1.0);
    if a.burstiness.is_some() && a.rate.is_none() {
        return err("--burstiness applies only to --rate; add --rate R or drop --burstiness");
    }
    let points: Vec<LoadPoint> = if let Some(s) = &a.batch {
        int_list("batch", s)?
            .into_iter()
            .map(|batch| LoadPoint::Batch { batch })
            .collect()
    } else if let Some(s) = &a.concurrency {
        int_list("concurrency", s)?
            .into_iter()
            .map(|concurrency| LoadPoint::Concurrency { concurrency })
            .collect()
    } else if let Some(s) = &a.rate {
        rate_list(s)?
            .into_iter()
            .map(|rate| LoadPoint::Rate { rate, burstiness })
            .collect()
    } else if sweep {
        return err(
            "harness sweep needs a list: --batch 1,2,4 or --concurrency LIST or --rate LIST",
        );
    } else {
        vec![LoadPoint::Batch { batch: 1 }]
    };
    if !sweep && points.len() > 1 {
        return err(format!(
            "harness run takes one load point, got {}; use `harness sweep` for lists",
            points.len()
        ));
    }

    // Workload.
    let dataset = a.dataset.as_deref().unwrap_or("synthetic");
    let need_path = |what: &str| -> Result<PathBuf, ConfigError> {
        let Some(p) = &a.dataset_path else {
            return err(format!(
                "--dataset {dataset} needs --dataset-path FILE ({what})"
            ));
        };
        if !p.is_file() {
            return err(format!("--dataset-path {}: no such file", p.display()));
        }
        Ok(p.clone())
    };
    let workload = match dataset {
        "synthetic" => WorkloadSpec::Synthetic {
            input_len: a
                .input_len
                .as_ref()
                .map_or(Ok(LengthDist::Fixed { len: 128 }), |s| {
                    length("input-len", s)
                })?,
            output_len: a
                .output_len
                .as_ref()
                .map_or(Ok(LengthDist::Fixed { len: 128 }), |s| {
                    length("output-len", s)
                })?,
        },
        "sharegpt" => {
            if a.input_len.is_some() {
                return err("--input-len does not apply to --dataset sharegpt (prompt lengths come from the data)");
            }
            let output_len = match &a.output_len {
                None => None,
                Some(s) => match length("output-len", s)? {
                    LengthDist::Fixed { len } => Some(len),
                    _ => return err("--output-len for sharegpt must be a fixed number of tokens"),
                },
            };
            WorkloadSpec::Sharegpt {
                path: need_path("ShareGPT_V3_unfiltered_cleaned_split.json")?,
                output_len,
            }
        }
        "prompts" => {
            if a.input_len.is_some() {
                return err("--input-len does not apply to --dataset prompts (prompt lengths come from the file)");
            }
            let output_len = match a
                .output_len
                .as_ref()
                .map(|s| length("output-len", s))
                .transpose()?
            {
                None => 128,
                Some(LengthDist::Fixed { len }) => len,
                Some(_) => {
                    return err("--output-len for a prompt file must be a fixed number of tokens")
                }
            };
            WorkloadSpec::Prompts {
                path: need_path("JSONL with \"prompt\", or text, one prompt per line")?,
                output_len,
            }
        }
        other => {
            return err(format!(
                "unknown --dataset '{other}'; use synthetic, sharegpt or prompts"
            ))
        }
    };
    let tokenizer = match (&a.tokenizer, &a.model) {
        (Some(t), _) if !t.is_file() => {
            return err(format!("--tokenizer {}: no such file", t.display()))
        }
        (Some(t), _) => Some(t.clone()),
        (None, Some(m)) if m.join("tokenizer.json").is_file() => Some(m.join("tokenizer.json")),
        (None, Some(m)) if engine.needs_model => {
            return err(format!(
                "--model {}: no tokenizer.json; pass --tokenizer FILE",
                m.display()
            ))
        }
        _ => None,
    };
    if tokenizer.is_none() && dataset != "synthetic" {
        return err(format!("--dataset {dataset} needs a tokenizer: pass --model DIR (with tokenizer.json) or --tokenizer FILE"));
    }

    // Stop condition and warmup.
    if a.num_requests.is_some() && a.duration.is_some() {
        return err("--num-requests and --duration conflict: give one stop condition");
    }
    if a.num_requests == Some(0) {
        return err("--num-requests 0: must be at least 1");
    }
    let duration = positive("duration", a.duration)?.map(Duration::from_secs_f64);
    let timeout = positive("request-timeout", a.request_timeout)?.unwrap_or(600.0);
    let temperature = a.temperature.unwrap_or(0.0);
    if !(temperature.is_finite() && temperature >= 0.0) {
        return err(format!(
            "--temperature {temperature}: must be ≥ 0 (0 = greedy)"
        ));
    }
    let slo = match &a.slo {
        Some(s) => parse_slo(s).or_else(|e| err(format!("--slo {s}: {e}")))?,
        None => Slo::default(),
    };
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(format!(
            "{engine_name}-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S")
        ))
    });
    check_out_dir(&out)?;
    let seed = a.seed.unwrap_or(0);
    let python_env = a.python_env.clone();
    Ok(RunConfig {
        engine,
        engine_config: EngineConfig {
            model: a.model.clone(),
            engine_args,
            python_env,
        },
        tokenizer,
        workload,
        driver: DriverOptions {
            // Per point, unless given: see `RunConfig::driver_for`.
            warmup: 0,
            stop: Stop {
                num_requests: a.num_requests,
                duration,
            },
            request_timeout: Duration::from_secs_f64(timeout),
            sampling: Sampling {
                ignore_eos: a.ignore_eos.unwrap_or(false),
                temperature,
                seed: Some(seed),
                return_token_ids: false,
            },
            seed,
        },
        warmup: a.warmup,
        points,
        slo,
        out,
        progress: !a.no_progress.unwrap_or(false),
        effective: RunArgs { config: None, ..a },
    })
}

/// Requests per point when neither --num-requests nor --duration is given.
pub fn default_requests(p: LoadPoint) -> usize {
    match p {
        LoadPoint::Batch { batch } => batch as usize,
        LoadPoint::Concurrency { concurrency } => 4 * concurrency as usize,
        LoadPoint::Rate { rate, .. } if rate.is_infinite() => 64,
        LoadPoint::Rate { rate, .. } => ((rate * 10.0).ceil() as usize).max(10),
    }
}

/// Warmup requests when --warmup is not given: one wave of the point.
pub fn default_warmup(p: LoadPoint) -> usize {
    match p {
        LoadPoint::Batch { batch } => batch as usize,
        LoadPoint::Concurrency { concurrency } => concurrency as usize,
        LoadPoint::Rate { rate, .. } if rate.is_infinite() => 1,
        LoadPoint::Rate { rate, .. } => (rate.ceil() as usize).max(1),
    }
}

/// The result directory must be creatable and must not hold another run's results.
fn check_out_dir(out: &Path) -> Result<(), ConfigError> {
    if out.join(crate::trace::REQUESTS_FILE).exists() {
        return err(format!(
            "--out {}: already holds results; choose another --out or remove it",
            out.display()
        ));
    }
    if out.exists() && !out.is_dir() {
        return err(format!(
            "--out {}: exists and is not a directory",
            out.display()
        ));
    }
    // The nearest existing ancestor must be writable, or nothing can be saved.
    let mut probe = out;
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => {
                probe = Path::new(".");
                break;
            }
        }
    }
    let writable = std::fs::metadata(probe)
        .map(|m| !m.permissions().readonly())
        .unwrap_or(false)
        && access_w(probe);
    if !writable {
        return err(format!(
            "--out {}: {} is not writable; choose another --out",
            out.display(),
            probe.display()
        ));
    }
    Ok(())
}

fn access_w(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}
