//! Prompt-file workloads: your own prompts, one per line.
//!
//! Two formats; the rule that picks one:
//! - **JSONL** when the file name ends in `.jsonl`, `.ndjson` or `.json`, or when its first
//!   non-blank line parses as a JSON object with a `"prompt"` key. Every non-blank line
//!   must then be `{"prompt": "...", "output_len": N}` (`output_len`, or `max_tokens`, optional, >= 1;
//!   other keys ignored). A bad line is an error naming its 1-based line number.
//! - **Plain text** otherwise: every non-blank line is one prompt, taken verbatim (a
//!   trailing `\r` removed). Lines cannot hold newlines; use JSONL for those.
//!
//! Blank (whitespace-only) lines are skipped in both; a UTF-8 BOM is ignored. Prompts are
//! tokenized with special tokens (BOS), shuffled with the seed, and repeated in that
//! order if the file has fewer than `count`. Lines without `output_len` get the spec's
//! `output_len`.

use super::{
    cycle_to, serde_reason, shuffle, ChaCha8Rng, Tokenizer, WorkItem, Workload, WorkloadError,
    MAX_LEN,
};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// Which of the two formats a file was read as.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PromptFormat {
    Jsonl,
    Text,
}

/// One prompt of a file, before tokenization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptEntry {
    /// 1-based line number in the file.
    pub line: usize,
    pub text: String,
    pub output_len: Option<u32>,
}

#[derive(Deserialize)]
struct JsonLine {
    prompt: String,
    /// The request's token budget; `max_tokens`, the OpenAI name, is read as well.
    #[serde(default, alias = "max_tokens")]
    output_len: Option<u32>,
}

/// Reads and parses a prompt file (no tokenization).
pub fn read_prompt_file(path: &Path) -> Result<(PromptFormat, Vec<PromptEntry>), WorkloadError> {
    let text = super::read_utf8(path, |line| WorkloadError::PromptNotUtf8 {
        path: path.to_path_buf(),
        line,
    })?;
    let lines = || {
        text.split('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
            .filter(|(_, l)| !l.trim().is_empty())
    };
    let format =
        if has_json_extension(path) || first_line_is_json_prompt(lines().next().map(|(_, l)| l)) {
            PromptFormat::Jsonl
        } else {
            PromptFormat::Text
        };
    let mut entries = Vec::new();
    for (line, l) in lines() {
        let entry = match format {
            PromptFormat::Text => PromptEntry {
                line,
                text: l.to_string(),
                output_len: None,
            },
            PromptFormat::Jsonl => {
                let bad = |reason: String| WorkloadError::PromptLine {
                    path: path.to_path_buf(),
                    line,
                    reason,
                };
                let j: JsonLine = serde_json::from_str(l).map_err(|e| {
                    bad(format!(
                        "invalid JSON at column {} ({}); expected {{\"prompt\": \"...\", \"output_len\": N}}",
                        e.column(),
                        serde_reason(&e)
                    ))
                })?;
                match j.output_len {
                    Some(0) => return Err(bad("output_len is 0; it must be at least 1".into())),
                    Some(n) if n > MAX_LEN => {
                        return Err(bad(format!(
                            "output_len {n} is above the limit of {MAX_LEN} tokens"
                        )))
                    }
                    _ => {}
                }
                if j.prompt.is_empty() {
                    return Err(bad("\"prompt\" is empty".into()));
                }
                PromptEntry {
                    line,
                    text: j.prompt,
                    output_len: j.output_len,
                }
            }
        };
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(WorkloadError::PromptFileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok((format, entries))
}

fn has_json_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["jsonl", "ndjson", "json"]
            .iter()
            .any(|j| e.eq_ignore_ascii_case(j))
    })
}

fn first_line_is_json_prompt(line: Option<&str>) -> bool {
    let Some(l) = line else { return false };
    if !l.trim_start().starts_with('{') {
        return false;
    }
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(l)
        .is_ok_and(|m| m.contains_key("prompt"))
}

