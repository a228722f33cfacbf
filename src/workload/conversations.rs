//! Multi-turn conversations (`--dataset conversations`): what a chat server sees.
//!
//! A conversation is a list of turns, each a new user message (token ids) and the
//! number of tokens to generate for it. The workload holds only the user messages:
//! turn k+1's prompt is made by the driver when turn k finishes, as turn k's prompt +
//! the tokens the engine actually generated + turn k+1's user message, so the engine's
//! prefix cache sees what it would see behind a chat server. No chat template is
//! applied (token ids are concatenated as they are), as the other workloads send raw
//! prompts.
//!
//! Two sources:
//!
//! - **synthetic**: per conversation, a number of turns drawn from `turns`; per turn, a
//!   user message of `input_len` ids drawn from the ordinary vocab (the first turn's
//!   length includes the tokenizer's special prefix, e.g. BOS, and no later turn gets
//!   one; no special suffix is added anywhere) and an output length from `output_len`.
//! - **ShareGPT** (`--dataset-path`): the file's real multi-turn conversations. From the
//!   first human message on, each (human, gpt) pair is a turn: the human text is the
//!   user message (the first tokenized with the tokenizer's special tokens, later ones
//!   without), the reply's token count is the output length (or a fixed override). A
//!   conversation stops at the first pair that does not alternate, at `turns`' largest
//!   value, and before the turn that would take its context (every prompt and reply so
//!   far) past [`MAX_CONTEXT`]; conversations left with fewer than 2 turns are dropped.
//!   The usable ones are shuffled with the seed.
//!
//! `think_time_ms` (none by default) is drawn per turn after the first: how long the
//! user waits after a reply before sending the next message.
//!
//! Draw order (fixed, so a seed pins the workload): synthetic, per conversation, its
//! turn count, then per turn its user length, output length, think time and ids;
//! ShareGPT, the shuffle, then per kept turn its think time.

use super::synthetic::Vocab;
use super::{shuffle, ChaCha8Rng, LengthDist, Tokenizer, WorkItem, Workload, WorkloadError};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest context (all prompts and replies of a conversation) kept from a ShareGPT
/// conversation: vLLM's ShareGPT limit on prompt + output.
pub const MAX_CONTEXT: u32 = super::sharegpt::MAX_TOTAL_LEN;

/// Most turns one conversation may have.
pub const MAX_TURNS: u32 = 1 << 10;

/// Longest think time (10 minutes): a typo must not hold a point for hours.
pub const MAX_THINK_MS: u32 = 600_000;

/// Where conversations come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ConversationSource {
    /// Random ids: per-turn user and output lengths.
    Synthetic {
        input_len: LengthDist,
        output_len: LengthDist,
    },
    /// ShareGPT's multi-turn conversations; `output_len` overrides every reply's length.
    Sharegpt {
        path: PathBuf,
        output_len: Option<u32>,
    },
}

/// A conversations workload's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversationSpec {
    /// Synthetic: turns per conversation, drawn per conversation. ShareGPT: the largest
    /// value caps a conversation's turns.
    pub turns: LengthDist,
    /// Milliseconds between a reply and the next user message (None: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think_time_ms: Option<LengthDist>,
    #[serde(flatten)]
    pub source: ConversationSource,
}

/// How a built workload's items group into conversations: conversation `c` is items
/// `turns(c)`, in turn order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationLayout {
    /// Index of each conversation's first item, ascending; one past the last item at
    /// the end.
    starts: Vec<usize>,
    /// Per item: nanoseconds the user thinks before sending it (0 for first turns).
    pub think_ns: Vec<u64>,
}

impl ConversationLayout {
    /// A layout from each conversation's first item (and one past the last item at the
    /// end) and every item's think time.
    pub fn new(starts: Vec<usize>, think_ns: Vec<u64>) -> ConversationLayout {
        ConversationLayout { starts, think_ns }
    }

