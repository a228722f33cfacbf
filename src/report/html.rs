//! `report.html` (one result directory) and `compare.html` (several): one
//! self-contained file each — inline CSS and SVG, no script, nothing fetched — with the
//! summary table, the notes and warnings, the plots, the definition of every metric
//! and measurement, and the run metadata.

use super::compare::Comparison;
use super::table::Level;
use super::{measure_definitions, table, RunResult, INSTRUMENT_BANNER};
use crate::metrics::catalog::{self, Metric, View};
use std::fmt::Write as _;
use std::path::PathBuf;

const CSS: &str =
    "body{font-family:sans-serif;margin:2em auto;max-width:1500px;color:#222;padding:0 1em}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px}\
td{text-align:right;font-variant-numeric:tabular-nums}td:first-child,td.l{text-align:left}\
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}.note{font-size:13px;margin:.2em 0}\
.warn{color:#a40}.banner{background:#fee;border:1px solid #c00;padding:.5em;font-weight:bold}\
dl{font-size:13px}dt{font-weight:bold;margin-top:.5em}dd{margin-left:1.5em}\
pre{font-size:12px;background:#f7f7f7;padding:1em;overflow:auto}\
figure{margin:1em 0}svg{max-width:100%;height:auto}";

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html_table(header: &[String], rows: &[Vec<String>], left: usize) -> String {
    let mut o = String::from("<table><tr>");
    for h in header {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr>");
    for r in rows {
        o.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let class = if i < left { " class=\"l\"" } else { "" };
            let _ = write!(o, "<td{class}>{}</td>", esc(c));
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");
    o
}

/// The plots, inline (an SVG file's own XML, without its prolog).
fn figures(plots: &[PathBuf]) -> String {
    let mut o = String::new();
    for p in plots {
        let Ok(svg) = std::fs::read_to_string(p) else {
            continue;
        };
        let body = svg
            .find("<svg")
            .map_or(svg.as_str(), |i| &svg[i..])
            .to_string();
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default();
        let _ = write!(o, "<figure id=\"{}\">{body}</figure>", esc(&name));
    }
    o
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{CSS}</style></head><body>{body}</body></html>\n",
        esc(title)
    )
}

fn definitions(metrics: &[Metric], extra: &[(String, String)]) -> String {
    let mut o = String::from("<dl>");
    for (k, v) in catalog::definitions(metrics)
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .chain(extra.iter().cloned())
    {
        let _ = write!(o, "<dt>{}</dt><dd>{}</dd>", esc(&k), esc(&v));
    }
    o.push_str("</dl>");
    o
}

/// `report.html` for one run: `plots` are its SVG files.
pub fn report(run: &RunResult, plots: &[PathBuf]) -> String {
    let m = &run.meta;
    let title = format!(
        "{} {} — {} point(s), {}",
        m.engine.name,
        m.engine.version,
        run.points.len(),
        m.start_time
            .get(..19)
            .unwrap_or(&m.start_time)
            .replace('T', " ")
    );
    let mut b = format!("<h1>{}</h1>", esc(&title));
    if run.instrument() {
        let _ = write!(b, "<p class=\"banner\">{}</p>", esc(INSTRUMENT_BANNER));
    }
    let _ = write!(
        b,
        "<p class=\"note\">model {} · {} on {} ({} CPUs{}) · workload: {} · status {:?}</p>",
        esc(m.model.as_deref().unwrap_or(&m.engine.model)),
        esc(&m.engine.device),
        esc(&m.host.hostname),
        m.host.cpus,
        if m.host.gpu.starts_with("none") {
            String::new()
        } else {
            format!(", {}", esc(&m.host.gpu))
        },
        esc(&m.workload.description),
        m.status
    );
    b.push_str("<h2>Summary</h2>");
    // A page has room for every column.
    let (header, rows) = table::rows(run, View::Wide);
    b.push_str(&html_table(&header, &rows, 1));
    let _ = write!(b, "<p class=\"note\">{}</p>", esc(&table::footnote()));
    for r in table::remarks(run, View::Wide) {
        let class = match r.level {
            Level::Note => "note",
            Level::Warning | Level::Noisy | Level::Failed => "note warn",
        };
        let _ = write!(b, "<p class=\"{class}\">{}</p>", esc(&r.text));
    }
    if !plots.is_empty() {
        b.push_str("<h2>Plots</h2>");
        b.push_str(&figures(plots));
    }
    b.push_str("<h2>Definitions</h2>");
    b.push_str(&definitions(run.catalog, &measure_definitions(run)));
    b.push_str("<h2>Run metadata (run.json)</h2><details><summary>show</summary><pre>");
    b.push_str(&esc(&serde_json::to_string_pretty(m).unwrap_or_default()));
    b.push_str("</pre></details>");
    page(&title, &b)
}

/// `compare.html` for several runs: `dirs` name them, `plots` are the overlays.
pub fn compare(c: &Comparison, runs: &[RunResult], dirs: &[String], plots: &[PathBuf]) -> String {
    let title = format!("Comparison of {} runs", runs.len());
    let mut b = format!("<h1>{}</h1><ol>", esc(&title));
    for ((label, run), dir) in c.runs.iter().zip(runs).zip(dirs) {
        let m = &run.meta;
        let _ = write!(
            b,
            "<li>{} — {} · model {} · {} · git {} · {}</li>",
            esc(label),
            esc(dir),
            esc(m.model.as_deref().unwrap_or(&m.engine.model)),
            esc(&m.host.hostname),
            esc(&m.harness.git_revision),
            esc(&m.start_time)
        );
    }
    b.push_str("</ol><h2>Side by side</h2>");
    let rows: Vec<Vec<String>> = c.rows.iter().map(|r| c.cells(r)).collect();
    b.push_str(&html_table(&c.header(), &rows, 2));
    let _ = write!(b, "<p class=\"note\">{}</p>", esc(&c.footnote()));
    if !plots.is_empty() {
        b.push_str("<h2>Plots</h2>");
        b.push_str(&figures(plots));
    }
    if let Some(first) = runs.first() {
        b.push_str("<h2>Definitions</h2>");
        b.push_str(&definitions(first.catalog, &measure_definitions(first)));
    }
    page(&title, &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

    #[test]
    fn a_self_contained_page_with_table_definitions_and_metadata() {
        let (run, _) = run(true);
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("throughput.svg");
        std::fs::write(
            &svg,
            "<?xml version=\"1.0\"?>\n<svg width=\"10\" height=\"10\"><text>series-x</text></svg>",
        )
        .unwrap();
        let html = report(&run, &[svg]);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains(INSTRUMENT_BANNER));
        assert!(
            html.contains("<th>out tok/s</th>") && html.contains("<td class=\"l\">batch=2</td>")
        );
        assert!(html.contains("<figure id=\"throughput\"><svg") && html.contains("series-x"));
        assert!(
            !html.contains("<?xml"),
            "the SVG prolog must not land inside the page"
        );
        assert!(html.contains("<dt>ttft</dt>") && html.contains("<dt>harness_cost</dt>"));
        assert!(html.contains("&quot;git_revision&quot;"));
        // Nothing fetched: no external reference of any kind.
        for needle in ["<script", "<link", "src=", "url(", "@import"] {
            assert!(!html.contains(needle), "{needle}");
        }
        assert_eq!(esc("<a & 'b'>"), "&lt;a &amp; &#39;b&#39;&gt;");
    }
}
