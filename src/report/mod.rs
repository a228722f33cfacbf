//! Reports: render results; no measuring.
//!
//! One file per format, hyperfine-style: each [`Exporter`] renders a whole
//! [`RunResult`] to bytes, and [`write_all`] writes them atomically. The terminal
//! table is [`table()`]. Flat keys follow vLLM's `vllm bench` JSON names
//! ([`flat_keys`]), so scripts written for vLLM's output read ours. A result directory
//! reads back as a typed [`RunResult`] with [`RunResult::load`] (`harness report`, and
//! later `plot` and `compare`).

pub mod compare;
pub mod csv;
pub mod html;
pub mod json;
pub mod meta;
pub mod plot;
pub mod table;
pub mod timeline;

use crate::core::measure::Measures;
use crate::driver::LoadPoint;
use crate::engine::EngineInfo;
use crate::metrics::accuracy::{self, ScoreRecord};
use crate::metrics::capacity::{self, SearchResult};
use crate::metrics::catalog::{Metric, Unit, CATALOG};
use crate::metrics::{self, Slo, Summary};
use crate::trace::{self, RequestTrace, StepRecord, TraceError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use self::csv::{RequestsCsvExporter, SummaryCsvExporter, TurnsCsvExporter};
pub use self::json::JsonExporter;
pub use self::meta::{RunMeta, RunStatus, RUN_FILE};
pub use self::table::table;

/// The label every output of the calibration engine carries.
pub const INSTRUMENT_BANNER: &str = "CALIBRATION INSTRUMENT — measures the harness, not an engine";

/// One row of a result set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    pub point: LoadPoint,
    pub summary: Summary,
    /// Measurements beside the trace (see [`crate::core::measure`]).
    #[serde(default)]
    pub measures: Measures,
}

/// Everything a run produced, ready to render. `points[i]` holds the requests whose
/// `RequestTrace::point` is `i`.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub meta: RunMeta,
    pub points: Vec<PointResult>,
    /// The summary metrics every output renders: [`CATALOG`], or a test's own.
    pub catalog: &'static [Metric],
}

/// Two results are equal when they hold the same run (whatever they are rendered with).
impl PartialEq for RunResult {
    fn eq(&self, other: &RunResult) -> bool {
        self.meta == other.meta && self.points == other.points
    }
}

impl RunResult {
    /// A result rendered with the standard [`CATALOG`].
    pub fn new(meta: RunMeta, points: Vec<PointResult>) -> RunResult {
        RunResult {
            meta,
            points,
            catalog: CATALOG,
        }
    }

    /// The engine is a test instrument (the calibration engine): every output says so.
    pub fn instrument(&self) -> bool {
        self.meta.engine.instrument
    }

    pub fn slo(&self) -> &Slo {
        &self.meta.slo
    }

