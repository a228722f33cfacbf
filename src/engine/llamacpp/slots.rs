//! The slot scheduler: continuous batching the way llama-server's `update_slots` does
//! it, as plain Rust (no llama.cpp call), so it is tested in every build.
//!
//! `libllama` has no request scheduler; its server keeps `n_parallel` slots, one KV
//! sequence each. Each step builds one batch:
//!
//! 1. one token for every generating slot (the token it sampled last step, at the next
//!    position), with logits;
//! 2. then prompt tokens of slots still processing their prompt, in admission order,
//!    while the batch holds fewer than `n_batch` tokens (a long prompt is split over
//!    steps: chunked prefill); the last prompt token asks for logits, so the slot
//!    samples its first token in the step that completes its prompt.
//!
//! The engine decodes the batch (in `n_batch` chunks when the decode tokens alone exceed
//! it, as the server does), samples every slot whose logits were computed, and
//! reports each sampled token. A finished or aborted request frees its slot; the
//! engine then removes the sequence's KV cells, so the next request in that slot
//! starts from an empty sequence.
//!
//! What differs from llama-server: a waiting request takes the lowest free slot (the
//! server picks by prompt similarity, then least recently used) and never reuses a
//! previous prompt's KV cells (the server's `cache_prompt`); there is no context
//! shift, no speculative decoding and no n_batch halving on a full KV cache; a request
//! whose prompt plus `output_len` does not fit its slot's context fails at once (the
//! server rejects only prompts that do not fit and stops generation at the limit).
//! With a unified KV cache (`kv_unified`), a request waits until the cells it can
//! need are free (prompt + output_len, reserved at admission), instead of failing the
//! decode.

use crate::core::clock::MonoNs;
use crate::core::request::{EngineStamps, FinishReason, RequestId};
use crate::engine::{GenRequest, StepStats};
use std::collections::VecDeque;

/// One token of a step's batch.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub slot: usize,
    pub token: u32,
    pub pos: u32,
    /// Compute logits here (the slot samples from this position).
    pub logits: bool,
}

/// A request in a slot.
#[derive(Clone, Debug)]
pub struct Slot {
    pub req: GenRequest,
    /// Prompt tokens already decoded into the KV cache.
    pub prompt_done: usize,
    pub generated: u32,
    /// The last sampled token, decoded in the next step.
    pub last: Option<u32>,
    /// Generated ids, kept when the request asks for them.
    pub ids: Option<Vec<u32>>,
    /// Per generated token: top-1 minus top-2 logit, kept with the ids.
    pub margins: Option<Vec<f32>>,
    pub stamps: EngineStamps,
    /// KV cells this request can need (prompt + output_len).
    reserved: u64,
}

impl Slot {
    pub fn in_prompt(&self) -> bool {
        self.last.is_none()
    }
}

/// Why a sampled token ended its request, if it did.
pub fn finish_after(slot: &Slot, is_eog: bool) -> Option<FinishReason> {
    if slot.generated >= slot.req.output_len {
        Some(FinishReason::Length)
    } else if is_eog && !slot.req.ignore_eos && slot.generated >= slot.req.min_tokens {
        Some(FinishReason::Stop)
    } else {
        None
    }
}

/// Slots and the queue in front of them.
#[derive(Debug)]
pub struct Scheduler {
    slots: Vec<Option<Slot>>,
    /// Slot indices in admission order (prompt chunks are served in this order).
    order: Vec<usize>,
    waiting: VecDeque<(GenRequest, MonoNs)>,
    n_batch: usize,
    /// KV cells the running requests may use together (`u64::MAX`: one stream per
    /// slot, each checked on its own at submit).
    kv_budget: u64,
    reserved: u64,
}

impl Scheduler {
    pub fn new(n_parallel: usize, n_batch: usize, kv_budget: Option<u64>) -> Scheduler {
        Scheduler {
            slots: (0..n_parallel).map(|_| None).collect(),
            order: Vec::with_capacity(n_parallel),
            waiting: VecDeque::new(),
            n_batch: n_batch.max(1),
            kv_budget: kv_budget.unwrap_or(u64::MAX),
            reserved: 0,
        }
    }

    pub fn enqueue(&mut self, req: GenRequest, queued: MonoNs) {
        self.waiting.push_back((req, queued));
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.order.len()
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.order.is_empty()
    }

