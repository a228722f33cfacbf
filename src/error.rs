//! Exit codes and the errors that choose them.
//!
//! 0: the run completed and every request succeeded. 1: the engine failed or some
//! requests failed (results are on disk). 2: bad input, nothing run or written.
//! 130: interrupted by Ctrl-C (results so far are on disk).

use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::metrics::MetricsError;
use crate::trace::TraceError;
use crate::workload::WorkloadError;

pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

/// Bad input found outside the config (a result directory that is not one, say).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error that ended the program.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.is::<UsageError>()
            || cause.is::<ConfigError>()
            || cause.is::<WorkloadError>()
            || cause.is::<MetricsError>()
            || matches!(
                cause.downcast_ref::<EngineError>(),
                Some(EngineError::Usage(_))
            )
            || matches!(
                cause.downcast_ref::<TraceError>(),
                Some(TraceError::Parse { .. } | TraceError::Read { .. })
            )
        {
            return EXIT_USAGE;
        }
    }
    EXIT_FAILED
}
