//! Reports: render summaries; no measuring.
//!
//! One file per format, hyperfine-style: each [`Exporter`] renders a whole
//! [`RunResult`] to bytes, and [`write_all`] writes them atomically. The terminal
//! table is [`table()`]. Flat keys follow vLLM's `vllm bench` JSON names
//! ([`flat_keys`]), so scripts written for vLLM's output read ours.

pub mod csv;
pub mod json;
pub mod table;

use crate::driver::LoadPoint;
use crate::metrics::{Distribution, Slo, Summary};
use crate::trace::RequestTrace;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use self::csv::{RequestsCsvExporter, SummaryCsvExporter};
pub use self::json::JsonExporter;
pub use self::table::table;

/// The label every output of the calibration engine carries.
pub const INSTRUMENT_BANNER: &str = "CALIBRATION INSTRUMENT — measures the harness, not an engine";

/// One row of a result set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    pub point: LoadPoint,
    pub summary: Summary,
}

/// Everything a run produced, ready to render. `points[i]` holds the requests whose
/// `RequestTrace::point` is `i`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Run metadata built by the orchestrator: versions, engine info, model, config,
    /// host, CPU/GPU, start time, command line.
    pub meta: Value,
    /// The engine is a test instrument (the calibration engine): every output says so.
    pub instrument: bool,
    pub points: Vec<PointResult>,
    pub slo: Slo,
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
    fn render(&self, run: &RunResult, records: &[RequestTrace]) -> Result<Vec<u8>, ReportError>;
}

/// Every file format [`write_all`] writes.
pub fn exporters() -> Vec<Box<dyn Exporter>> {
    vec![
        Box::new(JsonExporter),
        Box::new(SummaryCsvExporter),
        Box::new(RequestsCsvExporter),
    ]
}

/// Writes `summary.json`, `summary.csv` and `requests.csv` into `dir`, each atomically
/// (rendered in full, written to a temporary file, synced, renamed over the target),
/// so a reader never sees half a file.
pub fn write_all(dir: &Path, run: &RunResult, records: &[RequestTrace]) -> Result<(), ReportError> {
    for e in exporters() {
        let bytes = e.render(run, records)?;
        write_atomic(&dir.join(e.file_name()), &bytes)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
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

/// The flat keys of one summary, in output order, with vLLM's names where vLLM has
/// the metric: `duration`, `completed`, `failed`, token totals, throughputs, and for
/// each latency `mean_X_ms`, `median_X_ms`, `std_X_ms`, `p99_X_ms` (vLLM) plus
/// `min_X_ms`, `max_X_ms`, `p50_X_ms`, `p90_X_ms`, `p95_X_ms` (ours).
/// `engine_ttft_delta` keys appear only when `with_engine` is true; they are null when
/// the summary has none. Lists (`failures`, `failed_by_reason`) are not flat and are
/// added by the JSON exporter.
pub fn flat_keys(s: &Summary, with_engine: bool) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = vec![
        ("duration".into(), s.duration.into()),
        ("completed".into(), s.completed.into()),
        ("failed".into(), s.failed.into()),
        ("total_input_tokens".into(), s.total_input_tokens.into()),
        ("total_output_tokens".into(), s.total_output_tokens.into()),
        ("request_throughput".into(), s.request_throughput.into()),
        ("request_goodput".into(), s.request_goodput.into()),
        ("good_requests".into(), s.good_requests.into()),
        ("output_throughput".into(), s.output_throughput.into()),
        (
            "total_token_throughput".into(),
            s.total_token_throughput.into(),
        ),
    ];
    let empty = Distribution::default();
    let mut dists: Vec<(&str, &Distribution, &str)> = vec![
        ("ttft", &s.ttft, "ms"),
        ("tpot", &s.tpot, "ms"),
        ("itl", &s.itl, "ms"),
        ("e2el", &s.e2el, "ms"),
        ("itl_per_request", &s.itl_per_request, "ms"),
        (
            "per_user_output_throughput",
            &s.per_user_output_throughput,
            "tok_s",
        ),
    ];
    if with_engine {
        dists.push((
            "engine_ttft_delta",
            s.engine_ttft_delta.as_ref().unwrap_or(&empty),
            "ms",
        ));
    }
    for (name, d, unit) in dists {
        for (stat, v) in [
            ("mean", d.mean),
            ("median", d.p50),
            ("std", d.std),
            ("p99", d.p99),
            ("min", d.min),
            ("max", d.max),
            ("p50", d.p50),
            ("p90", d.p90),
            ("p95", d.p95),
        ] {
            out.push((format!("{stat}_{name}_{unit}"), v.into()));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::MonoNs;
    use crate::engine::{EngineStamps, FinishReason};
    use crate::metrics::{parse_slo, summarize};

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

    pub(crate) fn run(instrument: bool) -> (RunResult, Vec<RequestTrace>) {
        let recs = records();
        let slo = parse_slo("ttft=150").unwrap();
        let points = [
            LoadPoint::Batch { batch: 2 },
            LoadPoint::Concurrency { concurrency: 4 },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, point)| {
            let mine: Vec<RequestTrace> = recs
                .iter()
                .filter(|r| r.point == i as u32)
                .cloned()
                .collect();
            PointResult {
                point,
                summary: summarize(&mine, &slo),
            }
        })
        .collect();
        let run = RunResult {
            meta: serde_json::json!({"engine": {"name": "calibration"}, "model": "none"}),
            instrument,
            points,
            slo,
        };
        (run, recs)
    }

    #[test]
    fn flat_keys_use_vllm_names() {
        let (run, _) = run(false);
        let s = &run.points[0].summary;
        let keys = flat_keys(s, false);
        let get = |k: &str| keys.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("completed"), Some(2.into()));
        assert_eq!(get("failed"), Some(1.into()));
        assert_eq!(get("duration"), Some(0.5.into()));
        assert_eq!(get("request_throughput"), Some(4.0.into()));
        assert_eq!(get("output_throughput"), Some(10.0.into()));
        assert_eq!(get("mean_ttft_ms"), Some(150.0.into()));
        assert_eq!(get("median_ttft_ms"), get("p50_ttft_ms"));
        assert_eq!(get("p99_itl_ms"), s.itl.p99.map(Value::from));
        assert_eq!(
            get("mean_per_user_output_throughput_tok_s"),
            Some(30.0.into())
        );
        assert_eq!(get("good_requests"), Some(1.into()));
        assert_eq!(get("request_goodput"), Some(2.0.into()));
        assert_eq!(get("mean_engine_ttft_delta_ms"), None);
        let with = flat_keys(s, true);
        assert_eq!(with.len(), keys.len() + 9);
        let none = flat_keys(&run.points[1].summary, true);
        let delta = none.iter().find(|(n, _)| n == "mean_engine_ttft_delta_ms");
        assert_eq!(delta.map(|(_, v)| v), Some(&Value::Null));
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
}