    pub fn slot(&self, i: usize) -> Option<&Slot> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    pub fn slot_mut(&mut self, i: usize) -> Option<&mut Slot> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// Moves waiting requests (FIFO) into free slots, lowest index first; returns the
    /// slots filled. Under a KV budget, the queue waits at the first request whose
    /// cells are not free yet (no overtaking, like a FIFO server queue).
    pub fn admit(&mut self, now: MonoNs) -> Vec<usize> {
        let mut admitted = Vec::new();
        while let Some((req, _)) = self.waiting.front() {
            let Some(free) = self.slots.iter().position(Option::is_none) else {
                break;
            };
            let reserve = req.prompt.len() as u64 + u64::from(req.output_len);
            if self.reserved.saturating_add(reserve) > self.kv_budget {
                break;
            }
            let Some((req, queued)) = self.waiting.pop_front() else {
                break;
            };
            self.reserved += reserve;
            let want = req.return_token_ids;
            self.slots[free] = Some(Slot {
                prompt_done: 0,
                generated: 0,
                last: None,
                ids: want.then(Vec::new),
                margins: want.then(Vec::new),
                stamps: EngineStamps {
                    queued_ns: Some(queued),
                    scheduled_ns: Some(now),
                    ..Default::default()
                },
                reserved: reserve,
                req,
            });
            self.order.push(free);
            admitted.push(free);
        }
        admitted
    }

    /// This step's batch: one token per generating slot, then prompt chunks while the
    /// batch holds fewer than `n_batch` tokens.
    pub fn plan(&self, out: &mut Vec<Entry>) {
        out.clear();
        for (i, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            if let Some(token) = s.last {
                out.push(Entry {
                    slot: i,
                    token,
                    pos: (s.req.prompt.len() as u32) + s.generated - 1,
                    logits: true,
                });
            }
        }
        for &i in &self.order {
            if out.len() >= self.n_batch {
                break;
            }
            let Some(s) = &self.slots[i] else { continue };
            if !s.in_prompt() {
                continue;
            }
            let prompt = &s.req.prompt;
            let take = (prompt.len() - s.prompt_done).min(self.n_batch - out.len());
            for p in s.prompt_done..s.prompt_done + take {
                out.push(Entry {
                    slot: i,
                    token: prompt[p],
                    pos: p as u32,
                    logits: p + 1 == prompt.len(),
                });
            }
        }
    }

    /// Marks the prompt tokens of `entries` as decoded (after a successful decode).
    pub fn decoded(&mut self, entries: &[Entry]) {
        for e in entries {
            if let Some(s) = self.slots[e.slot].as_mut() {
                if s.in_prompt() && e.pos as usize == s.prompt_done {
                    s.prompt_done += 1;
                }
            }
        }
    }

    /// Records a token sampled for slot `i`; returns how the request ends, if it does.
    pub fn accept(
        &mut self,
        i: usize,
        token: u32,
        margin: Option<f32>,
        is_eog: bool,
        at: MonoNs,
    ) -> Option<FinishReason> {
        let s = self.slots.get_mut(i)?.as_mut()?;
        s.generated += 1;
        s.last = Some(token);
        if let Some(ids) = &mut s.ids {
            ids.push(token);
        }
        if let (Some(m), Some(margin)) = (&mut s.margins, margin) {
            m.push(margin);
        }
        if s.stamps.first_token_ns.is_none() {
            s.stamps.first_token_ns = Some(at);
        }
        s.stamps.last_token_ns = Some(at);
        finish_after(s, is_eog)
    }

    /// Frees slot `i` and returns its request (finished or aborted).
    pub fn release(&mut self, i: usize) -> Option<Slot> {
        let s = self.slots.get_mut(i)?.take()?;
        self.order.retain(|&o| o != i);
        self.reserved -= s.reserved;
        Some(s)
    }

