//! Load drivers: how requests are offered to an engine, and the only code that reads
//! the clock for token events.

use serde::{Deserialize, Serialize};

/// One load point: how requests are offered. A sweep is a list of these run on one
/// loaded engine.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LoadPoint {
    /// `batch` requests submitted at once; the next batch starts when all have finished.
    Batch { batch: u32 },
    /// Closed loop: `concurrency` requests in flight; a new one is submitted as one finishes.
    Concurrency { concurrency: u32 },
    /// Open loop: arrivals at `rate` requests/s, gamma-distributed gaps with shape
    /// `burstiness` (1 = Poisson).
    Rate { rate: f64, burstiness: f64 },
}

impl LoadPoint {
    /// `batch=8`, `concurrency=4`, `rate=2.5` (and `burstiness=B` when not Poisson).
    pub fn label(&self) -> String {
        match *self {
            LoadPoint::Batch { batch } => format!("batch={batch}"),
            LoadPoint::Concurrency { concurrency } => format!("concurrency={concurrency}"),
            LoadPoint::Rate { rate, burstiness } if burstiness == 1.0 => format!("rate={rate}"),
            LoadPoint::Rate { rate, burstiness } => {
                format!("rate={rate},burstiness={burstiness}")
            }
        }
    }

    /// The mode's name, as used for the CLI flag and the CSV column.
    pub fn mode(&self) -> &'static str {
        match self {
            LoadPoint::Batch { .. } => "batch",
            LoadPoint::Concurrency { .. } => "concurrency",
            LoadPoint::Rate { .. } => "rate",
        }
    }

    /// The swept value (batch size, concurrency or rate), for tables and plots.
    pub fn value(&self) -> f64 {
        match *self {
            LoadPoint::Batch { batch } => batch as f64,
            LoadPoint::Concurrency { concurrency } => concurrency as f64,
            LoadPoint::Rate { rate, .. } => rate,
        }
    }
}
