//! The terminal table: one row per load point, then a footnote stating the definitions,
//! the throughput window, failures and (for the calibration engine) the instrument
//! banner. Plain ASCII borders and no width detection, so CI logs stay readable and
//! the output is the same on every terminal.

use super::{RunResult, INSTRUMENT_BANNER};
use crate::metrics::Slo;
use comfy_table::presets::ASCII_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

/// The short definitions printed under the table (the full ones are in `summary.json`).
const FOOTNOTE: &[&str] = &[
    "Latencies in ms. ttft = first token event - submit; e2el = last token event - submit;",
    "tpot = (e2el - ttft) / (output_tokens - 1), requests with >= 2 tokens; itl = gaps between",
    "consecutive token events, pooled (one gap per event, as vLLM counts chunks).",
    "Throughput window per point: last finish - first submit (failed requests included);",
    "req/s and tok/s count completed requests only. Percentiles: linear interpolation",
    "(numpy default). Full definitions: \"definitions\" in summary.json.",
];

fn slo_line(slo: &Slo) -> Option<String> {
    let parts: Vec<String> = [
        ("ttft", slo.ttft_ms),
        ("tpot", slo.tpot_ms),
        ("e2el", slo.e2el_ms),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k} <= {v} ms")))
    .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "Goodput SLO: {} (a 1-token request passes the tpot SLO).",
            parts.join(", ")
        )
    })
}

/// Renders the run as a terminal table with its footnote.
pub fn table(run: &RunResult) -> String {
    let goodput = !run.slo.is_empty();
    let mut t = Table::new();
    t.load_preset(ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    let mut header = vec!["point", "ok/failed", "req/s", "out tok/s", "total tok/s"];
    if goodput {
        header.push("goodput req/s");
    }
    header.extend([
        "TTFT mean",
        "TTFT p50",
        "TTFT p99",
        "TPOT mean",
        "TPOT p50",
        "TPOT p99",
        "ITL p99",
        "E2EL p99",
    ]);
    t.set_header(header.clone());
    for p in &run.points {
        let s = &p.summary;
        let mut row = vec![
            p.point.label(),
            format!("{}/{}", s.completed, s.failed),
            num(s.request_throughput),
            num(s.output_throughput),
            num(s.total_token_throughput),
        ];
        if goodput {
            row.push(num(s.request_goodput));
        }
        row.extend([
            num(s.ttft.mean),
            num(s.ttft.p50),
            num(s.ttft.p99),
            num(s.tpot.mean),
            num(s.tpot.p50),
            num(s.tpot.p99),
            num(s.itl.p99),
            num(s.e2el.p99),
        ]);
        t.add_row(row);
    }
    for i in 1..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }

    let mut out = String::new();
    if run.instrument {
        out.push_str(&format!("*** {INSTRUMENT_BANNER} ***\n"));
    }
    out.push_str(&t.to_string());
    out.push('\n');
    for line in FOOTNOTE {
        out.push_str(line);
        out.push('\n');
    }
    if let Some(line) = slo_line(&run.slo) {
        out.push_str(&line);
        out.push('\n');
    }
    let failures: Vec<String> = run
        .points
        .iter()
        .filter(|p| p.summary.failed > 0)
        .map(|p| {
            let reasons: Vec<String> = p
                .summary
                .failed_by_reason
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            format!("{}: {}", p.point.label(), reasons.join(", "))
        })
        .collect();
    if !failures.is_empty() {
        out.push_str(&format!(
            "FAILED requests (excluded from latencies; listed in summary.json): {}\n",
            failures.join("; ")
        ));
    }
    let agreement: Vec<String> = run
        .points
        .iter()
        .filter_map(|p| {
            let d = p.summary.engine_ttft_delta.as_ref()?;
            Some(format!(
                "{}: p99 {} ms over {}",
                p.point.label(),
                num(d.p99),
                d.count
            ))
        })
        .collect();
    if !agreement.is_empty() {
        out.push_str(&format!(
            "Harness - engine first-token stamp (target p99 <= 1 ms): {}\n",
            agreement.join("; ")
        ));
    }
    if run.instrument {
        out.push_str(&format!("*** {INSTRUMENT_BANNER} ***\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

    #[test]
    fn rows_and_footnote() {
        let (run, _) = run(false);
        let t = table(&run);
        assert!(!t.contains(INSTRUMENT_BANNER));
        let lines: Vec<&str> = t.lines().collect();
        let row = lines.iter().find(|l| l.contains("batch=2")).unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | batch=2 | 2/1 | 4.00 | 10.00 | 50.00 | 2.00 | TTFT 150.00 150.00 ...
        assert_eq!(
            &cells[1..9],
            ["batch=2", "2/1", "4.00", "10.00", "50.00", "2.00", "150.00", "150.00"]
        );
        assert!(lines
            .iter()
            .any(|l| l.contains("concurrency=4") && l.contains("1/0")));
        assert!(lines[0].starts_with('+') && t.is_ascii(), "{t}");
        assert!(t.contains("goodput req/s"));
        assert!(t.contains("ttft = first token event - submit"));
        assert!(t.contains("Throughput window per point: last finish - first submit"));
        assert!(t.contains("Goodput SLO: ttft <= 150 ms"));
        assert!(t.contains("FAILED requests"));
        assert!(t.contains("batch=2: timeout 1"));
        assert!(t.contains("batch=2: p99 0.50 ms over 1"));
        // Deterministic.
        assert_eq!(t, table(&run));
    }

    #[test]
    fn instrument_banner_and_no_slo() {
        let (mut run, _) = run(true);
        run.slo = Slo::default();
        run.points.remove(0);
        let t = table(&run);
        assert!(t.starts_with(&format!("*** {INSTRUMENT_BANNER} ***\n")));
        assert!(t
            .trim_end()
            .ends_with(&format!("*** {INSTRUMENT_BANNER} ***")));
        assert!(
            !t.contains("goodput") && !t.contains("FAILED") && !t.contains("first-token stamp")
        );
    }
}
