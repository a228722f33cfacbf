//! `harness compare`: the same points across runs (engines, versions, configs,
//! commits) side by side, with ratios against the first run and whether each
//! difference is larger than the runs' own spread. Runs whose workloads differ are
//! refused: a ratio between different workloads measures the workloads.

use super::RunResult;
use crate::driver::LoadPoint;
use crate::metrics::catalog::{Better, Metric, Reading};
use crate::metrics::Estimate;
use comfy_table::presets::ASCII_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{0}")]
    Mismatch(String),
}

/// One compared value: the run's estimate and, against the first run, the ratio and
/// whether the difference is beyond both runs' spread.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub estimate: Estimate,
    pub ratio: Option<f64>,
    /// `|a - b| > sqrt(h_a² + h_b²)` with h the 95 % half-widths: the difference is
    /// larger than the two intervals together allow. `None` without intervals.
    pub beyond_spread: Option<bool>,
}

/// One row: a point of one run.
#[derive(Clone, Debug)]
pub struct Row {
    pub point: String,
    pub run: usize,
    pub cells: Vec<Cell>,
}

#[derive(Clone, Debug)]
pub struct Comparison {
    /// A label per run: `engine version`, made unique with the directory name.
    pub runs: Vec<String>,
    /// The metrics compared: those of the first run's catalogue with a rounds estimate
    /// and a direction ([`Metric::compare`]), present in some run, in catalogue order.
    pub metrics: Vec<&'static Metric>,
    pub rows: Vec<Row>,
}

/// What a run's workload is, for the comparability check.
fn workload_key(r: &RunResult) -> String {
    let m = &r.meta;
    format!(
        "{} seed {} ignore_eos {} temperature {}",
        serde_json::to_string(&m.workload.spec).unwrap_or_default(),
        m.driver.seed,
        m.driver.sampling.ignore_eos,
        m.driver.sampling.temperature
    )
}

fn same_load(a: &LoadPoint, b: &LoadPoint) -> bool {
    a.mode() == b.mode() && a.label() == b.label()
}

/// A run's parallel layout shape (`tp1 pp1 dp1` without one).
fn layout_shape(r: &RunResult) -> String {
    crate::engine::layout::shape_of(r.meta.engine.layout.as_ref())
}

/// Compares `runs` (at least two) point by point. `names` label them (directory names).
/// Runs of different parallel layouts are refused unless `different_layouts`: their
/// ratios then mix the layout with the engine (the per-device figures are the ones to read).
pub fn compare(
    runs: &[RunResult],
    names: &[String],
    different_layouts: bool,
) -> Result<Comparison, CompareError> {
    let first = &runs[0];
    for (r, name) in runs.iter().zip(names).skip(1) {
        if !different_layouts && layout_shape(r) != layout_shape(first) {
            return Err(CompareError::Mismatch(format!(
                "{name} ran the layout {} and {} ran {}; compare runs of one layout, or pass --allow-different-layouts (then read output_throughput_per_device)",
                layout_shape(r),
                names[0],
                layout_shape(first)
            )));
        }
        if workload_key(r) != workload_key(first) {
            return Err(CompareError::Mismatch(format!(
                "{name} ran another workload than {}: {} vs {}; compare runs made with the same --dataset, --input-len, --output-len, --seed, --ignore-eos and --temperature",
                names[0],
                describe(r),
                describe(first)
            )));
        }
        if let (Some(a), Some(b)) = (r.points.first(), first.points.first()) {
            if a.point.mode() != b.point.mode() {
                return Err(CompareError::Mismatch(format!(
                    "{name} swept {} and {} swept {}; compare runs of the same load mode",
                    a.point.mode(),
                    names[0],
                    b.point.mode()
                )));
            }
        }
    }
    let layouts_differ = runs.iter().any(|r| layout_shape(r) != layout_shape(first));
    let plain: Vec<String> = runs
        .iter()
        .map(|r| {
            let l = format!("{} {}", r.meta.engine.name, r.meta.engine.version);
            if layouts_differ {
                format!("{l} [{}]", layout_shape(r))
            } else {
                l
            }
        })
        .collect();
    let labels: Vec<String> = plain
        .iter()
        .zip(names)
        .map(|(l, n)| {
            if plain.iter().filter(|x| *x == l).count() > 1 {
                format!("{l} ({n})")
            } else {
                l.clone()
            }
        })
        .collect();
    // Every load point of any run, in the first run's order, then the others'.
    let mut points: Vec<LoadPoint> = Vec::new();
    for r in runs {
        for p in &r.points {
            if !points.iter().any(|q| same_load(q, &p.point)) {
                points.push(p.point);
            }
        }
    }
    let metrics: Vec<&'static Metric> = first
        .catalog
        .iter()
        .filter(|m| m.compare.is_some() && m.rounds.is_some())
        // Accuracy only where a run was scored.
        .filter(|m| {
            !m.only_when_present
                || runs
                    .iter()
                    .any(|r| r.points.iter().any(|p| m.present(&p.summary)))
        })
        .collect();
    let estimate = |m: &Metric, p: &super::PointResult| -> Estimate {
        m.rounds
            .as_ref()
            .map(|r| (r.estimate)(&p.summary).clone())
            .unwrap_or_default()
    };
    let mut rows = Vec::new();
    for lp in &points {
        let base = first.points.iter().find(|p| same_load(&p.point, lp));
        for (i, r) in runs.iter().enumerate() {
            let Some(p) = r.points.iter().find(|p| same_load(&p.point, lp)) else {
                continue;
            };
            let cells = metrics
                .iter()
                .map(|m| {
                    let b = base.map(|b| estimate(m, b));
                    cell(estimate(m, p), b.as_ref(), i == 0)
                })
                .collect();
            rows.push(Row {
                point: lp.label(),
                run: i,
                cells,
            });
        }
    }
    Ok(Comparison {
        runs: labels,
        metrics,
        rows,
    })
}

