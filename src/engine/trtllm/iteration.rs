//! The Executor's iteration stats (`Executor::getLatestIterationStats`, one JSON text
//! per iteration from `JsonSerialization::toJsonStr`) as [`StepStats`].
//!
//! The key names are `IterationStats`' member names in `executor/types.h`: the 1.2
//! headers do not spell the serializer's names, but its `jsonSerialization.cpp` declares
//! each struct with `NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE`, which uses the member names.

use crate::core::step::StepStats;
use serde::Deserialize;

/// Where each step record's engine fields come from (`SchedulerFacts::step_stats_source`).
#[cfg(feature = "trtllm")]
pub const SOURCE: &str = "TensorRT-LLM Executor::getLatestIterationStats, read at each take \
    (the Executor keeps up to ExecutorConfig iterStatsMaxIterations between reads: the \
    default 1000, which the harness leaves on): running/waiting = numActiveRequests/\
    numQueuedRequests, kv_usage = kvCacheStats usedNumBlocks/maxNumBlocks, prefill_requests/\
    prefill_tokens = inflightBatchingStats numContextRequests/numCtxTokens (the context tokens \
    it scheduled), decode_requests = numGenRequests, decode_tokens = numGenRequests plus \
    specDecodingStats numDraftTokens where given, preempted = numPausedRequests, spec_* = \
    specDecodingStats numDraftTokens/numAcceptedTokens, engine_ms = iterLatencyMS; no \
    per-step prefix-cache figures (kvCacheStats reusedBlocks/missedBlocks count blocks, \
    not prompt tokens)";

