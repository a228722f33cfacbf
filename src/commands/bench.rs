//! `harness run`, `harness sweep` and `harness search`: the scheduler of a benchmark
//! (hyperfine's `Scheduler`). It validates the configuration, builds the workload,
//! loads the engine once, runs each point through the driver, and exports after every
//! point so an interruption keeps each finished point's summary. The next point comes
//! from [`next_point`]: the next of a fixed list (`run`, `sweep`), or the capacity
//! search's next probe, chosen from the results so far (`search`).

use super::visuals;
use crate::cli::{RunArgs, SearchArgs};
use crate::config::{self, RunConfig};
use crate::core::error::{UsageError, EXIT_FAILED, EXIT_INTERRUPTED};
use crate::core::measure::Measures;
use crate::driver::{progress::Progress, Driver, LoadPoint, Outcome, PointRun};
use crate::engine::{Engine, EngineError, EngineInfo, Registry};
use crate::gpu::Gpu;
use crate::metrics;
use crate::process::{self, Loading};
use crate::report::meta::{self, DriverMeta, HarnessMeta, HostMeta, RunMeta, WorkloadMeta};
use crate::report::{self, PointResult, RunResult, RunStatus};
use crate::terminal::{self, Capture, ENGINE_LOG};
use crate::trace::{RequestTrace, StepRecord, TraceWriter};
use crate::workload::{self, Tokenizer, Workload};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Lines of engine.log printed with an engine failure.
const LOG_TAIL: usize = 20;

/// The result directory for the duration of a run: created before the (slow) engine
/// load so an unwritable one fails at once, and removed again when nothing was
/// measured and this run created it.
struct OutDir<'a> {
    path: &'a Path,
    created: bool,
    /// The outermost directory this run created (`results/` on a first run), removed
    /// with the result directory when nothing was measured.
    outermost: PathBuf,
}

