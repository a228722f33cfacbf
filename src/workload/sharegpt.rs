//! ShareGPT workloads (`ShareGPT_V3_unfiltered_cleaned_split.json`), sampled with the
//! rules of vLLM's `ShareGPTDataset` (`vllm/benchmarks/datasets.py`) and
//! `is_valid_sequence` (`vllm/benchmarks/dataset_utils.py`):
//!
//! 1. Keep entries that have a `conversations` list with at least 2 turns.
//! 2. Shuffle them with the seed.
//! 3. In that order: prompt = turn 0's `value`, completion = turn 1's `value` (whoever
//!    spoke them, as vLLM does; in the V3 file turn 0 is almost always the human's).
//!    Both are tokenized **with** special tokens, as vLLM's `tokenizer(text).input_ids`
//!    does, so with a BOS-adding tokenizer the output length counts one more than the
//!    reply's own tokens, matching vLLM's numbers. An `output_len` override replaces the
//!    completion's length (vLLM's `--sharegpt-output-len`).
//! 4. Drop the entry if prompt < 4 tokens, output < 4 tokens (not checked when overridden),
//!    prompt > 1024 tokens, or prompt + output > 2048 tokens.
//! 5. Stop once `count` entries passed; if the file runs out first, repeat the kept ones
//!    in order (vLLM instead draws extra ones with `random.choice`).
//!
//! The shuffle is ours (Fisher–Yates over ChaCha8): Python's `random.shuffle` stream cannot be
//! reproduced, so the same seed picks different conversations than vLLM does; the
//! filters and length accounting are the same.
//!
//! The ~650 MB file is read into memory once and parsed with borrowed strings, keeping
//! only the first two turns of each conversation; only entries visited in shuffled order
//! are tokenized.

use super::{
    cycle_to, serde_reason, shuffle, ChaCha8Rng, Tokenizer, WorkItem, Workload, WorkloadError,
};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

/// vLLM's `is_valid_sequence` defaults.
pub const MIN_LEN: u32 = 4;
pub const MAX_PROMPT_LEN: u32 = 1024;
pub const MAX_TOTAL_LEN: u32 = 2048;

/// vLLM's `is_valid_sequence(prompt_len, output_len, skip_min_output_len_check=...)` with
/// its default bounds.
pub fn is_valid_sequence(
    prompt_len: u32,
    output_len: u32,
    skip_min_output_len_check: bool,
) -> bool {
    let prompt_too_short = prompt_len < MIN_LEN;
    let output_too_short = !skip_min_output_len_check && output_len < MIN_LEN;
    let prompt_too_long = prompt_len > MAX_PROMPT_LEN;
    let combined_too_long =
        u64::from(prompt_len) + u64::from(output_len) > u64::from(MAX_TOTAL_LEN);
    !(prompt_too_short || output_too_short || prompt_too_long || combined_too_long)
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    conversations: Option<FirstTwo<'a>>,
}

#[derive(Deserialize)]
struct Turn<'a> {
    #[serde(borrow)]
    value: Cow<'a, str>,
}

/// The first two turns' texts, or `None` when the conversation has fewer than two; the
/// rest of the list is skipped without allocating.
struct FirstTwo<'a>(Option<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for FirstTwo<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FirstTwo<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of conversation turns")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first: Option<Turn<'a>> = seq.next_element()?;
                let second: Option<Turn<'a>> = match first {
                    Some(_) => seq.next_element()?,
                    None => None,
                };
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstTwo(first.zip(second).map(|(a, b)| (a.value, b.value))))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// A fixed output length must be at least 1.
pub(crate) fn check_override(output_override: Option<u32>) -> Result<(), WorkloadError> {
    if output_override == Some(0) {
        return Err(WorkloadError::InvalidSpecLength {
            what: "ShareGPT output length",
            spec: "0".into(),
            reason: "length must be at least 1".into(),
        });
    }
    Ok(())
}

