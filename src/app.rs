//! Orchestration: turns a parsed command line into a run, a sweep, a report or a
//! listing. The scheduler of a benchmark lives here (hyperfine's `Scheduler`): it
//! loads the engine once, runs each point through the driver, and exports after
//! every point so an interruption keeps each finished point's summary.

use crate::cli::{Cli, Command, EnginesArgs, ReportArgs, RunArgs};
use crate::config::{self, RunConfig};
use crate::driver::{progress::Progress, Driver, LoadPoint, Outcome};
use crate::engine::{registry, Availability, EngineConfig, EngineError, EngineInfo};
use crate::error::{UsageError, EXIT_FAILED, EXIT_INTERRUPTED};
use crate::metrics::{self, Slo};
use crate::report::{self, PointResult, RunResult};
use crate::trace::{self, RequestTrace, TraceWriter};
use crate::workload::{self, Tokenizer};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

/// The run's metadata file: written before the first request, completed at the end.
pub const RUN_FILE: &str = "run.json";

/// Runs a command and returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run(a) => bench(a, false),
        Command::Sweep(a) => bench(a, true),
        Command::Report(a) => report_dir(a),
        Command::Engines(a) => engines(a),
        Command::Parity(a) => crate::parity::run(a),
    }
}

fn engines(a: EnginesArgs) -> Result<i32> {
    let cfg = EngineConfig {
        python_env: a.python_env,
        ..Default::default()
    };
    for e in registry::registry() {
        let (state, why) = match (e.availability)(&cfg) {
            Availability::Usable(why) => ("usable", why),
            Availability::Unusable(why) => ("unusable", why),
        };
        println!(
            "{:<12} {:<9} {}\n{:<12} {:<9} {}",
            e.name, state, e.description, "", "", why
        );
    }
    Ok(0)
}

fn bench(args: RunArgs, sweep: bool) -> Result<i32> {
    let cfg = config::validate(config::merge(args)?, sweep)?;
    let tokenizer = cfg
        .tokenizer
        .as_deref()
        .map(Tokenizer::from_file)
        .transpose()?;
    let count = cfg.workload_size();
    let workload = workload::build(&cfg.workload, tokenizer.as_ref(), count, cfg.driver.seed)?;
    let cancel = crate::process::install_interrupt();

    // Create the result directory before the (slow) engine load, so an unwritable
    // one fails at once; remove it again if the engine refuses to load.
    let created = !cfg.out.exists();
    std::fs::create_dir_all(&cfg.out).map_err(|e| {
        UsageError(format!(
            "--out {}: {e}; choose a writable directory",
            cfg.out.display()
        ))
    })?;
    let progress = Progress::new(cfg.progress);
    progress.println(&format!("loading engine {} ...", cfg.engine.name));
    let t = Instant::now();
    let mut engine = match (cfg.engine.load)(&cfg.engine_config) {
        Ok(e) => e,
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir(&cfg.out);
            }
            crate::process::kill_children();
            return Err(match e {
                EngineError::Usage(_) => anyhow::Error::new(e),
                other => anyhow::Error::new(other)
                    .context(format!("engine {} failed to load", cfg.engine.name)),
            });
        }
    };
    let load_s = t.elapsed().as_secs_f64();
    let mut info = engine.info().clone();
    info.load_time_s = load_s;
    progress.println(&format!(
        "loaded {} {} in {load_s:.1} s",
        info.name, info.version
    ));

    let mut meta = metadata(&cfg, &info, &workload.description);
    write_json(&cfg.out.join(RUN_FILE), &meta)?;
    let toml = toml::to_string(&cfg.effective).unwrap_or_default();
    std::fs::write(cfg.out.join("config.toml"), toml).context("cannot write config.toml")?;
    std::fs::write(cfg.out.join("workload.jsonl"), workload.to_jsonl())
        .context("cannot write workload.jsonl")?;
    let mut writer = TraceWriter::create(&cfg.out)?;

    let mut all: Vec<RequestTrace> = Vec::new();
    let mut points: Vec<PointResult> = Vec::new();
    let mut outcome = Outcome::Completed;
    {
        let mut driver = Driver::new(engine.as_mut(), cancel);
        for (i, &point) in cfg.points.iter().enumerate() {
            let run = driver.run_point(
                i as u32,
                point,
                &workload,
                &cfg.driver_for(point),
                &mut writer,
                &progress,
            )?;
            let summary = metrics::summarize(&run.records, &cfg.slo);
            all.extend(run.records);
            points.push(PointResult { point, summary });
            let partial = RunResult {
                meta: meta.clone(),
                instrument: info.instrument,
                points: points.clone(),
                slo: cfg.slo,
            };
            report::write_all(&cfg.out, &partial, &all)?;
            outcome = run.outcome;
            if outcome != Outcome::Completed {
                break;
            }
        }
    }
    progress.finish();
    let shutdown = engine.shutdown();
    let leftover = crate::process::kill_children();
    if leftover > 0 {
        eprintln!("warning: {leftover} child process(es) of the engine were still running after shutdown; terminated");
    }

    let status = match &outcome {
        Outcome::Completed => "completed",
        Outcome::Interrupted => "interrupted",
        Outcome::EngineFailed(_) => "engine_failed",
    };
    meta["status"] = json!(status);
    meta["end_time"] = json!(chrono::Local::now().to_rfc3339());
    write_json(&cfg.out.join(RUN_FILE), &meta)?;
    let result = RunResult {
        meta,
        instrument: info.instrument,
        points,
        slo: cfg.slo,
    };
    report::write_all(&cfg.out, &result, &all)?;
    println!("{}", report::table(&result));
    println!("results: {}", cfg.out.display());

    if let Err(e) = shutdown {
        eprintln!("warning: engine shutdown failed: {e}");
    }
    Ok(match outcome {
        Outcome::Interrupted => EXIT_INTERRUPTED,
        Outcome::EngineFailed(msg) => {
            eprintln!(
                "Error: engine {} failed mid-run: {}",
                info.name,
                msg.lines().next().unwrap_or("")
            );
            EXIT_FAILED
        }
        Outcome::Completed => {
            let failed = all.iter().filter(|r| !r.is_success()).count();
            if failed > 0 {
                eprintln!(
                    "Error: {failed} of {} requests failed (see requests.csv)",
                    all.len()
                );
                EXIT_FAILED
            } else {
                0
            }
        }
    })
}