impl<'a> OutDir<'a> {
    fn create(path: &'a Path) -> Result<OutDir<'a>> {
        let created = !path.exists();
        let mut outermost = path.to_path_buf();
        while let Some(parent) = outermost.parent() {
            if parent.as_os_str().is_empty() || parent.exists() {
                break;
            }
            outermost = parent.to_path_buf();
        }
        std::fs::create_dir_all(path).map_err(|e| {
            UsageError(format!(
                "--out {}: {e}; choose a writable directory",
                path.display()
            ))
        })?;
        Ok(OutDir {
            path,
            created,
            outermost,
        })
    }

    /// What Ctrl-C during the load removes: the directories this run created, else
    /// the log.
    fn cleanup_target(&self) -> std::path::PathBuf {
        if self.created {
            self.outermost.clone()
        } else {
            self.path.join(ENGINE_LOG)
        }
    }

    /// Removes what this run wrote when nothing was measured (bad input at load).
    fn discard(&self) {
        if self.created {
            let _ = std::fs::remove_dir_all(&self.outermost);
        } else {
            let _ = std::fs::remove_file(self.path.join(ENGINE_LOG));
        }
    }
}

/// `harness run` (one point) and `harness sweep` (a list).
pub fn run(args: RunArgs, sweep: bool) -> Result<i32> {
    bench(config::validate(
        config::merge(args)?,
        sweep,
        &Registry::builtin(),
    )?)
}

/// `harness search`: the highest load whose probes meet the SLOs, by bisection.
pub fn search(args: SearchArgs) -> Result<i32> {
    bench(config::validate_search(args, &Registry::builtin())?)
}

/// The point to run after `done`: the next of the configured list, or the search's
/// next probe (bisection on the probes' verdicts so far).
fn next_point(cfg: &RunConfig, done: &[PointResult]) -> Option<LoadPoint> {
    let Some(search) = &cfg.search else {
        return cfg.points.get(done.len()).copied();
    };
    let probes: Vec<_> = done
        .iter()
        .map(|p| {
            let (requests, good) = metrics::capacity::counts(&p.summary);
            (p.point.value(), search.spec.verdict(requests, good))
        })
        .collect();
    search.spec.next(&probes).map(|v| search.point(v))
}

fn bench(cfg: RunConfig) -> Result<i32> {
    let tokenizer = cfg
        .tokenizer
        .as_deref()
        .map(Tokenizer::from_file)
        .transpose()?;
    let workload = workload::build(
        &cfg.workload,
        tokenizer.as_ref(),
        cfg.workload_size(),
        cfg.driver.seed,
    )?;
    let cancel = process::install_interrupt();
    process::contain_engine_sigquit();
    let out = OutDir::create(&cfg.out)?;
    let mut capture = Capture::start(&cfg.out.join(ENGINE_LOG), cfg.verbose)
        .with_context(|| format!("cannot write {}", cfg.out.join(ENGINE_LOG).display()))?;
    let progress = Progress::new(cfg.progress);
    let (engine, load_time_s) = load_engine(&cfg, &out, &progress, &mut capture)?;
    let mut info = EngineInfo {
        load_time_s,
        ..engine.info().clone()
    };
    let host = crate::engine::layout::hostname().unwrap_or_default();
    if let Some(scope) = info.layout.as_ref().and_then(|l| l.telemetry_scope(&host)) {
        info.notes.push(scope);
    }
    progress.println(&format!(
        "loaded {} {} in {:.1} s",
        info.name, info.version, info.load_time_s
    ));
    // What the engine says a user must know about this run (a stand-in in use, a
    // scheduler of the harness's own); run.json keeps the same notes.
    for note in &info.notes {
        progress.println(&format!("  {note}"));
    }
    if let Some(l) = &info.layout {
        progress.println(&format!("  layout: {} ({})", l.describe(), l.source));
    }
    for line in report::over_the_engines_limit(&info, &cfg.points) {
        progress.println(&format!("  warning: {line}"));
    }
    Scheduler {
        cfg: &cfg,
        engine,
        info,
        workload: &workload,
        tokenizer: tokenizer.as_ref(),
        progress,
        capture,
    }
    .run(cancel)
}

/// Loads the engine with a spinner and times it; Ctrl-C meanwhile ends the harness at
/// once. A load that fails on bad input leaves nothing behind; any other failure keeps
/// engine.log and shows its last lines.
fn load_engine(
    cfg: &RunConfig,
    out: &OutDir,
    progress: &Progress,
    capture: &mut Capture,
) -> Result<(Box<dyn Engine>, f64)> {
    progress.println(&format!(
        "loading engine {} (its log: {}) ...",
        cfg.engine.name,
        capture.path().display()
    ));
    progress.spinner(&format!("loading {}", cfg.engine.name));
    let t = Instant::now();
    let loaded = {
        let _loading = Loading::start(out.cleanup_target());
        (cfg.engine.load)(&cfg.engine_config)
    };
    progress.finish();
    match loaded {
        Ok(engine) => Ok((engine, t.elapsed().as_secs_f64())),
        Err(e) => {
            capture.stop();
            process::kill_children(process::CHILD_GRACE);
            Err(match e {
                EngineError::Usage(_) => {
                    out.discard();
                    anyhow::Error::new(e)
                }
                other => {
                    print_log_tail(capture.path());
                    say_engine_sigquit();
                    eprintln!(
                        "results: {} (engine.log; nothing was measured)",
                        cfg.out.display()
                    );
                    anyhow::Error::new(other)
                        .context(format!("engine {} failed to load", cfg.engine.name))
                }
            })
        }
    }
}

/// One line when an engine's process sent the harness SIGQUIT (contained).
fn say_engine_sigquit() {
    if let Some(pid) = process::engine_sigquit() {
        eprintln!(
            "note: process {pid} sent the harness SIGQUIT (how SGLang's processes report that one of them failed); the harness contained it and ended the run itself"
        );
    }
}

fn print_log_tail(log: &Path) {
    let lines = terminal::tail_lines(log, LOG_TAIL);
    if !lines.is_empty() {
        eprintln!("last lines of {}:", log.display());
        for l in lines {
            eprintln!("  | {l}");
        }
    }
}

/// Runs every point of a loaded engine and writes the results as they arrive.
struct Scheduler<'a> {
    cfg: &'a RunConfig,
    engine: Box<dyn Engine>,
    info: EngineInfo,
    workload: &'a Workload,
    /// Decodes a scored workload's outputs.
    tokenizer: Option<&'a Tokenizer>,
    progress: Progress,
    capture: Capture,
}

