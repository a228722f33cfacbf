//! `harness served-vs-inproc`: the cost of serving, measured. The same sweep (same
//! flags, workload file, seeds, greedy sampling) runs on vLLM in-process (`vllm`) and
//! behind its own OpenAI-compatible server (`vllm-server`, same engine args), each in a
//! child `harness sweep`, one after the other; then one table gives, per point, TTFT,
//! TPOT and ITL at p50 and p99 and output throughput for both, with the difference in
//! ms and %. vLLM's own per-request stamps, recorded on both sides, split the TTFT
//! difference into before the engine (HTTP, API layer, IPC to the engine core), inside
//! it, and after it (streaming back). The greedy token ids of the two runs are compared
//! request by request. `harness compare`'s table (means with their intervals, beyond or
//! within the runs' spread) is printed too, from the same two result directories.

use crate::cli::{RunArgs, ServedArgs};
use crate::config::{self, ConfigError};
use crate::core::error::{UsageError, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE};
use crate::engine::{EngineInfo, Registry};
use crate::metrics::catalog::{Column, Reading, Shown, Stat, View, CATALOG};
use crate::metrics::{self, catalog};
use crate::report::{self, RunResult};
use crate::trace::RequestTrace;
use anyhow::{bail, Context, Result};
use comfy_table::presets::ASCII_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// The two sides: (label, engine, directory under --out).
pub const SIDES: [(&str, &str, &str); 2] = [
    ("in-process", "vllm", "inproc"),
    ("served", "vllm-server", "served"),
];

/// What the table's columns mean.
pub const DEFINITIONS: &str = "Same sweep, workload file, seeds and greedy sampling on both sides; each side in its own \
child `harness sweep`, in-process first (with --repeat, pairs alternate which goes first). in-process: vLLM's LLMEngine with its engine core in the harness's process, \
stamped when each step returns. served: vLLM's OpenAI-compatible server (API server process + engine-core process) \
started with the same engine args on 127.0.0.1, measured by the harness's HTTP client, each SSE chunk stamped when \
read. TTFT, TPOT, ITL and output throughput as in every run's summary (TTFT = first token - submit; TPOT = (last - \
first token) / (tokens - 1); ITL = gaps between token events; out tok/s = output tokens / (last finish - first \
submit)). Δ = served - in-process; Δ% = Δ / in-process. Split (means over requests, so the parts add up to the TTFT \
mean): before the engine = vLLM's queued stamp - the harness's submit; in the engine = vLLM's first-token stamp - \
its queued stamp; after = the harness's first-token stamp - vLLM's; vLLM's stamps are engine-core \
time.monotonic() (CLOCK_MONOTONIC), the harness's clock.";

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub point: String,
    pub metric: String,
    pub unit: &'static str,
    pub inproc: Option<f64>,
    pub served: Option<f64>,
    pub delta: Option<f64>,
    pub delta_pct: Option<f64>,
}

/// How a figure is read from a point's summary.
type Read = Box<dyn Fn(&metrics::Summary) -> Option<f64>>;

