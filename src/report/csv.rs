//! `summary.csv` (one row per load point, the flat keys of `summary.json`) and
//! `requests.csv` (one row per request). Missing values are empty cells.

use super::{flat_keys, shown_in_any, Exporter, ReportError, RunResult};
use crate::core::request::FinishReason;
use crate::metrics::catalog::Metric;
use crate::metrics::{first_line, per_request, RequestMetrics};
use crate::trace::RequestTrace;
use serde_json::Value;

/// Writes `summary.csv`.
pub struct SummaryCsvExporter;

/// Writes `requests.csv`.
pub struct RequestsCsvExporter;

/// Writes `turns.csv` (`--dataset conversations`): one row per point and turn index.
pub struct TurnsCsvExporter;

/// The columns of `requests.csv`: the request, then each metric of the run's catalog
/// that has a per-request value ([`Metric::request_column`]), then the error.
pub fn request_columns(catalog: &[Metric]) -> Vec<String> {
    let mut cols: Vec<String> = ["id", "point", "input_len", "output_tokens", "finish_reason"]
        .map(String::from)
        .to_vec();
    cols.extend(catalog.iter().filter_map(Metric::request_column));
    cols.push("error".into());
    cols
}

fn render_err(file: &'static str) -> impl Fn(String) -> ReportError {
    move |message| ReportError::Render { file, message }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        // Floats as Rust prints them (`4`, `0.5`), the same as in `requests.csv`.
        Value::Number(n) if n.is_f64() => n.as_f64().map_or_else(String::new, |f| f.to_string()),
        other => other.to_string(),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

fn finish(w: ::csv::Writer<Vec<u8>>, file: &'static str) -> Result<Vec<u8>, ReportError> {
    w.into_inner().map_err(|e| render_err(file)(e.to_string()))
}

impl Exporter for SummaryCsvExporter {
    fn file_name(&self) -> &'static str {
        "summary.csv"
    }

    fn render(&self, run: &RunResult, _records: &[RequestTrace]) -> Result<Vec<u8>, ReportError> {
        let file = self.file_name();
        let err = render_err(file);
        // A metric only some engines have is a column when any point has it, so
        // every row has the same columns.
        let shown = shown_in_any(run);
        let mut w = ::csv::Writer::from_writer(Vec::new());
        // Every point's keys: the summary's, then each measurement figure in order of
        // first appearance, so points with different measurements share one header.
        let rows: Vec<Vec<(String, Value)>> = run
            .points
            .iter()
            .map(|p| flat_keys(p, run.catalog, &shown))
            .collect();
        let mut keys: Vec<&str> = Vec::new();
        for row in &rows {
            for (k, _) in row {
                if !keys.contains(&k.as_str()) {
                    keys.push(k);
                }
            }
        }
        let mut header = vec!["point", "mode", "value", "burstiness"];
        header.extend(keys.iter().copied());
        header.push("failed_by_reason");
        w.write_record(&header).map_err(|e| err(e.to_string()))?;
        for (i, (p, flat)) in run.points.iter().zip(&rows).enumerate() {
            let burstiness = p
                .point
                .burstiness()
                .map_or_else(String::new, |b| b.to_string());
            let mut row = vec![
                i.to_string(),
                p.point.mode().to_string(),
                p.point.value().to_string(),
                burstiness,
            ];
            row.extend(keys.iter().map(|k| {
                flat.iter()
                    .find(|(n, _)| n == k)
                    .map_or_else(String::new, |(_, v)| cell(v))
            }));
            let by_reason: Vec<String> = p
                .summary
                .failed_by_reason
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            row.push(by_reason.join(";"));
            w.write_record(&row).map_err(|e| err(e.to_string()))?;
        }
        finish(w, file)
    }
}

impl Exporter for RequestsCsvExporter {
    fn file_name(&self) -> &'static str {
        "requests.csv"
    }

    fn render(&self, run: &RunResult, records: &[RequestTrace]) -> Result<Vec<u8>, ReportError> {
        let file = self.file_name();
        let err = render_err(file);
        let mut w = ::csv::Writer::from_writer(Vec::new());
        // Conversation runs: which conversation and turn, after the point.
        let turns = records.iter().any(|r| r.turn.is_some());
        let mut header = request_columns(run.catalog);
        if turns {
            header.splice(2..2, ["conversation".to_string(), "turn".to_string()]);
        }
        w.write_record(header).map_err(|e| err(e.to_string()))?;
        let per: Vec<fn(&RequestMetrics) -> Option<f64>> =
            run.catalog.iter().filter_map(|m| m.per_request).collect();
        let some = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        for r in records {
            let m = per_request(r);
            let mut row = vec![r.id.to_string(), r.point.to_string()];
            if turns {
                row.push(some(r.conversation));
                row.push(some(r.turn.map(u64::from)));
            }
            row.extend([
                r.input_len.to_string(),
                m.output_tokens.to_string(),
                FinishReason::name(r.finish_reason).to_string(),
            ]);
            row.extend(per.iter().map(|f| opt(f(&m))));
            row.push(r.error.as_deref().map(first_line).unwrap_or("").to_string());
            w.write_record(&row).map_err(|e| err(e.to_string()))?;
        }
        finish(w, file)
    }
}

