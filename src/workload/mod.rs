//! Workloads: where requests come from.
//!
//! Eight sources, all producing prompts as **token ids** (engines never re-tokenize):
//!
//! - [`WorkloadSpec::Synthetic`]: seeded random ids with exact input and output lengths
//!   ([`synthetic`]).
//! - [`WorkloadSpec::Sharegpt`]: `ShareGPT_V3_unfiltered_cleaned_split.json` with vLLM's
//!   filtering rules ([`sharegpt`]).
//! - [`WorkloadSpec::Prompts`]: a JSONL or plain-text prompt file ([`prompts`]).
//! - [`WorkloadSpec::SharedPrefix`]: groups of synthetic prompts sharing a system
//!   prompt, for prefix caches ([`shared_prefix`]).
//! - [`WorkloadSpec::Trace`]: a Mooncake or BurstGPT trace, with its arrival times
//!   ([`trace`]).
//! - [`WorkloadSpec::Conversations`]: multi-turn conversations, synthetic or from
//!   ShareGPT, whose later prompts the driver makes from the engine's replies
//!   ([`conversations`]).
//! - [`WorkloadSpec::Scored`] and [`WorkloadSpec::Arithmetic`]: prompts with reference
//!   answers (GSM8K's JSONL, a generic one, or a seeded arithmetic set), whose outputs
//!   the run scores ([`scored`]).
//!
//! Token counts come from the model's own `tokenizer.json` ([`Tokenizer`]), so an input
//! length of 512 means exactly 512 prompt tokens.
//!
//! # Determinism
//!
//! Every random choice is drawn from one [`ChaCha8Rng`] seeded with the run's seed, in a
//! fixed order, and integers are drawn with our own rejection sampler (`below`) over
//! the raw `u64` stream, so the same seed, spec, count and tokenizer give the same
//! workload byte for byte ([`Workload::to_jsonl`]). ChaCha8's stream is fixed by
//! `rand_chacha`; the only other algorithm involved is `rand_distr`'s normal sampler (for
//! `normal:` lengths), whose version is pinned by `Cargo.lock`.

pub mod conversations;
pub mod prompts;
pub mod scored;
pub mod shared_prefix;
pub mod sharegpt;
pub mod synthetic;
pub mod tokenizer;
pub mod trace;

use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

pub use tokenizer::Tokenizer;

/// Longest prompt or output length a workload accepts (16 Mi tokens): far beyond any
/// context window, low enough that a typo cannot allocate gigabytes per request.
pub const MAX_LEN: u32 = 1 << 24;

/// Ids drawn for synthetic prompts when no tokenizer is given (a Llama-2-sized vocab).
pub const DEFAULT_VOCAB: u32 = 32_000;

/// One request of a workload: the prompt as token ids and how many tokens to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkItem {
    /// Prompt token ids, special tokens (BOS) included, exactly as sent to the engine.
    pub prompt: Arc<[u32]>,
    /// Tokens to generate (the request's `max_tokens`).
    pub output_len: u32,
}

/// A built workload: exactly the requested number of items, in submission order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub items: Vec<WorkItem>,
    /// One line stating how the items were made (source, lengths, seed, vocab, cycling).
    pub description: String,
    /// A trace's arrival of each item, ns after its first line (`--dataset trace`);
    /// None for workloads without a clock of their own.
    pub arrivals_ns: Option<Vec<u64>>,
    /// `--dataset conversations`: how the items (each turn's user message) group into
    /// conversations; None for single-turn workloads.
    pub conversations: Option<conversations::ConversationLayout>,
    /// Scored workloads: each item's reference answer and extraction rule (aligned
    /// with `items`); None for workloads that are not scored.
    pub answers: Option<Vec<scored::AnswerKey>>,
}

impl Workload {
    /// A workload without a clock of its own (every source but a trace).
    pub fn new(items: Vec<WorkItem>, description: String) -> Workload {
        Workload {
            items,
            description,
            arrivals_ns: None,
            conversations: None,
            answers: None,
        }
    }