/// The figures of the main table: the p50 and p99 of every metric the latency plots
/// show (TTFT, TPOT, ITL), then output throughput, as the catalogue names them.
fn figures() -> Vec<(String, &'static str, Read)> {
    let mut out: Vec<(String, &'static str, Read)> = Vec::new();
    for m in CATALOG.iter().filter(|m| m.plot) {
        let Reading::Distribution(get) = m.reading else {
            continue;
        };
        for stat in [Stat::Median, Stat::P99] {
            let header = m.header(&Column {
                shown: Shown::Stat(stat),
                view: View::Wide,
            });
            out.push((
                header,
                m.unit.label(),
                Box::new(move |s| get(s).and_then(|d| stat.of(d))),
            ));
        }
    }
    if let Some(m) = catalog::metric("output_throughput") {
        if let Reading::Scalar(get) = m.reading {
            out.push((m.label.to_string(), m.unit.label(), Box::new(get)));
        }
    }
    out
}

fn row(point: &str, metric: &str, unit: &'static str, a: Option<f64>, b: Option<f64>) -> Row {
    let delta = a.zip(b).map(|(a, b)| b - a);
    Row {
        point: point.to_string(),
        metric: metric.to_string(),
        unit,
        inproc: a,
        served: b,
        delta,
        delta_pct: delta
            .zip(a)
            .and_then(|(d, a)| (a != 0.0).then(|| d / a * 100.0)),
    }
}

/// One request's parts, in ms, from its engine stamps: (before, in engine, after first
/// token, after last token, vLLM's own TPOT).
fn parts(r: &RequestTrace) -> Option<[Option<f64>; 5]> {
    let e = r.engine.as_ref()?;
    let ms = |a: u64, b: u64| (a as i128 - b as i128) as f64 / 1e6;
    let first = r.first_token_ns()?;
    let before = e.queued_ns.map(|q| ms(q.0, r.submit_ns.0));
    let inside = e.queued_ns.zip(e.first_token_ns).map(|(q, f)| ms(f.0, q.0));
    let after = e.first_token_ns.map(|f| ms(first.0, f.0));
    let after_last = e
        .last_token_ns
        .zip(r.last_token_ns())
        .map(|(el, hl)| ms(hl.0, el.0));
    let n = r.output_tokens();
    let engine_tpot = e
        .first_token_ns
        .zip(e.last_token_ns)
        .filter(|_| n >= 2)
        .map(|(f, l)| ms(l.0, f.0) / (n - 1) as f64);
    Some([before, inside, after, after_last, engine_tpot])
}

const PARTS: [&str; 5] = [
    "before the engine (mean)",
    "in the engine to 1st token (mean)",
    "after the engine, 1st token (mean)",
    "after the engine, last token (mean)",
    "vLLM's own TPOT (mean)",
];

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Means of each part over a point's successful requests that carry engine stamps.
fn split(records: &[RequestTrace], point: u32) -> (usize, [Option<f64>; 5]) {
    let mut cols: [Vec<f64>; 5] = Default::default();
    let mut n = 0;
    for r in records
        .iter()
        .filter(|r| r.point == point && r.is_success())
    {
        if let Some(p) = parts(r) {
            n += 1;
            for (c, v) in cols.iter_mut().zip(p) {
                c.extend(v);
            }
        }
    }
    (n, cols.map(|c| mean(&c)))
}

/// Greedy token ids, request by request: (identical, compared, first differences).
fn token_parity(a: &[RequestTrace], b: &[RequestTrace]) -> (usize, usize, Vec<String>) {
    let ids = |rs: &[RequestTrace]| -> BTreeMap<u64, Vec<u32>> {
        rs.iter()
            .filter(|r| r.is_success())
            .filter_map(|r| Some((r.id, r.token_ids.clone()?)))
            .collect()
    };
    let (x, y) = (ids(a), ids(b));
    let (mut same, mut total, mut diffs) = (0, 0, Vec::new());
    for (id, t) in &x {
        let Some(u) = y.get(id) else { continue };
        total += 1;
        if t == u {
            same += 1;
        } else if diffs.len() < 5 {
            let at = t.iter().zip(u).take_while(|(p, q)| p == q).count();
            diffs.push(format!(
                "request {id}: first difference at token {at} ({:?} vs {:?})",
                t.get(at),
                u.get(at)
            ));
        }
    }
    (same, total, diffs)
}

fn fmt(v: Option<f64>, plus: bool) -> String {
    match v {
        Some(v) if plus => format!("{v:+.2}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    for i in 2..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.to_string()
}

/// The comparison of two finished runs, as text and JSON.
pub struct Report {
    pub rows: Vec<Row>,
    pub text: String,
    pub tokens_identical: bool,
}

/// What each side computed with on a CPU host, when vLLM's server logged its thread
/// binding: its engine core gets the CPUs left after those it reserves for the API
/// server process, so "in the engine" differences include fewer compute threads, a cost
/// of vLLM's serving layout rather than of HTTP.
fn compute_note(inproc: &EngineInfo, served: &EngineInfo) -> Option<String> {
    let bound = served.compute.as_ref()?;
    let cores = bound.cpus.as_deref()?;
    let threads = inproc
        .compute
        .as_ref()
        .and_then(|c| c.threads)
        .map_or("?".to_string(), |t| t.to_string());
    let reserved = bound.reserved_cpus.as_deref().unwrap_or("?");
    Some(format!(
        "Compute: in-process, {threads} torch threads in the harness's process; served, the engine core bound to CPUs {cores} (vLLM keeps CPUs {reserved} for its API server process), so the served side's \"in the engine\" time includes fewer compute threads.\n"
    ))
}

/// Builds the tables from the two runs (in-process first).
pub fn report(runs: &[(RunResult, Vec<RequestTrace>); 2]) -> Report {
    let (a, b) = (&runs[0].0, &runs[1].0);
    let mut rows = Vec::new();
    let mut split_rows = Vec::new();
    for (i, pa) in a.points.iter().enumerate() {
        let label = pa.point.label();
        let Some((j, pb)) = b
            .points
            .iter()
            .enumerate()
            .find(|(_, p)| p.point.label() == label)
        else {
            continue;
        };
        for (name, unit, f) in figures() {
            rows.push(row(&label, &name, unit, f(&pa.summary), f(&pb.summary)));
        }
        let (na, sa) = split(&runs[0].1, i as u32);
        let (nb, sb) = split(&runs[1].1, j as u32);
        if na > 0 || nb > 0 {
            let ttft = |s: &metrics::Summary| s.ttft.mean;
            let r = row(
                &label,
                "TTFT (mean)",
                "ms",
                ttft(&pa.summary),
                ttft(&pb.summary),
            );
            split_rows.push((r, na, nb));
            for (k, name) in PARTS.iter().enumerate() {
                split_rows.push((row(&label, name, "ms", sa[k], sb[k]), na, nb));
            }
        }
    }
    let cells = |r: &Row| {
        vec![
            r.point.clone(),
            format!("{} ({})", r.metric, r.unit),
            fmt(r.inproc, false),
            fmt(r.served, false),
            fmt(r.delta, true),
            r.delta_pct.map_or("-".into(), |p| format!("{p:+.1} %")),
        ]
    };
    let mut text = format!(
        "Served vs in-process: {} {} on {}\n",
        a.meta.engine.name,
        a.meta.engine.version,
        a.meta.model.as_deref().unwrap_or("?")
    );
    if let Some(n) = compute_note(&a.meta.engine, &b.meta.engine) {
        text.push_str(&n);
    }
    text.push_str(&table(
        &["point", "figure", "in-process", "served", "Δ", "Δ%"],
        rows.iter().map(cells).collect(),
    ));
    text.push('\n');
    if split_rows.is_empty() {
        text.push_str("Split: no request carries vLLM's own stamps on either side.\n");
    } else {
        text.push_str(
            "Where the TTFT difference lies (vLLM's own per-request stamps on both sides):\n",
        );
        text.push_str(&table(
            &[
                "point",
                "part",
                "in-process",
                "served",
                "Δ",
                "Δ%",
                "requests",
            ],
            split_rows
                .iter()
                .map(|(r, na, nb)| {
                    let mut c = cells(r);
                    c.push(format!("{na} / {nb}"));
                    c
                })
                .collect(),
        ));
        text.push('\n');
    }
    rows.extend(split_rows.into_iter().map(|(r, _, _)| r));
    let (same, total, diffs) = token_parity(&runs[0].1, &runs[1].1);
    text.push_str(&format!(
        "Greedy token ids: {same} of {total} requests identical (same request ids, same prompts)\n"
    ));
    for d in &diffs {
        text.push_str(&format!("  {d}\n"));
    }
    text.push_str(DEFINITIONS);
    text.push('\n');
    Report {
        rows,
        text,
        tokens_identical: total > 0 && same == total,
    }
}

/// The flags both children run with, written as their `--config` file.
fn child_args(a: RunArgs) -> Result<RunArgs, ConfigError> {
    if let Some(e) = &a.engine {
        return Err(ConfigError::new(
            "engine",
            format!(
                "--engine {e}: served-vs-inproc runs vllm and vllm-server itself; drop --engine"
            ),
        ));
    }
    if a.temperature.is_some_and(|t| t != 0.0) {
        return Err(ConfigError::new(
            "temperature",
            "--temperature: served-vs-inproc compares greedy runs (temperature 0); drop it",
        ));
    }
    Ok(RunArgs {
        config: None,
        engine: None,
        out: None,
        temperature: Some(0.0),
        save_token_ids: Some(true),
        ..a
    })
}

/// Most pairs `--repeat` takes.
const MAX_REPEAT: u32 = 20;

pub fn run(args: ServedArgs) -> Result<i32> {
    let repeat = args.repeat;
    if !(1..=MAX_REPEAT).contains(&repeat) {
        return Err(ConfigError::new(
            "repeat",
            format!("--repeat {repeat}: must be from 1 to {MAX_REPEAT}"),
        )
        .into());
    }
    let merged = config::merge(args.run)?;
    let out = merged.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(format!(
            "served-vs-inproc-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S")
        ))
    });
    let child = child_args(merged)?;
    // The directories of pair k (1-based): inproc/served, or inproc-k/served-k.
    let dir = |side: &str, k: u32| -> String {
        if repeat == 1 {
            side.to_string()
        } else {
            format!("{side}-{k}")
        }
    };
    // Validate both sides now, so bad input fails before the first (slow) load.
    let registry = Registry::builtin();
    for (_, engine, side) in SIDES {
        let probe = RunArgs {
            engine: Some(engine.into()),
            out: Some(out.join(dir(side, 1))),
            ..child.clone()
        };
        // Also refuses an engine that cannot run here (no venv), with its reason.
        config::validate(probe, true, &registry)?;
    }
    std::fs::create_dir_all(&out).map_err(|e| {
        UsageError(format!(
            "--out {}: {e}; choose a writable directory",
            out.display()
        ))
    })?;
    let cfg_file = out.join("served-vs-inproc.toml");
    let toml = toml::to_string(&child).context("cannot write the children's config")?;
    std::fs::write(&cfg_file, toml)
        .with_context(|| format!("cannot write {}", cfg_file.display()))?;
    let cancel = crate::process::install_interrupt();
    let exe = std::env::current_exe().context("cannot find this harness's own executable")?;
    let mut codes = Vec::new();
    let mut pairs = Vec::new();
    for k in 1..=repeat {
        // Alternate which side goes first, so drift on the machine hits both alike.
        let order: Vec<usize> = if k % 2 == 1 { vec![0, 1] } else { vec![1, 0] };
        for i in order {
            let (label, engine, side) = SIDES[i];
            if cancel.load(Ordering::SeqCst) {
                return Ok(EXIT_INTERRUPTED);
            }
            let d = out.join(dir(side, k));
            eprintln!(
                "== pair {k} of {repeat}, {label}: harness sweep --engine {engine} --out {}",
                d.display()
            );
            let status = std::process::Command::new(&exe)
                .arg("sweep")
                .arg("--config")
                .arg(&cfg_file)
                .args(["--engine", engine, "--out"])
                .arg(&d)
                .status()
                .with_context(|| format!("cannot start a child harness for {engine}"))?;
            match status.code() {
                Some(EXIT_USAGE) => bail!(UsageError(format!(
                    "the {engine} run refused its input (exit 2); see above"
                ))),
                Some(EXIT_INTERRUPTED) | None => return Ok(EXIT_INTERRUPTED),
                Some(c) => codes.push(c),
            }
        }
        let load = |side: &str| -> Result<(RunResult, Vec<RequestTrace>)> {
            let d = out.join(dir(side, k));
            RunResult::load(&d, None)
                .with_context(|| format!("the run in {} left no readable results", d.display()))
        };
        pairs.push([load(SIDES[0].2)?, load(SIDES[1].2)?]);
    }
    let names: Vec<String> = SIDES.iter().map(|s| dir(s.2, 1)).collect();
    let first = [pairs[0][0].0.clone(), pairs[0][1].0.clone()];
    let cmp =
        report::compare::compare(&first, &names, false).map_err(|e| UsageError(e.to_string()))?;
    let reports: Vec<Report> = pairs.iter().map(report).collect();
    let mut text = format!("{}\n", cmp.table());
    if repeat == 1 {
        text.push_str(&reports[0].text);
    } else {
        text.push_str(&spread(&reports));
    }
    println!("{text}");
    write(&out, &reports, &text)?;
    println!(
        "served vs in-process: {}",
        out.join("served-vs-inproc.txt").display()
    );
    if !reports.iter().all(|r| r.tokens_identical) {
        eprintln!("Error: the greedy token ids differ between the two sides (see above)");
        return Ok(EXIT_FAILED);
    }
    Ok(if codes.iter().all(|&c| c == 0) {
        0
    } else {
        EXIT_FAILED
    })
}