pub(crate) fn build(
    path: &Path,
    default_output_len: u32,
    tok: &Tokenizer,
    count: usize,
    seed: u64,
    rng: &mut ChaCha8Rng,
) -> Result<Workload, WorkloadError> {
    if default_output_len == 0 {
        return Err(WorkloadError::InvalidSpecLength {
            what: "prompt-file output length",
            spec: "0".into(),
            reason: "length must be at least 1".into(),
        });
    }
    let (format, mut entries) = read_prompt_file(path)?;
    let n = entries.len();
    shuffle(rng, &mut entries);
    entries.truncate(count);
    let mut distinct = Vec::with_capacity(entries.len());
    for e in &entries {
        let ids = tok.encode(&e.text)?;
        if ids.is_empty() {
            return Err(WorkloadError::PromptLine {
                path: path.to_path_buf(),
                line: e.line,
                reason: "prompt encodes to 0 tokens".into(),
            });
        }
        distinct.push(WorkItem {
            prompt: Arc::from(ids),
            output_len: e.output_len.unwrap_or(default_output_len),
        });
    }
    let (items, cycled) = cycle_to(distinct, count);
    let overridden = entries.iter().filter(|e| e.output_len.is_some()).count();
    let mut description = format!(
        "prompts: {count} requests from {} ({}, {n} prompts, shuffled with seed {seed}), tokenized with {}, \
         output = output_len where given ({overridden} of {} used) else {default_output_len}",
        path.display(),
        match format {
            PromptFormat::Jsonl => "JSONL",
            PromptFormat::Text => "plain text, one prompt per line",
        },
        tok.path().display(),
        entries.len(),
    );
    if let Some(note) = cycled {
        description.push_str("; ");
        description.push_str(&note);
    }
    Ok(Workload::new(items, description))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, BOS};
    use super::super::{build as build_workload, WorkloadSpec};
    use super::*;
    use std::path::PathBuf;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    fn spec(path: &Path, output_len: u32) -> WorkloadSpec {
        WorkloadSpec::Prompts {
            path: path.to_path_buf(),
            output_len,
        }
    }

    fn sorted(w: &Workload) -> Vec<(Vec<u32>, u32)> {
        let mut v: Vec<_> = w
            .items
            .iter()
            .map(|it| (it.prompt.to_vec(), it.output_len))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn jsonl_with_max_tokens_override() {
        let (d, tok) = testutil::tiny();
        let p = write(
            d.path(),
            "p.jsonl",
            "{\"prompt\": \"hello world\", \"max_tokens\": 7}\n\n  \n{\"prompt\": \"the fox\", \"id\": 3}\r\n{\"prompt\": \"a\", \"max_tokens\": null}\n",
        );
        let (fmt, entries) = read_prompt_file(&p).unwrap();
        assert_eq!(fmt, PromptFormat::Jsonl);
        assert_eq!(
            entries.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![1, 4, 5]
        );
        let w = build_workload(&spec(&p, 32), Some(&tok), 3, 0).unwrap();
        assert_eq!(
            sorted(&w),
            vec![
                (vec![BOS, 4, 7], 32),
                (vec![BOS, 12, 13], 7),
                (vec![BOS, 14], 32)
            ]
        );
        testutil::assert_described(&w, "JSONL, 3 prompts");
        testutil::assert_described(&w, "1 of 3 used");
    }

    #[test]
    fn plain_text_one_prompt_per_line() {
        let (d, tok) = testutil::tiny();
        let p = write(
            d.path(),
            "p.txt",
            "hello world\n\nthe quick brown fox\r\n{not json, just text}\n",
        );
        let (fmt, entries) = read_prompt_file(&p).unwrap();
        assert_eq!(fmt, PromptFormat::Text);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].text, "{not json, just text}");
        let w = build_workload(&spec(&p, 16), Some(&tok), 2, 0).unwrap();
        assert_eq!(w.len(), 2);
        assert!(w
            .items
            .iter()
            .all(|it| it.output_len == 16 && it.prompt[0] == BOS));
        testutil::assert_described(&w, "plain text");
    }

    #[test]
    fn jsonl_sniffed_without_extension() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "prompts.txt",
            "\n{\"prompt\": \"x\", \"max_tokens\": 3}\n{\"prompt\": \"y\"}\n",
        );
        let (fmt, entries) = read_prompt_file(&p).unwrap();
        assert_eq!(fmt, PromptFormat::Jsonl);
        assert_eq!(
            entries[0],
            PromptEntry {
                line: 2,
                text: "x".into(),
                output_len: Some(3)
            }
        );
    }

    #[test]
    fn malformed_jsonl_line_names_its_number() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "p.jsonl",
            "{\"prompt\": \"ok\"}\n\n{\"prompt\": \"ok\"}\n{\"prompt\": \"ok\"}\n{\"prompt\": \"ok\"}\n{\"prompt\": \"ok\"}\n{\"prompt\": 42}\n",
        );
        let e = read_prompt_file(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "prompt file {} line 7: invalid JSON at column",
                p.display()
            )),
            "{e}"
        );
        assert!(
            e.contains("expected {\"prompt\": \"...\", \"output_len\": N}"),
            "{e}"
        );
        assert!(e.ends_with("fix the line or use a plain-text file (one prompt per line, not named .jsonl/.json)"), "{e}");
        assert!(!e.contains('\n'));

        for (content, needle) in [
            (
                "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"\n",
                "line 2: invalid JSON",
            ),
            (
                "{\"max_tokens\": 5}\n",
                "line 1: invalid JSON at column 17 (missing field `prompt`)",
            ),
            (
                "{\"prompt\": \"a\", \"max_tokens\": 0}\n",
                "line 1: output_len is 0",
            ),
            (
                "{\"prompt\": \"a\", \"max_tokens\": -3}\n",
                "line 1: invalid JSON",
            ),
            ("{\"prompt\": \"\"}\n", "line 1: \"prompt\" is empty"),
            ("plain text line\n", "line 1: invalid JSON"),
        ] {
            let p = write(d.path(), "q.jsonl", content);
            let e = read_prompt_file(&p).unwrap_err().to_string();
            assert!(e.contains(needle), "{content:?}: {e}");
        }
    }

    #[test]
    fn empty_and_unreadable_files() {
        let d = tempfile::tempdir().unwrap();
        for content in ["", "\n \n\r\n", "\u{feff}"] {
            let p = write(d.path(), "e.txt", content);
            let e = read_prompt_file(&p).unwrap_err().to_string();
            assert!(e.contains("has no prompts"), "{e}");
        }
        let p = d.path().join("bin.txt");
        std::fs::write(&p, b"ok line\nsecond\n\xff\xfe bad\n").unwrap();
        let e = read_prompt_file(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "prompt file {} line 3 is not UTF-8 text; re-save the file as UTF-8",
                p.display()
            )
        );
        let e = read_prompt_file(&d.path().join("none.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read"), "{e}");
    }

    #[test]
    fn seeded_shuffle_and_cycle() {
        let (d, tok) = testutil::tiny();
        let body: String = (0..20)
            .map(|i| format!("{}\n", testutil::words(i + 1)))
            .collect();
        let p = write(d.path(), "p.txt", &body);
        let a = build_workload(&spec(&p, 8), Some(&tok), 20, 1).unwrap();
        let b = build_workload(&spec(&p, 8), Some(&tok), 20, 1).unwrap();
        let c = build_workload(&spec(&p, 8), Some(&tok), 20, 2).unwrap();
        assert_eq!(a.to_jsonl(), b.to_jsonl());
        assert_ne!(a.to_jsonl(), c.to_jsonl());
        assert_eq!(sorted(&a), sorted(&c)); // same prompts, other order
        let lens: Vec<usize> = a.items.iter().map(|it| it.prompt.len()).collect();
        assert_ne!(lens, (2..22).collect::<Vec<_>>(), "not shuffled");

        let w = build_workload(&spec(&p, 8), Some(&tok), 45, 1).unwrap();
        assert_eq!(w.len(), 45);
        assert_eq!(w.items[..20], a.items[..]);
        assert_eq!(w.items[40..], a.items[..5]);
        testutil::assert_described(&w, "only 20 distinct prompts");
    }

    #[test]
    fn zero_default_output_is_rejected() {
        let (d, tok) = testutil::tiny();
        let p = write(d.path(), "p.txt", "hello\n");
        let e = build_workload(&spec(&p, 0), Some(&tok), 1, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be at least 1"), "{e}");
    }
}