    /// Conversations in the workload.
    pub fn count(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// Conversation `c`'s items (`c` wraps modulo [`count`](Self::count)).
    pub fn turns(&self, c: usize) -> Range<usize> {
        let c = c % self.count().max(1);
        self.starts[c]..self.starts[c + 1]
    }
}

/// Builds conversations until they hold at least `count` turns (every turn is a
/// request), cycling ShareGPT's usable ones when the file has too few.
pub(crate) fn build(
    spec: &ConversationSpec,
    tokenizer: Option<&Tokenizer>,
    count: usize,
    seed: u64,
    rng: &mut ChaCha8Rng,
) -> Result<Workload, WorkloadError> {
    let invalid = |reason: String| WorkloadError::Conversations { reason };
    LengthDist::validate_all(&[("turns per conversation", &spec.turns)])?;
    if !matches!(spec.turns, LengthDist::Normal { .. }) && spec.turns.max_len() > MAX_TURNS {
        return Err(invalid(format!(
            "--turns {} allows more than {MAX_TURNS} turns per conversation; ask for fewer",
            spec.turns
        )));
    }
    if let Some(t) = &spec.think_time_ms {
        LengthDist::validate_all(&[("think time (ms)", t)])?;
        if !matches!(t, LengthDist::Normal { .. }) && t.max_len() > MAX_THINK_MS {
            return Err(invalid(format!(
                "--think-time {t} allows more than {MAX_THINK_MS} ms (10 minutes) between turns; ask for less"
            )));
        }
    }
    let (convs, mut description) = match &spec.source {
        ConversationSource::Synthetic {
            input_len,
            output_len,
        } => synthetic(spec, input_len, output_len, tokenizer, count, rng)?,
        ConversationSource::Sharegpt { path, output_len } => {
            let tok = tokenizer.ok_or(WorkloadError::NeedsTokenizer {
                dataset: "conversations (from ShareGPT)",
            })?;
            sharegpt(spec, path, *output_len, tok, count, seed, rng)?
        }
    };
    let mut items = Vec::new();
    let mut starts = Vec::with_capacity(convs.len() + 1);
    let mut think_ns = Vec::new();
    for conv in convs {
        starts.push(items.len());
        for (k, turn) in conv.into_iter().enumerate() {
            let think = match (&spec.think_time_ms, k) {
                (Some(t), k) if k > 0 => u64::from(t.sample(rng, 1).min(MAX_THINK_MS)) * 1_000_000,
                _ => 0,
            };
            think_ns.push(think);
            items.push(turn);
        }
    }
    starts.push(items.len());
    let layout = ConversationLayout::new(starts, think_ns);
    let n = layout.count();
    let turns = items.len();
    description.push_str(&format!(
        "; {n} conversations, {turns} turns (mean {:.2} per conversation), think time {}, \
         turn k+1's prompt = turn k's prompt + its generated tokens + the next user message, \
         no chat template, seed {seed}",
        turns as f64 / n.max(1) as f64,
        spec.think_time_ms
            .as_ref()
            .map_or("none".to_string(), |t| format!("{} ms", t.describe())),
    ));
    Ok(Workload {
        conversations: Some(layout),
        ..Workload::new(items, description)
    })
}

/// Synthetic conversations until `count` turns.
fn synthetic(
    spec: &ConversationSpec,
    input_len: &LengthDist,
    output_len: &LengthDist,
    tokenizer: Option<&Tokenizer>,
    count: usize,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<Vec<WorkItem>>, String), WorkloadError> {
    LengthDist::validate_all(&[
        ("user message length", input_len),
        ("output length", output_len),
    ])?;
    let vocab = Vocab::new(tokenizer)?;
    let pre = vocab.prefix.len() as u32;
    if input_len.min_len() <= pre && !matches!(input_len, LengthDist::Normal { .. }) {
        return Err(WorkloadError::Conversations {
            reason: format!(
                "a first user message of {} tokens leaves none beside the tokenizer's {pre} \
                 special token(s); raise --input-len",
                input_len.min_len()
            ),
        });
    }
    let mut convs = Vec::new();
    let mut made = 0usize;
    while made < count {
        let turns = spec.turns.sample(rng, 1).min(MAX_TURNS);
        let mut conv = Vec::with_capacity(turns as usize);
        for k in 0..turns {
            let floor = if k == 0 { pre + 1 } else { 1 };
            let len = input_len.sample(rng, floor);
            let out = output_len.sample(rng, 1);
            let mut user = Vec::with_capacity(len as usize);
            if k == 0 {
                user.extend_from_slice(&vocab.prefix);
            }
            vocab.draw(rng, len - user.len() as u32, &mut user);
            conv.push(WorkItem {
                prompt: Arc::from(user),
                output_len: out,
            });
        }
        made += conv.len();
        convs.push(conv);
    }
    let description = format!(
        "conversations (synthetic): {} turns per conversation, user message {} tokens \
         (the first including the tokenizer's special prefix), output {} tokens per turn, {}",
        spec.turns.describe(),
        input_len.describe(),
        output_len.describe(),
        vocab.note
    );
    Ok((convs, description))
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    conversations: Option<Vec<Message<'a>>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    from: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

/// (human, reply) pairs from the first human message on, while they alternate.
fn pairs<'m, 'a>(messages: &'m [Message<'a>]) -> Vec<(&'m str, &'m str)> {
    let start = messages
        .iter()
        .position(|m| m.from == "human")
        .unwrap_or(messages.len());
    let mut out = Vec::new();
    for pair in messages[start..].chunks_exact(2) {
        if pair[0].from != "human" || pair[1].from == "human" {
            break;
        }
        out.push((pair[0].value.as_ref(), pair[1].value.as_ref()));
    }
    out
}

fn sharegpt(
    spec: &ConversationSpec,
    path: &Path,
    output_override: Option<u32>,
    tok: &Tokenizer,
    count: usize,
    seed: u64,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<Vec<WorkItem>>, String), WorkloadError> {
    super::sharegpt::check_override(output_override)?;
    let bytes = std::fs::read(path).map_err(|e| WorkloadError::io(path, e))?;
    let entries: Vec<Entry<'_>> = super::sharegpt::parse(path, &bytes)?;
    let total = entries.len();
    let mut multi: Vec<Vec<(&str, &str)>> = entries
        .iter()
        .filter_map(|e| e.conversations.as_deref())
        .map(pairs)
        .filter(|p| p.len() >= 2)
        .collect();
    let candidates = multi.len();
    shuffle(rng, &mut multi);
    let max_turns = spec.turns.max_len().min(MAX_TURNS) as usize;
    let mut kept: Vec<Vec<WorkItem>> = Vec::new();
    let mut turns_kept = 0usize;
    let mut visited = 0usize;
    for conv in &multi {
        if turns_kept >= count {
            break;
        }
        visited += 1;
        let mut turns = Vec::new();
        let mut context = 0u64;
        for (k, (human, reply)) in conv.iter().take(max_turns).enumerate() {
            let user = tok.encode_with(human, k == 0)?;
            let out = match output_override {
                Some(n) => n,
                None => u32::try_from(tok.encode_with(reply, false)?.len()).unwrap_or(u32::MAX),
            };
            let grown = context + user.len() as u64 + u64::from(out);
            if grown > u64::from(MAX_CONTEXT) || user.is_empty() || out == 0 {
                break;
            }
            context = grown;
            turns.push(WorkItem {
                prompt: Arc::from(user),
                output_len: out,
            });
        }
        if turns.len() >= 2 {
            turns_kept += turns.len();
            kept.push(turns);
        }
    }
    if kept.is_empty() {
        return Err(WorkloadError::SharegptNoneUsable {
            path: path.to_path_buf(),
            detail: format!(
                "{candidates} of {total} entries have 2+ (human, reply) turns and none keeps 2 turns within {MAX_CONTEXT} tokens of context"
            ),
        });
    }
    let distinct = kept.len();
    let mut convs = kept.clone();
    let mut cycled = None;
    let mut i = 0;
    while turns_kept < count {
        let c = kept[i % distinct].clone();
        turns_kept += c.len();
        convs.push(c);
        i += 1;
    }
    if i > 0 {
        cycled = Some(format!(
            "only {distinct} usable conversations: repeated in the same shuffled order (a repeated conversation is a prefix-cache hit)"
        ));
    }
    let output = match output_override {
        Some(n) => format!("output fixed {n} per turn (override)"),
        None => "output = the reply's token count".to_string(),
    };
    let mut description = format!(
        "conversations (sharegpt): from {} ({candidates} of {total} entries with 2+ (human, reply) turns, \
         shuffled with seed {seed}; {visited} tokenized, {distinct} kept), at most {max_turns} turns and \
         {MAX_CONTEXT} tokens of context each, user message = the human's text, {output}",
        path.display()
    );
    if let Some(note) = cycled {
        description.push_str("; ");
        description.push_str(&note);
    }
    Ok((convs, description))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, words, BOS};
    use super::super::{build as build_workload, parse_length, WorkloadSpec};
    use super::*;