    /// Item `i`; the driver cycles through the items when a `--duration` run needs more
    /// (`i` wraps modulo [`len`](Self::len)).
    ///
    /// # Panics
    /// If the workload is empty ([`build`] never returns an empty one).
    pub fn get(&self, i: usize) -> &WorkItem {
        &self.items[i % self.items.len()]
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sum of prompt lengths over all items.
    pub fn total_prompt_tokens(&self) -> u64 {
        self.items.iter().map(|it| it.prompt.len() as u64).sum()
    }

    /// Sum of output lengths over all items.
    pub fn total_output_tokens(&self) -> u64 {
        self.items.iter().map(|it| u64::from(it.output_len)).sum()
    }

    /// Canonical JSONL bytes: one `{"prompt_token_ids":[..],"output_len":N}` line per item,
    /// no spaces, `\n` after every line. Used to prove byte-for-byte determinism and saved
    /// as `workload.jsonl` beside the results. A conversation's turns are
    /// `{"conversation":C,"turn":K,"think_ns":T,"user_token_ids":[..],"output_len":N}`:
    /// the user message only (the prompt sent depends on the engine's replies).
    pub fn to_jsonl(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.total_prompt_tokens() as usize * 7 + self.len() * 40);
        let mut turn_of = vec![
            None;
            if self.conversations.is_some() {
                self.len()
            } else {
                0
            }
        ];
        if let Some(layout) = &self.conversations {
            for c in 0..layout.count() {
                for (k, i) in layout.turns(c).enumerate() {
                    turn_of[i] = Some((c, k, layout.think_ns[i]));
                }
            }
        }
        for (i, item) in self.items.iter().enumerate() {
            match turn_of.get(i).copied().flatten() {
                Some((c, k, think)) => {
                    let _ = write!(
                        out,
                        "{{\"conversation\":{c},\"turn\":{k},\"think_ns\":{think},\"user_token_ids\":["
                    );
                }
                None => out.extend_from_slice(b"{\"prompt_token_ids\":["),
            }
            for (k, id) in item.prompt.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                // Writing to a Vec cannot fail.
                let _ = write!(out, "{id}");
            }
            let _ = writeln!(out, "],\"output_len\":{}}}", item.output_len);
        }
        out
    }
}

/// How a length (input or output, in tokens) is chosen for each request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LengthDist {
    /// Always `len`.
    Fixed { len: u32 },
    /// Uniform over the integers `min..=max`.
    Uniform { min: u32, max: u32 },
    /// Normal(mean, std), rounded to the nearest integer and clamped to `1..=MAX_LEN`
    /// (input lengths are clamped up further to the number of special tokens the
    /// tokenizer adds, e.g. 1 for a BOS). Clamping skews the mean when `mean` is within a
    /// few `std` of 1: the description reports the drawn lengths' actual mean.
    Normal { mean: f64, std: f64 },
}

impl LengthDist {
    /// Checks the parameters: lengths in `1..=MAX_LEN`, `min <= max`, finite `mean > 0`
    /// and `std >= 0`. Returns the reason when invalid.
    pub fn validate(&self) -> Result<(), String> {
        let in_range = |v: u32, what: &str| {
            if v == 0 {
                Err(format!("{what} must be at least 1"))
            } else if v > MAX_LEN {
                Err(format!("{what} {v} is above the limit of {MAX_LEN} tokens"))
            } else {
                Ok(())
            }
        };
        match *self {
            LengthDist::Fixed { len } => in_range(len, "length"),
            LengthDist::Uniform { min, max } => {
                in_range(min, "min")?;
                in_range(max, "max")?;
                if min > max {
                    return Err(format!("min {min} is above max {max}"));
                }
                Ok(())
            }
            LengthDist::Normal { mean, std } => {
                if !mean.is_finite() || mean <= 0.0 || mean > f64::from(MAX_LEN) {
                    return Err(format!("mean {mean} must be a number in (0, {MAX_LEN}]"));
                }
                if !std.is_finite() || std < 0.0 {
                    return Err(format!("std {std} must be a finite number >= 0"));
                }
                Ok(())
            }
        }
    }

