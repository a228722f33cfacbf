//! Conversations in progress (`--dataset conversations`): which are open, which turn
//! each sends next and when, and the context each has built.
//!
//! A load mode starts *conversations* (batch: B at once, the next batch when all have
//! ended; concurrency: C open at once; open loops: one per arrival); each conversation
//! then sends its turns one at a time: turn k+1 becomes due when turn k finishes, plus
//! the workload's think time, and its prompt is turn k's prompt + the token ids the
//! engine generated + turn k+1's user message. A turn that fails, or whose engine
//! returned no token ids, ends its conversation: the next prompt cannot be made.

use crate::core::clock::MonoNs;
use crate::core::measure::{Figure, Measure};
use crate::core::request::RequestId;
use crate::trace::RequestTrace;
use crate::workload::conversations::ConversationLayout;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

/// One open conversation.
struct Chat {
    /// Its turns' items in the workload.
    items: Range<usize>,
    /// Turns sent so far.
    sent: usize,
    /// Turns it sends in all: every one, or what `--num-requests` had left.
    turns: usize,
    /// Every prompt and reply so far: the next prompt's start.
    context: Vec<u32>,
    /// Batch mode: the batch it started in.
    round: Option<u32>,
    /// When its next turn is due, as a scheduled arrival (None: its first turn in a
    /// closed loop, due at once).
    due: Option<MonoNs>,
}

/// A turn ready to send.
pub(super) struct Turn {
    pub conversation: u64,
    pub turn: u32,
    pub item: usize,
    pub prompt: Arc<[u32]>,
    pub round: Option<u32>,
    pub intended: Option<MonoNs>,
}

/// A phase's open conversations.
#[derive(Default)]
pub(super) struct Chats {
    open: FxHashMap<u64, Chat>,
    /// (due ns, conversation) of each open conversation with nothing in flight.
    waiting: BTreeSet<(u64, u64)>,
    /// The conversation of each turn in flight.
    by_request: FxHashMap<RequestId, u64>,
    pub stats: ConversationRun,
}

impl Chats {
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// Opens conversation `serial` (its items from `layout`), sending at most `limit`
    /// turns; its first turn is due at `due` (None: now). Returns the turns it will send.
    pub fn start(
        &mut self,
        layout: &ConversationLayout,
        serial: u64,
        limit: usize,
        round: Option<u32>,
        due: Option<MonoNs>,
    ) -> usize {
        let items = layout.turns(usize::try_from(serial).unwrap_or(usize::MAX));
        let turns = items.len().min(limit);
        if turns == 0 {
            return 0;
        }
        self.stats.started += 1;
        self.waiting.insert((due.map_or(0, |d| d.0), serial));
        self.open.insert(
            serial,
            Chat {
                items,
                sent: 0,
                turns,
                context: Vec::new(),
                round,
                due,
            },
        );
        turns
    }

    /// When the earliest waiting turn is due (ns), if any is waiting.
    pub fn next_due(&self) -> Option<u64> {
        self.waiting.first().map(|&(d, _)| d)
    }

    /// The next turn due by `now`, its prompt made from the conversation's context and
    /// its user message `user`.
    pub fn pop_due(&mut self, now: MonoNs, user: impl Fn(usize) -> Arc<[u32]>) -> Option<Turn> {
        let &(due, serial) = self.waiting.first()?;
        if due > now.0 {
            return None;
        }
        self.waiting.pop_first();
        let chat = self.open.get_mut(&serial)?;
        let item = chat.items.start + chat.sent;
        chat.context.extend_from_slice(&user(item));
        let turn = Turn {
            conversation: serial,
            turn: chat.sent as u32,
            item,
            prompt: Arc::from(chat.context.as_slice()),
            round: chat.round,
            intended: chat.due,
        };
        chat.sent += 1;
        Some(turn)
    }

    /// Links a submitted turn's request to its conversation.
    pub fn sent(&mut self, request: RequestId, conversation: u64) {
        self.by_request.insert(request, conversation);
    }

    /// A turn ended (any way): extends its conversation's context with the generated
    /// ids and schedules its next turn `think_ns` after `t`'s finish, or ends it.
    /// `keep_ids`: leave the ids in the trace (`--save-token-ids`).
    pub fn finished(&mut self, t: &mut RequestTrace, layout: &ConversationLayout, keep_ids: bool) {
        let Some(serial) = self.by_request.remove(&t.id) else {
            return;
        };
        let Some(chat) = self.open.get_mut(&serial) else {
            return;
        };
        let ids = if keep_ids {
            t.token_ids.clone()
        } else {
            t.token_ids.take()
        };
        let ended = if !t.is_success() {
            self.stats.failed_turn += 1;
            true
        } else if chat.sent >= chat.turns {
            self.stats.completed += 1;
            true
        } else if let Some(ids) = ids {
            chat.context.extend_from_slice(&ids);
            let think = layout.think_ns[chat.items.start + chat.sent];
            let due = t.finish_ns.unwrap_or(t.submit_ns).0.saturating_add(think);
            chat.due = Some(MonoNs(due));
            self.waiting.insert((due, serial));
            false
        } else {
            self.stats.no_token_ids += 1;
            true
        };
        if ended {
            self.open.remove(&serial);
        }
    }
}