/// One `IterationStats` as the serializer writes it; only what the harness maps. Every
/// field is optional: a version that drops one leaves that figure out, never fails.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Iteration {
    iter: Option<u64>,
    #[serde(rename = "iterLatencyMS")]
    iter_latency_ms: Option<f64>,
    num_active_requests: Option<i64>,
    num_queued_requests: Option<i64>,
    kv_cache_stats: Option<KvCache>,
    inflight_batching_stats: Option<InflightBatching>,
    spec_decoding_stats: Option<SpecDecoding>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KvCache {
    max_num_blocks: Option<i64>,
    used_num_blocks: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InflightBatching {
    num_context_requests: Option<i64>,
    num_gen_requests: Option<i64>,
    num_paused_requests: Option<i64>,
    num_ctx_tokens: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecDecoding {
    num_draft_tokens: Option<i64>,
    num_accepted_tokens: Option<i64>,
}

/// A count as the record holds it; a negative or oversized one is not a figure.
fn count(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

impl Iteration {
    fn step(&self) -> StepStats {
        let ifb = self.inflight_batching_stats.as_ref();
        let spec = self.spec_decoding_stats.as_ref();
        let gen = count(ifb.and_then(|b| b.num_gen_requests));
        let drafts = count(spec.and_then(|s| s.num_draft_tokens));
        let kv_usage = self.kv_cache_stats.as_ref().and_then(|kv| {
            let (used, max) = (kv.used_num_blocks?, kv.max_num_blocks?);
            (max > 0 && used >= 0).then(|| used as f64 / max as f64)
        });
        StepStats {
            engine_steps: Some(1),
            running: count(self.num_active_requests),
            waiting: count(self.num_queued_requests),
            preempted: count(ifb.and_then(|b| b.num_paused_requests)),
            prefill_requests: count(ifb.and_then(|b| b.num_context_requests)),
            prefill_tokens: count(ifb.and_then(|b| b.num_ctx_tokens)),
            decode_requests: gen,
            // Each generating request computes one token, plus its drafts with speculation.
            decode_tokens: gen.map(|g| g.saturating_add(drafts.unwrap_or(0))),
            kv_usage,
            spec_draft_tokens: drafts,
            spec_accepted_tokens: count(spec.and_then(|s| s.num_accepted_tokens)),
            engine_ms: self
                .iter_latency_ms
                .filter(|ms| ms.is_finite() && *ms >= 0.0),
            ..StepStats::default()
        }
    }
}

/// What went wrong reading one batch of iteration stats (the batch's other entries
/// still count).
#[derive(Debug, PartialEq)]
pub enum Problem {
    /// An entry is not the JSON of an `IterationStats`.
    Unparsed(String),
    /// The `iter` counter skipped this many iterations: the Executor dropped them
    /// (more than iterStatsMaxIterations between reads).
    Dropped(u64),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unparsed(e) => write!(f, "an entry is not IterationStats JSON ({e})"),
            Problem::Dropped(n) => write!(
                f,
                "the Executor dropped {n} iterations before they were read (iterStatsMaxIterations)"
            ),
        }
    }
}

/// Reads the Executor's iteration stats into step stats, each iteration once.
#[derive(Debug, Default)]
pub struct Reader {
    /// The last `iter` counted: `getLatestIterationStats` returns what is new since
    /// the last call, and this guards against an entry coming twice all the same.
    last_iter: Option<u64>,
}

impl Reader {
    /// Folds the new iterations among `texts` (oldest first) into `held`; returns what
    /// did not fit.
    pub fn fold(&mut self, texts: &[String], held: &mut Option<StepStats>) -> Vec<Problem> {
        let mut problems = Vec::new();
        for text in texts {
            let it: Iteration = match serde_json::from_str(text) {
                Ok(it) => it,
                Err(e) => {
                    problems.push(Problem::Unparsed(e.to_string()));
                    continue;
                }
            };
            if let Some(n) = it.iter {
                match self.last_iter {
                    Some(last) if n <= last => continue,
                    Some(last) if n > last + 1 => problems.push(Problem::Dropped(n - last - 1)),
                    _ => {}
                }
                self.last_iter = Some(n);
            }
            StepStats::fold(held, it.step());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One iteration as TensorRT-LLM 1.2's serializer writes it (member names; optional
    /// members null when absent).
    fn text(iter: u64, ctx: (u32, u32), gen: u32, active: u32, queued: u32, used: u32) -> String {
        serde_json::json!({
            "timestamp": "12:00:00", "iter": iter, "iterLatencyMS": 2.5,
            "newActiveRequestsQueueLatencyMS": 0.0, "numNewActiveRequests": ctx.0,
            "numActiveRequests": active, "numQueuedRequests": queued, "numCompletedRequests": 0,
            "maxNumActiveRequests": 64, "maxBatchSizeStatic": 64, "gpuMemUsage": 1, "cpuMemUsage": 1,
            "pinnedMemUsage": 0,
            "kvCacheStats": {"maxNumBlocks": 200, "freeNumBlocks": 200 - used, "usedNumBlocks": used,
                "tokensPerBlock": 32, "allocTotalBlocks": 9, "allocNewBlocks": 9, "reusedBlocks": 0,
                "missedBlocks": 9, "cacheHitRate": 0.0},
            "crossKvCacheStats": null, "staticBatchingStats": null,
            "inflightBatchingStats": {"numScheduledRequests": ctx.0 + gen, "numContextRequests": ctx.0,
                "numGenRequests": gen, "numPausedRequests": 0, "numCtxTokens": ctx.1, "microBatchId": 0,
                "avgNumDecodedTokensPerIter": 1.0},
            "specDecodingStats": null,
        })
        .to_string()
    }

    #[test]
    fn iterations_map_onto_step_stats_once_each() {
        let mut r = Reader::default();
        let mut held = None;
        let batch = [text(0, (2, 40), 0, 2, 1, 4), text(1, (1, 16), 2, 3, 0, 6)];
        assert!(r.fold(&batch, &mut held).is_empty());
        let s = held.take().unwrap();
        assert_eq!(s.engine_steps, Some(2));
        // Gauges from the later iteration, counts summed.
        assert_eq!((s.running, s.waiting), (Some(3), Some(0)));
        assert_eq!(s.kv_usage, Some(0.03));
        assert_eq!((s.prefill_requests, s.prefill_tokens), (Some(3), Some(56)));
        assert_eq!((s.decode_requests, s.decode_tokens), (Some(2), Some(2)));
        assert_eq!(s.preempted, Some(0));
        assert_eq!(s.engine_ms, Some(5.0));
        assert_eq!(
            (s.prefix_queried, s.prefix_hits, s.spec_draft_tokens),
            (None, None, None)
        );
        // The same iteration again is not counted twice.
        assert!(r.fold(&batch[1..], &mut held).is_empty());
        assert_eq!(held, None);
    }

    #[test]
    fn speculation_adds_drafts_to_decode_tokens() {
        let mut v: serde_json::Value = serde_json::from_str(&text(0, (0, 0), 4, 4, 0, 1)).unwrap();
        v["specDecodingStats"] = serde_json::json!({"numDraftTokens": 12, "numAcceptedTokens": 7,
            "numRequestsWithDraftTokens": 4, "acceptanceLength": 2.75, "iterLatencyMS": 0.5,
            "draftOverhead": 0.2});
        let mut held = None;
        assert!(Reader::default()
            .fold(&[v.to_string()], &mut held)
            .is_empty());
        let s = held.unwrap();
        assert_eq!((s.decode_requests, s.decode_tokens), (Some(4), Some(16)));
        assert_eq!(
            (s.spec_draft_tokens, s.spec_accepted_tokens),
            (Some(12), Some(7))
        );
    }

    #[test]
    fn what_is_missing_stays_absent_and_bad_entries_are_named() {
        let mut r = Reader::default();
        let mut held = None;
        let texts = [
            r#"{"iter": 0, "numActiveRequests": 1}"#.to_string(),
            "not json".to_string(),
            r#"{"iter": 3, "numActiveRequests": -1, "kvCacheStats": {"maxNumBlocks": 0, "usedNumBlocks": 0}}"#
                .to_string(),
        ];
        let problems = r.fold(&texts, &mut held);
        assert!(matches!(problems[0], Problem::Unparsed(_)), "{problems:?}");
        assert_eq!(problems[1], Problem::Dropped(2));
        let s = held.unwrap();
        assert_eq!(s.engine_steps, Some(2));
        // A negative count and an empty cache are no figures; the earlier gauge stands.
        assert_eq!(s.running, Some(1));
        assert_eq!(
            (s.kv_usage, s.prefill_tokens, s.engine_ms),
            (None, None, None)
        );
    }
}