    /// Removes request `id` wherever it is: `Some(slot)` when it held one (its KV cells
    /// must be removed), `None` when it was waiting or unknown.
    pub fn remove(&mut self, id: RequestId) -> Option<usize> {
        self.waiting.retain(|(r, _)| r.id != id);
        let i = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.req.id == id))?;
        self.release(i);
        Some(i)
    }

    /// The composition of a batch `plan` returned, read before it is decoded: decode
    /// entries are those past their slot's prompt, the rest prompt (prefill) tokens,
    /// a request counted once however many of its prompt tokens the batch holds. It
    /// never preempts, so `preempted` is 0; the gauges are filled by [`Self::gauges`].
    pub fn composition(&self, plan: &[Entry]) -> StepStats {
        let (mut decode, mut prefill, mut prefill_requests) = (0u32, 0u32, 0u32);
        let mut last_prefill_slot = None;
        for e in plan {
            let prompt_len = self.slot(e.slot).map_or(0, |s| s.req.prompt.len());
            if (e.pos as usize) < prompt_len {
                prefill += 1;
                // A slot's prompt tokens sit together in the batch.
                if last_prefill_slot != Some(e.slot) {
                    prefill_requests += 1;
                    last_prefill_slot = Some(e.slot);
                }
            } else {
                decode += 1;
            }
        }
        StepStats {
            prefill_requests: Some(prefill_requests),
            prefill_tokens: Some(prefill),
            decode_requests: Some(decode),
            decode_tokens: Some(decode),
            preempted: Some(0),
            ..StepStats::one_step()
        }
    }

    /// Running and waiting after the step, and the KV cells its sequences hold (every
    /// decoded position of each occupied slot: the prompt tokens done, and each
    /// generated token but the last, decoded next step) as a share of `kv_cells`.
    pub fn gauges(&self, stats: &mut StepStats, kv_cells: Option<u64>) {
        stats.running = u32::try_from(self.running()).ok();
        stats.waiting = u32::try_from(self.waiting()).ok();
        let used: u64 = self
            .slots
            .iter()
            .flatten()
            .map(|s| match s.last {
                None => s.prompt_done as u64,
                Some(_) => s.req.prompt.len() as u64 + u64::from(s.generated.saturating_sub(1)),
            })
            .sum();
        stats.kv_usage = kv_cells
            .filter(|&c| c > 0)
            .map(|c| (used as f64 / c as f64).min(1.0));
    }

    /// Every slot in use.
    pub fn occupied(&self) -> Vec<usize> {
        self.order.clone()
    }

    /// Drops everything (shutdown).
    pub fn clear(&mut self) {
        self.waiting.clear();
        for s in &mut self.slots {
            *s = None;
        }
        self.order.clear();
        self.reserved = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn req(id: RequestId, prompt_len: usize, output_len: u32) -> GenRequest {
        GenRequest {
            id,
            prompt: (0..prompt_len as u32)
                .map(|t| 100 + t)
                .collect::<Vec<_>>()
                .into(),
            output_len,
            min_tokens: 0,
            ignore_eos: false,
            temperature: 0.0,
            seed: None,
            return_token_ids: true,
        }
    }

    const T: MonoNs = MonoNs(1);

    fn plan(s: &Scheduler) -> Vec<Entry> {
        let mut v = Vec::new();
        s.plan(&mut v);
        v
    }

    /// Decodes the plan and samples token `1000 + slot` for every logits entry.
    fn step(s: &mut Scheduler) -> Vec<(usize, Option<FinishReason>)> {
        let p = plan(s);
        s.decoded(&p);
        p.iter()
            .filter(|e| e.logits)
            .map(|e| {
                (
                    e.slot,
                    s.accept(e.slot, 1000 + e.slot as u32, None, false, T),
                )
            })
            .collect()
    }

    #[test]
    fn admits_fifo_into_free_slots_and_reuses_them() {
        let mut s = Scheduler::new(2, 512, None);
        for id in 0..3 {
            s.enqueue(req(id, 4, 2), MonoNs(id));
        }
        assert_eq!(s.admit(T), [0, 1]);
        assert_eq!((s.running(), s.waiting()), (2, 1));
        assert_eq!(s.slot(1).unwrap().req.id, 1);
        assert_eq!(s.slot(0).unwrap().stamps.queued_ns, Some(MonoNs(0)));
        // Prefill step: both prompts, logits at each last prompt token.
        let p = plan(&s);
        assert_eq!(p.len(), 8);
        assert_eq!(p.iter().filter(|e| e.logits).count(), 2);
        assert!(p[3].logits && p[3].pos == 3 && p[7].logits && p[7].slot == 1);
        assert_eq!(step(&mut s), [(0, None), (1, None)]);
        // Decode step: one token each at position prompt_len + generated - 1.
        let p = plan(&s);
        assert_eq!(
            p,
            [
                Entry {
                    slot: 0,
                    token: 1000,
                    pos: 4,
                    logits: true
                },
                Entry {
                    slot: 1,
                    token: 1001,
                    pos: 4,
                    logits: true
                },
            ]
        );
        assert_eq!(
            step(&mut s),
            [
                (0, Some(FinishReason::Length)),
                (1, Some(FinishReason::Length))
            ]
        );
        let done = s.release(0).unwrap();
        assert_eq!(done.ids, Some(vec![1000, 1000]));
        s.release(1);
        // The freed slot 0 takes the waiting request, from an empty sequence.
        assert_eq!(s.admit(T), [0]);
        let p = plan(&s);
        assert_eq!((p[0].slot, p[0].pos, p.len()), (0, 0, 4));
    }

    #[test]
    fn decode_tokens_first_then_prompt_chunks_up_to_n_batch() {
        let mut s = Scheduler::new(4, 8, None);
        s.enqueue(req(0, 3, 10), T);
        s.admit(T);
        step(&mut s); // slot 0 generating
        s.enqueue(req(1, 12, 10), T);
        s.enqueue(req(2, 5, 10), T);
        s.admit(T);
        // 1 decode token + 7 of request 1's 12 prompt tokens; request 2 waits its turn.
        let p = plan(&s);
        assert_eq!(p.len(), 8);
        assert_eq!(
            p[0],
            Entry {
                slot: 0,
                token: 1000,
                pos: 3,
                logits: true
            }
        );
        assert!(p[1..].iter().all(|e| e.slot == 1 && !e.logits));
        assert_eq!(step(&mut s), [(0, None)]);
        assert_eq!(s.slot(1).unwrap().prompt_done, 7);
        // Next: the decode token, request 1's last 5 (logits on its last), 2 of request 2.
        let p = plan(&s);
        let slots: Vec<usize> = p.iter().map(|e| e.slot).collect();
        assert_eq!(slots, [0, 1, 1, 1, 1, 1, 2, 2]);
        assert!(p[5].logits && p[5].pos == 11);
        assert_eq!(step(&mut s), [(0, None), (1, None)]);
        assert_eq!(s.slot(1).unwrap().generated, 1);
        assert_eq!(s.slot(2).unwrap().prompt_done, 2);
    }

    #[test]
    fn decode_tokens_can_fill_the_batch() {
        // More generating slots than n_batch: every one still decodes (the engine splits
        // the batch into n_batch chunks) and no prompt token is added.
        let mut s = Scheduler::new(4, 2, None);
        for id in 0..3 {
            s.enqueue(req(id, 1, 5), T);
        }
        s.admit(T);
        step(&mut s); // two prompts of one token fit
        step(&mut s); // the third prompt after the two decode tokens? no: the batch is full
        assert!(s.slot(2).unwrap().in_prompt());
        s.enqueue(req(3, 1, 5), T);
        s.admit(T);
        let p = plan(&s);
        assert_eq!(p.iter().filter(|e| e.logits).count(), 2);
        assert!(p.iter().all(|e| e.slot < 2));
    }

    #[test]
    fn eos_ends_only_when_allowed() {
        let mut s = Scheduler::new(1, 64, None);
        let mut r = req(0, 2, 8);
        r.min_tokens = 2;
        s.enqueue(r, T);
        s.admit(T);
        let p = plan(&s);
        s.decoded(&p);
        // EOS as the first token: below min_tokens, it continues.
        assert_eq!(s.accept(0, 1, Some(0.5), true, MonoNs(10)), None);
        assert_eq!(
            s.accept(0, 1, Some(0.25), true, MonoNs(20)),
            Some(FinishReason::Stop)
        );
        let done = s.release(0).unwrap();
        assert_eq!(done.margins, Some(vec![0.5, 0.25]));
        assert_eq!(done.stamps.first_token_ns, Some(MonoNs(10)));
        assert_eq!(done.stamps.last_token_ns, Some(MonoNs(20)));
        // ignore_eos: EOS tokens are generated and the request runs to its length.
        let mut r = req(1, 2, 2);
        r.ignore_eos = true;
        s.enqueue(r, T);
        s.admit(T);
        s.decoded(&plan(&s));
        assert_eq!(s.accept(0, 1, None, true, T), None);
        assert_eq!(s.accept(0, 1, None, true, T), Some(FinishReason::Length));
    }

    #[test]
    fn remove_frees_running_and_waiting() {
        let mut s = Scheduler::new(1, 64, None);
        s.enqueue(req(0, 2, 4), T);
        s.enqueue(req(1, 2, 4), T);
        s.admit(T);
        assert_eq!(s.remove(1), None);
        assert_eq!(s.waiting(), 0);
        assert_eq!(s.remove(0), Some(0));
        assert!(s.is_idle());
        assert_eq!(s.remove(7), None);
    }

    #[test]
    fn a_kv_budget_holds_the_queue() {
        // Unified KV of 20 cells: two requests of 6 + 4 fit, a third waits for cells.
        let mut s = Scheduler::new(4, 64, Some(20));
        for id in 0..3 {
            s.enqueue(req(id, 6, 4), T);
        }
        assert_eq!(s.admit(T), [0, 1]);
        assert_eq!(s.waiting(), 1);
        s.release(0);
        assert_eq!(s.admit(T), [0]);
    }

    #[test]
    fn ids_and_margins_only_when_asked() {
        let mut s = Scheduler::new(1, 64, None);
        let mut r = req(0, 1, 1);
        r.return_token_ids = false;
        r.prompt = Arc::from(vec![5u32]);
        s.enqueue(r, T);
        s.admit(T);
        s.decoded(&plan(&s));
        assert_eq!(
            s.accept(0, 9, Some(1.0), false, T),
            Some(FinishReason::Length)
        );
        let done = s.release(0).unwrap();
        assert_eq!((done.ids, done.margins), (None, None));
    }

    #[test]
    fn step_stats_follow_the_batch_and_the_kv_cells() {
        // Two slots, n_batch 6: request 0 (prompt 4) prefills whole, request 1
        // (prompt 4) gets 2 prompt tokens, request 2 waits.
        let mut s = Scheduler::new(2, 6, None);
        for id in 0..3 {
            s.enqueue(req(id, 4, 3), T);
        }
        s.admit(T);
        let stats = |s: &mut Scheduler| {
            let p = plan(s);
            let mut st = s.composition(&p);
            s.decoded(&p);
            for e in p.iter().filter(|e| e.logits) {
                s.accept(e.slot, 7, None, false, T);
            }
            s.gauges(&mut st, Some(20));
            st
        };
        let st = stats(&mut s);
        assert_eq!(
            (
                st.prefill_requests,
                st.prefill_tokens,
                st.decode_requests,
                st.decode_tokens
            ),
            (Some(2), Some(6), Some(0), Some(0))
        );
        assert_eq!(
            (st.running, st.waiting, st.preempted, st.engine_steps),
            (Some(2), Some(1), Some(0), Some(1))
        );
        // 4 + 2 prompt tokens in the cache of 20 cells.
        assert_eq!(st.kv_usage, Some(0.3));
        // Next: request 0 decodes one token, request 1 finishes its prompt (2 tokens).
        let st = stats(&mut s);
        assert_eq!(
            (
                st.prefill_requests,
                st.prefill_tokens,
                st.decode_requests,
                st.decode_tokens
            ),
            (Some(1), Some(2), Some(1), Some(1))
        );
        // Request 0: 4 + 1 decoded; request 1: its 4 prompt tokens (its sampled
        // token is decoded next step).
        assert_eq!(st.kv_usage, Some(9.0 / 20.0));
        let st = stats(&mut s);
        assert_eq!((st.decode_tokens, st.prefill_tokens), (Some(2), Some(0)));
        // Request 0 ends (3 tokens): its cells go with its slot.
        s.release(0);
        let mut st = StepStats::default();
        s.gauges(&mut st, Some(20));
        assert_eq!((st.running, st.kv_usage), (Some(1), Some(5.0 / 20.0)));
        // No known capacity: no share.
        s.gauges(&mut st, None);
        assert_eq!(st.kv_usage, None);
    }
}
