//! Plots of one or more result sets, as PNG and SVG (plotters): output throughput vs
//! load with its confidence intervals, TTFT/TPOT/ITL p50 and p99 vs load, the
//! latency–throughput curve (per-user vs total output throughput), scaling efficiency
//! relative to the lightest load, and GPU telemetry vs load when a run carries it.
//! Several runs are overlaid, one colour each, so engines compare at a glance. Plots
//! render results; they measure nothing.
//!
//! Text needs a font file: the first of the usual DejaVu / Liberation paths, else what
//! `fc-match sans-serif` names. Without one, plotting fails with a clear error and the
//! run's other outputs are unaffected.

use super::{PointResult, RunResult};
use crate::driver::LoadPoint;
use crate::metrics::catalog::{Metric, Reading, CATALOG};
use crate::metrics::{Distribution, Summary};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("no font for plot text: install fonts-dejavu-core (apt-get install fonts-dejavu-core), or set LLM_HARNESS_FONT=FILE.ttf")]
    NoFont,
    #[error(
        "cannot plot runs of different load modes together ({0} and {1}); plot them separately"
    )]
    MixedModes(&'static str, &'static str),
    #[error("cannot draw {file}: {message}")]
    Draw { file: PathBuf, message: String },
}

/// One run on a plot: its legend label and its points.
pub struct Curve<'a> {
    pub label: String,
    pub run: &'a RunResult,
}

impl<'a> Curve<'a> {
    /// `engine version · model · host`, the legend of a run.
    pub fn of(run: &'a RunResult) -> Curve<'a> {
        let m = &run.meta;
        let model = m
            .model
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| m.engine.model.clone());
        Curve {
            label: format!(
                "{} {} · {} · {}",
                m.engine.name, m.engine.version, model, m.host.hostname
            ),
            run,
        }
    }

    fn points(&self) -> impl Iterator<Item = &PointResult> {
        self.run.points.iter()
    }
}

/// Registers a font with plotters once; the error says how to get one.
pub(crate) fn font() -> Result<(), PlotError> {
    static FONT: OnceLock<bool> = OnceLock::new();
    let ok = *FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = std::env::var_os("LLM_HARNESS_FONT")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        candidates.extend(
            [
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/TTF/DejaVuSans.ttf",
                "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            ]
            .map(PathBuf::from),
        );
        if let Ok(o) = std::process::Command::new("fc-match")
            .args(["-f", "%{file}", "sans-serif"])
            .output()
        {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        }
        candidates.iter().any(|p| {
            let Ok(bytes) = std::fs::read(p) else {
                return false;
            };
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    });
    ok.then_some(()).ok_or(PlotError::NoFont)
}

/// The x axis: the load of each point, on a log₂ scale when loads double (1, 2, 4...).
struct XAxis {
    desc: &'static str,
    log2: bool,
    range: std::ops::Range<f64>,
}

impl XAxis {
    fn of(curves: &[Curve]) -> Result<XAxis, PlotError> {
        let mut mode: Option<&'static str> = None;
        let mut values: Vec<f64> = Vec::new();
        for c in curves {
            for p in c.points() {
                let m = p.point.mode();
                match mode {
                    Some(prev) if prev != m => return Err(PlotError::MixedModes(prev, m)),
                    _ => mode = Some(m),
                }
                if p.point.value().is_finite() {
                    values.push(p.point.value());
                }
            }
        }
        let desc = match mode {
            Some("concurrency") => "concurrency (requests in flight)",
            Some("rate") => "request rate (requests/s)",
            _ => "batch size (requests per batch)",
        };
        let (lo, hi) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        if values.is_empty() {
            return Ok(XAxis {
                desc,
                log2: false,
                range: 0.0..1.0,
            });
        }
        // Loads that span a factor of 8 or more read best on a log scale.
        let log2 = lo > 0.0 && hi / lo >= 8.0;
        let range = if log2 {
            (lo.log2() - 0.25)..(hi.log2() + 0.25)
        } else {
            let pad = ((hi - lo) * 0.05).max(0.5);
            (lo - pad).max(0.0)..(hi + pad)
        };
        Ok(XAxis { desc, log2, range })
    }

    fn x(&self, p: &PointResult) -> Option<f64> {
        let v = p.point.value();
        if !v.is_finite() {
            return None; // an `--rate inf` point has no place on a load axis
        }
        Some(if self.log2 { v.log2() } else { v })
    }

    fn label(&self, v: f64) -> String {
        let v = if self.log2 { 2f64.powf(v) } else { v };
        if (v - v.round()).abs() < 1e-6 {
            format!("{}", v.round())
        } else {
            format!("{v:.2}")
        }
    }

    /// Tick count: one per integer power of two on a log axis.
    fn ticks(&self) -> usize {
        if self.log2 {
            (self.range.end - self.range.start).ceil() as usize + 1
        } else {
            10
        }
    }
}

fn colour(i: usize) -> RGBColor {
    // Okabe–Ito: distinct under the common colour-vision deficiencies.
    const C: [RGBColor; 7] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(0, 0, 0),
    ];
    C[i % C.len()]
}

