//! The terminal table: one row per load point, then a footnote stating the definitions,
//! the throughput window, failures and (for the calibration engine) the instrument
//! banner, then the remarks: busy-machine points and noisy points, with what to do.
//!
//! Its columns come from the metric catalogue and the points' measurements: the brief
//! view (the default) holds what a reader needs first and fits 120 columns; `--wide`
//! shows every column (the files always hold everything). Plain ASCII borders; on a
//! terminal the table adapts to its width, elsewhere (CI logs, pipes) it is the same on
//! every machine.

use super::{RunResult, INSTRUMENT_BANNER};
use crate::metrics::catalog::{Column, Metric, View};
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

/// How much a remark under the table asks of the reader.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Level {
    /// What the table shows and how (measurements, SLOs, engine agreement).
    Note,
    /// Something that weakens a figure: a busy machine, a point beyond the engine's
    /// limit, too few rounds.
    Warning,
    /// Points whose throughput varied too much across rounds.
    Noisy,
    /// Requests that failed.
    Failed,
}

/// One line under the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Remark {
    pub level: Level,
    pub text: String,
}

/// The SLOs as `ttft <= 150 ms, tpot <= 20 ms` (None without any).
pub fn slo_terms(slo: &Slo) -> Option<String> {
    let parts: Vec<String> = [
        ("ttft", slo.ttft_ms),
        ("tpot", slo.tpot_ms),
        ("e2el", slo.e2el_ms),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k} <= {v} ms")))
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn slo_line(slo: &Slo) -> Option<String> {
    slo_terms(slo).map(|t| format!("Goodput SLO: {t} (a 1-token request passes the tpot SLO)."))
}

/// The measurement columns the points ask for in `view`, first seen first:
/// `(figure key, header)`.
fn measure_columns(run: &RunResult, view: View) -> Vec<(String, String)> {
    let mut cols: Vec<(String, String)> = Vec::new();
    for r in run.points.iter().flat_map(|p| p.measures.0.iter()) {
        for f in &r.figures {
            let Some(c) = &f.column else { continue };
            if (view == View::Wide || f.brief) && !cols.iter().any(|(k, _)| *k == f.key) {
                cols.push((f.key.clone(), c.clone()));
            }
        }
    }
    cols
}

/// The catalogue's columns in `view` that some point has a value for.
fn metric_columns(run: &RunResult, view: View) -> Vec<(&'static Metric, Column)> {
    run.catalog
        .iter()
        .flat_map(|m| m.columns.iter().map(move |c| (m, *c)))
        .filter(|(_, c)| view == View::Wide || c.view == View::Brief)
        .filter(|(m, c)| {
            run.points
                .iter()
                .any(|p| m.present(&p.summary) && m.cell(c, &p.summary) != "-")
        })
        .collect()
}

/// The table's header and one row of cells per point in `view` (the terminal table and
/// the HTML report show the same cells).
pub fn rows(run: &RunResult, view: View) -> (Vec<String>, Vec<Vec<String>>) {
    let metrics = metric_columns(run, view);
    let measures = measure_columns(run, view);
    let mut header = ["point", "rounds", "ok/failed"].map(String::from).to_vec();
    header.extend(metrics.iter().map(|(m, c)| m.header(c)));
    header.extend(measures.iter().map(|(_, h)| h.clone()));
    let rows = run
        .points
        .iter()
        .map(|p| {
            let s = &p.summary;
            let mut row = vec![
                p.point.label(),
                s.rounds.count.to_string(),
                format!("{}/{}", s.completed, s.failed),
            ];
            row.extend(metrics.iter().map(|(m, c)| m.cell(c, s)));
            row.extend(measures.iter().map(|(key, _)| {
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

/// What this run adds under the definitions: noisy marks, measurements, SLOs,
/// failures, engine agreement, then the warnings (a busy machine, a point beyond the
/// engine's limit, noisy points) with what to do.
pub fn remarks(run: &RunResult, view: View) -> Vec<Remark> {
    let mut out: Vec<Remark> = Vec::new();
    let mut line = |level: Level, text: String| out.push(Remark { level, text });
    if run.points.iter().any(|p| p.summary.rounds.is_noisy()) {
        line(
            Level::Note,
            format!(
                "* noisy: the output throughput varies by more than {:.0} % (CV) across rounds.",
                NOISY_CV * 100.0
            ),
        );
    }
    let shown = measure_columns(run, view);
    if !shown.is_empty() {
        let mut named: Vec<String> = Vec::new();
        for r in run.points.iter().flat_map(|p| p.measures.0.iter()) {
            let cols: Vec<&str> = shown
                .iter()
                .filter(|(key, _)| r.figures.iter().any(|f| f.key == *key))
                .map(|(_, h)| h.as_str())
                .collect();
            let entry = format!("{} ({})", cols.join(", "), r.name);
            if !cols.is_empty() && !named.contains(&entry) {
                named.push(entry);
            }
        }
        line(
            Level::Note,
            format!(
                "Measured beside the trace (definitions in summary.json): {}.",
                named.join("; ")
            ),
        );
    }
    if view == View::Brief {
        line(
            Level::Note,
            "More columns with --wide; every figure is in summary.json and summary.csv.".into(),
        );
    }
    if let Some(l) = slo_line(run.slo()) {
        line(Level::Note, l);
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
        line(
            Level::Failed,
            format!(
                "FAILED requests (excluded from latencies; listed in summary.json): {}",
                failures.join("; ")
            ),
        );
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
        line(
            Level::Note,
            format!(
                "Harness - engine first-token stamp (target p99 <= 1 ms): {}",
                agreement.join("; ")
            ),
        );
    }
    let points: Vec<_> = run.points.iter().map(|p| p.point).collect();
    for w in super::over_the_engines_limit(&run.meta.engine, &points) {
        line(Level::Warning, format!("warning: {w}"));
    }
    for p in &run.points {
        for w in p.measures.warnings() {
            line(Level::Warning, format!("warning: {}: {w}", p.point.label()));
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
        line(
            Level::Noisy,
            format!(
                "Noisy points: {}; add rounds (--min-rounds, --min-duration) or run on a quieter machine.",
                noisy.join(", ")
            ),
        );
    }
    // The search's answer last: what the run was for.
    if let Some(l) = run.search_line() {
        line(Level::Note, format!("Search: {l}."));
    }
    out
}

/// Renders the run as a table with its footnote and remarks. `width`: the terminal's
/// columns to fit, when printing to one (`None`: never wrap, the same everywhere).
pub fn table(run: &RunResult, view: View, width: Option<u16>) -> String {
    let (header, rows) = rows(run, view);
    let mut t = Table::new();
    t.load_preset(ASCII_FULL_CONDENSED);
    match width {
        Some(w) => {
            t.set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(w);
        }
        None => {
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
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
    if let Some(turns) = turn_table(run) {
        out.push_str(&turns);
    }
    for l in FOOTNOTE {
        out.push_str(l);
        out.push('\n');
    }
    for r in remarks(run, view) {
        out.push_str(&r.text);
        out.push('\n');
    }
    if run.instrument() {
        out.push_str(&format!("*** {INSTRUMENT_BANNER} ***\n"));
    }
    out
}

/// Conversation runs: one row per point and turn index (TTFT, the prompt it sent, the
/// cache hit rate), so the growth by turn is visible; None for other runs.
fn turn_table(run: &RunResult) -> Option<String> {
    let rows: Vec<_> = run
        .points
        .iter()
        .flat_map(|p| {
            p.summary
                .by_turn
                .iter()
                .flatten()
                .map(move |t| (p.point.label(), t))
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut t = Table::new();
    t.load_preset(ASCII_FULL_CONDENSED);
    t.set_content_arrangement(ContentArrangement::Disabled);
    t.set_header([
        "point",
        "turn",
        "ok/failed",
        "TTFT p50",
        "TTFT p99",
        "prompt tok mean",
        "cache hit",
    ]);
    for (label, r) in rows {
        t.add_row([
            label,
            r.turn.to_string(),
            format!("{}/{}", r.completed, r.failed),
            num(r.ttft.median),
            num(r.ttft.p99),
            r.input_len
                .mean
                .map_or_else(|| "-".to_string(), |v| format!("{v:.1}")),
            r.prefix_cache_hit_rate
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}")),
        ]);
    }
    for i in 1..7 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    Some(format!(
        "By turn (conversations; TTFT in ms; prompt = the context so far + the user message; turns.csv):\n{t}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

    fn cells(t: &str, label: &str) -> Vec<String> {
        let row = t.lines().find(|l| l.contains(label)).unwrap();
        row.split('|').map(|c| c.trim().to_string()).collect()
    }

    fn col(t: &str, label: &str, header: &str) -> String {
        let head = cells(t, "| point");
        let i = head
            .iter()
            .position(|h| h == header)
            .unwrap_or_else(|| panic!("no column {header} in {head:?}"));
        cells(t, label)[i].clone()
    }

    #[test]
    fn brief_rows_and_footnote() {
        let (run, _) = run(false);
        let t = table(&run, View::Brief, None);
        assert!(!t.contains(INSTRUMENT_BANNER));
        let s = &run.points[0].summary;
        // Two throughput windows of 16 and 4 tok/s: mean 10, CV 85 %, so marked noisy.
        let thr = format!("{} *", s.rounds.output_throughput.display(2));
        assert!(thr.starts_with("10.00 ± "), "{thr}");
        assert_eq!(
            cells(&t, "| point")[1..],
            [
                "point",
                "rounds",
                "ok/failed",
                "goodput req/s",
                "out tok/s",
                "TTFT p50",
                "TTFT p99",
                "TPOT p50",
                "TPOT p99",
                "harness %",
                ""
            ]
        );
        assert_eq!(
            cells(&t, "batch=2")[1..9],
            [
                "batch=2",
                "2",
                "2/1",
                "2.00",
                thr.as_str(),
                "150.00",
                "199.00",
                "37.50"
            ]
        );
        // The measurement column: point 0 has the harness's cost, point 1 none.
        assert_eq!(col(&t, "batch=2", "harness %"), "0.0");
        assert_eq!(col(&t, "concurrency=4", "harness %"), "-");
        assert_eq!(col(&t, "concurrency=4", "ok/failed"), "1/0");
        assert!(t.lines().next().unwrap().starts_with('+'));
        assert!(t.contains("ttft = first token event - submit"));
        assert!(t.contains("Throughput window per point: last finish - first submit"));
        assert!(t.contains("Measured beside the trace") && t.contains("(harness_cost)"));
        assert!(t.contains("More columns with --wide"));
        assert!(t.contains("Goodput SLO: ttft <= 150 ms"));
        assert!(t.contains("FAILED requests"));
        assert!(t.contains("batch=2: timeout 1"));
        assert!(t.contains("batch=2: p99 0.50 ms over 1"));
    }

    #[test]
    fn wide_shows_every_column() {
        let (run, _) = run(false);
        let t = table(&run, View::Wide, None);
        for h in [
            "req/s",
            "total tok/s",
            "TTFT mean",
            "TPOT mean",
            "ITL p99",
            "E2EL p99",
            "harness us/step",
            "engine ms/step",
        ] {
            assert!(cells(&t, "| point").iter().any(|c| c == h), "{h}: {t}");
        }
        assert_eq!(col(&t, "batch=2", "req/s"), "4.00");
        assert_eq!(col(&t, "batch=2", "harness us/step"), "10.0");
        assert!(!t.contains("More columns with --wide"));
    }

    #[test]
    fn a_terminal_width_is_fitted() {
        let (run, _) = run(false);
        let t = table(&run, View::Wide, Some(80));
        let widest = t
            .lines()
            .take_while(|l| !l.starts_with("Latencies"))
            .map(|l| l.chars().count())
            .max();
        assert!(widest.is_some_and(|w| w <= 80), "{t}");
    }

    #[test]
    fn noisy_points_are_marked_and_named() {
        let (mut run, _) = run(false);
        let r = &mut run.points[0].summary.rounds;
        r.output_throughput = crate::metrics::Estimate::of(&[8.0, 12.0, 10.0]);
        let quiet = &mut run.points[1].summary.rounds;
        quiet.output_throughput = crate::metrics::Estimate::of(&[10.0, 10.1, 9.9]);
        let t = table(&run, View::Brief, None);
        assert!(col(&t, "batch=2", "out tok/s").ends_with(" *"), "{t}");
        assert!(!col(&t, "concurrency=4", "out tok/s").ends_with('*'), "{t}");
        assert!(t.contains("* noisy: the output throughput varies by more than 10 %"));
        let noisy: Vec<Remark> = remarks(&run, View::Brief)
            .into_iter()
            .filter(|r| r.level == Level::Noisy)
            .collect();
        assert_eq!(noisy.len(), 1);
        assert!(
            noisy[0].text.contains("batch=2 (CV 20 % over 3 rounds)")
                && !noisy[0].text.contains("concurrency"),
            "{noisy:?}"
        );
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
        let wide = table(&run, View::Wide, None);
        assert!(wide.contains("others CPU%"));
        let warnings: Vec<Remark> = remarks(&run, View::Brief)
            .into_iter()
            .filter(|r| r.level == Level::Warning)
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].text.contains(
                "concurrency=4: other processes took 40 % of the machine's CPU (load average 2.50)"
            ),
            "{warnings:?}"
        );
    }

    #[test]
    fn instrument_banner_and_no_slo() {
        let (run, recs) = run(true);
        let mut meta = run.meta.clone();
        meta.slo = Slo::default();
        let mut run = RunResult::from_records(meta, &recs);
        run.points.remove(0);
        let t = table(&run, View::Brief, None);
        assert!(t.starts_with(&format!("*** {INSTRUMENT_BANNER} ***\n")));
        assert!(t
            .trim_end()
            .ends_with(&format!("*** {INSTRUMENT_BANNER} ***")));
        assert!(
            !t.contains("goodput") && !t.contains("FAILED") && !t.contains("first-token stamp"),
            "{t}"
        );
        assert!(remarks(&run, View::Brief)
            .iter()
            .all(|r| matches!(r.level, Level::Note | Level::Noisy)));
    }
}
