//! Synthetic workloads: random token ids with exact, seeded lengths.
//!
//! Each prompt is the tokenizer's special prefix (e.g. BOS), then ids drawn uniformly
//! from the ordinary vocab (every added/special token excluded, so any sequence is a
//! valid prompt), then its special suffix (usually none): `input_len` tokens in all,
//! exactly. Without a tokenizer the ids come from `0..32000` and nothing is added.
//!
//! Draw order (fixed, so a seed pins the workload): for each item in turn, its input
//! length, its output length, then its ids left to right.

use super::Tokenizer;
use super::{below, ChaCha8Rng, LengthDist, WorkItem, Workload, WorkloadError, DEFAULT_VOCAB};
use std::sync::Arc;

pub(crate) fn build(
    input_len: &LengthDist,
    output_len: &LengthDist,
    tokenizer: Option<&Tokenizer>,
    count: usize,
    seed: u64,
    rng: &mut ChaCha8Rng,
) -> Result<Workload, WorkloadError> {
    LengthDist::validate_all(&[("input length", input_len), ("output length", output_len)])?;

    let vocab = Vocab::new(tokenizer)?;
    if let Some(tok) = tokenizer {
        let specials = tok.num_special_tokens();
        if input_len.min_len() < specials && !matches!(input_len, LengthDist::Normal { .. }) {
            return Err(WorkloadError::InputShorterThanSpecials {
                len: input_len.min_len(),
                specials,
                path: tok.path().to_path_buf(),
            });
        }
    }
    let specials = vocab.specials();

    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        let in_len = input_len.sample(rng, specials);
        let out_len = output_len.sample(rng, 1);
        let mut prompt = Vec::with_capacity(in_len as usize);
        prompt.extend_from_slice(&vocab.prefix);
        vocab.draw(rng, in_len - specials, &mut prompt);
        prompt.extend_from_slice(&vocab.suffix);
        items.push(WorkItem {
            prompt: Arc::from(prompt),
            output_len: out_len,
        });
    }

    let mut description = format!(
        "synthetic: {count} requests, input {} tokens, output {} tokens, seed {seed}, {}",
        input_len.describe(),
        output_len.describe(),
        vocab.note,
    );
    let mean =
        |f: &dyn Fn(&WorkItem) -> u64| items.iter().map(f).sum::<u64>() as f64 / count as f64;
    if matches!(input_len, LengthDist::Normal { .. })
        || matches!(output_len, LengthDist::Normal { .. })
    {
        description.push_str(&format!(
            "; drawn means: input {:.1}, output {:.1}",
            mean(&|it| it.prompt.len() as u64),
            mean(&|it| u64::from(it.output_len))
        ));
    }
    Ok(Workload::new(items, description))
}

/// What synthetic prompts are made of: the tokenizer's special prefix and suffix, and
/// the ordinary ids they are drawn from.
pub(crate) struct Vocab {
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
    /// `None`: `0..DEFAULT_VOCAB` (no tokenizer).
    ids: Option<Vec<u32>>,
    /// How the ids are drawn, for the workload's description.
    pub note: String,
}

impl Vocab {
    pub fn new(tokenizer: Option<&Tokenizer>) -> Result<Vocab, WorkloadError> {
        let Some(tok) = tokenizer else {
            return Ok(Vocab {
                prefix: Vec::new(),
                suffix: Vec::new(),
                ids: None,
                note: format!(
                    "random ids from 0..{DEFAULT_VOCAB} (no tokenizer given: no BOS added)"
                ),
            });
        };
        let ids = tok.ordinary_ids();
        if ids.is_empty() {
            return Err(WorkloadError::EmptyVocab {
                path: tok.path().to_path_buf(),
            });
        }
        let excluded = tok.vocab_size().saturating_sub(ids.len() as u32);
        let mut note = format!(
            "random ids from the {}-token vocab of {} ({} added/special tokens excluded)",
            tok.vocab_size(),
            tok.path().display(),
            excluded
        );
        if !tok.special_prefix().is_empty() {
            note.push_str(&format!(
                ", each prompt starting with {:?} as the tokenizer adds",
                tok.special_prefix()
            ));
        }
        if !tok.special_suffix().is_empty() {
            note.push_str(&format!(", ending with {:?}", tok.special_suffix()));
        }
        Ok(Vocab {
            prefix: tok.special_prefix().to_vec(),
            suffix: tok.special_suffix().to_vec(),
            ids: Some(ids),
            note,
        })
    }