/// A tick label: whole numbers without decimals, small ones with what they need.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `0..=max` padded by 8 %, never empty.
fn y_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let max = values.filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    0.0..(if max > 0.0 { max * 1.08 } else { 1.0 })
}

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A (low, high) interval around a value.
type Interval = Option<(f64, f64)>;

/// A point's value on a panel, with its interval if it has one.
type Value<'f> = dyn Fn(&RunResult, &PointResult) -> Option<(f64, Interval)> + 'f;

/// How a latency metric's distribution is read from a summary.
type DistributionOf = fn(&Summary) -> Option<&Distribution>;

/// A second value of a point, drawn dashed.
type Dashed<'f> = dyn Fn(&PointResult) -> Option<f64> + 'f;

/// One panel: a value per point (with an optional interval) for each curve.
struct Panel<'f> {
    title: &'f str,
    y_desc: &'f str,
    /// (value, optional (low, high)) of a point of a run; `None` leaves it out.
    value: &'f Value<'f>,
    /// A second, dashed series per curve (p99 beside p50; the title says which is which).
    dashed: Option<&'f Dashed<'f>>,
    reference: Option<f64>,
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    x: &XAxis,
    curves: &[Curve],
    panel: &Panel,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mut ys: Vec<f64> = Vec::new();
    for c in curves {
        for p in c.points() {
            if let Some((v, ci)) = (panel.value)(c.run, p) {
                ys.push(v);
                if let Some((_, hi)) = ci {
                    ys.push(hi);
                }
            }
            if let Some(f) = &panel.dashed {
                ys.extend(f(p));
            }
        }
    }
    ys.extend(panel.reference);
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x.range.clone(), y_range(ys.into_iter()))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x.desc)
        .y_desc(panel.y_desc)
        .x_labels(x.ticks())
        .y_labels(8)
        .x_label_formatter(&|v| x.label(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(TRANSPARENT)
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    if let Some(r) = panel.reference {
        let (a, b) = (x.range.start, x.range.end);
        chart
            .draw_series(LineSeries::new([(a, r), (b, r)], BLACK.mix(0.4)))
            .map_err(err)?;
    }
    for (i, c) in curves.iter().enumerate() {
        let col = colour(i);
        let mut pts: Vec<(f64, f64, Interval)> = c
            .points()
            .filter_map(|p| {
                let xv = x.x(p)?;
                let (v, ci) = (panel.value)(c.run, p)?;
                Some((xv, v, ci))
            })
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line = pts.iter().map(|&(a, b, _)| (a, b));
        chart
            .draw_series(LineSeries::new(line.clone(), col.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(line.map(|(a, b)| Circle::new((a, b), 4, col.filled())))
            .map_err(err)?;
        chart
            .draw_series(pts.iter().filter_map(|&(a, v, ci)| {
                let (lo, hi) = ci?;
                Some(ErrorBar::new_vertical(
                    a,
                    lo,
                    v,
                    hi,
                    col.stroke_width(2),
                    10,
                ))
            }))
            .map_err(err)?;
        if let Some(f) = &panel.dashed {
            let mut d: Vec<(f64, f64)> =
                c.points().filter_map(|p| Some((x.x(p)?, f(p)?))).collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(DashedLineSeries::new(d, 8, 5, col.stroke_width(2)))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// The legend, above the plot so it never covers data: one line per run, in its colour.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, curves: &[Curve]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    for (i, c) in curves.iter().enumerate() {
        let y = 10 + 20 * i as i32;
        let col = colour(i);
        area.draw(&PathElement::new(
            [(70, y + 8), (100, y + 8)],
            col.stroke_width(3),
        ))
        .map_err(err)?;
        area.draw(&Text::new(c.label.clone(), (108, y), ("sans-serif", 14)))
            .map_err(err)?;
    }
    Ok(())
}

/// Height of the legend strip for `n` runs.
fn legend_height(n: usize) -> u32 {
    14 + 20 * n as u32
}

/// The latency–throughput curve: per-user output throughput vs total output
/// throughput, each point labelled with its load.
fn draw_tradeoff<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, curves: &[Curve]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let pairs = |c: &Curve| -> Vec<(f64, f64, String)> {
        c.points()
            .filter_map(|p| {
                Some((
                    p.summary.output_throughput?,
                    p.summary.per_user_output_throughput.mean?,
                    p.point.label(),
                ))
            })
            .collect()
    };
    let all: Vec<(f64, f64, String)> = curves.iter().flat_map(&pairs).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Latency–throughput: what one user sees vs what the engine delivers",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            y_range(all.iter().map(|p| p.0)),
            y_range(all.iter().map(|p| p.1)),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("total output throughput (tokens/s)")
        .y_desc("per-user output throughput, mean 1/TPOT (tokens/s)")
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(TRANSPARENT)
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (i, c) in curves.iter().enumerate() {
        let col = colour(i);
        let pts = pairs(c);
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                col.stroke_width(2),
            ))
            .map_err(err)?;
        chart
            .draw_series(pts.iter().map(|p| {
                EmptyElement::at((p.0, p.1))
                    + Circle::new((0, 0), 4, col.filled())
                    + Text::new(p.2.clone(), (6, -14), ("sans-serif", 12))
            }))
            .map_err(err)?;
    }
    Ok(())
}

fn est(e: &crate::metrics::Estimate) -> Option<(f64, Interval)> {
    Some((e.mean?, e.ci95_low.zip(e.ci95_high)))
}

/// Throughput relative to perfect scaling from the lightest load of the run.
fn scaling(run: &RunResult, p: &PointResult) -> Option<f64> {
    let base = run
        .points
        .iter()
        .filter(|q| q.point.value().is_finite() && q.summary.output_throughput.is_some())
        .min_by(|a, b| a.point.value().total_cmp(&b.point.value()))?;
    let t0 = base.summary.output_throughput? / base.point.value();
    Some(p.summary.output_throughput? / (t0 * p.point.value()) * 100.0)
}

/// A measurement figure, as a plot value.
fn figure(p: &PointResult, key: &str) -> Option<(f64, Interval)> {
    Some((p.measures.value(key)?, None))
}

/// GPU telemetry figures plotted when present: (key, title, axis).
const TELEMETRY: &[(&str, &str, &str)] = &[
    ("gpu_utilization_pct", "GPU utilisation", "utilisation (%)"),
    ("gpu_power_w", "GPU power", "mean power (W)"),
    (
        "joules_per_token",
        "Energy per output token",
        "energy (J/token)",
    ),
];

/// One figure: a file stem, its size, and how to draw it.
type Draw<'a> = Box<dyn Fn(&DrawingArea<BitMapBackend, Shift>) -> DrawResult + 'a>;
type DrawSvg<'a> = Box<dyn Fn(&DrawingArea<SVGBackend, Shift>) -> DrawResult + 'a>;

/// Curves for runs named by `names` (their directories): the legend of a run whose
/// engine, version, model and host equal another's also names its directory.
pub fn curves<'a>(runs: &'a [RunResult], names: &[String]) -> Vec<Curve<'a>> {
    let plain: Vec<Curve> = runs.iter().map(Curve::of).collect();
    let labels: Vec<String> = plain.iter().map(|c| c.label.clone()).collect();
    plain
        .into_iter()
        .zip(names)
        .map(|(mut c, n)| {
            if labels.iter().filter(|l| **l == c.label).count() > 1 {
                c.label = format!("{} ({n})", c.label);
            }
            c
        })
        .collect()
}

