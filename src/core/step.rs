//! What an engine reports about each of its steps: the typed record that crosses the
//! engine boundary and lands in `steps.jsonl` (shared by the engines that fill it,
//! the trace that writes it and the metrics that read it, so it lives below them).

use serde::{Deserialize, Serialize};

/// What an engine says about its own step (or, where one poll ran several, the steps
/// since the last `Engine::take_step_stats`): each field only where the engine's API
/// reports it, `None` otherwise, never a guess. Gauges (`running`, `waiting`,
/// `kv_usage`) are as of the end of the last step; counts are summed over the steps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Engine steps these stats cover (1 unless the poll caught up on several);
    /// `None`: the engine says nothing about its steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_steps: Option<u32>,
    /// Requests the engine's scheduler holds as running after the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u32>,
    /// Requests waiting in the engine's queue after the step (not yet admitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<u32>,
    /// Requests preempted in the step (their KV cache taken back; they re-queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted: Option<u32>,
    /// Requests that computed prompt tokens in the step (a whole prefill or a chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_requests: Option<u32>,
    /// Prompt tokens computed in the step (prefix-cache hits excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_tokens: Option<u32>,
    /// Requests that decoded in the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_requests: Option<u32>,
    /// Tokens scheduled for decoding in the step (one per decoding request, more with
    /// speculation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_tokens: Option<u32>,
    /// Share of the KV cache in use after the step, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_usage: Option<f64>,
    /// Prefix-cache lookups in the step: prompt tokens queried...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_queried: Option<u64>,
    /// ...and of those, served from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_hits: Option<u64>,
    /// Speculative decoding: draft tokens proposed in the step...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_draft_tokens: Option<u32>,
    /// ...and accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_accepted_tokens: Option<u32>,
    /// The engine's own time for the step, where it times it (vLLM's iteration
    /// `elapsed_ms`), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_ms: Option<f64>,
}

impl StepStats {
    /// One engine step, its other fields to be filled.
    pub fn one_step() -> StepStats {
        StepStats {
            engine_steps: Some(1),
            ..StepStats::default()
        }
    }

    /// Adds a step to what an engine holds for the next `take_step_stats`: the first
    /// since then, or folded into the ones before.
    pub fn fold(held: &mut Option<StepStats>, step: StepStats) {
        match held.as_mut() {
            Some(s) => s.merge(step),
            None => *held = Some(step),
        }
    }

    /// Folds a later step into these: gauges take the later value, counts add.
    pub fn merge(&mut self, later: StepStats) {
        fn add<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            }
        }
        self.engine_steps = add(self.engine_steps, later.engine_steps);
        self.running = later.running.or(self.running);
        self.waiting = later.waiting.or(self.waiting);
        self.kv_usage = later.kv_usage.or(self.kv_usage);
        self.preempted = add(self.preempted, later.preempted);
        self.prefill_requests = add(self.prefill_requests, later.prefill_requests);
        self.prefill_tokens = add(self.prefill_tokens, later.prefill_tokens);
        self.decode_requests = add(self.decode_requests, later.decode_requests);
        self.decode_tokens = add(self.decode_tokens, later.decode_tokens);
        self.prefix_queried = add(self.prefix_queried, later.prefix_queried);
        self.prefix_hits = add(self.prefix_hits, later.prefix_hits);
        self.spec_draft_tokens = add(self.spec_draft_tokens, later.spec_draft_tokens);
        self.spec_accepted_tokens = add(self.spec_accepted_tokens, later.spec_accepted_tokens);
        self.engine_ms = add(self.engine_ms, later.engine_ms);
    }
}
