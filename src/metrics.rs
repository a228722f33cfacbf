//! Metrics: pure functions from a trace to a summary.