/// Writes every plot the curves support into `dir` as `NAME.png` and `NAME.svg`;
/// returns the SVG paths (for the HTML report).
pub fn write_plots(curves: &[Curve], dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    font()?;
    let x = XAxis::of(curves)?;
    std::fs::create_dir_all(dir).map_err(|e| PlotError::Draw {
        file: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut written = Vec::new();
    macro_rules! figure {
        ($name:expr, $size:expr, $draw:expr) => {{
            let png = dir.join(format!("{}.png", $name));
            let svg = dir.join(format!("{}.svg", $name));
            let d: Draw = Box::new($draw);
            let s: DrawSvg = Box::new($draw);
            let fail = |file: &Path, message: String| PlotError::Draw {
                file: file.to_path_buf(),
                message,
            };
            let (w, h): (u32, u32) = $size;
            let size = (w, h + legend_height(curves.len()));
            {
                let root = BitMapBackend::new(&png, size).into_drawing_area();
                root.fill(&WHITE).map_err(|e| fail(&png, e.to_string()))?;
                let (top, plot) = root.split_vertically(legend_height(curves.len()));
                draw_legend(&top, curves).map_err(|m| fail(&png, m))?;
                d(&plot).map_err(|m| fail(&png, m))?;
                root.present().map_err(|e| fail(&png, e.to_string()))?;
            }
            {
                let root = SVGBackend::new(&svg, size).into_drawing_area();
                root.fill(&WHITE).map_err(|e| fail(&svg, e.to_string()))?;
                let (top, plot) = root.split_vertically(legend_height(curves.len()));
                draw_legend(&top, curves).map_err(|m| fail(&svg, m))?;
                s(&plot).map_err(|m| fail(&svg, m))?;
                root.present().map_err(|e| fail(&svg, e.to_string()))?;
            }
            written.push(svg);
        }};
    }

    let thr = |_: &RunResult, p: &PointResult| {
        est(&p.summary.rounds.output_throughput)
            .or_else(|| Some((p.summary.output_throughput?, None)))
    };
    figure!("throughput", (1000, 620), |a| draw_panel(
        a,
        &x,
        curves,
        &Panel {
            title: "Output throughput (mean over rounds, 95 % interval)",
            y_desc: "output throughput (tokens/s)",
            value: &thr,
            dashed: None,
            reference: None,
        }
    ));
    // One panel per latency metric the catalogue plots (TTFT, TPOT, ITL).
    let latency: Vec<(&Metric, DistributionOf)> = curves
        .first()
        .map_or(CATALOG, |c| c.run.catalog)
        .iter()
        .filter(|m| m.plot)
        .filter_map(|m| match m.reading {
            Reading::Distribution(get) => Some((m, get)),
            Reading::Scalar(_) => None,
        })
        .collect();
    let width = 500 * latency.len().max(1) as u32;
    figure!("latency", (width, 520), |a: &DrawingArea<_, Shift>| {
        let panels = a.split_evenly((1, latency.len().max(1)));
        for (area, (m, get)) in panels.iter().zip(&latency) {
            let median = |_: &RunResult, p: &PointResult| Some((get(&p.summary)?.median?, None));
            let p99 = |p: &PointResult| get(&p.summary)?.p99;
            // "time to first token (ms)": the definition's own name for it.
            let what = m.definition.split(':').next().unwrap_or(m.label);
            draw_panel(
                area,
                &x,
                curves,
                &Panel {
                    title: &format!("{}: p50 solid, p99 dashed", m.label),
                    y_desc: &format!("{what} ({})", m.unit.label()),
                    value: &median,
                    dashed: Some(&p99),
                    reference: None,
                },
            )?;
        }
        Ok(())
    });
    figure!("latency_throughput", (1000, 620), |a| draw_tradeoff(
        a, curves
    ));
    let has_scale = curves.iter().any(|c| c.run.points.len() > 1)
        && !matches!(
            curves
                .first()
                .and_then(|c| c.run.points.first())
                .map(|p| p.point),
            Some(LoadPoint::Rate { .. } | LoadPoint::Ramp { .. } | LoadPoint::Trace { .. })
        );
    if has_scale {
        figure!("scaling", (1000, 620), |a| {
            draw_panel(
            a,
            &x,
            curves,
            &Panel {
                title: "Scaling efficiency: throughput / (load × per-unit throughput at the lightest load)",
                y_desc: "efficiency (%)",
                value: &|run: &RunResult, p: &PointResult| Some((scaling(run, p)?, None)),
                dashed: None,
                reference: Some(100.0),
            }
        )
        });
    }
    for &(key, title, desc) in TELEMETRY {
        if curves
            .iter()
            .any(|c| c.points().any(|p| p.measures.value(key).is_some()))
        {
            figure!(key, (1000, 620), |a| draw_panel(
                a,
                &x,
                curves,
                &Panel {
                    title,
                    y_desc: desc,
                    value: &|_: &RunResult, p: &PointResult| figure(p, key),
                    dashed: None,
                    reference: None,
                }
            ));
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::measure::{Figure, Measure};
    use crate::report::tests::run;
    use serde::Serialize;

    /// Telemetry as the GPU work will record it: one measurement with these keys.
    #[derive(Serialize)]
    struct Gpu {
        power: f64,
    }

    impl Measure for Gpu {
        const NAME: &'static str = "gpu";
        const DEFINITION: &'static str = "test telemetry";
        fn figures(&self) -> Vec<Figure> {
            vec![
                Figure::new("gpu_power_w", Some(self.power), "W"),
                Figure::new("joules_per_token", Some(self.power / 100.0), "J"),
            ]
        }
    }

    #[test]
    fn telemetry_plots_appear_only_with_telemetry() {
        if font().is_err() {
            eprintln!("skipped: no font for plot text here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Two load modes cannot share an axis: the fixture mixes batch and concurrency.
        let (mixed, _) = run(false);
        assert!(matches!(
            write_plots(&[Curve::of(&mixed)], dir.path()),
            Err(PlotError::MixedModes("batch", "concurrency"))
        ));
        let (mut r, _) = run(false);
        r.points.truncate(1);
        r.points[0].measures.add(&Gpu { power: 350.0 });
        let out = dir.path().join("gpu");
        let files = write_plots(&[Curve::of(&r)], &out).unwrap();
        assert!(files.contains(&out.join("gpu_power_w.svg")), "{files:?}");
        let (plain, _) = run(false);
        let mut plain = plain;
        plain.points.truncate(1);
        let none = write_plots(&[Curve::of(&plain)], &dir.path().join("plain")).unwrap();
        assert!(
            !none.iter().any(|f| f.to_string_lossy().contains("gpu_")),
            "{none:?}"
        );
        assert!(files.contains(&out.join("joules_per_token.svg")));
        assert!(!files.contains(&out.join("gpu_utilization_pct.svg")));
        let svg = std::fs::read_to_string(out.join("gpu_power_w.svg")).unwrap();
        assert!(svg.contains("mean power (W)") && svg.contains("GPU power"));
    }
}