/// Summaries of `points` from the records (grouped by point index).
fn points_of(points: &[LoadPoint], records: &[RequestTrace], slo: &Slo) -> Vec<PointResult> {
    points
        .iter()
        .enumerate()
        .map(|(i, &point)| {
            let recs: Vec<RequestTrace> = records
                .iter()
                .filter(|r| r.point as usize == i)
                .cloned()
                .collect();
            PointResult {
                point,
                summary: metrics::summarize(&recs, slo),
            }
        })
        .collect()
}

/// `harness report DIR`: recompute every summary from run.json and requests.jsonl.
fn report_dir(a: ReportArgs) -> Result<i32> {
    let run_file = a.dir.join(RUN_FILE);
    let text = std::fs::read_to_string(&run_file).map_err(|e| {
        UsageError(format!(
            "{}: {e}; pass a result directory written by `harness run` or `harness sweep`",
            run_file.display()
        ))
    })?;
    let meta: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{}: not a run file ({e})", run_file.display())))?;
    let points: Vec<LoadPoint> = serde_json::from_value(meta["points"].clone())
        .map_err(|e| UsageError(format!("{}: no valid \"points\" ({e})", run_file.display())))?;
    let slo: Slo = match &a.slo {
        Some(s) => metrics::parse_slo(s)?,
        None => serde_json::from_value(meta["slo"].clone()).unwrap_or_default(),
    };
    let records = trace::read_requests(&a.dir.join(trace::REQUESTS_FILE))?;
    let instrument = meta["engine"]["instrument"].as_bool().unwrap_or(false);
    // Points run in order, so those with records are a prefix (an interrupted sweep
    // stops early); the report keeps `points[i]` as the records of point i.
    let ran = records
        .iter()
        .map(|r| r.point as usize + 1)
        .max()
        .unwrap_or(0);
    let result = RunResult {
        meta,
        instrument,
        points: points_of(&points[..ran.min(points.len())], &records, &slo),
        slo,
    };
    report::write_all(&a.dir, &result, &records)?;
    println!("{}", report::table(&result));
    Ok(0)
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Run metadata: what ran, where, when, and how.
fn metadata(cfg: &RunConfig, info: &EngineInfo, workload: &str) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "harness": { "version": env!("CARGO_PKG_VERSION"), "git_revision": env!("HARNESS_GIT_REV") },
        "command_line": std::env::args().collect::<Vec<_>>(),
        "start_time": chrono::Local::now().to_rfc3339(),
        "status": "running",
        "host": {
            "hostname": host,
            "cpu": cpu,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "gpu": crate::gpu::describe(),
        },
        "engine": info,
        "model": cfg.engine_config.model.as_ref().map(|m| m.display().to_string()),
        "tokenizer": cfg.tokenizer.as_ref().map(|m| m.display().to_string()),
        "workload": { "spec": cfg.workload, "description": workload },
        "points": cfg.points,
        "slo": cfg.slo,
        "driver": {
            "warmup": cfg.points.iter().map(|&p| cfg.driver_for(p).warmup).collect::<Vec<_>>(),
            "num_requests": cfg.points.iter().map(|&p| cfg.driver_for(p).stop.num_requests).collect::<Vec<_>>(),
            "duration_s": cfg.driver.stop.duration.map(|d| d.as_secs_f64()),
            "request_timeout_s": cfg.driver.request_timeout.as_secs_f64(),
            "sampling": cfg.driver.sampling,
            "seed": cfg.driver.seed,
            "clock": "CLOCK_MONOTONIC; step engines stamped by the driver when each poll returns, stream engines on arrival by the engine's thread",
        },
        "config": cfg.effective,
    })
}
