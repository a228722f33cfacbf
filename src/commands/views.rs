//! The subcommands that read result directories: `report` (recompute and re-render
//! one), `plot` (one or several overlaid) and `compare` (several side by side).

use super::visuals;
use crate::cli::{CompareArgs, PlotArgs, ReportArgs};
use crate::core::error::UsageError;
use crate::metrics;
use crate::metrics::catalog::View;
use crate::report::{self, plot, RunResult};
use crate::terminal;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Loads result directories for `plot` and `compare`: a bad one is a usage error.
fn load_all(dirs: &[PathBuf]) -> Result<Vec<RunResult>> {
    dirs.iter()
        .map(|d| {
            RunResult::load(d, None)
                .map(|(r, _)| r)
                .map_err(|e| UsageError(e.to_string()).into())
        })
        .collect()
}

/// `results/NAME-TIME`, for outputs that belong to no single run.
fn timestamped(name: &str) -> PathBuf {
    PathBuf::from("results").join(format!(
        "{name}-{}",
        chrono::Local::now().format("%Y%m%d-%H%M%S")
    ))
}

fn dir_name(d: &Path) -> String {
    d.file_name().map_or_else(
        || d.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `harness plot DIR...`: one directory's plots into DIR/plots, several overlaid.
pub fn plot(a: PlotArgs) -> Result<i32> {
    let runs = load_all(&a.dirs)?;
    let out = a.out.clone().unwrap_or_else(|| match a.dirs.as_slice() {
        [one] => one.join("plots"),
        _ => timestamped("plot"),
    });
    let names: Vec<String> = a.dirs.iter().map(|d| dir_name(d)).collect();
    let curves = plot::curves(&runs, &names);
    let written = plot::write_plots(&curves, &out).map_err(|e| match e {
        plot::PlotError::MixedModes(..) => anyhow::Error::new(UsageError(e.to_string())),
        other => anyhow::Error::new(other),
    })?;
    for p in written {
        println!("{} (and .png)", p.display());
    }
    Ok(0)
}

/// `harness compare DIR DIR...`: the side-by-side table, overlay plots, compare.html.
pub fn compare(a: CompareArgs) -> Result<i32> {
    let runs = load_all(&a.dirs)?;
    let names: Vec<String> = a.dirs.iter().map(|d| dir_name(d)).collect();
    let cmp = report::compare::compare(&runs, &names, a.allow_different_layouts)
        .map_err(|e| UsageError(e.to_string()))?;
    println!("{}", cmp.table());
    let out = a.out.clone().unwrap_or_else(|| timestamped("compare"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let curves = plot::curves(&runs, &names);
    let plots = match plot::write_plots(&curves, &out) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warning: no plots: {e}");
            Vec::new()
        }
    };
    let html = out.join("compare.html");
    report::write_atomic(
        &html,
        report::html::compare(&cmp, &runs, &names, &plots).as_bytes(),
    )?;
    println!("compare: {}", html.display());
    Ok(0)
}

/// `harness report DIR`: recompute every summary from run.json and requests.jsonl.
pub fn report(a: ReportArgs) -> Result<i32> {
    let slo = a.slo.as_deref().map(metrics::parse_slo).transpose()?;
    let (result, records) = RunResult::load(&a.dir, slo).map_err(|e| UsageError(e.to_string()))?;
    let steps = RunResult::load_steps(&a.dir).map_err(|e| UsageError(e.to_string()))?;
    report::write_all(&a.dir, &result, &records)?;
    println!(
        "{}",
        report::table(&result, View::of(a.wide), terminal::out_width())
    );
    visuals(&a.dir, &result, &records, &steps)?;
    Ok(0)
}
