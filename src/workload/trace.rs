//! Trace replay (`--dataset trace`): a recorded trace's requests and their arrival
//! times. Two formats, by extension:
//!
//! - Mooncake JSONL (any name but `.csv`): one `{"timestamp": MS, "input_length": N,
//!   "output_length": N, "hash_ids": [..]}` per line; `hash_ids` name the prompt's
//!   512-token blocks, shared between requests that share a prefix.
//! - BurstGPT CSV (`.csv`): columns `Timestamp` (seconds), `Request tokens`,
//!   `Response tokens` (others, such as `Model` and `Log Type`, are ignored).
//!
//! Prompts are synthetic ids (as [`super::synthetic`]: the tokenizer's ordinary vocab,
//! its BOS first and counted in the length, or `0..32000` without a tokenizer), exactly
//! `input_length` tokens. Block `h` of a Mooncake line is 512 ids drawn from a stream
//! seeded by (seed, h), so two requests naming the same block send the same tokens in
//! that place and a prefix cache sees the sharing the trace recorded; tokens past the
//! named blocks (or every token of a BurstGPT row) come from a stream of the line's
//! own. The last block is cut to the length. Arrivals are the timestamps, the first
//! line at 0; they must not decrease. Rows with 0 output tokens (BurstGPT's failed
//! requests) are skipped unless `--output-len` sets every output length.

use super::synthetic::Vocab;
use super::{ChaCha8Rng, SeedStable, Tokenizer, WorkItem, Workload, WorkloadError};
use super::{DEFAULT_VOCAB, MAX_LEN};
use serde::Deserialize;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

/// Most lines one run replays (the run's workload limit); a longer trace is refused
/// unless `--num-requests` asks for its first lines.
pub const MAX_TRACE_LINES: usize = 65_536;
/// Most prompt tokens a replayed trace may hold (256 MiB of ids).
pub const MAX_TRACE_TOKENS: u64 = 1 << 26;
/// Tokens per hash block (Mooncake's block size).
pub const BLOCK_TOKENS: usize = 512;

pub(crate) const JSONL_FORM: &str = "each line a JSON object {\"timestamp\": MS, \"input_length\": N, \"output_length\": N, \"hash_ids\": [..]} (Mooncake), or a .csv with BurstGPT's columns Timestamp,Request tokens,Response tokens";

#[derive(Deserialize)]
struct MooncakeLine {
    timestamp: f64,
    input_length: u64,
    output_length: u64,
    #[serde(default)]
    hash_ids: Vec<u64>,
}

#[derive(Deserialize)]
struct BurstRow {
    #[serde(rename = "Timestamp")]
    timestamp: f64,
    #[serde(rename = "Request tokens")]
    request_tokens: u64,
    #[serde(rename = "Response tokens")]
    response_tokens: u64,
}

/// One line as read: arrival (ns since the trace's epoch), lengths, blocks.
struct Line {
    at_ns: f64,
    input: u64,
    output: u64,
    hash_ids: Vec<u64>,
}

/// The trace's wording of how its ids are drawn, for the workload's description.
fn vocab_note(tokenizer: Option<&Tokenizer>) -> String {
    match tokenizer {
        None => format!("ids from 0..{DEFAULT_VOCAB} (no tokenizer: no BOS)"),
        Some(tok) => format!(
            "ids from the vocab of {}, specials {:?} counted in each length",
            tok.path().display(),
            tok.special_prefix()
        ),
    }
}

/// A stream keyed by (seed, what, n): what 0 = hash block n, 1 = line n's own tokens.
fn stream(seed: u64, what: u64, n: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64_stable(
        seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ what.rotate_left(61),
    )
}