impl Scheduler<'_> {
    fn run(mut self, cancel: &std::sync::atomic::AtomicBool) -> Result<i32> {
        let cfg = self.cfg;
        let mut meta = run_meta(cfg, &self.info, &self.workload.description);
        report::write_meta(&cfg.out, &meta)?;
        let toml = toml::to_string(&cfg.effective).unwrap_or_default();
        report::write_atomic(&cfg.out.join("config.toml"), toml.as_bytes())?;
        report::write_atomic(&cfg.out.join("workload.jsonl"), &self.workload.to_jsonl())?;
        let mut writer = TraceWriter::create(&cfg.out)?;

        let mut all: Vec<RequestTrace> = Vec::new();
        let mut all_steps: Vec<StepRecord> = Vec::new();
        let mut points: Vec<PointResult> = Vec::new();
        let mut outcome = Outcome::Completed;
        let (mut gpu, mut sampler, said) = Gpu::start(
            self.info.cuda.map(|c| (c.device, c.stream)),
            &cfg.out.join("gpu.csv"),
            cfg.instruments.sample_period,
        );
        self.progress.println(&said);
        {
            let mut driver = Driver::new(self.engine.as_mut(), cancel).observe(&mut gpu);
            while let Some(point) = next_point(cfg, &points) {
                let i = points.len();
                // A search's probes join run.json as they are chosen.
                if meta.points.len() <= i {
                    let d = cfg.driver_for(point);
                    meta.points.push(point);
                    meta.driver.warmup.push(d.warmup);
                    meta.driver.num_requests.push(d.stop.num_requests);
                }
                let run = driver.run_point(
                    i as u32,
                    point,
                    self.workload,
                    &cfg.driver_for(point),
                    &mut writer,
                    &self.progress,
                )?;
                let mut result = point_result(point, &run, cfg, &self.info);
                if let (Some(keys), Some(tok)) = (&self.workload.answers, self.tokenizer) {
                    let scores =
                        metrics::accuracy::score(&run.records, keys, |ids| tok.decode_text(ids))?;
                    report::append_scores(&cfg.out, &scores)?;
                    result.summary.accuracy = metrics::accuracy::summarize(&scores);
                }
                let verdict = probe_verdict(cfg, &result);
                if let Some(sampler) = &sampler {
                    let (from, to, phases) = windows(&run.records);
                    let tokens = result.summary.total_output_tokens;
                    result
                        .measures
                        .add(&sampler.point(from, to, tokens, &phases));
                }
                self.progress.println(&point_line(&result, &run, &verdict));
                all.extend(run.records);
                all_steps.extend(run.steps);
                meta.measures.push(result.measures.clone());
                points.push(result);
                report::write_meta(&cfg.out, &meta)?;
                let partial = RunResult::new(meta.clone(), points.clone());
                report::write_summaries(&cfg.out, &partial, &all)?;
                outcome = run.outcome;
                if outcome != Outcome::Completed {
                    break;
                }
            }
        }
        if let Some(s) = sampler.as_mut() {
            s.stop();
        }
        self.progress.finish();
        let shutdown = self.engine.shutdown();
        let leftover = process::kill_children(process::CHILD_GRACE);
        self.capture.stop();
        if leftover > 0 {
            eprintln!("warning: {leftover} child process(es) of the engine were still running after shutdown; terminated");
        }

        meta.status = match &outcome {
            Outcome::Completed => RunStatus::Completed,
            Outcome::Interrupted => RunStatus::Interrupted,
            Outcome::EngineFailed(_) => RunStatus::EngineFailed,
        };
        meta.end_time = Some(chrono::Local::now().to_rfc3339());
        report::write_meta(&cfg.out, &meta)?;
        let result = RunResult::new(meta, points);
        report::write_all(&cfg.out, &result, &all)?;
        terminal::println(&report::table(&result, cfg.view, terminal::out_width()));
        visuals(&cfg.out, &result, &all, &all_steps)?;
        terminal::println(&format!("results: {}", cfg.out.display()));

        if let Err(e) = shutdown {
            eprintln!("warning: engine shutdown failed: {e}");
        }
        Ok(match outcome {
            Outcome::Interrupted => EXIT_INTERRUPTED,
            Outcome::EngineFailed(msg) => {
                print_log_tail(self.capture.path());
                say_engine_sigquit();
                eprintln!(
                    "Error: engine {} failed mid-run: {}",
                    self.info.name,
                    msg.lines().next().unwrap_or("")
                );
                EXIT_FAILED
            }
            Outcome::Completed => {
                let failed = all.iter().filter(|r| !r.is_success()).count();
                if failed > 0 && cfg.search.is_some() {
                    // Under overload, failures are part of what a search measures.
                    eprintln!(
                        "note: {failed} of {} requests failed; each counts as not good in its probe (see requests.csv)",
                        all.len()
                    );
                    0
                } else if failed > 0 {
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
}

/// A search probe's verdict, for its line (empty outside a search).
fn probe_verdict(cfg: &RunConfig, p: &PointResult) -> String {
    let Some(search) = &cfg.search else {
        return String::new();
    };
    let (requests, good) = metrics::capacity::counts(&p.summary);
    let verdict = search.spec.verdict(requests, good);
    format!(
        "; {good} of {requests} good, need {} of requests: {}",
        search.spec.min_good_fraction,
        if verdict == metrics::capacity::Verdict::Pass {
            "pass"
        } else {
            "fail"
        }
    )
}

/// A point's summary and its measurements.
fn point_result(
    point: crate::driver::LoadPoint,
    run: &PointRun,
    cfg: &RunConfig,
    info: &EngineInfo,
) -> PointResult {
    let mut measures = Measures::default();
    if let Some(end) = &run.end {
        measures.add(end);
    }
    if let Some(cost) = &run.cost {
        measures.add(cost);
    }
    if let Some(host) = &run.host {
        measures.add(host);
    }
    measures.0.extend(run.measures.0.iter().cloned());
    if !run.steps.is_empty() {
        let source = info
            .scheduler
            .as_ref()
            .and_then(|s| s.step_stats_source.clone());
        measures.add(&metrics::steps::summarize(&run.steps, source));
    }
    let mut summary = metrics::summarize(&run.records, &cfg.slo);
    summary.per_device = metrics::devices::per_device(&summary, info.devices());
    PointResult {
        point,
        summary,
        measures,
    }
}

/// A point's telemetry windows from its requests: first submit to last finish, and
/// the prefill-heavy part of each batch (its first submit to its last first token).
fn windows(records: &[RequestTrace]) -> (u64, u64, Vec<(u64, u64)>) {
    let from = records.iter().map(|r| r.submit_ns.0).min().unwrap_or(0);
    let to = records
        .iter()
        .filter_map(|r| r.finish_ns.map(|f| f.0))
        .max()
        .unwrap_or(from);
    let mut rounds: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
    for r in records {
        let (Some(round), Some(first)) = (r.round, r.first_token_ns()) else {
            continue;
        };
        let w = rounds.entry(round).or_insert((r.submit_ns.0, first.0));
        w.0 = w.0.min(r.submit_ns.0);
        w.1 = w.1.max(first.0);
    }
    (from, to, rounds.into_values().collect())
}

/// One line per finished point, above the progress bar; `then` ends its first line
/// (a search probe's verdict).
fn point_line(p: &PointResult, run: &PointRun, then: &str) -> String {
    let r = &p.summary.rounds;
    let mut line = format!(
        "{}: {} rounds, {} requests, output {} tok/s",
        p.point.label(),
        r.count,
        p.summary.completed + p.summary.failed,
        r.output_throughput.display(2),
    );
    if r.is_noisy() {
        line.push_str(&format!(
            " (noisy: CV {:.0} %)",
            r.output_throughput.cv.unwrap_or(0.0) * 100.0
        ));
    }
    if let Some(a) = &p.summary.accuracy {
        line.push_str(&format!(", accuracy {}", a.describe()));
    }
    if let Some(end) = &run.end {
        let why = end.ended_by.describe();
        line.push_str(&format!("; stopped: {why}"));
    }
    line.push_str(then);
    for w in p.measures.warnings() {
        line.push_str(&format!("\n  warning: {w}"));
    }
    line
}

/// Run metadata: what ran, where, when, and how.
fn run_meta(cfg: &RunConfig, info: &EngineInfo, workload: &str) -> RunMeta {
    // A search's points are its probes, added as each is chosen.
    let planned: &[LoadPoint] = if cfg.search.is_some() {
        &[]
    } else {
        &cfg.points
    };
    let mut driver = DriverMeta {
        warmup: planned.iter().map(|&p| cfg.driver_for(p).warmup).collect(),
        num_requests: planned
            .iter()
            .map(|&p| cfg.driver_for(p).stop.num_requests)
            .collect(),
        duration_s: cfg.driver.stop.duration.map(|d| d.as_secs_f64()),
        min_rounds: None,
        min_duration_s: None,
        max_duration_s: None,
        request_timeout_s: cfg.driver.request_timeout.as_secs_f64(),
        sampling: cfg.driver.sampling,
        seed: cfg.driver.seed,
        clock: meta::CLOCK.into(),
        realtime_minus_monotonic_ns: Some(crate::core::clock::realtime_minus_monotonic_ns()),
    };
    driver.set_floors(&cfg.driver.stop);
    RunMeta {
        format: meta::FORMAT,
        harness: HarnessMeta::this(),
        command_line: std::env::args().collect(),
        start_time: chrono::Local::now().to_rfc3339(),
        end_time: None,
        status: RunStatus::Running,
        host: HostMeta::this(),
        engine: info.clone(),
        model: cfg
            .engine_config
            .model
            .as_ref()
            .map(|m| m.display().to_string()),
        tokenizer: cfg.tokenizer.as_ref().map(|m| m.display().to_string()),
        workload: WorkloadMeta {
            spec: cfg.workload.clone(),
            description: workload.to_string(),
        },
        points: planned.to_vec(),
        slo: cfg.slo,
        driver,
        config: cfg.effective.clone(),
        measures: Vec::new(),
        search: cfg.search.map(|s| s.spec),
    }
}
