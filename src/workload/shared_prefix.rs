//! Shared-prefix workloads: groups of prompts that start with the same system prompt,
//! the traffic a prefix cache (vLLM's automatic prefix caching, SGLang's RadixAttention)
//! exists for. SGLang's `bench_serving --dataset-name generated-shared-prefix`, with
//! its parameters and names: `num_groups` × `prompts_per_group` prompts, each its
//! group's system prompt (`system_prompt_len` tokens, the tokenizer's special prefix
//! such as BOS included) followed by its own question (`question_len` tokens, any
//! special suffix included), so every prompt has exactly `system_prompt_len +
//! question_len` tokens; `output_len` tokens to generate.
//!
//! Order: `grouped` sends a group's prompts one after another (group 0 first);
//! `shuffled` (SGLang's default) sends all prompts in a seeded random order.
//!
//! Draw order (fixed, so a seed pins the workload): for each group in turn, its system
//! prompt's length and ids; then for each of its prompts, the question's length, the
//! output length and the question's ids; then the shuffle, if any.

use super::synthetic::Vocab;
use super::{
    cycle_to, shuffle, ChaCha8Rng, LengthDist, Tokenizer, WorkItem, Workload, WorkloadError,
    MAX_LEN,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Most prompts one shared-prefix workload makes (groups × prompts per group).
pub const MAX_PROMPTS: u64 = 1 << 20;

/// The order prompts are sent in.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupOrder {
    /// A group's prompts one after another.
    Grouped,
    /// Every prompt in a seeded random order (SGLang's default).
    #[default]
    Shuffled,
}

impl GroupOrder {
    pub fn name(self) -> &'static str {
        match self {
            GroupOrder::Grouped => "grouped",
            GroupOrder::Shuffled => "shuffled",
        }
    }
}

/// A shared-prefix workload's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedPrefix {
    pub num_groups: u32,
    pub prompts_per_group: u32,
    /// Drawn once per group.
    pub system_prompt_len: LengthDist,
    /// Drawn once per prompt.
    pub question_len: LengthDist,
    pub output_len: LengthDist,
    pub order: GroupOrder,
}

impl SharedPrefix {
    /// The prompts it makes.
    pub fn prompts(&self) -> u64 {
        u64::from(self.num_groups) * u64::from(self.prompts_per_group)
    }
}