    /// `harness search`'s answer, from the points' summaries (each point one probe, in
    /// run order) under the run's SLO; None for other runs. A run that ended by an
    /// engine failure or Ctrl-C ended during its last probe, which decides nothing.
    pub fn search(&self) -> Option<SearchResult> {
        let spec = self.meta.search?;
        let probes = self
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (requests, good) = capacity::counts(&p.summary);
                capacity::Probe {
                    point: i,
                    value: p.point.value(),
                    requests,
                    good_requests: good,
                    good_fraction: (requests > 0).then(|| good as f64 / requests as f64),
                    verdict: spec.verdict(requests, good),
                }
            })
            .collect();
        let cut_short = matches!(
            self.meta.status,
            RunStatus::Interrupted | RunStatus::EngineFailed
        );
        Some(spec.result(probes, cut_short))
    }

    /// The one-line statement of [`RunResult::search`]: method and answer.
    pub fn search_line(&self) -> Option<String> {
        let spec = self.meta.search?;
        let r = self.search()?;
        let slo = table::slo_terms(self.slo()).unwrap_or_else(|| "no SLO".into());
        Some(spec.describe(&slo, &r))
    }

    /// Summaries of `meta.points` from the records (grouped by point index), with each
    /// point's stored measurements. Points run in order, so those with records (or
    /// measurements) are a prefix: an interrupted sweep stops early.
    pub fn from_records(meta: RunMeta, records: &[RequestTrace]) -> RunResult {
        let ran = records
            .iter()
            .map(|r| r.point as usize + 1)
            .max()
            .unwrap_or(0)
            .max(meta.measures.len())
            .min(meta.points.len());
        let devices = meta.engine.devices();
        let points = meta.points[..ran]
            .iter()
            .enumerate()
            .map(|(i, &point)| {
                let recs: Vec<RequestTrace> = records
                    .iter()
                    .filter(|r| r.point as usize == i)
                    .cloned()
                    .collect();
                let mut summary = metrics::summarize(&recs, &meta.slo);
                summary.per_device = metrics::devices::per_device(&summary, devices);
                PointResult {
                    point,
                    summary,
                    measures: meta.measures.get(i).cloned().unwrap_or_default(),
                }
            })
            .collect();
        RunResult::new(meta, points)
    }

    /// Sets each point's accuracy from the scores of its requests (`scores.jsonl`).
    pub fn score(&mut self, scores: &[ScoreRecord]) {
        for (i, p) in self.points.iter_mut().enumerate() {
            let mine: Vec<ScoreRecord> = scores
                .iter()
                .filter(|s| s.point as usize == i)
                .cloned()
                .collect();
            p.summary.accuracy = accuracy::summarize(&mine);
        }
    }

    /// Reads a result directory (`run.json`, `requests.jsonl`, and `scores.jsonl` where
    /// the workload was scored) and recomputes every summary; `slo` replaces the run's
    /// SLOs. Errors name the file and what is wrong.
    pub fn load(dir: &Path, slo: Option<Slo>) -> Result<(RunResult, Vec<RequestTrace>), LoadError> {
        let path = dir.join(RUN_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| LoadError::NotAResult {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut meta: RunMeta = serde_json::from_str(&text).map_err(|e| {
            let what = e.to_string();
            // serde names the field: "unknown field `x`, expected one of ..." or
            // "missing field `x`"; keep the first clause.
            let what = what.split(", expected").next().unwrap_or(&what).to_string();
            LoadError::Format {
                path: path.clone(),
                what,
            }
        })?;
        if meta.format > meta::FORMAT {
            return Err(LoadError::Format {
                path,
                what: format!(
                    "format {} is newer than this harness reads ({})",
                    meta.format,
                    meta::FORMAT
                ),
            });
        }
        if let Some(slo) = slo {
            meta.slo = slo;
        }
        let records = trace::read_requests(&dir.join(trace::REQUESTS_FILE))?;
        let mut run = RunResult::from_records(meta, &records);
        let scores = dir.join(SCORES_FILE);
        if scores.exists() {
            run.score(&trace::read_lines::<ScoreRecord>(&scores)?);
        }
        Ok((run, records))
    }

    /// A result directory's step records: none where it has no `steps.jsonl` (results
    /// from before the timeline, or `--no-timeline`); a malformed one is an error
    /// naming its line.
    pub fn load_steps(dir: &Path) -> Result<Vec<StepRecord>, LoadError> {
        let path = dir.join(trace::STEPS_FILE);
        if !path.exists() {
            return Ok(Vec::new());
        }
        Ok(trace::read_steps(&path)?)
    }
}

/// Why a directory does not read back as a result.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {reason}; pass a result directory written by `harness run` or `harness sweep`", .path.display())]
    NotAResult { path: PathBuf, reason: String },
    #[error("{}: {what}; it was written by another version of llm-harness (this one reads run.json format {}), or edited", .path.display(), meta::FORMAT)]
    Format { path: PathBuf, what: String },
    #[error(transparent)]
    Trace(#[from] TraceError),
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot render {file}: {message}")]
    Render { file: &'static str, message: String },
}

/// One output file format.
pub trait Exporter {
    /// The file this exporter writes, relative to the output directory.
    fn file_name(&self) -> &'static str;
    /// Whether the run has this file (`turns.csv`: conversation runs only).
    fn applies(&self, _run: &RunResult) -> bool {
        true
    }
    fn render(&self, run: &RunResult, records: &[RequestTrace]) -> Result<Vec<u8>, ReportError>;
}

/// Every file format [`write_all`] writes.
pub fn exporters() -> Vec<Box<dyn Exporter>> {
    vec![
        Box::new(JsonExporter),
        Box::new(SummaryCsvExporter),
        Box::new(RequestsCsvExporter),
        Box::new(TurnsCsvExporter),
    ]
}

/// Writes `summary.json`, `summary.csv`, `requests.csv` and, for conversation runs,
/// `turns.csv` into `dir`, each atomically.
pub fn write_all(dir: &Path, run: &RunResult, records: &[RequestTrace]) -> Result<(), ReportError> {
    for e in exporters().iter().filter(|e| e.applies(run)) {
        let bytes = e.render(run, records)?;
        write_atomic(&dir.join(e.file_name()), &bytes)?;
    }
    Ok(())
}

/// What [`write_all`] writes but `requests.csv`: the per-point files, rewritten after
/// every point of a run. `requests.csv` has a row per request of the run, so
/// re-rendering it after every point would cost the run's request count per point;
/// it is written once at the end (`requests.jsonl` holds every request as it
/// finishes, and `harness report` renders the CSV from it at any time).
pub fn write_summaries(
    dir: &Path,
    run: &RunResult,
    records: &[RequestTrace],
) -> Result<(), ReportError> {
    let requests = RequestsCsvExporter.file_name();
    for e in exporters()
        .iter()
        .filter(|e| e.applies(run) && e.file_name() != requests)
    {
        let bytes = e.render(run, records)?;
        write_atomic(&dir.join(e.file_name()), &bytes)?;
    }
    Ok(())
}

/// The HTML report's file name.
pub const REPORT_HTML: &str = "report.html";

/// Plots (`DIR/plots/*.png` and `*.svg`) and `report.html` for a run. A plot failure
/// (no font here) leaves `report.html` without plots and comes back for a warning.
pub fn write_visuals(
    dir: &Path,
    run: &RunResult,
    steps: &[StepRecord],
) -> Result<(PathBuf, Option<plot::PlotError>), ReportError> {
    let plots_dir = dir.join("plots");
    let (plots, failed) = if run.points.is_empty() {
        (Vec::new(), None)
    } else {
        match plot::write_plots(&[plot::Curve::of(run)], &plots_dir).and_then(|mut p| {
            p.extend(timeline::step_plots(run, steps, &plots_dir)?);
            Ok(p)
        }) {
            Ok(p) => (p, None),
            Err(e) => (Vec::new(), Some(e)),
        }
    };
    let path = dir.join(REPORT_HTML);
    write_atomic(&path, html::report(run, &plots).as_bytes())?;
    Ok((path, failed))
}

/// Writes `trace.json` (the run as a Perfetto / Chrome trace) atomically; returns a
/// note when it had to leave the token instants out.
pub fn write_trace(
    dir: &Path,
    run: &RunResult,
    records: &[RequestTrace],
    steps: &[StepRecord],
) -> Result<Option<String>, ReportError> {
    let (bytes, note) = timeline::render(run, records, steps);
    write_atomic(&dir.join(timeline::TRACE_FILE), &bytes)?;
    Ok(note)
}

/// The verdict of each scored request, a line each ([`ScoreRecord`]).
pub const SCORES_FILE: &str = "scores.jsonl";

/// Appends a point's verdicts to `scores.jsonl`, as the point finishes.
pub fn append_scores(dir: &Path, scores: &[ScoreRecord]) -> Result<(), ReportError> {
    let path = dir.join(SCORES_FILE);
    let err = |source| ReportError::Write {
        path: path.clone(),
        source,
    };
    let mut bytes = Vec::new();
    for s in scores {
        serde_json::to_writer(&mut bytes, s).map_err(|e| ReportError::Render {
            file: SCORES_FILE,
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(err)?;
    f.write_all(&bytes).map_err(err)?;
    f.sync_data().map_err(err)
}

/// Writes `run.json` atomically.
pub fn write_meta(dir: &Path, meta: &RunMeta) -> Result<(), ReportError> {
    let mut bytes = serde_json::to_vec_pretty(meta).map_err(|e| ReportError::Render {
        file: RUN_FILE,
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(&dir.join(RUN_FILE), &bytes)
}

/// Writes `bytes` to `path` so a reader never sees half a file: rendered in full,
/// written to a temporary file in the same directory, synced, renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let res = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// The flat keys of one point, in output order: every metric of `catalog` that `shown`
/// keeps ([`Metric::values`]: vLLM's names where vLLM has the metric), then every
/// figure of the point's measurements. Counts are JSON integers; missing values null.
/// Lists (`failures`, `failed_by_reason`) are not flat and are added by the JSON
/// exporter.
pub fn flat_keys(
    p: &PointResult,
    catalog: &[Metric],
    shown: &dyn Fn(&Metric) -> bool,
) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for m in catalog.iter().filter(|m| shown(m)) {
        for (key, v) in m.values(&p.summary) {
            let v = match v {
                Some(v) if m.unit == Unit::Count && v.fract() == 0.0 && v >= 0.0 => {
                    Value::from(v as u64)
                }
                other => Value::from(other),
            };
            out.push((key, v));
        }
    }
    out.extend(
        p.measures
            .figures()
            .map(|f| (f.key.clone(), f.value.into())),
    );
    out
}

/// Whether a point shows metric `m`: always, or, for a metric only some engines have,
/// when the point has it.
pub fn shown_in(p: &PointResult) -> impl Fn(&Metric) -> bool + '_ {
    move |m| !m.only_when_present || m.present(&p.summary)
}

/// Whether a run shows metric `m` (every point the same columns): always, or when any
/// point has it.
pub fn shown_in_any(run: &RunResult) -> impl Fn(&Metric) -> bool + '_ {
    move |m| !m.only_when_present || run.points.iter().any(|p| m.present(&p.summary))
}

/// The points that ask for more requests at once than the engine runs (its
/// [`SchedulerFacts::max_running`](crate::engine::SchedulerFacts)): the rest wait in
/// the engine's own queue, and that wait is part of their TTFT.
pub fn over_the_engines_limit(engine: &EngineInfo, points: &[LoadPoint]) -> Vec<String> {
    let Some(max) = engine.scheduler.as_ref().and_then(|s| s.max_running) else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|p| {
            let at_once = match *p {
                LoadPoint::Batch { batch } => batch,
                LoadPoint::Concurrency { concurrency } => concurrency,
                LoadPoint::Rate { .. } | LoadPoint::Ramp { .. } | LoadPoint::Trace { .. } => {
                    return None
                }
            };
            (at_once > max).then(|| {
                format!(
                    "{}: {at_once} requests at once, but {} runs at most {max}; the other {} wait in its queue (their TTFT includes the wait)",
                    p.label(),
                    engine.name,
                    at_once - max
                )
            })
        })
        .collect()
}

/// Every measurement's `(name, definition)` across the points, first seen first.
pub fn measure_definitions(run: &RunResult) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in run.points.iter().flat_map(|p| p.measures.0.iter()) {
        if !out.iter().any(|(n, _)| *n == r.name) {
            out.push((r.name.clone(), r.definition.clone()));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::clock::MonoNs;
    use crate::core::request::{EngineStamps, FinishReason};
    use crate::metrics::parse_slo;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_000_000_000;

    fn req(
        id: u64,
        point: u32,
        submit_ms: u64,
        offsets_ms: &[u64],
        finish_ms: u64,
        reason: FinishReason,
    ) -> RequestTrace {
        let submit = MonoNs(T0 + submit_ms * MS);
        let mut r = RequestTrace::new(id, point, 10, 16, submit);
        for &o in offsets_ms {
            r.record_tokens(1, MonoNs(submit.0 + o * MS));
        }
        r.finish_ns = Some(MonoNs(T0 + finish_ms * MS));
        r.finish_reason = Some(reason);
        r
    }

    /// Point 0 (batch=2): two completed requests, one with an engine stamp, plus a timeout.
    /// Point 1 (concurrency=4): one completed request.
    pub(crate) fn records() -> Vec<RequestTrace> {
        let mut a = req(0, 0, 0, &[100, 120, 150], 150, FinishReason::Length);
        a.engine = Some(EngineStamps {
            first_token_ns: Some(MonoNs(T0 + 99 * MS + MS / 2)),
            ..Default::default()
        });
        let b = req(1, 0, 0, &[200, 250], 250, FinishReason::Stop);
        let mut t = req(2, 0, 0, &[], 500, FinishReason::Timeout);
        t.error = Some("no token within 0.5 s\nsecond line".into());
        let c = req(3, 1, 1000, &[50, 60, 70, 80], 1100, FinishReason::Length);
        vec![a, b, t, c]
    }

    /// Run metadata for tests: the calibration engine (or a real-looking one).
    pub(crate) fn meta(instrument: bool) -> RunMeta {
        use crate::driver::Sampling;
        use crate::engine::{EngineInfo, EngineKind};
        RunMeta {
            format: meta::FORMAT,
            harness: meta::HarnessMeta::this(),
            command_line: vec!["harness".into()],
            start_time: "2026-11-30T12:00:00+00:00".into(),
            end_time: None,
            status: RunStatus::Completed,
            host: meta::HostMeta {
                hostname: "test".into(),
                cpu: "cpu".into(),
                cpus: 2,
                gpu: "none".into(),
                governor: None,
                loadavg_1m: None,
            },
            engine: EngineInfo {
                name: if instrument { "calibration" } else { "vllm" }.into(),
                version: "1".into(),
                model: "none".into(),
                dtype: "-".into(),
                device: "host".into(),
                kind: EngineKind::Step,
                instrument,
                ..Default::default()
            },
            model: None,
            tokenizer: None,
            workload: meta::WorkloadMeta {
                spec: crate::workload::WorkloadSpec::Synthetic {
                    input_len: crate::workload::LengthDist::Fixed { len: 10 },
                    output_len: crate::workload::LengthDist::Fixed { len: 16 },
                },
                description: "test".into(),
            },
            points: vec![
                LoadPoint::Batch { batch: 2 },
                LoadPoint::Concurrency { concurrency: 4 },
            ],
            slo: parse_slo("ttft=150").unwrap(),
            driver: meta::DriverMeta {
                warmup: vec![0, 0],
                num_requests: vec![Some(3), Some(1)],
                duration_s: None,
                min_rounds: None,
                min_duration_s: None,
                max_duration_s: None,
                request_timeout_s: 600.0,
                sampling: Sampling::EXACT_GREEDY,
                seed: 0,
                clock: meta::CLOCK.into(),
                realtime_minus_monotonic_ns: None,
            },
            config: Default::default(),
            measures: vec![cost_measures(), Measures::default()],
            search: None,
        }
    }

    /// Point 0's measurements: the harness's cost.
    fn cost_measures() -> Measures {
        let mut m = Measures::default();
        m.add(&crate::driver::HarnessCost {
            steps: 10,
            token_events: 5,
            tokens: 5,
            wall_s: 0.5,
            engine_s: 0.4,
            idle_s: 0.0,
            harness_s: 0.0001,
            writer_cpu_s: Some(0.00002),
        });
        m
    }

    pub(crate) fn run(instrument: bool) -> (RunResult, Vec<RequestTrace>) {
        let recs = records();
        (RunResult::from_records(meta(instrument), &recs), recs)
    }

    #[test]
    fn flat_keys_use_vllm_names() {
        let (run, _) = run(false);
        let s = &run.points[0].summary;
        let without_engine = |m: &Metric| !m.only_when_present;
        let keys = flat_keys(&run.points[0], CATALOG, &without_engine);
        let get = |k: &str| keys.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("completed"), Some(2.into()));
        assert_eq!(get("failed"), Some(1.into()));
        assert_eq!(get("duration"), Some(0.5.into()));
        assert_eq!(get("request_throughput"), Some(4.0.into()));
        assert_eq!(get("output_throughput"), Some(10.0.into()));
        assert_eq!(get("mean_ttft_ms"), Some(150.0.into()));
        assert_eq!(get("median_ttft_ms"), s.ttft.median.map(Value::from));
        // One name per statistic: the median is `median_*`, as vLLM names it.
        assert_eq!(get("p50_ttft_ms"), None);
        assert_eq!(get("p99_itl_ms"), s.itl.p99.map(Value::from));
        assert_eq!(
            get("mean_per_user_output_throughput_tok_s"),
            Some(30.0.into())
        );
        assert_eq!(get("good_requests"), Some(1.into()));
        assert_eq!(get("request_goodput"), Some(2.0.into()));
        assert_eq!(get("mean_engine_ttft_delta_ms"), None);
        // Rounds: not a batch-mode trace here, so each request is a round; the
        // throughput windows average to the output throughput.
        assert_eq!(get("rounds"), Some(2.into()));
        assert_eq!(get("output_throughput_mean"), Some(10.0.into()));
        assert!(get("output_throughput_ci95_low").is_some_and(|v| v.is_f64()));
        assert!(get("mean_tpot_ms_cv").is_some());
        // The point's measurements, by their own keys.
        assert_eq!(get("harness_us_per_step"), Some(10.0.into()));
        // Point 0 has engine stamps: its keys include the delta's, point 1's do not.
        let with = flat_keys(&run.points[0], CATALOG, &shown_in(&run.points[0]));
        assert_eq!(with.len(), keys.len() + 8);
        let none = flat_keys(&run.points[1], CATALOG, &shown_in(&run.points[1]));
        assert!(none.iter().all(|(n, _)| !n.contains("engine_ttft_delta")));
        // A run's columns: the delta's keys on every row (null where absent).
        let any = flat_keys(&run.points[1], CATALOG, &shown_in_any(&run));
        let delta = any.iter().find(|(n, _)| n == "mean_engine_ttft_delta_ms");
        assert_eq!(delta.map(|(_, v)| v), Some(&Value::Null));
    }

    /// A summary metric is one catalogue entry: added to the catalogue alone, it is in
    /// the JSON, the CSV, requests.csv, the table, the HTML report and `compare`.
    #[test]
    fn a_metric_added_in_one_place_appears_in_every_output() {
        use crate::metrics::catalog::{Better, Column, Shown, View};
        let spread = Metric::scalar(
            "ttft_spread",
            "TTFT spread",
            Unit::Ms,
            "max - min TTFT over the point's successful requests (ms)",
            |s| s.ttft.max.zip(s.ttft.min).map(|(a, b)| a - b),
        )
        .per_request(|m| m.ttft_ms.map(|t| t * 2.0))
        .rounds(|s| &s.rounds.mean_ttft_ms, "as ttft_rounds")
        .compare(Better::Lower)
        .columns(&[Column {
            shown: Shown::Value,
            view: View::Brief,
        }]);
        let mut all = CATALOG.to_vec();
        all.push(spread);
        let all: &'static [Metric] = Box::leak(all.into_boxed_slice());
        let (mut run, recs) = run(false);
        run.catalog = all;
        let want =
            run.points[0].summary.ttft.max.unwrap() - run.points[0].summary.ttft.min.unwrap();
        assert_eq!(want, 100.0);

        let json: Value =
            serde_json::from_slice(&json::JsonExporter.render(&run, &recs).unwrap()).unwrap();
        assert_eq!(json["points"][0]["ttft_spread"], want);
        assert!(json["points"][0]["ttft_spread_ci95_low"].is_f64());
        assert_eq!(json["definitions"]["ttft_spread"], spread.definition);

        let csv = String::from_utf8(SummaryCsvExporter.render(&run, &recs).unwrap()).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let i = header.iter().position(|h| *h == "ttft_spread").unwrap();
        assert_eq!(csv.lines().nth(1).unwrap().split(',').nth(i), Some("100"));

        let reqs = String::from_utf8(RequestsCsvExporter.render(&run, &recs).unwrap()).unwrap();
        assert!(
            reqs.lines().next().unwrap().contains(",ttft_spread_ms,"),
            "{reqs}"
        );

        let t = table::table(&run, View::Brief, None);
        assert!(t.contains("TTFT spread"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.contains("batch=2") && l.contains("100.00")),
            "{t}"
        );

        let page = html::report(&run, &[]);
        assert!(page.contains("<th>TTFT spread</th>") && page.contains("<dt>ttft_spread</dt>"));

        let c = compare::compare(
            &[run.clone(), run.clone()],
            &["a".into(), "b".into()],
            false,
        )
        .unwrap();
        assert!(
            c.header().iter().any(|h| h == "TTFT spread"),
            "{:?}",
            c.header()
        );
        assert!(
            c.footnote().contains("lower for TTFT, TPOT, TTFT spread"),
            "{}",
            c.footnote()
        );
    }

    #[test]
    fn points_beyond_the_engines_limit_are_named() {
        let mut engine = meta(false).engine;
        let points = [
            LoadPoint::Batch { batch: 4 },
            LoadPoint::Concurrency { concurrency: 9 },
            LoadPoint::Rate {
                rate: 100.0,
                burstiness: 1.0,
            },
        ];
        // An engine that states no limit: nothing to say.
        assert!(over_the_engines_limit(&engine, &points).is_empty());
        engine.scheduler = Some(crate::engine::SchedulerFacts {
            max_running: Some(4),
            ..Default::default()
        });
        let said = over_the_engines_limit(&engine, &points);
        assert_eq!(
            said,
            ["concurrency=9: 9 requests at once, but vllm runs at most 4; the other 5 wait in its queue (their TTFT includes the wait)"]
        );
    }

    #[test]
    fn write_all_writes_three_files_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (run, recs) = run(false);
        write_all(dir.path(), &run, &recs).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["requests.csv", "summary.csv", "summary.json"]);
        let json: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(json["points"].as_array().map(Vec::len), Some(2));

        let missing = dir.path().join("no/such/dir");
        let err = write_all(&missing, &run, &recs).unwrap_err().to_string();
        assert!(
            err.contains("cannot write") && err.contains("summary.json"),
            "{err}"
        );
    }

    #[test]
    fn a_written_result_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let (run, recs) = run(false);
        write_meta(dir.path(), &run.meta).unwrap();
        let mut w = crate::trace::TraceWriter::create(dir.path()).unwrap();
        w.append(recs.clone()).unwrap();
        w.sync().unwrap();
        let (back, back_recs) = RunResult::load(dir.path(), None).unwrap();
        assert_eq!(back, run);
        assert_eq!(back_recs, recs);
        // A new SLO recomputes goodput.
        let (strict, _) = RunResult::load(dir.path(), Some(parse_slo("ttft=1").unwrap())).unwrap();
        assert_eq!(strict.points[0].summary.good_requests, Some(0));
    }

    #[test]
    fn unknown_missing_or_newer_fields_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let err = |text: &str| {
            std::fs::write(dir.path().join(RUN_FILE), text).unwrap();
            std::fs::write(dir.path().join("requests.jsonl"), "").unwrap();
            RunResult::load(dir.path(), None).unwrap_err().to_string()
        };
        let mut v = serde_json::to_value(meta(false)).unwrap();
        v["from_the_future"] = true.into();
        let e = err(&v.to_string());
        assert!(
            e.contains("run.json: unknown field `from_the_future`"),
            "{e}"
        );
        assert!(!e.contains("expected one of"), "{e}");
        let mut v = serde_json::to_value(meta(false)).unwrap();
        v.as_object_mut().unwrap().remove("engine");
        let e = err(&v.to_string());
        assert!(e.contains("missing field `engine`"), "{e}");
        let mut v = serde_json::to_value(meta(false)).unwrap();
        v["format"] = 99.into();
        assert!(err(&v.to_string()).contains("format 99 is newer"));
        assert!(err("{").contains("run.json"));
        let e = RunResult::load(&dir.path().join("nope"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pass a result directory"), "{e}");
    }
}
