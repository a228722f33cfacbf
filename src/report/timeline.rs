//! The run as a timeline: `trace.json` in the Chrome / Perfetto trace-event format
//! (what ui.perfetto.dev, chrome://tracing and torch.profiler's export read), and the
//! per-point step plots of report.html. Both render the raw records (`requests.jsonl`,
//! `steps.jsonl`); nothing here measures.
//!
//! Layout of `trace.json`: one process per point (named by its label). In it, track 1
//! holds the engine steps (`X` spans from the engine call to its return, the step's
//! composition as args), track 2 the driver's own time before each step, track 3 the
//! profiler window where `--profile` took one, and one track per request: `queued`
//! (arrival → submit, open loops), `prefill` (submit → first token), `decode` (first
//! token → finish), with an instant per token event. Counters: `in_flight`, and
//! `running`, `waiting`, `kv_usage` where the engine reports them. Times are µs from
//! the run's earliest stamp; `otherData.origin_monotonic_ns` is that stamp on
//! CLOCK_MONOTONIC, the clock of every stamp in the result, and
//! `otherData.realtime_minus_monotonic_ns` what turns it into the wall-clock time
//! torch.profiler's traces use (docs/timeline.md has the formula).

use super::RunResult;
use crate::report::plot::PlotError;
use crate::trace::{RequestTrace, StepRecord};
use plotters::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The trace-event file of a run.
pub const TRACE_FILE: &str = "trace.json";

/// Token instants a trace keeps at most; past that it keeps the spans only (a note
/// says so), so the file stays loadable.
pub const MAX_TOKEN_INSTANTS: usize = 2_000_000;

const STEPS_TID: u64 = 1;
const GAPS_TID: u64 = 2;
const PROFILE_TID: u64 = 3;
/// Request tracks come after the fixed ones: tid = this + request id.
const REQUEST_TID: u64 = 100;

/// One trace event; the fields each phase type needs, the rest skipped.
#[derive(Serialize)]
struct Event<'a> {
    name: &'a str,
    ph: &'static str,
    pid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    /// Instant scope (`t`: the thread's track).
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<serde_json::Value>,
}

impl<'a> Event<'a> {
    fn meta(name: &'a str, pid: u64, tid: Option<u64>, args: serde_json::Value) -> Event<'a> {
        Event {
            name,
            ph: "M",
            pid,
            tid,
            ts: None,
            dur: None,
            s: None,
            args: Some(args),
        }
    }

    fn span(name: &'a str, pid: u64, tid: u64, ts: f64, dur: f64) -> Event<'a> {
        Event {
            name,
            ph: "X",
            pid,
            tid: Some(tid),
            ts: Some(ts),
            dur: Some(dur.max(0.0)),
            s: None,
            args: None,
        }
    }
}

/// Appends one event to the array being written.
struct Sink {
    out: Vec<u8>,
    first: bool,
}

impl Sink {
    fn push(&mut self, e: &Event) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'\n');
        // An Event holds strings, numbers and JSON values only: it always serializes.
        let _ = serde_json::to_writer(&mut self.out, e);
    }
}