pub(crate) fn build(
    spec: &SharedPrefix,
    tokenizer: Option<&Tokenizer>,
    count: usize,
    seed: u64,
    rng: &mut ChaCha8Rng,
) -> Result<Workload, WorkloadError> {
    let invalid = |reason: String| WorkloadError::SharedPrefix { reason };
    if spec.num_groups == 0 || spec.prompts_per_group == 0 {
        return Err(invalid(format!(
            "{} groups of {} prompts make no prompt; give --num-groups and --prompts-per-group of at least 1",
            spec.num_groups, spec.prompts_per_group
        )));
    }
    if spec.prompts() > MAX_PROMPTS {
        return Err(invalid(format!(
            "{} groups of {} prompts are {} prompts, more than {MAX_PROMPTS}; use fewer groups or prompts per group",
            spec.num_groups,
            spec.prompts_per_group,
            spec.prompts()
        )));
    }
    LengthDist::validate_all(&[
        ("system prompt length", &spec.system_prompt_len),
        ("question length", &spec.question_len),
        ("output length", &spec.output_len),
    ])?;
    let vocab = Vocab::new(tokenizer)?;
    let (pre, suf) = (vocab.prefix.len() as u32, vocab.suffix.len() as u32);
    let fixed_short =
        |d: &LengthDist, floor: u32| !matches!(d, LengthDist::Normal { .. }) && d.min_len() < floor;
    // A prompt's own part must differ from its group's: at least one drawn id.
    if fixed_short(&spec.system_prompt_len, pre) || fixed_short(&spec.question_len, suf + 1) {
        return Err(invalid(format!(
            "the system prompt needs at least the tokenizer's {pre} leading special token(s) and \
             the question at least 1 token plus its {suf} trailing one(s); raise \
             --system-prompt-len or --question-len"
        )));
    }

    let too_long = |s_len: u32, q_len: u32| {
        invalid(format!(
            "a prompt of {s_len} + {q_len} tokens is above the limit of {MAX_LEN}; \
             shorten --system-prompt-len or --question-len"
        ))
    };
    let mut prompts = Vec::with_capacity(spec.prompts() as usize);
    for _ in 0..spec.num_groups {
        let s_len = spec.system_prompt_len.sample(rng, pre);
        let q_min = spec.question_len.min_len().max(suf + 1);
        if u64::from(s_len) + u64::from(q_min) > u64::from(MAX_LEN) {
            return Err(too_long(s_len, q_min));
        }
        let mut system = Vec::with_capacity(s_len as usize);
        system.extend_from_slice(&vocab.prefix);
        vocab.draw(rng, s_len - pre, &mut system);
        for _ in 0..spec.prompts_per_group {
            let q_len = spec.question_len.sample(rng, suf + 1);
            let out_len = spec.output_len.sample(rng, 1);
            if u64::from(s_len) + u64::from(q_len) > u64::from(MAX_LEN) {
                return Err(too_long(s_len, q_len));
            }
            let mut prompt = Vec::with_capacity((s_len + q_len) as usize);
            prompt.extend_from_slice(&system);
            vocab.draw(rng, q_len - suf, &mut prompt);
            prompt.extend_from_slice(&vocab.suffix);
            prompts.push(WorkItem {
                prompt: Arc::from(prompt),
                output_len: out_len,
            });
        }
    }
    if spec.order == GroupOrder::Shuffled {
        shuffle(rng, &mut prompts);
    }
    let made = prompts.len();
    let (items, repeated) = cycle_to(prompts, count);
    let mut description = format!(
        "shared-prefix: {} groups × {} prompts, system prompt {} tokens, question {} tokens, \
         output {} tokens, {} order, seed {seed}, {}",
        spec.num_groups,
        spec.prompts_per_group,
        spec.system_prompt_len.describe(),
        spec.question_len.describe(),
        spec.output_len.describe(),
        spec.order.name(),
        vocab.note
    );
    if let Some(note) = repeated {
        description.push_str(&format!(
            "; {note} (a repeated prompt is a full prefix-cache hit)"
        ));
    } else if count < made {
        description.push_str(&format!(
            "; the first {count} of its {made} prompts are used"
        ));
    }
    Ok(Workload::new(items, description))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, BOS};
    use super::super::{build, parse_length, WorkloadSpec};
    use super::*;

    fn shape(groups: u32, per: u32, s: u32, q: u32, order: GroupOrder) -> SharedPrefix {
        SharedPrefix {
            num_groups: groups,
            prompts_per_group: per,
            system_prompt_len: LengthDist::Fixed { len: s },
            question_len: LengthDist::Fixed { len: q },
            output_len: parse_length("8").unwrap(),
            order,
        }
    }

    fn spec(groups: u32, per: u32, s: &str, q: &str, order: GroupOrder) -> WorkloadSpec {
        WorkloadSpec::SharedPrefix(SharedPrefix {
            system_prompt_len: parse_length(s).unwrap(),
            question_len: parse_length(q).unwrap(),
            ..shape(groups, per, 1, 1, order)
        })
    }

    #[test]
    fn each_group_shares_exactly_its_system_prompt() {
        let (_d, tok) = testutil::tiny();
        let w = build(
            &spec(3, 4, "32", "8", GroupOrder::Grouped),
            Some(&tok),
            12,
            5,
        )
        .unwrap();
        assert_eq!(w.len(), 12);
        for (g, group) in w.items.chunks(4).enumerate() {
            let system = &group[0].prompt[..32];
            assert_eq!(system[0], BOS);
            for it in group {
                assert_eq!(it.prompt.len(), 40);
                assert_eq!(&it.prompt[..32], system, "group {g}");
                assert_eq!(it.output_len, 8);
            }
            // The questions differ (8 random ids from 12 words each).
            assert_ne!(group[0].prompt[32..], group[1].prompt[32..]);
        }
        assert_ne!(w.items[0].prompt[1..32], w.items[4].prompt[1..32]);
        // Seeded: the same bytes again; another seed, other prompts.
        let again = build(
            &spec(3, 4, "32", "8", GroupOrder::Grouped),
            Some(&tok),
            12,
            5,
        )
        .unwrap();
        assert_eq!(w.to_jsonl(), again.to_jsonl());
        let other = build(
            &spec(3, 4, "32", "8", GroupOrder::Grouped),
            Some(&tok),
            12,
            6,
        )
        .unwrap();
        assert_ne!(w.to_jsonl(), other.to_jsonl());
        testutil::assert_described(&w, "3 groups × 4 prompts");
    }

    #[test]
    fn shuffled_is_a_permutation_of_grouped() {
        let grouped = build(&spec(4, 5, "20", "6", GroupOrder::Grouped), None, 20, 1).unwrap();
        let shuffled = build(&spec(4, 5, "20", "6", GroupOrder::Shuffled), None, 20, 1).unwrap();
        assert_ne!(grouped.items, shuffled.items);
        let mut a: Vec<_> = grouped.items.iter().map(|i| i.prompt.to_vec()).collect();
        let mut b: Vec<_> = shuffled.items.iter().map(|i| i.prompt.to_vec()).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn count_truncates_or_repeats_and_says_so() {
        let s = spec(2, 3, "10", "2", GroupOrder::Grouped);
        let few = build(&s, None, 4, 0).unwrap();
        assert_eq!(few.len(), 4);
        testutil::assert_described(&few, "the first 4 of its 6 prompts");
        let many = build(&s, None, 9, 0).unwrap();
        assert_eq!(many.items[6], many.items[0]);
        testutil::assert_described(&many, "full prefix-cache hit");
    }

    #[test]
    fn bad_shapes_are_one_line_errors_naming_the_flag() {
        let (_d, tok) = testutil::tiny();
        for (s, needle) in [
            (shape(0, 3, 10, 2, GroupOrder::Grouped), "--num-groups"),
            (shape(2048, 1024, 10, 2, GroupOrder::Grouped), "more than"),
            (shape(1, 1, 0, 2, GroupOrder::Grouped), "at least 1"),
            (
                shape(1, 1, MAX_LEN, 1, GroupOrder::Grouped),
                "above the limit",
            ),
        ] {
            let e = build(&WorkloadSpec::SharedPrefix(s), Some(&tok), 1, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains('\n'));
        }
        // A question needs one id of its own beside the tokenizer's suffix (here, <eos>).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(
            &p,
            testutil::tokenizer_json_with_post(testutil::bos_eos_post()),
        )
        .unwrap();
        let tok = Tokenizer::from_file(&p).unwrap();
        let s = WorkloadSpec::SharedPrefix(shape(1, 1, 4, 1, GroupOrder::Grouped));
        let e = build(&s, Some(&tok), 1, 0).unwrap_err().to_string();
        assert!(
            e.contains("raise --system-prompt-len or --question-len"),
            "{e}"
        );
    }
}