/// Builds the trace at `path`: its first `lines` lines (None: all of it, refused past
/// [`MAX_TRACE_LINES`]), `output_len` overriding every output length.
pub(crate) fn build(
    path: &Path,
    output_len: Option<u32>,
    lines: Option<usize>,
    tokenizer: Option<&Tokenizer>,
    seed: u64,
) -> Result<Workload, WorkloadError> {
    let mut vocab = Vocab::new(tokenizer)?;
    vocab.note = vocab_note(tokenizer);
    let limit = lines.unwrap_or(MAX_TRACE_LINES).min(MAX_TRACE_LINES);
    let line_err = |line: usize, reason: String| WorkloadError::TraceLine {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut b = Builder {
        vocab: &vocab,
        seed,
        output_len,
        items: Vec::new(),
        arrivals: Vec::new(),
        first: None,
        last: 0.0,
        tokens: 0,
        skipped: 0,
        blocks: rustc_hash::FxHashSet::default(),
    };
    let csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let too_long = || WorkloadError::TraceTooLong {
        path: path.to_path_buf(),
        limit,
    };
    if csv {
        let mut r = csv::Reader::from_path(path).map_err(|e| match e.into_kind() {
            csv::ErrorKind::Io(io) => WorkloadError::io(path, io),
            other => line_err(1, super::one_line(&format!("{other:?}"))),
        })?;
        let csv_err = |e: csv::Error, line: usize| match e.into_kind() {
            csv::ErrorKind::Io(io) => WorkloadError::io(path, io),
            csv::ErrorKind::Deserialize { err, .. } => line_err(line, err.to_string()),
            other => line_err(line, super::one_line(&format!("{other:?}"))),
        };
        let headers = r.headers().map_err(|e| csv_err(e, 1))?.clone();
        let mut rec = csv::StringRecord::new();
        loop {
            let line = r.position().line() as usize;
            match r.read_record(&mut rec) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(csv_err(e, line)),
            }
            let line = rec.position().map_or(line, |p| p.line() as usize);
            let row: BurstRow = rec
                .deserialize(Some(&headers))
                .map_err(|e| csv_err(e, line))?;
            if b.items.len() >= limit {
                if lines.is_none() {
                    return Err(too_long());
                }
                break;
            }
            let l = Line {
                at_ns: row.timestamp * 1e9,
                input: row.request_tokens,
                output: row.response_tokens,
                hash_ids: Vec::new(),
            };
            b.push(l, line).map_err(|reason| line_err(line, reason))?;
        }
    } else {
        let f = std::fs::File::open(path).map_err(|e| WorkloadError::io(path, e))?;
        let mut reader = std::io::BufReader::new(f);
        let mut buf = Vec::new();
        let mut line = 0usize;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| WorkloadError::io(path, e))?;
            if n == 0 {
                break;
            }
            line += 1;
            let Ok(text) = std::str::from_utf8(&buf) else {
                return Err(line_err(line, "not UTF-8 text".into()));
            };
            if text.trim().is_empty() {
                continue;
            }
            if b.items.len() >= limit {
                if lines.is_none() {
                    return Err(too_long());
                }
                break;
            }
            let m: MooncakeLine =
                serde_json::from_str(text).map_err(|e| line_err(line, super::serde_reason(&e)))?;
            let l = Line {
                at_ns: m.timestamp * 1e6,
                input: m.input_length,
                output: m.output_length,
                hash_ids: m.hash_ids,
            };
            b.push(l, line).map_err(|reason| line_err(line, reason))?;
        }
    }
    if b.items.is_empty() {
        return Err(WorkloadError::TraceEmpty {
            path: path.to_path_buf(),
        });
    }
    let span_s = b.arrivals.last().copied().unwrap_or(0) as f64 / 1e9;
    let mut description = format!(
        "trace {} ({}): {} requests over {span_s:.3} s of trace time, {} distinct {BLOCK_TOKENS}-token blocks, seed {seed}, {}",
        path.display(),
        if csv { "BurstGPT CSV" } else { "Mooncake JSONL" },
        b.items.len(),
        b.blocks.len(),
        vocab.note
    );
    if let Some(n) = output_len {
        description.push_str(&format!("; every output {n} tokens (--output-len)"));
    }
    if b.skipped > 0 {
        description.push_str(&format!(
            "; {} rows with 0 output tokens skipped",
            b.skipped
        ));
    }
    Ok(Workload {
        arrivals_ns: Some(b.arrivals),
        ..Workload::new(b.items, description)
    })
}

