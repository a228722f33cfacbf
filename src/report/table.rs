//! The terminal table: one row per load point, then a footnote stating the definitions,
//! the throughput window, failures and (for the calibration engine) the instrument
//! banner, then the warnings: busy-machine points and noisy points, with what to do.
//! Plain ASCII borders and no width detection, so CI logs stay readable and the output
//! is the same on every terminal.

use super::{RunResult, INSTRUMENT_BANNER};
use crate::metrics::confidence::NOISY_CV;
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
    "(numpy default). rounds = batches (batch mode) or completed requests; out tok/s = mean",
    "over rounds ± 95 % CI half-width (Student t; batch mode per batch, otherwise per equal",
    "time window). Full definitions: \"definitions\" in summary.json.",
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

/// The table columns the points' measurements ask for, first seen first.
fn measure_columns(run: &RunResult) -> Vec<(String, String)> {
    let mut cols: Vec<(String, String)> = Vec::new();
    for r in run.points.iter().flat_map(|p| p.measures.0.iter()) {
        for f in &r.figures {
            if let Some(c) = &f.column {
                if !cols.iter().any(|(k, _)| *k == f.key) {
                    cols.push((f.key.clone(), c.clone()));
                }
            }
        }
    }
    cols
}

/// The table's header and one row of cells per point (the terminal table and the
/// HTML report show the same cells).
pub fn rows(run: &RunResult) -> (Vec<String>, Vec<Vec<String>>) {
    let goodput = !run.slo().is_empty();
    let extra = measure_columns(run);
    let mut header: Vec<String> = [
        "point",
        "rounds",
        "ok/failed",
        "req/s",
        "out tok/s",
        "total tok/s",
    ]
    .map(String::from)
    .to_vec();
    if goodput {
        header.push("goodput req/s".into());
    }
    header.extend(
        [
            "TTFT mean",
            "TTFT p99",
            "TPOT mean",
            "TPOT p99",
            "ITL p99",
            "E2EL p99",
        ]
        .map(String::from),
    );
    header.extend(extra.iter().map(|(_, c)| c.clone()));
    let rows = run
        .points
        .iter()
        .map(|p| {
            let s = &p.summary;
            let r = &s.rounds;
            let thr = if r.output_throughput.n > 0 {
                r.output_throughput.display(2)
            } else {
                num(s.output_throughput)
            };
            let mark = if r.is_noisy() { " *" } else { "" };
            let mut row = vec![
                p.point.label(),
                r.count.to_string(),
                format!("{}/{}", s.completed, s.failed),
                num(s.request_throughput),
                format!("{thr}{mark}"),
                num(s.total_token_throughput),
            ];
            if goodput {
                row.push(num(s.request_goodput));
            }
            row.extend([
                num(s.ttft.mean),
                num(s.ttft.p99),
                num(s.tpot.mean),
                num(s.tpot.p99),
                num(s.itl.p99),
                num(s.e2el.p99),
            ]);
            row.extend(extra.iter().map(|(key, _)| {
                p.measures
                    .figures()
                    .find(|f| f.key == *key)
                    .map_or_else(|| "-".into(), |f| f.cell())
            }));
            row
        })
        .collect();
    (header, rows)
}

/// The short definitions as one paragraph (for the HTML report).
pub fn footnote() -> String {
    FOOTNOTE.join(" ")
}

/// The lines under the table: the definitions ([`FOOTNOTE`]), then [`remarks`].
pub fn notes(run: &RunResult) -> Vec<String> {
    let mut out: Vec<String> = FOOTNOTE.iter().map(|l| l.to_string()).collect();
    out.extend(remarks(run));
    out
}

