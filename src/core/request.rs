//! What every layer says about a request: its id, why it ended, and the timestamps an
//! engine keeps about it itself.

use super::clock::MonoNs;
use serde::{Deserialize, Serialize};

/// A request id, unique within one run (warmup and every sweep point included).
pub type RequestId = u64;

/// Why a request ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Reached its `output_len`.
    Length,
    /// EOS or a stop token.
    Stop,
    /// Aborted by the harness (Ctrl-C) or by the engine.
    Abort,
    /// The engine reported an error for this request, or failed as a whole.
    Error,
    /// No token within `--request-timeout`.
    Timeout,
}

impl FinishReason {
    /// Requests that ended this way count as completed in the metrics.
    pub fn is_success(self) -> bool {
        matches!(self, FinishReason::Length | FinishReason::Stop)
    }

    /// The name a finish reason is reported under (its JSON spelling); `unfinished`
    /// for a request that never finished.
    pub fn name(reason: Option<FinishReason>) -> &'static str {
        match reason {
            Some(FinishReason::Length) => "length",
            Some(FinishReason::Stop) => "stop",
            Some(FinishReason::Abort) => "abort",
            Some(FinishReason::Error) => "error",
            Some(FinishReason::Timeout) => "timeout",
            None => "unfinished",
        }
    }
}

/// Timestamps an engine keeps about a request itself (vLLM's `RequestStateStats`,
/// TRT-LLM's `RequestPerfMetrics`, SGLang's `meta_info`), on CLOCK_MONOTONIC. Recorded
/// beside the harness's own stamps so the two can be compared; never used to compute
/// the harness's metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStamps {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub queued_ns: Option<MonoNs>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scheduled_ns: Option<MonoNs>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_token_ns: Option<MonoNs>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_token_ns: Option<MonoNs>,
    /// The engine's own per-request figures as it reports them (SGLang's `meta_info`:
    /// queue time, first-token latency, cached tokens, ...), units in the key names.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_json_spelling() {
        for r in [
            FinishReason::Length,
            FinishReason::Stop,
            FinishReason::Abort,
            FinishReason::Error,
            FinishReason::Timeout,
        ] {
            let json = serde_json::to_value(r).unwrap();
            assert_eq!(json.as_str(), Some(FinishReason::name(Some(r))));
        }
        assert_eq!(FinishReason::name(None), "unfinished");
    }
}