/// Several pairs: per point and figure, each side's mean over the pairs, and the
/// difference and its ratio as mean [min..max] over the pairs.
pub fn spread(reports: &[Report]) -> String {
    let n = reports.len();
    let mut keys: Vec<(String, String, &'static str)> = Vec::new();
    for r in reports {
        for row in &r.rows {
            let k = (row.point.clone(), row.metric.clone(), row.unit);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let stat = |v: &[f64], pct: bool| -> String {
        if v.is_empty() {
            return "-".into();
        }
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if pct {
            format!("{m:+.1} % [{lo:+.1}..{hi:+.1}]")
        } else {
            format!("{m:+.2} [{lo:+.2}..{hi:+.2}]")
        }
    };
    let mut rows = Vec::new();
    for (point, metric, unit) in &keys {
        let pick = |f: fn(&Row) -> Option<f64>| -> Vec<f64> {
            reports
                .iter()
                .filter_map(|r| {
                    r.rows
                        .iter()
                        .find(|x| &x.point == point && x.metric == *metric)
                        .and_then(f)
                })
                .collect()
        };
        let mean = |v: Vec<f64>| {
            fmt(
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
                false,
            )
        };
        rows.push(vec![
            point.clone(),
            format!("{metric} ({unit})"),
            mean(pick(|r| r.inproc)),
            mean(pick(|r| r.served)),
            stat(&pick(|r| r.delta), false),
            stat(&pick(|r| r.delta_pct), true),
        ]);
    }
    let mut text = format!(
        "Served vs in-process over {n} interleaved pairs: {}\n",
        reports[0]
            .text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("Served vs in-process: ")
    );
    text.push_str(&table(
        &[
            "point",
            "figure",
            "in-process (mean)",
            "served (mean)",
            "Δ mean [min..max]",
            "Δ% mean [min..max]",
        ],
        rows,
    ));
    text.push('\n');
    for (k, r) in reports.iter().enumerate() {
        if let Some(l) = r.text.lines().find(|l| l.starts_with("Greedy token ids")) {
            text.push_str(&format!("pair {}: {l}\n", k + 1));
        }
    }
    text.push_str(DEFINITIONS);
    text.push_str(" Over several pairs: in-process and served are the means over the pairs; Δ and Δ% \
        the mean over the pairs with the smallest and largest pair in brackets (each pair's two runs \
        back to back, alternating which goes first).\n");
    text
}

fn write(out: &Path, reports: &[Report], text: &str) -> Result<()> {
    report::write_atomic(&out.join("served-vs-inproc.txt"), text.as_bytes())?;
    let json = serde_json::json!({
        "sides": SIDES.iter().map(|(l, e, d)| serde_json::json!({"label": l, "engine": e, "dir": d})).collect::<Vec<_>>(),
        "pairs": reports.iter().map(|r| serde_json::json!({"rows": r.rows, "tokens_identical": r.tokens_identical})).collect::<Vec<_>>(),
        "rows": reports[0].rows,
        "tokens_identical": reports.iter().all(|r| r.tokens_identical),
        "definitions": DEFINITIONS,
    });
    let bytes = serde_json::to_vec_pretty(&json).context("cannot render served-vs-inproc.json")?;
    report::write_atomic(&out.join("served-vs-inproc.json"), &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::MonoNs;
    use crate::core::request::{EngineStamps, FinishReason};

    fn req(
        id: u64,
        point: u32,
        submit: u64,
        tokens: &[u64],
        ids: &[u32],
        engine: Option<EngineStamps>,
    ) -> RequestTrace {
        let mut r = RequestTrace::new(id, point, 4, tokens.len() as u32, MonoNs(submit));
        for &t in tokens {
            r.record_tokens(1, MonoNs(t));
        }
        r.finish_ns = r.last_token_ns();
        r.finish_reason = Some(FinishReason::Length);
        r.token_ids = Some(ids.to_vec());
        r.engine = engine;
        r
    }

    #[test]
    fn the_split_adds_up_to_the_ttft() {
        // Submit at 0 ms, vLLM queues at 2, first token at 10, harness sees it at 13;
        // last token 30 (vLLM) and 31 (harness), 3 tokens.
        let ms = |m: u64| m * 1_000_000;
        let e = EngineStamps {
            queued_ns: Some(MonoNs(ms(2))),
            scheduled_ns: Some(MonoNs(ms(3))),
            first_token_ns: Some(MonoNs(ms(10))),
            last_token_ns: Some(MonoNs(ms(30))),
            meta: None,
        };
        let r = req(0, 0, ms(1000), &[ms(1013), ms(1020), ms(1031)], &[1], None);
        assert!(parts(&r).is_none());
        let mut r = r;
        r.submit_ns = MonoNs(0);
        r.token_ns = vec![ms(13), ms(20), ms(31)];
        r.engine = Some(e);
        let p = parts(&r).unwrap().map(Option::unwrap);
        assert_eq!(p, [2.0, 8.0, 3.0, 1.0, 10.0]);
        assert_eq!(p[0] + p[1] + p[2], 13.0);
    }

    #[test]
    fn the_served_engine_cores_cpus_are_named_beside_the_in_process_threads() {
        use crate::engine::HostCompute;
        let inproc = EngineInfo {
            compute: Some(HostCompute {
                threads: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        };
        let served = EngineInfo {
            compute: Some(HostCompute {
                threads: None,
                cpus: Some("[0]".into()),
                reserved_cpus: Some("[1]".into()),
            }),
            ..Default::default()
        };
        let n = compute_note(&inproc, &served).unwrap();
        assert!(n.contains("2 torch threads"), "{n}");
        assert!(n.contains("CPUs [0] (vLLM keeps CPUs [1]"), "{n}");
        // No binding logged (a GPU server): nothing said.
        assert_eq!(compute_note(&inproc, &EngineInfo::default()), None);
    }

    #[test]
    fn token_ids_are_compared_by_request() {
        let a = vec![
            req(0, 0, 0, &[1], &[5, 6], None),
            req(1, 0, 0, &[1], &[7], None),
        ];
        let mut b = vec![
            req(0, 0, 0, &[1], &[5, 6], None),
            req(1, 0, 0, &[1], &[8], None),
        ];
        let (same, total, diffs) = token_parity(&a, &b);
        assert_eq!((same, total), (1, 2));
        assert!(
            diffs[0].contains("request 1: first difference at token 0"),
            "{diffs:?}"
        );
        b[1].token_ids = Some(vec![7]);
        assert_eq!(token_parity(&a, &b).0, 2);
    }

    #[test]
    fn pairs_give_the_mean_difference_and_its_range() {
        let rep = |served: f64| Report {
            rows: vec![row("batch=1", "TTFT p50", "ms", Some(100.0), Some(served))],
            text:
                "Served vs in-process: vllm 1 on m\nGreedy token ids: 2 of 2 requests identical\n"
                    .into(),
            tokens_identical: true,
        };
        let t = spread(&[rep(110.0), rep(130.0), rep(120.0)]);
        assert!(t.contains("over 3 interleaved pairs: vllm 1 on m"), "{t}");
        assert!(t.contains("+20.00 [+10.00..+30.00]"), "{t}");
        assert!(t.contains("+20.0 % [+10.0..+30.0]"), "{t}");
        assert!(t.contains(" 120.00 |"), "{t}");
        assert_eq!(t.matches("Greedy token ids: 2 of 2").count(), 3, "{t}");
    }

    #[test]
    fn deltas_and_refusals() {
        let r = row("batch=1", "TTFT p50", "ms", Some(100.0), Some(125.0));
        assert_eq!((r.delta, r.delta_pct), (Some(25.0), Some(25.0)));
        assert_eq!(row("p", "x", "ms", None, Some(1.0)).delta, None);
        let e = child_args(RunArgs {
            engine: Some("vllm".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.flag, "engine");
        assert!(e.message.contains("drop --engine"));
        let e = child_args(RunArgs {
            temperature: Some(0.7),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.flag, "temperature");
        assert!(e.message.contains("greedy"));
        let c = child_args(RunArgs::default()).unwrap();
        assert_eq!((c.temperature, c.save_token_ids), (Some(0.0), Some(true)));
    }
}