/// What this run adds under the definitions: noisy marks, measurements, SLOs,
/// failures, engine agreement, then the warnings (a busy machine, noisy points) with
/// what to do.
pub fn remarks(run: &RunResult) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut line = |l: String| out.push(l);
    if run.points.iter().any(|p| p.summary.rounds.is_noisy()) {
        line(format!(
            "* noisy: the output throughput varies by more than {:.0} % (CV) across rounds.",
            NOISY_CV * 100.0
        ));
    }
    if !measure_columns(run).is_empty() {
        let mut named: Vec<String> = Vec::new();
        for r in run.points.iter().flat_map(|p| p.measures.0.iter()) {
            let cols: Vec<&str> = r
                .figures
                .iter()
                .filter_map(|f| f.column.as_deref())
                .collect();
            let entry = format!("{} ({})", cols.join(", "), r.name);
            if !cols.is_empty() && !named.contains(&entry) {
                named.push(entry);
            }
        }
        line(format!(
            "Measured beside the trace (definitions in summary.json): {}.",
            named.join("; ")
        ));
    }
    if let Some(l) = slo_line(run.slo()) {
        line(l);
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
        line(format!(
            "FAILED requests (excluded from latencies; listed in summary.json): {}",
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
        line(format!(
            "Harness - engine first-token stamp (target p99 <= 1 ms): {}",
            agreement.join("; ")
        ));
    }
    let points: Vec<_> = run.points.iter().map(|p| p.point).collect();
    for w in super::over_the_engines_limit(&run.meta.engine, &points) {
        line(format!("warning: {w}"));
    }
    for p in &run.points {
        for w in p.measures.warnings() {
            line(format!("warning: {}: {w}", p.point.label()));
        }
    }
    let noisy: Vec<String> = run
        .points
        .iter()
        .filter(|p| p.summary.rounds.is_noisy())
        .map(|p| {
            format!(
                "{} (CV {:.0} % over {} rounds)",
                p.point.label(),
                p.summary.rounds.output_throughput.cv.unwrap_or(0.0) * 100.0,
                p.summary.rounds.output_throughput.n
            )
        })
        .collect();
    if !noisy.is_empty() {
        line(format!(
            "Noisy points: {}; add rounds (--min-rounds, --min-duration) or run on a quieter machine.",
            noisy.join(", ")
        ));
    }
    out
}

/// Renders the run as a terminal table with its footnote and warnings.
pub fn table(run: &RunResult) -> String {
    let (header, rows) = rows(run);
    let mut t = Table::new();
    t.load_preset(ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(header.clone());
    for r in rows {
        t.add_row(r);
    }
    for i in 1..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = String::new();
    if run.instrument() {
        out.push_str(&format!("*** {INSTRUMENT_BANNER} ***\n"));
    }
    out.push_str(&t.to_string());
    out.push('\n');
    for l in notes(run) {
        out.push_str(&l);
        out.push('\n');
    }
    if run.instrument() {
        out.push_str(&format!("*** {INSTRUMENT_BANNER} ***\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

    fn cells(t: &str, label: &str) -> Vec<String> {
        let row = t.lines().find(|l| l.contains(label)).unwrap();
        row.split('|').map(|c| c.trim().to_string()).collect()
    }

    #[test]
    fn rows_and_footnote() {
        let (run, _) = run(false);
        let t = table(&run);
        assert!(!t.contains(INSTRUMENT_BANNER));
        // | batch=2 | rounds | ok/failed | req/s | out tok/s | total | goodput | TTFT mean ...
        let c = cells(&t, "batch=2");
        let s = &run.points[0].summary;
        // Two throughput windows of 16 and 4 tok/s: mean 10, CV 85 %, so marked noisy.
        let thr = format!("{} *", s.rounds.output_throughput.display(2));
        assert_eq!(
            &c[1..9],
            [
                "batch=2",
                "2",
                "2/1",
                "4.00",
                thr.as_str(),
                "50.00",
                "2.00",
                "150.00"
            ]
        );
        assert!(thr.starts_with("10.00 ± "), "{thr}");
        // The measurement column: point 0 has the harness's cost, point 1 none.
        assert!(t.contains("harness us/step"));
        assert_eq!(c[c.len() - 3], "10.0");
        let c1 = cells(&t, "concurrency=4");
        assert_eq!((c1[3].as_str(), c1[c1.len() - 3].as_str()), ("1/0", "-"));
        assert!(t.lines().next().unwrap().starts_with('+'));
        assert!(t.contains("ttft = first token event - submit"));
        assert!(t.contains("Throughput window per point: last finish - first submit"));
        assert!(t.contains("Measured beside the trace") && t.contains("(harness_cost)"));
        assert!(t.contains("Goodput SLO: ttft <= 150 ms"));
        assert!(t.contains("FAILED requests"));
        assert!(t.contains("batch=2: timeout 1"));
        assert!(t.contains("batch=2: p99 0.50 ms over 1"));
    }

    #[test]
    fn noisy_points_are_marked_and_named() {
        let (mut run, _) = run(false);
        let r = &mut run.points[0].summary.rounds;
        r.output_throughput = crate::metrics::Estimate::of(&[8.0, 12.0, 10.0]);
        let quiet = &mut run.points[1].summary.rounds;
        quiet.output_throughput = crate::metrics::Estimate::of(&[10.0, 10.1, 9.9]);
        let t = table(&run);
        assert!(cells(&t, "batch=2")[5].ends_with(" *"), "{t}");
        assert!(!cells(&t, "concurrency=4")[5].ends_with('*'), "{t}");
        assert!(t.contains("* noisy: the output throughput varies by more than 10 %"));
        let last = t
            .lines()
            .rev()
            .find(|l| l.starts_with("Noisy points"))
            .unwrap();
        assert!(
            last.contains("batch=2 (CV 20 % over 3 rounds)") && !last.contains("concurrency"),
            "{last}"
        );
        assert!(last.contains("--min-rounds"));
    }

    #[test]
    fn busy_machine_warning() {
        let (mut run, _) = run(false);
        run.points[1].measures.add(&crate::host::HostLoad {
            wall_s: 1.0,
            cpus: 2,
            other_cpu_s: 0.8,
            other_share: 0.4,
            loadavg_1m_end: Some(2.5),
            ..Default::default()
        });
        let t = table(&run);
        assert!(t.contains("others CPU%"));
        assert!(
            t.contains("warning: concurrency=4: other processes took 40 % of the machine's CPU (load average 2.50)"),
            "{t}"
        );
    }

    #[test]
    fn instrument_banner_and_no_slo() {
        let (mut run, _) = run(true);
        run.meta.slo = Slo::default();
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