/// `trace.json`'s bytes for a run's records and steps, and a note when the token
/// instants were left out to keep it bounded.
pub fn render(
    run: &RunResult,
    records: &[RequestTrace],
    steps: &[StepRecord],
) -> (Vec<u8>, Option<String>) {
    let origin = records
        .iter()
        .map(|r| r.intended_ns.unwrap_or(r.submit_ns).0.min(r.submit_ns.0))
        .chain(steps.iter().map(|s| s.start_ns.0.saturating_sub(s.gap_ns)))
        .min()
        .unwrap_or(0);
    let us = |ns: u64| ns.saturating_sub(origin) as f64 / 1e3;
    let token_events: usize = records.iter().map(|r| r.token_ns.len()).sum();
    let tokens = token_events <= MAX_TOKEN_INSTANTS;
    let note = (!tokens).then(|| {
        format!(
            "trace.json: {token_events} token events are more than {MAX_TOKEN_INSTANTS}; \
             it keeps the request spans and steps, not an instant per token"
        )
    });
    let mut sink = Sink {
        out: Vec::with_capacity(256 + 120 * (steps.len() * 3 + records.len() * 3)),
        first: true,
    };
    let other = serde_json::json!({
        "producer": format!("llm-harness {}", run.meta.harness.version),
        "engine": format!("{} {}", run.meta.engine.name, run.meta.engine.version),
        "clock": "CLOCK_MONOTONIC",
        "origin_monotonic_ns": origin,
        "realtime_minus_monotonic_ns": run.meta.driver.realtime_minus_monotonic_ns,
        "token_instants": tokens,
    });
    sink.out
        .extend_from_slice(b"{\"displayTimeUnit\":\"ms\",\"otherData\":");
    let _ = serde_json::to_writer(&mut sink.out, &other);
    sink.out.extend_from_slice(b",\"traceEvents\":[");

    let mut by_point: BTreeMap<u32, (Vec<&RequestTrace>, Vec<&StepRecord>)> = BTreeMap::new();
    for r in records {
        by_point.entry(r.point).or_default().0.push(r);
    }
    for s in steps {
        by_point.entry(s.point).or_default().1.push(s);
    }
    for (point, (reqs, steps)) in &by_point {
        let pid = u64::from(*point) + 1;
        let p = run.points.get(*point as usize);
        let label = p.map_or_else(|| format!("point {point}"), |p| p.point.label());
        sink.push(&Event::meta(
            "process_name",
            pid,
            None,
            serde_json::json!({ "name": label }),
        ));
        sink.push(&Event::meta(
            "process_sort_index",
            pid,
            None,
            serde_json::json!({ "sort_index": pid }),
        ));
        for (tid, name) in [
            (STEPS_TID, "engine steps"),
            (GAPS_TID, "harness (driver time before each step)"),
        ] {
            track(&mut sink, pid, tid, name);
        }
        for s in steps {
            let mut e = Event::span(
                "step",
                pid,
                STEPS_TID,
                us(s.start_ns.0),
                s.engine_call_ns() as f64 / 1e3,
            );
            let mut args = serde_json::to_value(&s.engine).unwrap_or_default();
            if let Some(m) = args.as_object_mut() {
                m.insert("step".into(), s.step.into());
                m.insert("in_flight".into(), s.in_flight.into());
                m.insert("tokens".into(), s.tokens.into());
                m.insert("finished".into(), s.finished.into());
                if let Some(g) = s.gpu_ms {
                    m.insert("gpu_ms".into(), g.into());
                }
            }
            e.args = Some(args);
            sink.push(&e);
            if s.gap_ns > 0 {
                let ts = us(s.start_ns.0.saturating_sub(s.gap_ns));
                sink.push(&Event::span(
                    "harness",
                    pid,
                    GAPS_TID,
                    ts,
                    s.gap_ns as f64 / 1e3,
                ));
            }
            let ts = us(s.start_ns.0);
            let mut counter = |name: &'static str, v: Option<f64>| {
                if let Some(v) = v {
                    sink.push(&Event {
                        name,
                        ph: "C",
                        pid,
                        tid: None,
                        ts: Some(ts),
                        dur: None,
                        s: None,
                        args: Some(serde_json::json!({ name: v })),
                    });
                }
            };
            counter("in_flight", Some(f64::from(s.in_flight)));
            counter("running", s.engine.running.map(f64::from));
            counter("waiting", s.engine.waiting.map(f64::from));
            counter("kv_usage", s.engine.kv_usage);
        }
        if let Some(w) = p.and_then(|p| profile_window(p, steps)) {
            track(&mut sink, pid, PROFILE_TID, "profiler window (--profile)");
            let mut e = Event::span(
                "profiler window",
                pid,
                PROFILE_TID,
                us(w.0),
                (w.1 - w.0) as f64 / 1e3,
            );
            e.args = Some(serde_json::json!({ "trace_file": w.2 }));
            sink.push(&e);
        }
        for r in reqs {
            request(&mut sink, pid, r, &us, tokens);
        }
    }
    sink.out.extend_from_slice(b"\n]}\n");
    (sink.out, note)
}

fn track(sink: &mut Sink, pid: u64, tid: u64, name: &str) {
    sink.push(&Event::meta(
        "thread_name",
        pid,
        Some(tid),
        serde_json::json!({ "name": name }),
    ));
    sink.push(&Event::meta(
        "thread_sort_index",
        pid,
        Some(tid),
        serde_json::json!({ "sort_index": tid }),
    ));
}

/// The profiler window of a point, from its `profile` measure: the first `steps`
/// step records of the measured phase, with the profiler's trace file.
fn profile_window(p: &super::PointResult, steps: &[&StepRecord]) -> Option<(u64, u64, String)> {
    let m = p.measures.0.iter().find(|m| m.name == "profile")?;
    let n = m.detail.get("steps")?.as_u64()? as usize;
    let file = m.detail.get("trace_file")?.as_str()?.to_string();
    let first = steps.first()?;
    let last = steps.get(n.checked_sub(1)?).or(steps.last())?;
    Some((first.start_ns.0, last.end_ns.0, file))
}