    /// Draws one length, clamped to at least `floor` (and at least 1).
    pub(crate) fn sample(&self, rng: &mut ChaCha8Rng, floor: u32) -> u32 {
        let floor = floor.max(1);
        match *self {
            LengthDist::Fixed { len } => len.max(floor),
            LengthDist::Uniform { min, max } => {
                let span = u64::from(max - min) + 1;
                (min + below(rng, span) as u32).max(floor)
            }
            LengthDist::Normal { mean, std } => {
                use rand_distr::Distribution;
                // validate() guarantees finite mean and std >= 0, so new() cannot fail;
                // fall back to the mean rather than panic if it ever did.
                let x = rand_distr::Normal::new(mean, std).map_or(mean, |d| d.sample(rng));
                let r = x.round().clamp(1.0, f64::from(MAX_LEN)) as u32;
                r.max(floor)
            }
        }
    }

    /// Validates each `(what, length)`; the first invalid one is the error.
    pub(crate) fn validate_all(
        lengths: &[(&'static str, &LengthDist)],
    ) -> Result<(), WorkloadError> {
        for &(what, d) in lengths {
            d.validate()
                .map_err(|reason| WorkloadError::InvalidSpecLength {
                    what,
                    spec: d.to_string(),
                    reason,
                })?;
        }
        Ok(())
    }

    /// Largest length this distribution can produce (for Normal, [`MAX_LEN`]).
    pub(crate) fn max_len(&self) -> u32 {
        match *self {
            LengthDist::Fixed { len } => len,
            LengthDist::Uniform { max, .. } => max,
            LengthDist::Normal { .. } => MAX_LEN,
        }
    }

    /// Smallest length this distribution can produce before clamping (for Normal, 1).
    pub(crate) fn min_len(&self) -> u32 {
        match *self {
            LengthDist::Fixed { len } => len,
            LengthDist::Uniform { min, .. } => min,
            LengthDist::Normal { .. } => 1,
        }
    }

    /// Human wording for descriptions: `fixed 64`, `uniform[96,160]`, `normal(mean 128, std 32)`.
    pub fn describe(&self) -> String {
        match *self {
            LengthDist::Fixed { len } => format!("fixed {len}"),
            LengthDist::Uniform { min, max } => format!("uniform[{min},{max}]"),
            LengthDist::Normal { mean, std } => {
                format!("normal(mean {mean}, std {std}; rounded, clamped to >= 1)")
            }
        }
    }
}

/// The CLI form, which [`parse_length`] reads back: `512`, `uniform:96:160`, `normal:128:32`.
impl fmt::Display for LengthDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LengthDist::Fixed { len } => write!(f, "{len}"),
            LengthDist::Uniform { min, max } => write!(f, "uniform:{min}:{max}"),
            LengthDist::Normal { mean, std } => write!(f, "normal:{mean}:{std}"),
        }
    }
}

impl FromStr for LengthDist {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_length(s)
    }
}

/// Parses a length flag: `512` (or `fixed:512`) → Fixed, `uniform:96:160` → Uniform over
/// 96..=160, `normal:128:32` → Normal(mean 128, std 32). The result is validated
/// ([`LengthDist::validate`]).
pub fn parse_length(s: &str) -> Result<LengthDist, WorkloadError> {
    let err = |reason: String| WorkloadError::InvalidLength {
        spec: s.to_string(),
        reason,
    };
    let t = s.trim();
    let parts: Vec<&str> = t.split(':').map(str::trim).collect();
    let int = |p: &str, what: &str| {
        p.parse::<u32>()
            .map_err(|_| err(format!("{what} {p:?} is not a whole number of tokens")))
    };
    let float = |p: &str, what: &str| {
        p.parse::<f64>()
            .map_err(|_| err(format!("{what} {p:?} is not a number")))
    };
    let dist = match parts.as_slice() {
        [n] if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => LengthDist::Fixed {
            len: int(n, "length")?,
        },
        ["fixed", n] => LengthDist::Fixed {
            len: int(n, "length")?,
        },
        ["uniform", a, b] => LengthDist::Uniform {
            min: int(a, "min")?,
            max: int(b, "max")?,
        },
        ["normal", m, sd] => LengthDist::Normal {
            mean: float(m, "mean")?,
            std: float(sd, "std")?,
        },
        _ => return Err(err("unrecognised form".to_string())),
    };
    dist.validate().map_err(err)?;
    Ok(dist)
}