impl Exporter for TurnsCsvExporter {
    fn file_name(&self) -> &'static str {
        "turns.csv"
    }

    fn applies(&self, run: &RunResult) -> bool {
        run.points.iter().any(|p| p.summary.by_turn.is_some())
    }

    fn render(&self, run: &RunResult, _records: &[RequestTrace]) -> Result<Vec<u8>, ReportError> {
        let file = self.file_name();
        let err = render_err(file);
        let mut w = ::csv::Writer::from_writer(Vec::new());
        w.write_record([
            "point",
            "label",
            "turn",
            "completed",
            "failed",
            "mean_ttft_ms",
            "median_ttft_ms",
            "p99_ttft_ms",
            "mean_input_len",
            "cached_prompt_tokens",
            "prefix_cache_hit_rate",
        ])
        .map_err(|e| err(e.to_string()))?;
        for (i, p) in run.points.iter().enumerate() {
            for t in p.summary.by_turn.iter().flatten() {
                w.write_record([
                    i.to_string(),
                    p.point.label(),
                    t.turn.to_string(),
                    t.completed.to_string(),
                    t.failed.to_string(),
                    opt(t.ttft.mean),
                    opt(t.ttft.median),
                    opt(t.ttft.p99),
                    opt(t.input_len.mean),
                    t.cached_prompt_tokens
                        .map_or_else(String::new, |c| c.to_string()),
                    opt(t.prefix_cache_hit_rate),
                ])
                .map_err(|e| err(e.to_string()))?;
            }
        }
        finish(w, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

    fn text(e: &dyn Exporter, run: &RunResult, recs: &[RequestTrace]) -> String {
        String::from_utf8(e.render(run, recs).unwrap()).unwrap()
    }

    #[test]
    fn summary_csv_header_and_rows() {
        let (run, recs) = run(false);
        let t = text(&SummaryCsvExporter, &run, &recs);
        let mut rdr = ::csv::Reader::from_reader(t.as_bytes());
        let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(
            &header[..9],
            [
                "point",
                "mode",
                "value",
                "burstiness",
                "duration",
                "completed",
                "failed",
                "total_input_tokens",
                "total_output_tokens"
            ]
        );
        assert!(header.contains(&"mean_ttft_ms".to_string()));
        assert!(header.contains(&"p99_engine_ttft_delta_ms".to_string()));
        assert_eq!(header.last().map(String::as_str), Some("failed_by_reason"));
        let rows: Vec<::csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        let col = |row: usize, name: &str| {
            let i = header.iter().position(|h| h == name).unwrap();
            rows[row][i].to_string()
        };
        assert_eq!(col(0, "mode"), "batch");
        assert_eq!(col(0, "value"), "2");
        assert_eq!(col(0, "burstiness"), "");
        assert_eq!(col(0, "completed"), "2");
        assert_eq!(col(0, "duration"), "0.5");
        assert_eq!(col(0, "request_throughput"), "4");
        assert_eq!(col(0, "mean_ttft_ms"), "150");
        assert_eq!(col(0, "mean_engine_ttft_delta_ms"), "0.5");
        assert_eq!(col(0, "failed_by_reason"), "timeout=1");
        assert_eq!(col(1, "mode"), "concurrency");
        assert_eq!(col(1, "value"), "4");
        assert_eq!(col(1, "mean_engine_ttft_delta_ms"), "");
        assert_eq!(col(1, "failed_by_reason"), "");
        // Measurement figures: a column each, empty where a point has none.
        assert_eq!(col(0, "harness_us_per_step"), "10");
        assert_eq!(col(1, "harness_us_per_step"), "");
        assert_eq!(col(0, "rounds"), "2");
        assert!(header.contains(&"output_throughput_ci95_high".to_string()));
    }

    #[test]
    fn requests_csv_rows() {
        let (run, recs) = run(false);
        let t = text(&RequestsCsvExporter, &run, &recs);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "id,point,input_len,output_tokens,finish_reason,ttft_ms,tpot_ms,e2el_ms,\
             engine_ttft_delta_ms,cached_prompt_tokens,queue_time_ms,schedule_lag_ms,\
             ttft_from_arrival_ms,error"
        );
        // TTFT 100 ms by the harness, 99.5 ms by the engine's own stamp; batch mode has
        // no scheduled arrivals, so no queue time.
        assert_eq!(lines[1], "0,0,10,3,length,100,25,150,0.5,,,,,");
        assert_eq!(lines[2], "1,0,10,2,stop,200,50,250,,,,,,");
        assert_eq!(lines[3], "2,0,10,0,timeout,,,,,,,,,no token within 0.5 s");
        assert_eq!(lines[4], "3,1,10,4,length,50,10,80,,,,,,");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn errors_with_commas_and_quotes_are_quoted() {
        let (run, mut recs) = run(false);
        recs[2].error = Some("bad, \"very\" bad\nline 2".into());
        let t = text(&RequestsCsvExporter, &run, &recs);
        assert!(t.contains(",\"bad, \"\"very\"\" bad\"\n"), "{t}");
    }
}