fn cell(e: Estimate, base: Option<&Estimate>, is_base: bool) -> Cell {
    let (ratio, beyond) = match (base, is_base) {
        (Some(b), false) => {
            let ratio = e
                .mean
                .zip(b.mean)
                .and_then(|(m, bm)| (bm != 0.0).then(|| m / bm));
            let beyond = match (e.mean, b.mean, e.ci95_half_width, b.ci95_half_width) {
                (Some(m), Some(bm), Some(h), Some(bh)) => {
                    Some((m - bm).abs() > (h * h + bh * bh).sqrt())
                }
                _ => None,
            };
            (ratio, beyond)
        }
        _ => (None, None),
    };
    Cell {
        estimate: e,
        ratio,
        beyond_spread: beyond,
    }
}

fn describe(r: &RunResult) -> String {
    let m = &r.meta;
    format!(
        "{} (seed {}{})",
        m.workload
            .description
            .split(", seed")
            .next()
            .unwrap_or(&m.workload.description),
        m.driver.seed,
        if m.driver.sampling.ignore_eos {
            ", ignore-eos"
        } else {
            ""
        }
    )
}

fn or_none(names: Vec<&str>) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl Cell {
    /// `12.3 ± 0.4`
    pub fn value(&self) -> String {
        self.estimate.display(2)
    }

    /// `×1.23 beyond spread`, `×0.98 within spread`, `-` for the first run.
    pub fn versus(&self) -> String {
        match (self.ratio, self.beyond_spread) {
            (Some(r), Some(true)) => format!("×{r:.2} beyond spread"),
            (Some(r), Some(false)) => format!("×{r:.2} within spread"),
            (Some(r), None) => format!("×{r:.2}"),
            _ => "-".into(),
        }
    }
}

impl Comparison {
    /// The header of the side-by-side table: each metric's rounds mean
    /// (`TTFT mean`, `out tok/s`) and its ratio to the first run.
    pub fn header(&self) -> Vec<String> {
        let mut h = vec!["point".to_string(), "run".to_string()];
        for m in &self.metrics {
            h.push(match m.reading {
                Reading::Scalar(_) => m.label.to_string(),
                Reading::Distribution(_) => format!("{} mean", m.label),
            });
            h.push("vs first".to_string());
        }
        h
    }

    pub fn cells(&self, row: &Row) -> Vec<String> {
        let mut c = vec![row.point.clone(), self.runs[row.run].clone()];
        for cell in &row.cells {
            c.push(cell.value());
            c.push(cell.versus());
        }
        c
    }