/// Where a workload's requests come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dataset", rename_all = "snake_case")]
pub enum WorkloadSpec {
    /// Seeded random token ids with the given input and output lengths.
    Synthetic {
        input_len: LengthDist,
        output_len: LengthDist,
    },
    /// `ShareGPT_V3_unfiltered_cleaned_split.json`; `output_len` overrides every reply's
    /// length (vLLM's `--sharegpt-output-len`; also disables the minimum-output filter).
    Sharegpt {
        path: PathBuf,
        output_len: Option<u32>,
    },
    /// A prompt file (JSONL or plain text); `output_len` is used for lines without
    /// `max_tokens`.
    Prompts { path: PathBuf, output_len: u32 },
    /// Groups of synthetic prompts, each group's sharing its system prompt.
    #[serde(rename = "shared-prefix")]
    SharedPrefix(shared_prefix::SharedPrefix),
    /// A trace (Mooncake JSONL or BurstGPT CSV) replayed on its own clock; `lines`: its
    /// first lines only (None: the whole trace); `output_len` overrides every output.
    Trace {
        path: PathBuf,
        output_len: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<usize>,
    },
    /// Multi-turn conversations, synthetic or from ShareGPT.
    Conversations(conversations::ConversationSpec),
    /// Prompts with reference answers from a JSONL file (GSM8K's shape or generic);
    /// `fewshot` solved GSM8K examples before each GSM8K question.
    Scored {
        path: PathBuf,
        output_len: u32,
        fewshot: u32,
    },
    /// The seeded arithmetic set (GSM8K-shaped, with answers).
    Arithmetic { output_len: u32, fewshot: u32 },
}

impl WorkloadSpec {
    /// The dataset name as the CLI spells it (`synthetic`, `sharegpt`, `prompts`,
    /// `shared-prefix`).
    pub fn dataset_name(&self) -> &'static str {
        match self {
            WorkloadSpec::Synthetic { .. } => "synthetic",
            WorkloadSpec::Sharegpt { .. } => "sharegpt",
            WorkloadSpec::Prompts { .. } => "prompts",
            WorkloadSpec::SharedPrefix(_) => "shared-prefix",
            WorkloadSpec::Trace { .. } => "trace",
            WorkloadSpec::Conversations(_) => "conversations",
            WorkloadSpec::Scored { .. } => "scored",
            WorkloadSpec::Arithmetic { .. } => "arithmetic",
        }
    }
}

/// Builds exactly `count` items from `spec`, deterministically from `seed`.
///
/// - Synthetic: draws from the tokenizer's vocab (added/special tokens excluded, BOS
///   first when the tokenizer adds one), or from `0..32000` when `tokenizer` is `None`.
/// - ShareGPT and prompt files: seeded shuffle of the entries, then, if fewer usable
///   entries than `count`, the shuffled list is repeated in the same order (the
///   description says so). Both need a tokenizer.
pub fn build(
    spec: &WorkloadSpec,
    tokenizer: Option<&Tokenizer>,
    count: usize,
    seed: u64,
) -> Result<Workload, WorkloadError> {
    if count == 0 {
        return Err(WorkloadError::ZeroCount);
    }
    let mut rng = ChaCha8Rng::seed_from_u64_stable(seed);
    match spec {
        WorkloadSpec::Synthetic {
            input_len,
            output_len,
        } => synthetic::build(input_len, output_len, tokenizer, count, seed, &mut rng),
        WorkloadSpec::Sharegpt { path, output_len } => {
            let tok = tokenizer.ok_or(WorkloadError::NeedsTokenizer {
                dataset: "sharegpt",
            })?;
            sharegpt::build(path, *output_len, tok, count, seed, &mut rng)
        }
        WorkloadSpec::Prompts { path, output_len } => {
            let tok = tokenizer.ok_or(WorkloadError::NeedsTokenizer { dataset: "prompts" })?;
            prompts::build(path, *output_len, tok, count, seed, &mut rng)
        }
        WorkloadSpec::SharedPrefix(s) => shared_prefix::build(s, tokenizer, count, seed, &mut rng),
        // As many items as the trace holds (or its first `lines`), not `count`.
        WorkloadSpec::Trace {
            path,
            output_len,
            lines,
        } => trace::build(path, *output_len, *lines, tokenizer, seed),
        WorkloadSpec::Conversations(c) => conversations::build(c, tokenizer, count, seed, &mut rng),
        WorkloadSpec::Scored {
            path,
            output_len,
            fewshot,
        } => {
            let tok = tokenizer.ok_or(WorkloadError::NeedsTokenizer { dataset: "scored" })?;
            scored::build(
                Some(path),
                *output_len,
                *fewshot,
                tok,
                count,
                seed,
                &mut rng,
            )
        }
        WorkloadSpec::Arithmetic {
            output_len,
            fewshot,
        } => {
            let tok = tokenizer.ok_or(WorkloadError::NeedsTokenizer {
                dataset: "arithmetic",
            })?;
            scored::build(None, *output_len, *fewshot, tok, count, seed, &mut rng)
        }
    }
}