fn request(sink: &mut Sink, pid: u64, r: &RequestTrace, us: &dyn Fn(u64) -> f64, tokens: bool) {
    let tid = REQUEST_TID + r.id;
    let name = match (r.conversation, r.turn) {
        (Some(c), Some(t)) => format!("request {} (conversation {c} turn {t})", r.id),
        _ => format!("request {}", r.id),
    };
    track(sink, pid, tid, &name);
    let submit = r.submit_ns.0;
    if let Some(i) = r.intended_ns.filter(|i| i.0 < submit) {
        sink.push(&Event::span(
            "queued",
            pid,
            tid,
            us(i.0),
            (submit - i.0) as f64 / 1e3,
        ));
    }
    let first = r.first_token_ns().map(|f| f.0);
    let end = r.finish_ns.map(|f| f.0).or(r.last_token_ns().map(|l| l.0));
    let args = serde_json::json!({
        "id": r.id,
        "input_len": r.input_len,
        "output_len": r.output_len,
        "output_tokens": r.output_tokens(),
        "finish_reason": r.finish_reason,
        "error": r.error,
    });
    // Prefill runs to the first token, or to the end of a request that got none.
    if let Some(to) = first.or(end) {
        let mut e = Event::span(
            "prefill",
            pid,
            tid,
            us(submit),
            to.saturating_sub(submit) as f64 / 1e3,
        );
        e.args = Some(args.clone());
        sink.push(&e);
    }
    if let (Some(f), Some(e)) = (first, end) {
        let mut ev = Event::span("decode", pid, tid, us(f), e.saturating_sub(f) as f64 / 1e3);
        ev.args = Some(args);
        sink.push(&ev);
    }
    if tokens {
        for (i, &off) in r.token_ns.iter().enumerate() {
            let n = r.count_at(i);
            sink.push(&Event {
                name: "token",
                ph: "i",
                pid,
                tid: Some(tid),
                ts: Some(us(submit + off)),
                dur: None,
                s: Some("t"),
                args: (n > 1).then(|| serde_json::json!({ "tokens": n })),
            });
        }
    }
}

/// Steps a plot draws at most; more are thinned evenly (every k-th), which keeps the
/// shape and the SVG small.
const MAX_PLOTTED_STEPS: usize = 20_000;

/// One figure per point with steps: running batch (or requests in flight), waiting
/// queue and KV usage over the point's time, and step time against the tokens per
/// step. PNG and SVG under `dir`; returns the SVGs.
pub fn step_plots(
    run: &RunResult,
    steps: &[StepRecord],
    dir: &Path,
) -> Result<Vec<PathBuf>, PlotError> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    super::plot::font()?;
    std::fs::create_dir_all(dir).map_err(|e| PlotError::Draw {
        file: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut by_point: BTreeMap<u32, Vec<&StepRecord>> = BTreeMap::new();
    for s in steps {
        by_point.entry(s.point).or_default().push(s);
    }
    let mut written = Vec::new();
    for (point, mut steps) in by_point {
        if steps.len() > MAX_PLOTTED_STEPS {
            let k = steps.len().div_ceil(MAX_PLOTTED_STEPS);
            steps = steps.into_iter().step_by(k).collect();
        }
        let label = run
            .points
            .get(point as usize)
            .map_or_else(|| format!("point {point}"), |p| p.point.label());
        let name = format!("steps-{}", label.replace(['=', ' ', '/', ':'], "_"));
        let fail = |file: &Path, message: String| PlotError::Draw {
            file: file.to_path_buf(),
            message,
        };
        let png = dir.join(format!("{name}.png"));
        let svg = dir.join(format!("{name}.svg"));
        {
            let root = BitMapBackend::new(&png, (1000, 900)).into_drawing_area();
            draw_steps(&root, &label, &steps).map_err(|m| fail(&png, m))?;
            root.present().map_err(|e| fail(&png, e.to_string()))?;
        }
        {
            let root = SVGBackend::new(&svg, (1000, 900)).into_drawing_area();
            draw_steps(&root, &label, &steps).map_err(|m| fail(&svg, m))?;
            root.present().map_err(|e| fail(&svg, e.to_string()))?;
        }
        written.push(svg);
    }
    Ok(written)
}

type Area<'a, DB> = DrawingArea<DB, plotters::coord::Shift>;

/// A gauge read after each step, as a staircase: each value holds until the next.
fn held(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &(x, y)) in points.iter().enumerate() {
        if i > 0 {
            out.push((x, points[i - 1].1));
        }
        out.push((x, y));
    }
    out
}