    /// Special tokens the tokenizer adds to every prompt.
    pub fn specials(&self) -> u32 {
        (self.prefix.len() + self.suffix.len()) as u32
    }

    /// Appends `n` ids drawn uniformly from the ordinary vocab.
    pub fn draw(&self, rng: &mut ChaCha8Rng, n: u32, out: &mut Vec<u32>) {
        let n_ids = self
            .ids
            .as_ref()
            .map_or(u64::from(DEFAULT_VOCAB), |v| v.len() as u64);
        for _ in 0..n {
            let k = below(rng, n_ids);
            out.push(match &self.ids {
                Some(v) => v[k as usize],
                None => k as u32,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, BOS, VOCAB};
    use super::super::{build, parse_length, WorkloadSpec};
    use super::*;

    fn spec(i: &str, o: &str) -> WorkloadSpec {
        WorkloadSpec::Synthetic {
            input_len: parse_length(i).unwrap(),
            output_len: parse_length(o).unwrap(),
        }
    }

    #[test]
    fn fixed_lengths_are_exact_with_bos_first() {
        let (_d, tok) = testutil::tiny();
        let w = build(&spec("512", "64"), Some(&tok), 20, 0).unwrap();
        assert_eq!(w.len(), 20);
        for it in &w.items {
            assert_eq!(it.prompt.len(), 512);
            assert_eq!(it.output_len, 64);
            assert_eq!(it.prompt[0], BOS);
            // No special id after the BOS; all ids in the ordinary vocab.
            assert!(it.prompt[1..].iter().all(|&id| (4..VOCAB).contains(&id)));
        }
        assert_eq!(w.total_prompt_tokens(), 20 * 512);
        // Decoding and re-encoding gives the same ids: exact count as the model sees it.
        let text = tok.decode(&w.items[0].prompt[1..]).unwrap();
        assert_eq!(tok.encode(&text).unwrap(), w.items[0].prompt.to_vec());
        testutil::assert_described(&w, "input fixed 512 tokens");
        testutil::assert_described(&w, "4 added/special tokens excluded");
    }

    #[test]
    fn uniform_lengths_stay_in_range_and_cover_it() {
        let (_d, tok) = testutil::tiny();
        let w = build(&spec("uniform:96:160", "uniform:1:4"), Some(&tok), 2000, 7).unwrap();
        let ins: Vec<usize> = w.items.iter().map(|it| it.prompt.len()).collect();
        assert!(ins.iter().all(|&n| (96..=160).contains(&n)));
        assert!(ins.contains(&96) && ins.contains(&160));
        let outs: Vec<u32> = w.items.iter().map(|it| it.output_len).collect();
        assert!(outs.iter().all(|&n| (1..=4).contains(&n)));
        for v in 1..=4 {
            assert!(outs.contains(&v));
        }
        assert!(w.items.iter().all(|it| it.prompt[0] == BOS));
    }

    #[test]
    fn normal_lengths_round_and_clamp() {
        let (_d, tok) = testutil::tiny();
        let w = build(&spec("normal:128:32", "normal:2:5"), Some(&tok), 4000, 1).unwrap();
        let mean = w.total_prompt_tokens() as f64 / 4000.0;
        assert!((mean - 128.0).abs() < 3.0, "{mean}");
        // Heavy clamping on the output side: never below 1.
        assert!(w.items.iter().all(|it| it.output_len >= 1));
        assert!(w.items.iter().any(|it| it.output_len == 1));
        assert!(w.items.iter().all(|it| it.prompt[0] == BOS));
        testutil::assert_described(&w, "drawn means");
        // A prompt is at least the BOS.
        let w = build(&spec("normal:1:3", "1"), Some(&tok), 500, 1).unwrap();
        assert!(w
            .items
            .iter()
            .all(|it| !it.prompt.is_empty() && it.prompt[0] == BOS));
        assert!(w.items.iter().any(|it| it.prompt.len() == 1));
    }

    #[test]
    fn same_seed_same_bytes_other_seed_differs() {
        let (_d, tok) = testutil::tiny();
        for s in [
            spec("uniform:8:64", "normal:16:4"),
            spec("32", "uniform:1:9"),
        ] {
            let a = build(&s, Some(&tok), 50, 42).unwrap().to_jsonl();
            let b = build(&s, Some(&tok), 50, 42).unwrap().to_jsonl();
            let c = build(&s, Some(&tok), 50, 43).unwrap().to_jsonl();
            assert_eq!(a, b);
            assert_ne!(a, c);
        }
        // A longer workload extends a shorter one with the same seed (draws are in order).
        let s = spec("uniform:8:64", "4");
        let short = build(&s, Some(&tok), 10, 5).unwrap();
        let long = build(&s, Some(&tok), 20, 5).unwrap();
        assert_eq!(short.items[..], long.items[..10]);
    }

    #[test]
    fn pinned_bytes() {
        // Guards byte-for-byte stability across dependency updates (ChaCha8 stream, our
        // sampler, rand_distr's normal): a change here changes every saved workload.jsonl.
        let w = build(&spec("uniform:2:4", "normal:5:2"), None, 3, 0).unwrap();
        assert_eq!(String::from_utf8(w.to_jsonl()).unwrap(), PINNED);
    }
    const PINNED: &str = "{\"prompt_token_ids\":[18476,19480],\"output_len\":6}\n\
                          {\"prompt_token_ids\":[18481,29752,14290],\"output_len\":3}\n\
                          {\"prompt_token_ids\":[21724,16976,27374,24480],\"output_len\":6}\n";

    #[test]
    fn without_tokenizer_draws_from_32000() {
        let w = build(&spec("300", "8"), None, 40, 0).unwrap();
        assert!(w.items.iter().all(|it| it.prompt.len() == 300));
        assert!(w
            .items
            .iter()
            .flat_map(|it| it.prompt.iter())
            .all(|&id| id < DEFAULT_VOCAB));
        assert!(w
            .items
            .iter()
            .flat_map(|it| it.prompt.iter())
            .any(|&id| id > 16_000));
        testutil::assert_described(&w, "0..32000");
        let a = build(&spec("300", "8"), None, 40, 0).unwrap();
        assert_eq!(a.to_jsonl(), w.to_jsonl());
    }

    #[test]
    fn invalid_specs_from_config_are_rejected() {
        let s = WorkloadSpec::Synthetic {
            input_len: LengthDist::Uniform { min: 10, max: 5 },
            output_len: LengthDist::Fixed { len: 4 },
        };
        let e = build(&s, None, 1, 0).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid input length uniform:10:5: min 10 is above max 5;"),
            "{e}"
        );
        let s = WorkloadSpec::Synthetic {
            input_len: LengthDist::Fixed { len: 4 },
            output_len: LengthDist::Fixed { len: 0 },
        };
        let e = build(&s, None, 1, 0).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid output length 0: length must be at least 1;"),
            "{e}"
        );
    }

    #[test]
    fn prefix_and_suffix_specials_count_toward_the_length() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tokenizer.json");
        std::fs::write(
            &p,
            testutil::tokenizer_json_with_post(testutil::bos_eos_post()),
        )
        .unwrap();
        let tok = Tokenizer::from_file(&p).unwrap();
        assert_eq!(tok.num_special_tokens(), 2);
        let w = build(&spec("10", "1"), Some(&tok), 5, 0).unwrap();
        for it in &w.items {
            assert_eq!(it.prompt.len(), 10);
            assert_eq!((it.prompt[0], it.prompt[9]), (BOS, testutil::EOS));
        }
        let w = build(&spec("2", "1"), Some(&tok), 1, 0).unwrap();
        assert_eq!(w.items[0].prompt[..], [BOS, testutil::EOS]);
        // Normal clamps up to the 2 specials.
        let w = build(&spec("normal:1:1", "1"), Some(&tok), 50, 0).unwrap();
        assert!(w.items.iter().all(|it| it.prompt.len() >= 2));
        // Fixed or uniform below 2 is an error naming the minimum.
        for s in ["1", "uniform:1:5"] {
            let e = build(&spec(s, "1"), Some(&tok), 1, 0)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("input length 1 is shorter than the 2 special tokens"),
                "{e}"
            );
            assert!(e.contains("at least 2"), "{e}");
        }
    }

    #[test]
    fn gemma_exact_counts_if_present() {
        let Some(tok) = testutil::gemma_tokenizer() else {
            return;
        };
        let w = build(&spec("512", "64"), Some(&tok), 8, 0).unwrap();
        for it in &w.items {
            assert_eq!(it.prompt.len(), 512);
            assert_eq!(it.prompt[0], 2);
            assert!(it.prompt[1..]
                .iter()
                .all(|&id| id != 2 && id != 1 && id != 0));
        }
        println!("{}", w.description);
    }
}
