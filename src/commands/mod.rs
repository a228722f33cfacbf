//! The subcommands, above the flow they drive: `run`/`sweep`/`search` ([`bench`]), the views
//! of finished results (`report`, `plot`, `compare`: [`views`]), `engines`, `parity`
//! and `served-vs-inproc`. Each takes its parsed arguments and returns the exit code.

pub mod bench;
pub mod engines;
pub mod parity;
pub mod served;
pub mod views;

use crate::report::{self, RunResult};
use crate::terminal;
use anyhow::Result;
use std::path::Path;

/// Plots and report.html of a finished run; says where, or why the plots are missing.
fn visuals(dir: &Path, run: &RunResult) -> Result<()> {
    let (html, failed) = report::write_visuals(dir, run)?;
    if let Some(e) = failed {
        eprintln!("warning: no plots in the report: {e}");
    }
    terminal::println(&format!("report: {}", html.display()));
    Ok(())
}
