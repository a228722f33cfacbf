//! Exit codes, and the error for bad input found outside the config.
//!
//! 0: the run completed and every request succeeded. 1: the engine failed or some
//! requests failed (results are on disk). 2: bad input, nothing run or written.
//! 130: interrupted by Ctrl-C (results so far are on disk). Which error ends with
//! which code is decided at the top, in `app::exit_code`.

pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

/// Bad input found outside the config (a result directory that is not one, say).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