fn draw_steps<DB: DrawingBackend>(
    root: &Area<DB>,
    label: &str,
    steps: &[&StepRecord],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let panels = root.split_evenly((3, 1));
    let t0 = steps.first().map_or(0, |s| s.start_ns.0);
    let at = |ns: u64| ns.saturating_sub(t0) as f64 / 1e9;
    let t = |s: &StepRecord| at(s.end_ns.0);
    let t_max = steps.last().map_or(1.0, |s| t(s)).max(1e-6);
    let blue = RGBColor(0, 114, 178);
    let orange = RGBColor(230, 159, 0);
    let green = RGBColor(0, 158, 115);

    // 1: batch (requests computed) or in flight, and the waiting queue. The batch is
    // drawn over each step's span; the gauges hold from one step's end to the next.
    let batch: Vec<(f64, f64)> = steps
        .iter()
        .flat_map(|s| {
            let b = crate::metrics::steps::batch(s).unwrap_or(f64::from(s.in_flight));
            [(at(s.start_ns.0), b), (t(s), b)]
        })
        .collect();
    let reported = steps
        .iter()
        .any(|s| crate::metrics::steps::batch(s).is_some());
    let waiting = held(
        steps
            .iter()
            .filter_map(|s| Some((t(s), f64::from(s.engine.waiting?))))
            .collect(),
    );
    let y_max = batch
        .iter()
        .chain(&waiting)
        .map(|p| p.1)
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(&panels[0])
        .caption(
            format!("{label}: requests per step over time"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("time in the point (s)")
        .y_desc("requests")
        .draw()
        .map_err(e)?;
    let what = if reported {
        "batch (prefill + decode requests, engine)"
    } else {
        "in flight (driver; the engine reports no batch)"
    };
    c.draw_series(LineSeries::new(batch, blue.stroke_width(2)))
        .map_err(e)?
        .label(what)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], blue.stroke_width(2)));
    if !waiting.is_empty() {
        c.draw_series(LineSeries::new(waiting, orange.stroke_width(2)))
            .map_err(e)?
            .label("waiting (engine queue)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], orange.stroke_width(2)));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;

    // 2: KV-cache usage.
    let kv = held(
        steps
            .iter()
            .filter_map(|s| Some((t(s), s.engine.kv_usage? * 100.0)))
            .collect(),
    );
    let mut c = ChartBuilder::on(&panels[1])
        .caption(
            if kv.is_empty() {
                "KV-cache usage: not reported by this engine".to_string()
            } else {
                "KV-cache usage after each step".to_string()
            },
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..t_max, 0.0..100.0)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("time in the point (s)")
        .y_desc("KV cache in use (%)")
        .draw()
        .map_err(e)?;
    c.draw_series(LineSeries::new(kv, green.stroke_width(2)))
        .map_err(e)?;

    // 3: step time against tokens per step.
    let ms = |s: &StepRecord| s.engine_call_ns() as f64 / 1e6;
    let prefill: Vec<(f64, f64)> = steps
        .iter()
        .filter_map(|s| {
            s.engine
                .prefill_tokens
                .filter(|&p| p > 0)
                .map(|p| (f64::from(p), ms(s)))
        })
        .collect();
    let decode: Vec<(f64, f64)> = steps
        .iter()
        .filter(|s| s.engine.prefill_tokens.is_none_or(|p| p == 0))
        .map(|s| (f64::from(s.engine.decode_tokens.unwrap_or(s.tokens)), ms(s)))
        .collect();
    let x_max = prefill
        .iter()
        .chain(&decode)
        .map(|p| p.0)
        .fold(1.0f64, f64::max)
        * 1.05;
    let y_max = prefill
        .iter()
        .chain(&decode)
        .map(|p| p.1)
        .fold(0.1f64, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(&panels[2])
        .caption("Step time against tokens per step", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("tokens in the step")
        .y_desc("engine call (ms)")
        .draw()
        .map_err(e)?;
    c.draw_series(decode.iter().map(|&p| Circle::new(p, 3, blue.filled())))
        .map_err(e)?
        .label("decode-only steps: decode tokens")
        .legend(move |(x, y)| Circle::new((x + 8, y), 3, blue.filled()));
    if !prefill.is_empty() {
        c.draw_series(
            prefill
                .iter()
                .map(|&p| TriangleMarker::new(p, 5, orange.filled())),
        )
        .map_err(e)?
        .label("steps with prefill: prompt tokens")
        .legend(move |(x, y)| TriangleMarker::new((x + 8, y), 5, orange.filled()));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::held;

    #[test]
    fn a_gauge_holds_its_value_until_the_next_step() {
        assert_eq!(
            held(vec![(1.0, 32.0), (3.0, 0.0), (4.0, 5.0)]),
            vec![(1.0, 32.0), (3.0, 32.0), (3.0, 0.0), (4.0, 0.0), (4.0, 5.0)]
        );
        assert!(held(Vec::new()).is_empty());
    }
}