/// Seeding that does not depend on `rand`'s `SeedableRng::seed_from_u64` expansion (which
/// `rand_core` documents as not value-stable across versions): the 32-byte ChaCha key is
/// the seed's little-endian bytes followed by zeros.
pub(crate) trait SeedStable {
    fn seed_from_u64_stable(seed: u64) -> Self;
}

impl SeedStable for ChaCha8Rng {
    fn seed_from_u64_stable(seed: u64) -> Self {
        use rand_chacha::rand_core::SeedableRng;
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        ChaCha8Rng::from_seed(key)
    }
}

/// Uniform integer in `0..n` (`n > 0`) by rejection sampling over the raw `u64` stream:
/// unbiased, and stable because it uses no `rand` algorithm.
pub(crate) fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    debug_assert!(n > 0);
    if n <= 1 {
        return 0;
    }
    // Values below `2^64 mod n` would make the low residues more likely: reject them.
    let reject_below = n.wrapping_neg() % n;
    loop {
        let x = rng.next_u64();
        if x >= reject_below {
            return x % n;
        }
    }
}

/// Fisher–Yates shuffle driven by [`below`] (stable across `rand` versions, unlike
/// `SliceRandom::shuffle`).
pub(crate) fn shuffle<T>(rng: &mut ChaCha8Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// Fills `count` items by repeating `distinct` in order (the seeded shuffle already
/// happened). Returns the items and, if any repetition was needed, a note for the
/// description.
pub(crate) fn cycle_to(distinct: Vec<WorkItem>, count: usize) -> (Vec<WorkItem>, Option<String>) {
    let n = distinct.len();
    if n >= count {
        let mut v = distinct;
        v.truncate(count);
        return (v, None);
    }
    let items: Vec<WorkItem> = (0..count).map(|i| distinct[i % n].clone()).collect();
    let note =
        format!("only {n} distinct prompts: repeated in the same shuffled order to make {count}");
    (items, Some(note))
}

/// A text file's contents without a leading UTF-8 BOM; a file that is not UTF-8 is
/// `not_utf8(line)`, the 1-based line of its first bad byte.
pub(crate) fn read_utf8(
    path: &Path,
    not_utf8: impl FnOnce(usize) -> WorkloadError,
) -> Result<String, WorkloadError> {
    let bytes = std::fs::read(path).map_err(|e| WorkloadError::io(path, e))?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let bad_at = e.utf8_error().valid_up_to();
        not_utf8(
            e.as_bytes()[..bad_at]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1,
        )
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Folds a possibly multi-line message into one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Bad workload input: each message is one line naming the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("invalid length {spec:?}: {reason}; use N, uniform:MIN:MAX or normal:MEAN:STD (e.g. 512, uniform:96:160, normal:128:32)")]
    InvalidLength { spec: String, reason: String },

    #[error("invalid {what} {spec}: {reason}; use N, uniform:MIN:MAX or normal:MEAN:STD with lengths from 1 to {MAX_LEN}")]
    InvalidSpecLength {
        what: &'static str,
        spec: String,
        reason: String,
    },

    #[error(
        "a workload needs at least one request, but 0 were asked for; ask for 1 or more requests"
    )]
    ZeroCount,

    #[error("--dataset {dataset} needs a tokenizer: pass --model DIR (with tokenizer.json) or --tokenizer FILE")]
    NeedsTokenizer { dataset: &'static str },

    #[error("model dir {} does not exist; pass --model DIR of a model with a tokenizer.json, or --tokenizer FILE", .dir.display())]
    ModelDirMissing { dir: PathBuf },

    #[error("model dir {} has no tokenizer.json; pass --tokenizer FILE", .dir.display())]
    NoTokenizerInModelDir { dir: PathBuf },

    #[error("tokenizer file {} not found; pass --tokenizer FILE with a Hugging Face tokenizer.json", .path.display())]
    TokenizerNotFound { path: PathBuf },

    #[error("tokenizer file {} could not be loaded ({reason}); pass a Hugging Face tokenizer.json (the tokenizers library format)", .path.display())]
    TokenizerInvalid { path: PathBuf, reason: String },

    #[error("tokenizer {} failed to {op} ({reason}); check that the tokenizer matches the model", .path.display())]
    Tokenize {
        path: PathBuf,
        op: &'static str,
        reason: String,
    },

    #[error("input length {len} is shorter than the {specials} special tokens tokenizer {} adds to every prompt; ask for an input length of at least {specials}", .path.display())]
    InputShorterThanSpecials {
        len: u32,
        specials: u32,
        path: PathBuf,
    },

    #[error("tokenizer {} has no ordinary (non-added) token ids to draw synthetic prompts from; use the model's own tokenizer.json", .path.display())]
    EmptyVocab { path: PathBuf },

    #[error("cannot read {} ({source}); check the path and its permissions", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("ShareGPT file {} line {line} column {column}: {reason}; expected a JSON array of {{\"conversations\": [{{\"from\": ..., \"value\": \"...\"}}, ...]}} entries, as in ShareGPT_V3_unfiltered_cleaned_split.json", .path.display())]
    SharegptJson {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },

    #[error("ShareGPT file {} has no usable conversation: {detail}; use a larger ShareGPT file", .path.display())]
    SharegptNoneUsable { path: PathBuf, detail: String },

    #[error("prompt file {} line {line}: {reason}; fix the line or use a plain-text file (one prompt per line, not named .jsonl/.json)", .path.display())]
    PromptLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("prompt file {} line {line} is not UTF-8 text; re-save the file as UTF-8", .path.display())]
    PromptNotUtf8 { path: PathBuf, line: usize },

    #[error("invalid conversations workload: {reason}")]
    Conversations { reason: String },

    #[error("invalid shared-prefix workload: {reason}")]
    SharedPrefix { reason: String },

    #[error("trace file {} line {line}: {reason}; expected {}", .path.display(), trace::JSONL_FORM)]
    TraceLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("trace file {} has more than {limit} lines, the most one run replays; pass --num-requests N to replay its first N lines", .path.display())]
    TraceTooLong { path: PathBuf, limit: usize },

    #[error("trace file {} has no requests; give a Mooncake JSONL or BurstGPT CSV trace", .path.display())]
    TraceEmpty { path: PathBuf },

    #[error("scored dataset {} line {line}: {reason}; each line is {{\"question\": ..., \"answer\": \"... #### N\"}} (GSM8K) or {{\"prompt\": ..., \"answer\": ..., \"pattern\": \"regex\"}}", .path.display())]
    ScoredLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("invalid scored workload: {reason}")]
    Scored { reason: String },

    #[error("prompt file {} has no prompts (it is empty or only blank lines); put one prompt per line, or JSONL lines {{\"prompt\": \"...\"}}", .path.display())]
    PromptFileEmpty { path: PathBuf },
}

