//! The subcommands, above the flow they drive: `run`/`sweep`/`search` ([`bench`]), the views
//! of finished results (`report`, `plot`, `compare`: [`views`]), `engines`, `parity`
//! (and its log-probability side, [`logprobs`]), `served-vs-inproc` ([`served`]) and
//! `variants` ([`variants`]). Each takes its parsed arguments and returns the exit code.

pub mod bench;
pub mod engines;
pub mod logprobs;
pub mod parity;
pub mod served;
pub mod variants;
pub mod views;

use crate::report::{self, RunResult};
use crate::terminal;
use crate::trace::{RequestTrace, StepRecord};
use anyhow::Result;
use std::path::Path;

/// trace.json, plots and report.html of a finished run; says where, or why the plots
/// are missing.
fn visuals(
    dir: &Path,
    run: &RunResult,
    records: &[RequestTrace],
    steps: &[StepRecord],
) -> Result<()> {
    if let Some(note) = report::write_trace(dir, run, records, steps)? {
        eprintln!("note: {note}");
    }
    let (html, failed) = report::write_visuals(dir, run, steps)?;
    if let Some(e) = failed {
        eprintln!("warning: no plots in the report: {e}");
    }
    terminal::println(&format!("report: {}", html.display()));
    Ok(())
}