    /// What the table shows, for its footnote.
    pub fn footnote(&self) -> String {
        let way = |b: Better| -> Vec<&str> {
            self.metrics
                .iter()
                .filter(|m| m.compare == Some(b))
                .map(|m| m.label)
                .collect()
        };
        let accuracy = if self.metrics.iter().any(|m| m.name == "accuracy") {
            " (accuracy: correct / scored ± half its Wilson 95 % interval, over requests)"
        } else {
            ""
        };
        format!(
            "Values: mean over rounds ± 95 % CI half-width (Student t), as in each run's summary{accuracy}; \
             higher is better for {}, lower for {}. vs first: ratio to the first run's value at \
             the same point; \"beyond spread\" when |difference| > sqrt(h1² + h2²) of the two \
             half-widths, \"within spread\" otherwise (not a difference this data can show).",
            or_none(way(Better::Higher)),
            or_none(way(Better::Lower))
        )
    }

    /// The terminal table with its footnote.
    pub fn table(&self) -> String {
        let mut t = Table::new();
        t.load_preset(ASCII_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled);
        let header = self.header();
        t.set_header(header.clone());
        for r in &self.rows {
            t.add_row(self.cells(r));
        }
        for i in 2..header.len() {
            if let Some(c) = t.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        let runs: Vec<String> = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{}: {r}", i + 1))
            .collect();
        format!("Runs: {}\n{t}\n{}\n", runs.join("; "), self.footnote())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

    #[test]
    fn ratios_and_spread_against_the_first_run() {
        let (a, _) = run(false);
        let (mut b, _) = run(false);
        b.meta.engine.version = "2".into();
        // Run b: throughput twice a's with tight intervals at point 0.
        let r = &mut b.points[0].summary.rounds;
        r.output_throughput = Estimate::of(&[20.0, 20.1, 19.9]);
        let ra = &a.points[0].summary.rounds.output_throughput;
        let c = compare(&[a.clone(), b], &["a".into(), "b".into()], false).unwrap();
        assert_eq!(c.runs, ["vllm 1", "vllm 2"]);
        assert_eq!(c.rows.len(), 4);
        let second = &c.rows[1];
        assert_eq!((second.point.as_str(), second.run), ("batch=2", 1));
        let cell = &second.cells[0];
        assert!((cell.ratio.unwrap() - 20.0 / ra.mean.unwrap()).abs() < 1e-12);
        // a's interval is ±76 tok/s wide: a doubling is within the spread.
        assert_eq!(cell.beyond_spread, Some(false));
        assert!(c.table().contains("within spread"));
        // The same engine and version twice: labels carry the directory.
        let c = compare(&[a.clone(), a], &["x".into(), "y".into()], false).unwrap();
        assert_eq!(c.runs, ["vllm 1 (x)", "vllm 1 (y)"]);
    }

    #[test]
    fn a_tight_difference_is_beyond_the_spread() {
        let base = Estimate::of(&[10.0, 10.1, 9.9]);
        let c = cell(Estimate::of(&[12.0, 12.1, 11.9]), Some(&base), false);
        assert_eq!(c.beyond_spread, Some(true));
        assert_eq!(c.versus(), "×1.20 beyond spread");
        assert_eq!(cell(base.clone(), Some(&base), true).versus(), "-");
    }

    #[test]
    fn different_workloads_are_refused() {
        let (a, _) = run(false);
        let (mut b, _) = run(false);
        b.meta.driver.seed = 7;
        let e = compare(&[a.clone(), b], &["a".into(), "b".into()], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("b ran another workload than a") && e.contains("--seed"),
            "{e}"
        );
        let (mut c, _) = run(false);
        c.meta.workload.spec = crate::workload::WorkloadSpec::Synthetic {
            input_len: crate::workload::LengthDist::Fixed { len: 11 },
            output_len: crate::workload::LengthDist::Fixed { len: 16 },
        };
        assert!(compare(&[a, c], &["a".into(), "c".into()], false).is_err());
    }

    #[test]
    fn different_layouts_are_refused_unless_asked_and_then_labelled() {
        let (a, _) = run(false);
        let (mut b, _) = run(false);
        b.meta.engine.layout = Some(crate::engine::ParallelLayout {
            tensor_parallel: 2,
            pipeline_parallel: 1,
            data_parallel: 1,
            backend: Some("mp".into()),
            ranks: Vec::new(),
            source: "test".into(),
        });
        let names = ["a".to_string(), "b".to_string()];
        let e = compare(&[a.clone(), b.clone()], &names, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("b ran the layout tp2 pp1 dp1 and a ran tp1 pp1 dp1")
                && e.contains("--allow-different-layouts"),
            "{e}"
        );
        let c = compare(&[a, b], &names, true).unwrap();
        assert_eq!(c.runs, ["vllm 1 [tp1 pp1 dp1]", "vllm 1 [tp2 pp1 dp1]"]);
    }
}
