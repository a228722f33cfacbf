//! Conversation metrics (`--dataset conversations`): a point's requests by turn index,
//! and per conversation. Pure functions of the trace, as the rest of [`super`].
//!
//! By turn: over the completed requests of each turn index, TTFT, the prompt tokens
//! sent (they grow by each turn's reply and user message) and the prefix-cache hit
//! rate, which shows what a cache keeps of the conversation so far. Per conversation
//! (those with a turn in the point): its turns, and its duration from its first turn's
//! submit to its last turn's finish (think times included).

use super::{distribution, per_request, prefix_cache, Distribution};
use crate::trace::RequestTrace;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One turn index's requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnSummary {
    /// From 0.
    pub turn: u32,
    pub completed: usize,
    pub failed: usize,
    /// Over completed requests (ms).
    pub ttft: Distribution,
    /// Prompt tokens sent, over completed requests.
    pub input_len: Distribution,
    /// As the point's, over this turn's completed requests that report it.
    pub cached_prompt_tokens: Option<u64>,
    pub prefix_cache_hit_rate: Option<f64>,
}

/// A point's conversations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummary {
    /// Conversations with at least one request in the point.
    pub count: usize,
    /// Those whose every request in the point completed.
    pub completed: usize,
    /// Requests per conversation.
    pub turns: Distribution,
    /// First submit to last finish, over conversations whose every request finished (s).
    pub duration: Distribution,
}

/// The point's requests by turn index; `None` when none is a conversation turn.
pub fn by_turn(records: &[RequestTrace]) -> Option<Vec<TurnSummary>> {
    let mut turns: BTreeMap<u32, Vec<&RequestTrace>> = BTreeMap::new();
    for r in records {
        if let Some(t) = r.turn {
            turns.entry(t).or_default().push(r);
        }
    }
    if turns.is_empty() {
        return None;
    }
    let out = turns
        .into_iter()
        .map(|(turn, rs)| {
            let ok: Vec<&&RequestTrace> = rs.iter().filter(|r| r.is_success()).collect();
            let mut ttft: Vec<f64> = ok.iter().filter_map(|r| per_request(r).ttft_ms).collect();
            let mut input: Vec<f64> = ok.iter().map(|r| f64::from(r.input_len)).collect();
            let (cached, rate) = prefix_cache(ok.iter().map(|r| **r));
            TurnSummary {
                turn,
                completed: ok.len(),
                failed: rs.len() - ok.len(),
                ttft: distribution(&mut ttft),
                input_len: distribution(&mut input),
                cached_prompt_tokens: cached,
                prefix_cache_hit_rate: rate,
            }
        })
        .collect();
    Some(out)
}

/// The point's conversations; `None` when none of its requests is a conversation turn.
pub fn conversations(records: &[RequestTrace]) -> Option<ConversationSummary> {
    let mut by_conv: BTreeMap<u64, Vec<&RequestTrace>> = BTreeMap::new();
    for r in records {
        if let Some(c) = r.conversation {
            by_conv.entry(c).or_default().push(r);
        }
    }
    if by_conv.is_empty() {
        return None;
    }
    let mut turns = Vec::new();
    let mut duration = Vec::new();
    let mut completed = 0;
    for rs in by_conv.values() {
        turns.push(rs.len() as f64);
        if rs.iter().all(|r| r.is_success()) {
            completed += 1;
        }
        let start = rs.iter().map(|r| r.submit_ns.0).min();
        let end: Option<Vec<u64>> = rs.iter().map(|r| r.finish_ns.map(|f| f.0)).collect();
        if let (Some(s), Some(e)) = (start, end.and_then(|e| e.into_iter().max())) {
            duration.push(e.saturating_sub(s) as f64 / 1e9);
        }
    }
    Some(ConversationSummary {
        count: by_conv.len(),
        completed,
        turns: distribution(&mut turns),
        duration: distribution(&mut duration),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::MonoNs;
    use crate::core::request::FinishReason;

    fn turn(id: u64, conv: u64, k: u32, input: u32, submit: u64, ttft: u64) -> RequestTrace {
        let mut r = RequestTrace::new(id, 0, input, 2, MonoNs(submit));
        r.record_tokens(1, MonoNs(submit + ttft));
        r.record_tokens(1, MonoNs(submit + ttft + 1_000_000));
        r.finish_ns = Some(MonoNs(submit + ttft + 1_000_000));
        r.finish_reason = Some(FinishReason::Length);
        r.conversation = Some(conv);
        r.turn = Some(k);
        r
    }

    #[test]
    fn turns_and_conversations_from_the_trace() {
        let mut rs = vec![
            turn(0, 0, 0, 10, 0, 4_000_000),
            turn(1, 1, 0, 10, 0, 6_000_000),
            turn(2, 0, 1, 22, 10_000_000, 2_000_000),
        ];
        rs[0].cached_prompt_tokens = Some(0);
        rs[2].cached_prompt_tokens = Some(11);
        let mut failed = turn(3, 1, 1, 22, 10_000_000, 2_000_000);
        failed.finish_reason = Some(FinishReason::Error);
        rs.push(failed);
        let t = by_turn(&rs).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].turn, t[0].completed, t[0].failed), (0, 2, 0));
        assert_eq!(t[0].ttft.mean, Some(5.0));
        assert_eq!(t[0].input_len.mean, Some(10.0));
        // Only request 0 reports cached tokens at turn 0.
        assert_eq!(t[0].prefix_cache_hit_rate, Some(0.0));
        assert_eq!((t[1].completed, t[1].failed), (1, 1));
        assert_eq!(t[1].prefix_cache_hit_rate, Some(0.5));
        let c = conversations(&rs).unwrap();
        assert_eq!((c.count, c.completed), (2, 1));
        assert_eq!(c.turns.mean, Some(2.0));
        // Conversation 0: 0 → 13 ms.
        assert_eq!(c.duration.min, Some(0.013));
        assert!(by_turn(&[RequestTrace::new(0, 0, 1, 1, MonoNs(0))]).is_none());
    }
}
