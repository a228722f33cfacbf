//! Reports: render summaries; no measuring.
use crate::driver::LoadPoint;
use crate::metrics::{Slo, Summary};
use crate::trace::RequestTrace;
use std::path::Path;

#[derive(Clone)]
pub struct PointResult {
    pub point: LoadPoint,
    pub summary: Summary,
}
pub struct RunResult {
    pub meta: serde_json::Value,
    pub instrument: bool,
    pub points: Vec<PointResult>,
    pub slo: Slo,
}
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReportError(pub String);
pub fn write_all(_dir: &Path, _run: &RunResult, _records: &[RequestTrace]) -> Result<(), ReportError> {
    Ok(())
}
pub fn table(_run: &RunResult) -> String {
    String::new()
}
