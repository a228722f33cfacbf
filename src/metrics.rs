//! Metrics: pure functions from a trace to a summary.

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MetricsError(pub String);

pub fn parse_slo(_s: &str) -> Result<Slo, MetricsError> {
    Ok(Slo::default())
}
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub completed: usize,
}
pub fn summarize(records: &[crate::trace::RequestTrace], _slo: &Slo) -> Summary {
    Summary { completed: records.iter().filter(|r| r.is_success()).count() }
}