/// What a point's conversations did, as the driver saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationRun {
    pub started: u64,
    /// Sent every turn they were to send.
    pub completed: u64,
    /// Ended at a failed turn.
    pub failed_turn: u64,
    /// Ended because the engine returned no token ids to build the next prompt from.
    pub no_token_ids: u64,
}

impl Measure for ConversationRun {
    const NAME: &'static str = "conversations";
    const DEFINITION: &'static str = "--dataset conversations: conversations the point \
        started, those that sent every turn (all of the workload's, or what --num-requests \
        left for the last), and those ended early: at a failed turn, or because the engine \
        returned no generated token ids to build the next turn's prompt from";

    fn figures(&self) -> Vec<Figure> {
        vec![
            Figure::new("conversations_started", Some(self.started as f64), ""),
            Figure::new("conversations_completed", Some(self.completed as f64), ""),
            Figure::new(
                "conversations_ended_early",
                Some((self.failed_turn + self.no_token_ids) as f64),
                "",
            ),
        ]
    }

    fn warning(&self) -> Option<String> {
        let mut w = Vec::new();
        if self.failed_turn > 0 {
            w.push(format!(
                "{} conversations ended at a failed turn",
                self.failed_turn
            ));
        }
        if self.no_token_ids > 0 {
            w.push(format!(
                "{} conversations ended early: the engine returned no generated token ids to build the next prompt from",
                self.no_token_ids
            ));
        }
        (!w.is_empty()).then(|| w.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::request::FinishReason;

    fn layout() -> ConversationLayout {
        ConversationLayout::new(vec![0, 3, 5], vec![0, 1_000, 2_000, 0, 500])
    }

    fn done(id: RequestId, prompt: usize, ids: Option<Vec<u32>>, finish: u64) -> RequestTrace {
        let mut t = RequestTrace::new(id, 0, prompt as u32, 2, MonoNs(finish - 10));
        t.finish_ns = Some(MonoNs(finish));
        t.finish_reason = Some(FinishReason::Length);
        t.token_ids = ids;
        t
    }

    #[test]
    fn turns_grow_the_context_and_wait_their_think_time() {
        let l = layout();
        let users: Vec<Arc<[u32]>> = (0..5).map(|i| Arc::from(vec![100 + i as u32])).collect();
        let user = |i: usize| users[i].clone();
        let mut c = Chats::default();
        assert_eq!(c.start(&l, 0, usize::MAX, None, None), 3);
        let t0 = c.pop_due(MonoNs(5), user).unwrap();
        assert_eq!((t0.conversation, t0.turn, t0.item), (0, 0, 0));
        assert_eq!(&*t0.prompt, &[100]);
        assert!(c.pop_due(MonoNs(5), user).is_none());
        c.sent(7, 0);
        let mut t = done(7, 1, Some(vec![9, 8]), 50);
        c.finished(&mut t, &l, false);
        assert_eq!(t.token_ids, None, "ids taken when not saved");
        // Due 1 µs of think time after the finish.
        assert_eq!(c.next_due(), Some(1_050));
        assert!(c.pop_due(MonoNs(1_049), user).is_none());
        let t1 = c.pop_due(MonoNs(1_050), user).unwrap();
        assert_eq!(&*t1.prompt, &[100, 9, 8, 101]);
        assert_eq!(t1.intended, Some(MonoNs(1_050)));
        c.sent(8, 0);
        // A failed turn ends the conversation.
        let mut t = done(8, 4, None, 2_000);
        t.finish_reason = Some(FinishReason::Error);
        c.finished(&mut t, &l, true);
        assert!(c.is_empty());
        assert_eq!(c.stats.failed_turn, 1);
    }

    #[test]
    fn a_limit_cuts_the_last_conversation_and_missing_ids_end_one() {
        let l = layout();
        let user = |i: usize| -> Arc<[u32]> { Arc::from(vec![i as u32]) };
        let mut c = Chats::default();
        assert_eq!(c.start(&l, 1, 1, Some(0), Some(MonoNs(10))), 1);
        assert_eq!(
            c.start(&l, 2, 0, None, None),
            0,
            "wraps to conversation 0; limit 0"
        );
        let t = c.pop_due(MonoNs(10), user).unwrap();
        assert_eq!((t.item, t.round), (3, Some(0)));
        c.sent(1, 1);
        c.finished(&mut done(1, 1, Some(vec![1]), 20), &l, false);
        assert_eq!(c.stats.completed, 1);
        assert!(c.is_empty());
        c.start(&l, 0, usize::MAX, None, None);
        c.pop_due(MonoNs(0), user).unwrap();
        c.sent(2, 0);
        c.finished(&mut done(2, 1, None, 30), &l, false);
        assert_eq!(c.stats.no_token_ids, 1);
        assert!(c.warning_text().contains("no generated token ids"));
    }

    impl Chats {
        fn warning_text(&self) -> String {
            self.stats.warning().unwrap_or_default()
        }
    }
}