/// The file's entries, borrowing its text; a JSON error names the line and column.
pub(crate) fn parse<'a, T: Deserialize<'a>>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<Vec<T>, WorkloadError> {
    serde_json::from_slice(bytes).map_err(|e| WorkloadError::SharegptJson {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        reason: serde_reason(&e),
    })
}

pub(crate) fn build(
    path: &Path,
    output_override: Option<u32>,
    tok: &Tokenizer,
    count: usize,
    seed: u64,
    rng: &mut ChaCha8Rng,
) -> Result<Workload, WorkloadError> {
    check_override(output_override)?;
    let bytes = std::fs::read(path).map_err(|e| WorkloadError::io(path, e))?;
    let entries: Vec<Entry<'_>> = parse(path, &bytes)?;
    let total = entries.len();
    let mut convs: Vec<(Cow<'_, str>, Cow<'_, str>)> = entries
        .into_iter()
        .filter_map(|e| e.conversations.and_then(|c| c.0))
        .collect();
    let two_turn = convs.len();
    shuffle(rng, &mut convs);

    let mut kept: Vec<WorkItem> = Vec::with_capacity(count.min(two_turn));
    let mut visited = 0usize;
    for (prompt, completion) in &convs {
        if kept.len() >= count {
            break;
        }
        visited += 1;
        let prompt_ids = tok.encode(prompt)?;
        let prompt_len = u32::try_from(prompt_ids.len()).unwrap_or(u32::MAX);
        let output_len = match output_override {
            Some(n) => n,
            None => u32::try_from(tok.encode(completion)?.len()).unwrap_or(u32::MAX),
        };
        if !is_valid_sequence(prompt_len, output_len, output_override.is_some()) {
            continue;
        }
        kept.push(WorkItem {
            prompt: Arc::from(prompt_ids),
            output_len,
        });
    }
    if kept.is_empty() {
        return Err(WorkloadError::SharegptNoneUsable {
            path: path.to_path_buf(),
            detail: format!(
                "{two_turn} of {total} entries have 2+ turns and none passes vLLM's filters (prompt {MIN_LEN}..={MAX_PROMPT_LEN} tokens, output >= {MIN_LEN}, prompt+output <= {MAX_TOTAL_LEN}){}",
                match output_override {
                    Some(n) => format!(" with the output length overridden to {n}"),
                    None => String::new(),
                }
            ),
        });
    }
    let distinct = kept.len();
    let (items, cycled) = cycle_to(kept, count);
    let output = match output_override {
        Some(n) => format!("output fixed {n} (override)"),
        None => "output = second turn's token count".to_string(),
    };
    let mut description = format!(
        "sharegpt: {count} requests from {} ({two_turn} of {total} entries with 2+ turns, shuffled with seed {seed}; \
         {visited} tokenized, {distinct} kept), prompt = first turn, {output}; vLLM filters: prompt {MIN_LEN}..={MAX_PROMPT_LEN} tokens, \
         output >= {MIN_LEN}{}, prompt+output <= {MAX_TOTAL_LEN}",
        path.display(),
        if output_override.is_some() { " (not checked: overridden)" } else { "" },
    );
    if let Some(note) = cycled {
        description.push_str("; ");
        description.push_str(&note);
    }
    Ok(Workload::new(items, description))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, words, BOS};
    use super::super::{build as build_workload, WorkloadSpec};
    use super::*;
    use std::path::PathBuf;

    fn conv(id: &str, turns: &[(&str, String)]) -> serde_json::Value {
        let turns: Vec<_> = turns
            .iter()
            .map(
                |(from, value)| serde_json::json!({"from": from, "value": value, "markdown": null}),
            )
            .collect();
        serde_json::json!({"id": id, "conversations": turns})
    }

    /// Each entry hits one rule (with the tiny tokenizer, N words = N+1 tokens with BOS).
    fn fixture(dir: &Path) -> PathBuf {
        let entries = vec![
            // Survivors.
            conv("ok_a", &[("human", words(9)), ("gpt", words(19))]), // prompt 10, output 20
            conv(
                "ok_b",
                &[("human", words(3)), ("gpt", words(3)), ("human", words(50))],
            ), // 4, 4: exactly the minimum
            conv(
                "ok_max_prompt",
                &[("human", words(1023)), ("gpt", words(1023))],
            ), // 1024 + 1024 = 2048
            // Dropped.
            conv("one_turn", &[("human", words(10))]),
            conv("no_turns", &[]),
            serde_json::json!({"id": "no_conversations_key", "items": []}),
            conv("short_prompt", &[("human", words(2)), ("gpt", words(20))]), // prompt 3
            conv("short_output", &[("human", words(10)), ("gpt", words(2))]), // output 3
            conv("long_prompt", &[("human", words(1024)), ("gpt", words(10))]), // prompt 1025
            conv(
                "long_total",
                &[("human", words(1000)), ("gpt", words(1048))],
            ), // 1001 + 1049 = 2050
        ];
        let p = dir.join("sharegpt.json");
        std::fs::write(&p, serde_json::to_string_pretty(&entries).unwrap()).unwrap();
        p
    }

    fn spec(path: &Path, output_len: Option<u32>) -> WorkloadSpec {
        WorkloadSpec::Sharegpt {
            path: path.to_path_buf(),
            output_len,
        }
    }

    fn lens(w: &Workload) -> Vec<(usize, u32)> {
        let mut v: Vec<_> = w
            .items
            .iter()
            .map(|it| (it.prompt.len(), it.output_len))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn vllm_rule_bounds() {
        assert!(is_valid_sequence(4, 4, false));
        assert!(!is_valid_sequence(3, 100, false));
        assert!(!is_valid_sequence(100, 3, false));
        assert!(is_valid_sequence(100, 3, true));
        assert!(is_valid_sequence(1024, 1024, false));
        assert!(!is_valid_sequence(1025, 10, false));
        assert!(!is_valid_sequence(1000, 1049, false));
        assert!(!is_valid_sequence(3, 100, true));
    }

    #[test]
    fn filters_keep_exactly_the_valid_entries() {
        let (d, tok) = testutil::tiny();
        let p = fixture(d.path());
        let w = build_workload(&spec(&p, None), Some(&tok), 3, 0).unwrap();
        assert_eq!(lens(&w), vec![(4, 4), (10, 20), (1024, 1024)]);
        assert!(w.items.iter().all(|it| it.prompt[0] == BOS));
        testutil::assert_described(&w, "7 of 10 entries with 2+ turns");
        testutil::assert_described(&w, "3 kept");
        assert!(!w.description.contains("repeated"), "{}", w.description);
        // The fixed prompt tokens are the real tokenization of the first turn.
        let ten = w.items.iter().find(|it| it.prompt.len() == 10).unwrap();
        assert_eq!(ten.prompt.to_vec(), tok.encode(&words(9)).unwrap());
    }

    #[test]
    fn output_override_skips_the_min_output_check() {
        let (d, tok) = testutil::tiny();
        let p = fixture(d.path());
        // short_output now survives; long_total (prompt 1001) fails 1001 + 1100 > 2048, and
        // so do the 1024-token prompts (1024 + 1100).
        let w = build_workload(&spec(&p, Some(1100)), Some(&tok), 10, 0).unwrap();
        let mut distinct: Vec<usize> = w.items.iter().map(|it| it.prompt.len()).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct, vec![4, 10, 11]);
        assert!(w.items.iter().all(|it| it.output_len == 1100));
        testutil::assert_described(&w, "override");
        let w = build_workload(&spec(&p, Some(4)), Some(&tok), 5, 0).unwrap();
        assert_eq!(
            {
                let mut v: Vec<usize> = w.items.iter().map(|it| it.prompt.len()).collect();
                v.sort();
                v
            },
            vec![4, 10, 11, 1001, 1024]
        );
    }

    #[test]
    fn stops_early_and_cycles_when_short() {
        let (d, tok) = testutil::tiny();
        let p = fixture(d.path());
        let w = build_workload(&spec(&p, None), Some(&tok), 1, 0).unwrap();
        assert_eq!(w.len(), 1);
        testutil::assert_described(&w, "1 kept");
        let w = build_workload(&spec(&p, None), Some(&tok), 8, 0).unwrap();
        assert_eq!(w.len(), 8);
        for i in 3..8 {
            assert_eq!(w.items[i], w.items[i - 3]);
        }
        testutil::assert_described(&w, "only 3 distinct prompts");
    }

    #[test]
    fn seed_determinism() {
        let (d, tok) = testutil::tiny();
        let p = fixture(d.path());
        let w = build_workload(&spec(&p, None), Some(&tok), 3, 11).unwrap();
        // Pinned order of the 3 survivors for seed 11 (prompt length, output length): a
        // change of the shuffle changes which conversations every run uses.
        let order: Vec<(usize, u32)> = w
            .items
            .iter()
            .map(|it| (it.prompt.len(), it.output_len))
            .collect();
        assert_eq!(order, [(4, 4), (10, 20), (1024, 1024)]);
        let a = w.to_jsonl();
        // Some seed orders the 3 survivors differently.
        assert!(
            (0..20).any(|s| build_workload(&spec(&p, None), Some(&tok), 3, s)
                .unwrap()
                .to_jsonl()
                != a)
        );
    }

    #[test]
    fn malformed_and_unusable_files() {
        let (d, tok) = testutil::tiny();
        let p = d.path().join("bad.json");
        std::fs::write(
            &p,
            "[\n  {\"conversations\": [\n    {\"from\": \"human\", \"value\": 5}\n  ]}\n]",
        )
        .unwrap();
        let e = build_workload(&spec(&p, None), Some(&tok), 1, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("ShareGPT file {} line 3 column", p.display())),
            "{e}"
        );
        assert!(e.contains("invalid type: integer `5`"), "{e}");
        assert!(
            e.contains("ShareGPT_V3_unfiltered_cleaned_split.json"),
            "{e}"
        );
        assert!(!e.contains('\n'));

        std::fs::write(&p, "{\"prompt\": \"jsonl, not sharegpt\"}\n").unwrap();
        let e = build_workload(&spec(&p, None), Some(&tok), 1, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1 column") && e.contains("expected a sequence"),
            "{e}"
        );

        std::fs::write(
            &p,
            serde_json::to_string(&[conv("x", &[("human", words(1)), ("gpt", words(9))])]).unwrap(),
        )
        .unwrap();
        let e = build_workload(&spec(&p, None), Some(&tok), 1, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has no usable conversation: 1 of 1 entries have 2+ turns"),
            "{e}"
        );

        let e = build_workload(&spec(&d.path().join("absent.json"), None), Some(&tok), 1, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read ") && e.contains("check the path"),
            "{e}"
        );

        let e = build_workload(&spec(&p, Some(0)), Some(&tok), 1, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be at least 1"), "{e}");
    }

    #[test]
    fn escaped_strings_parse() {
        let (d, tok) = testutil::tiny();
        let p = d.path().join("esc.json");
        std::fs::write(
            &p,
            r#"[{"id":"e","conversations":[{"from":"human","value":"the\nquick \"brown\" fox \u0041"},{"from":"gpt","value":"a b a b"}]}]"#,
        )
        .unwrap();
        let w = build_workload(&spec(&p, None), Some(&tok), 1, 0).unwrap();
        assert_eq!(
            w.items[0].prompt.to_vec(),
            tok.encode("the\nquick \"brown\" fox A").unwrap()
        );
        assert_eq!(w.items[0].output_len, 5);
    }
}