struct Builder<'v> {
    vocab: &'v Vocab,
    seed: u64,
    output_len: Option<u32>,
    items: Vec<WorkItem>,
    arrivals: Vec<u64>,
    /// The first line's time (ns): offset 0.
    first: Option<f64>,
    last: f64,
    tokens: u64,
    skipped: usize,
    blocks: rustc_hash::FxHashSet<u64>,
}

impl Builder<'_> {
    /// Adds one line (numbered `line` in the file); Err: why it is refused.
    fn push(&mut self, l: Line, line: usize) -> Result<(), String> {
        if !(l.at_ns.is_finite() && l.at_ns >= 0.0) {
            return Err("timestamp must be a number >= 0".into());
        }
        if l.at_ns < self.last {
            return Err(
                "timestamp goes back in time (before the previous line's); sort the trace by timestamp"
                    .into(),
            );
        }
        self.last = l.at_ns;
        let output = match self.output_len {
            Some(n) => u64::from(n),
            None if l.output == 0 => {
                self.skipped += 1;
                return Ok(());
            }
            None => l.output,
        };
        let specials = u64::from(self.vocab.specials());
        if l.input > u64::from(MAX_LEN) || output > u64::from(MAX_LEN) {
            return Err(format!("a length above the limit of {MAX_LEN} tokens"));
        }
        if l.input < specials.max(1) {
            return Err(format!(
                "input length {} is shorter than the {} special tokens the tokenizer adds",
                l.input,
                specials.max(1)
            ));
        }
        self.tokens += l.input;
        if self.tokens > MAX_TRACE_TOKENS {
            return Err(format!(
                "the trace up to here holds {} prompt tokens, above the limit of {MAX_TRACE_TOKENS} per run; pass --num-requests N to replay fewer lines",
                self.tokens
            ));
        }
        let first = *self.first.get_or_insert(l.at_ns);
        let body = (l.input - specials) as usize;
        let mut prompt = Vec::with_capacity(l.input as usize);
        prompt.extend_from_slice(&self.vocab.prefix);
        for &h in l.hash_ids.iter().take(body.div_ceil(BLOCK_TOKENS)) {
            let n = BLOCK_TOKENS.min(body - (prompt.len() - self.vocab.prefix.len()));
            self.vocab
                .draw(&mut stream(self.seed, 0, h), n as u32, &mut prompt);
            self.blocks.insert(h);
        }
        let rest = body - (prompt.len() - self.vocab.prefix.len());
        if rest > 0 {
            self.vocab.draw(
                &mut stream(self.seed, 1, line as u64),
                rest as u32,
                &mut prompt,
            );
        }
        prompt.extend_from_slice(&self.vocab.suffix);
        self.items.push(WorkItem {
            prompt: Arc::from(prompt),
            output_len: output as u32,
        });
        self.arrivals.push((l.at_ns - first).round() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::testutil;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn mooncake_blocks_are_shared_and_lengths_exact() {
        let (_d, p) = write(
            "t.jsonl",
            "{\"timestamp\": 1000, \"input_length\": 1100, \"output_length\": 5, \"hash_ids\": [7, 8, 9]}\n\
             \n\
             {\"timestamp\": 1500, \"input_length\": 700, \"output_length\": 3, \"hash_ids\": [7, 10]}\n",
        );
        let (_t, tok) = testutil::tiny();
        let w = build(&p, None, None, Some(&tok), 0).unwrap();
        assert_eq!(w.len(), 2);
        let (a, b) = (&w.items[0].prompt, &w.items[1].prompt);
        assert_eq!((a.len(), b.len()), (1100, 700));
        assert_eq!(a[0], testutil::BOS);
        // Block 7 is the shared prefix: BOS + 512 tokens; the next blocks differ.
        assert_eq!(a[..513], b[..513]);
        assert_ne!(a[513..700], b[513..700]);
        assert_eq!((w.items[0].output_len, w.items[1].output_len), (5, 3));
        assert_eq!(w.arrivals_ns, Some(vec![0, 500_000_000]));
        testutil::assert_described(&w, "4 distinct 512-token blocks");
        // Seeded: the same bytes again, other bytes with another seed.
        assert_eq!(build(&p, None, None, Some(&tok), 0).unwrap(), w);
        assert_ne!(build(&p, None, None, Some(&tok), 1).unwrap().items, w.items);
    }

    #[test]
    fn burstgpt_csv_in_seconds_skips_failed_rows() {
        let (_d, p) = write(
            "b.csv",
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n\
             5,ChatGPT,10,4,14,Conversation log\n\
             5.25,GPT-4,20,0,20,Conversation log\n\
             7.5,ChatGPT,30,6,36,API log\n",
        );
        let w = build(&p, None, None, None, 0).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w.arrivals_ns, Some(vec![0, 2_500_000_000]));
        assert_eq!(w.items[1].prompt.len(), 30);
        testutil::assert_described(&w, "1 rows with 0 output tokens skipped");
        let w = build(&p, Some(9), None, None, 0).unwrap();
        assert_eq!(w.len(), 3);
        assert!(w.items.iter().all(|i| i.output_len == 9));
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        for (text, line, needle) in [
            ("{\"timestamp\": 1, \"input_length\": 4, \"output_length\": 1}\n{oops\n", 2, "line 2"),
            ("{\"timestamp\": -1, \"input_length\": 4, \"output_length\": 1}\n", 1, ">= 0"),
            (
                "{\"timestamp\": 9, \"input_length\": 4, \"output_length\": 1}\n{\"timestamp\": 3, \"input_length\": 4, \"output_length\": 1}\n",
                2,
                "back in time",
            ),
            ("{\"timestamp\": 1, \"input_length\": 0, \"output_length\": 1}\n", 1, "shorter"),
            ("{\"timestamp\": 1, \"input_length\": 99999999999, \"output_length\": 1}\n", 1, "limit"),
        ] {
            let (_d, p) = write("t.jsonl", text);
            let e = build(&p, None, None, None, 0).unwrap_err();
            assert!(
                matches!(&e, WorkloadError::TraceLine { line: l, .. } if *l == line),
                "{text}: {e}"
            );
            let msg = e.to_string();
            assert!(msg.contains(needle) && msg.contains("t.jsonl"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        let (_d, p) = write("b.csv", "Timestamp,Request tokens,Response tokens\n1,x,2\n");
        let e = build(&p, None, None, None, 0).unwrap_err().to_string();
        assert!(e.contains("b.csv line 2"), "{e}");
        let (_d, p) = write("t.jsonl", "\n\n");
        assert!(matches!(
            build(&p, None, None, None, 0),
            Err(WorkloadError::TraceEmpty { .. })
        ));
    }

    #[test]
    fn a_trace_past_the_limit_is_refused_unless_its_first_lines_are_asked_for() {
        let line = "{\"timestamp\": 1, \"input_length\": 2, \"output_length\": 1}\n";
        let (_d, p) = write("t.jsonl", &line.repeat(MAX_TRACE_LINES + 1));
        let e = build(&p, None, None, None, 0).unwrap_err();
        assert!(matches!(e, WorkloadError::TraceTooLong { .. }), "{e}");
        assert!(e.to_string().contains("--num-requests"), "{e}");
        assert_eq!(build(&p, None, Some(10), None, 0).unwrap().len(), 10);
    }
}