    fn synthetic_spec(turns: &str, input: &str, output: &str) -> WorkloadSpec {
        WorkloadSpec::Conversations(ConversationSpec {
            turns: parse_length(turns).unwrap(),
            think_time_ms: None,
            source: ConversationSource::Synthetic {
                input_len: parse_length(input).unwrap(),
                output_len: parse_length(output).unwrap(),
            },
        })
    }

    #[test]
    fn synthetic_conversations_have_exact_turns_and_lengths() {
        let (_d, tok) = testutil::tiny();
        let w = build_workload(&synthetic_spec("4", "10", "6"), Some(&tok), 10, 3).unwrap();
        let layout = w.conversations.as_ref().unwrap();
        // 10 turns asked for: 3 conversations of 4.
        assert_eq!(layout.count(), 3);
        assert_eq!(w.len(), 12);
        for c in 0..3 {
            let r = layout.turns(c);
            assert_eq!(r.len(), 4);
            for (k, i) in r.enumerate() {
                let it = &w.items[i];
                assert_eq!(it.prompt.len(), 10);
                assert_eq!(it.output_len, 6);
                // BOS starts the first message only.
                assert_eq!(it.prompt[0] == BOS, k == 0, "conversation {c} turn {k}");
                assert!(it.prompt[1..].iter().all(|&t| t != BOS));
                assert_eq!(layout.think_ns[i], 0);
            }
        }
        // Wraps.
        assert_eq!(layout.turns(3), layout.turns(0));
        let again = build_workload(&synthetic_spec("4", "10", "6"), Some(&tok), 10, 3).unwrap();
        assert_eq!(w.to_jsonl(), again.to_jsonl());
        testutil::assert_described(&w, "3 conversations, 12 turns");
    }