impl WorkloadError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        WorkloadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Splits serde_json's "MSG at line L column C" into MSG (location reported separately).
pub(crate) fn serde_reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    one_line(full.strip_suffix(&suffix).unwrap_or(&full))
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A tiny real `tokenizer.json` for tests: WordLevel over whitespace-split words, so
    //! a prompt of N known or unknown words encodes to exactly N tokens, plus a `<bos>`
    //! added by a TemplateProcessing post-processor (like Gemma's and Llama's). The file
    //! also configures truncation at 16 tokens, which [`Tokenizer`] must switch off.
    use super::Tokenizer;
    use std::path::{Path, PathBuf};

    pub const BOS: u32 = 1;
    pub const EOS: u32 = 2;
    pub const UNK: u32 = 3;
    /// Ordinary words: ids 4..4+WORDS.len().
    pub const WORDS: [&str; 12] = [
        "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "hello", "world", "a", "b",
    ];
    /// Model vocab size (specials + words).
    pub const VOCAB: u32 = 4 + WORDS.len() as u32;

    pub fn tokenizer_json(with_bos: bool) -> String {
        let post = if with_bos {
            serde_json::json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<bos>": {"id": "<bos>", "ids": [BOS], "tokens": ["<bos>"]}}
            })
        } else {
            serde_json::Value::Null
        };
        tokenizer_json_with_post(post)
    }

    /// A post-processor adding `<bos>` before and `<eos>` after (two special tokens).
    pub fn bos_eos_post() -> serde_json::Value {
        serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "<eos>", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "<eos>", "type_id": 0}}],
            "special_tokens": {
                "<bos>": {"id": "<bos>", "ids": [BOS], "tokens": ["<bos>"]},
                "<eos>": {"id": "<eos>", "ids": [EOS], "tokens": ["<eos>"]}
            }
        })
    }

    pub fn tokenizer_json_with_post(post: serde_json::Value) -> String {
        let mut vocab = serde_json::Map::new();
        for (i, t) in ["<pad>", "<bos>", "<eos>", "<unk>"].iter().enumerate() {
            vocab.insert(t.to_string(), (i as u32).into());
        }
        for (i, w) in WORDS.iter().enumerate() {
            vocab.insert(w.to_string(), (i as u32 + 4).into());
        }
        let added: Vec<serde_json::Value> = ["<pad>", "<bos>", "<eos>", "<unk>"]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": 16, "strategy": "LongestFirst", "stride": 0},
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": post,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        })
        .to_string()
    }

    /// Writes the tiny tokenizer as `dir/tokenizer.json` and returns its path.
    pub fn write_tokenizer(dir: &Path, with_bos: bool) -> PathBuf {
        let p = dir.join("tokenizer.json");
        std::fs::write(&p, tokenizer_json(with_bos)).unwrap();
        p
    }

    /// A temp dir holding the tiny tokenizer (with BOS), and the loaded tokenizer.
    pub fn tiny() -> (tempfile::TempDir, Tokenizer) {
        let dir = tempfile::tempdir().unwrap();
        let p = write_tokenizer(dir.path(), true);
        let tok = Tokenizer::from_file(&p).unwrap();
        (dir, tok)
    }

    /// `n` words of text (cycling through WORDS): encodes to exactly `n` tokens + BOS.
    pub fn words(n: usize) -> String {
        (0..n)
            .map(|i| WORDS[i % WORDS.len()])
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The real Gemma 3 tokenizer if the setup script has fetched it; else prints why
    /// the caller's test skips.
    pub fn gemma_tokenizer() -> Option<Tokenizer> {
        match gemma_tokenizer_path() {
            Ok(p) => Some(Tokenizer::from_file(&p).unwrap()),
            Err(why) => {
                println!("skipped: {why}");
                None
            }
        }
    }

    /// Asserts the workload's description says `needle` (the description is what a
    /// run prints and stores, so its wording is the point).
    #[track_caller]
    pub fn assert_described(w: &super::Workload, needle: &str) {
        assert!(w.description.contains(needle), "{}", w.description);
    }

    fn gemma_tokenizer_path() -> Result<PathBuf, String> {
        let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
        let p = Path::new(&home).join(".cache/llm-harness/models/gemma-3-270m/tokenizer.json");
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{} not present (run the model setup script)",
                p.display()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_length_forms() {
        assert_eq!(parse_length("512").unwrap(), LengthDist::Fixed { len: 512 });
        assert_eq!(
            parse_length("fixed:7").unwrap(),
            LengthDist::Fixed { len: 7 }
        );
        assert_eq!(
            parse_length("uniform:96:160").unwrap(),
            LengthDist::Uniform { min: 96, max: 160 }
        );
        assert_eq!(
            parse_length("normal:128:32").unwrap(),
            LengthDist::Normal {
                mean: 128.0,
                std: 32.0
            }
        );
        assert_eq!(
            parse_length(" uniform:5:5 ").unwrap(),
            LengthDist::Uniform { min: 5, max: 5 }
        );
        // Display round-trips.
        for s in ["512", "uniform:96:160", "normal:128.5:32"] {
            assert_eq!(parse_length(s).unwrap().to_string(), s);
        }
        assert_eq!(
            "64".parse::<LengthDist>().unwrap(),
            LengthDist::Fixed { len: 64 }
        );
    }

    #[test]
    fn parse_length_errors_are_one_line_and_name_forms() {
        for (bad, needle) in [
            ("abc", "unrecognised form"),
            ("", "unrecognised form"),
            ("-5", "unrecognised form"),
            ("0", "at least 1"),
            ("uniform:160:96", "min 160 is above max 96"),
            ("uniform:1", "unrecognised form"),
            ("uniform:x:9", "min \"x\" is not a whole number"),
            ("normal:0:3", "mean 0 must be"),
            ("normal:10:-1", "std -1 must be"),
            ("normal:nan:1", "mean NaN must be"),
            ("99999999999", "not a whole number"),
            ("20000000", "above the limit"),
        ] {
            let e = parse_length(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad:?}: {e}");
            assert!(
                e.contains("uniform:MIN:MAX") && e.contains("normal:MEAN:STD"),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn below_is_in_range_and_covers() {
        let mut rng = ChaCha8Rng::seed_from_u64_stable(1);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[below(&mut rng, 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_eq!(below(&mut rng, 1), 0);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        shuffle(&mut ChaCha8Rng::seed_from_u64_stable(3), &mut a);
        shuffle(&mut ChaCha8Rng::seed_from_u64_stable(3), &mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn chacha_stream_is_pinned() {
        // Guards byte-for-byte determinism across dependency updates: if this changes,
        // every saved workload.jsonl changes too.
        let mut rng = ChaCha8Rng::seed_from_u64_stable(0);
        let first: Vec<u64> = (0..2).map(|_| rng.next_u64()).collect();
        let mut again = ChaCha8Rng::seed_from_u64_stable(0);
        assert_eq!(first, (0..2).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_eq!(first, PINNED_CHACHA8_SEED0);
    }

    /// First outputs of ChaCha8 keyed by seed 0 (recorded with rand_chacha 0.9.0).
    const PINNED_CHACHA8_SEED0: [u64; 2] = [15438444565445410878, 11647726043916688255];

    #[test]
    fn to_jsonl_is_canonical() {
        let w = Workload {
            items: vec![
                WorkItem {
                    prompt: Arc::from(vec![1u32, 20, 300]),
                    output_len: 5,
                },
                WorkItem {
                    prompt: Arc::from(vec![7u32]),
                    output_len: 1,
                },
            ],
            description: String::new(),
            arrivals_ns: None,
            conversations: None,
            answers: None,
        };
        assert_eq!(
            String::from_utf8(w.to_jsonl()).unwrap(),
            "{\"prompt_token_ids\":[1,20,300],\"output_len\":5}\n{\"prompt_token_ids\":[7],\"output_len\":1}\n"
        );
        assert_eq!(w.total_prompt_tokens(), 4);
        assert_eq!(w.total_output_tokens(), 6);
        assert_eq!(w.get(3).output_len, 1);
        // Each line is valid JSON.
        for line in String::from_utf8(w.to_jsonl()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["prompt_token_ids"].is_array());
        }
    }

    #[test]
    fn build_rejects_zero_count_and_missing_tokenizer() {
        let spec = WorkloadSpec::Synthetic {
            input_len: LengthDist::Fixed { len: 4 },
            output_len: LengthDist::Fixed { len: 4 },
        };
        assert!(matches!(
            build(&spec, None, 0, 0),
            Err(WorkloadError::ZeroCount)
        ));
        let e = build(
            &WorkloadSpec::Sharegpt {
                path: "x.json".into(),
                output_len: None,
            },
            None,
            1,
            0,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "--dataset sharegpt needs a tokenizer: pass --model DIR (with tokenizer.json) or --tokenizer FILE"
        );
        let e = build(
            &WorkloadSpec::Prompts {
                path: "p.txt".into(),
                output_len: 8,
            },
            None,
            1,
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--dataset prompts needs a tokenizer"), "{e}");
    }

    #[test]
    fn spec_serde_shape() {
        let spec = WorkloadSpec::Synthetic {
            input_len: LengthDist::Uniform { min: 96, max: 160 },
            output_len: LengthDist::Fixed { len: 64 },
        };
        let j = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            j,
            r#"{"dataset":"synthetic","input_len":{"kind":"uniform","min":96,"max":160},"output_len":{"kind":"fixed","len":64}}"#
        );
        assert_eq!(serde_json::from_str::<WorkloadSpec>(&j).unwrap(), spec);
    }
}