    #[test]
    fn think_times_are_drawn_for_later_turns_only() {
        let spec = WorkloadSpec::Conversations(ConversationSpec {
            turns: parse_length("uniform:2:5").unwrap(),
            think_time_ms: Some(parse_length("uniform:10:20").unwrap()),
            source: ConversationSource::Synthetic {
                input_len: parse_length("8").unwrap(),
                output_len: parse_length("4").unwrap(),
            },
        });
        let w = build_workload(&spec, None, 40, 1).unwrap();
        let layout = w.conversations.as_ref().unwrap();
        let mut seen_turns = std::collections::BTreeSet::new();
        for c in 0..layout.count() {
            let r = layout.turns(c);
            seen_turns.insert(r.len());
            assert_eq!(layout.think_ns[r.start], 0);
            for i in r.start + 1..r.end {
                let ms = layout.think_ns[i] / 1_000_000;
                assert!((10..=20).contains(&ms), "{ms}");
                assert_eq!(layout.think_ns[i] % 1_000_000, 0);
            }
        }
        assert!(seen_turns.iter().all(|t| (2..=5).contains(t)));
        assert!(seen_turns.len() > 1);
    }

    #[test]
    fn bad_shapes_are_one_line_errors() {
        let (_d, tok) = testutil::tiny();
        let mut zero = synthetic_spec("1", "8", "4");
        if let WorkloadSpec::Conversations(c) = &mut zero {
            c.turns = LengthDist::Fixed { len: 0 };
        }
        for (s, needle) in [
            (zero, "at least 1"),
            (synthetic_spec("5000", "8", "4"), "--turns"),
            (synthetic_spec("2", "1", "4"), "raise --input-len"),
            (
                WorkloadSpec::Conversations(ConversationSpec {
                    think_time_ms: Some(parse_length("700000").unwrap()),
                    ..match synthetic_spec("2", "8", "4") {
                        WorkloadSpec::Conversations(c) => c,
                        _ => unreachable!(),
                    }
                }),
                "10 minutes",
            ),
        ] {
            let e = build_workload(&s, Some(&tok), 4, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    fn conv(turns: &[(&str, String)]) -> serde_json::Value {
        let turns: Vec<_> = turns
            .iter()
            .map(|(from, value)| serde_json::json!({"from": from, "value": value}))
            .collect();
        serde_json::json!({"id": "x", "conversations": turns})
    }

    #[test]
    fn sharegpt_keeps_alternating_pairs_within_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let (_d, tok) = testutil::tiny();
        let entries = vec![
            // 3 turns: user 5+1 (BOS), then 3, then 4; replies 7, 2, 9.
            conv(&[
                ("system", words(3)),
                ("human", words(5)),
                ("gpt", words(7)),
                ("human", words(3)),
                ("gpt", words(2)),
                ("human", words(4)),
                ("gpt", words(9)),
                ("human", words(4)),
            ]),
            // Breaks after its first pair: dropped (1 turn).
            conv(&[
                ("human", words(5)),
                ("gpt", words(7)),
                ("gpt", words(7)),
                ("human", words(3)),
            ]),
            // A second turn past the context: dropped.
            conv(&[
                ("human", words(5)),
                ("gpt", words(7)),
                ("human", words(3000)),
                ("gpt", words(2)),
            ]),
        ];
        let path = dir.path().join("sg.json");
        std::fs::write(&path, serde_json::to_vec(&entries).unwrap()).unwrap();
        let spec = WorkloadSpec::Conversations(ConversationSpec {
            turns: parse_length("8").unwrap(),
            think_time_ms: None,
            source: ConversationSource::Sharegpt {
                path: path.clone(),
                output_len: None,
            },
        });
        let w = build_workload(&spec, Some(&tok), 3, 0).unwrap();
        let layout = w.conversations.as_ref().unwrap();
        assert_eq!(layout.count(), 1);
        let lens: Vec<(usize, u32)> = w
            .items
            .iter()
            .map(|i| (i.prompt.len(), i.output_len))
            .collect();
        assert_eq!(lens, vec![(6, 7), (3, 2), (4, 9)]);
        assert_eq!(w.items[0].prompt[0], BOS);
        // More turns than the file has: cycled, and said.
        let w = build_workload(&spec, Some(&tok), 7, 0).unwrap();
        assert_eq!(w.conversations.as_ref().unwrap().count(), 3);
        testutil::assert_described(&w, "repeated in the same shuffled order");
        // --turns caps a conversation.
        let capped = WorkloadSpec::Conversations(ConversationSpec {
            turns: parse_length("2").unwrap(),
            think_time_ms: None,
            source: ConversationSource::Sharegpt {
                path,
                output_len: Some(5),
            },
        });
        let w = build_workload(&capped, Some(&tok), 2, 0).unwrap();
        let lens: Vec<(usize, u32)> = w
            .items
            .iter()
            .map(|i| (i.prompt.len(), i.output_len))
            .collect();
        assert_eq!(lens, vec![(6, 5), (3, 5)]);
    }
}
