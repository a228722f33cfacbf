//! Scored workloads: prompts with reference answers, so each request's output can be
//! checked ([`crate::metrics::accuracy`] scores them).
//!
//! `--dataset scored --dataset-path FILE` reads JSONL, one item per non-blank line, in
//! either of two shapes (per line):
//!
//! - **GSM8K's own** (`test.jsonl`): `{"question": "...", "answer": "... #### 72"}`. The
//!   reference is the number after the answer's last `####`; the prompt is
//!   `Question: {question}\nAnswer:`, after `--fewshot K` solved examples
//!   (`Question: ...\nAnswer: {answer}\n\n`, the file's first K question lines, which are
//!   then not asked). The model's answer is extracted by GSM8K's rule ([`Extract::Gsm8k`]).
//! - **Generic**: `{"prompt": "...", "answer": "...", "pattern": "regex"}`: the prompt is
//!   sent verbatim; `pattern` (optional) extracts the answer (its first match, group 1
//!   when it has groups), else GSM8K's rule.
//!
//! `--dataset arithmetic` makes a seeded set of GSM8K-shaped questions (sums,
//! differences and products of small numbers, with their answers), so scoring runs
//! without any data package; the tests use it. Both shuffle the items with the seed and
//! repeat them in that order when fewer than the requests asked for; prompts are
//! tokenized with special tokens (BOS), as every workload's are.

use super::{
    below, cycle_to, serde_reason, shuffle, ChaCha8Rng, Tokenizer, WorkItem, Workload,
    WorkloadError,
};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// What starts the next question in GSM8K's prompt template: the model's answer ends
/// before it (the template's stop sequence, as lm-evaluation-harness uses it).
pub const QUESTION_MARKER: &str = "Question:";

/// Most few-shot examples a prompt may carry.
pub const MAX_FEWSHOT: u32 = 32;

/// A regular expression that compares by its source text (so workloads stay comparable).
#[derive(Clone, Debug)]
pub struct Pattern(regex::Regex);

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        regex::Regex::new(source).map(Pattern)
    }

    pub fn regex(&self) -> &regex::Regex {
        &self.0
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

/// How the model's answer is read from its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extract {
    /// GSM8K's convention: the output up to [`QUESTION_MARKER`], then the number after
    /// the last `####`, else the last number.
    Gsm8k,
    /// The first match of a pattern (group 1 when it has groups).
    Pattern(Pattern),
}

/// An item's reference answer and extraction rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerKey {
    pub reference: String,
    pub extract: Extract,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    question: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    answer: serde_json::Value,
    #[serde(default)]
    pattern: Option<String>,
}

/// A parsed item, before tokenization.
struct Item {
    prompt: String,
    key: AnswerKey,
}

/// GSM8K's `Question: ...\nAnswer:` prompt after the solved examples.
fn gsm8k_prompt(shots: &[(String, String)], question: &str) -> String {
    let mut p = String::new();
    for (q, a) in shots {
        p.push_str(&format!("{QUESTION_MARKER} {q}\nAnswer: {a}\n\n"));
    }
    p.push_str(&format!("{QUESTION_MARKER} {question}\nAnswer:"));
    p
}

/// The number after the last `####` of a GSM8K answer.
fn gsm8k_reference(answer: &str) -> Option<String> {
    let (_, after) = answer.rsplit_once("####")?;
    let r = after.trim();
    (!r.is_empty()).then(|| r.to_string())
}

fn line_error(path: &Path, line: usize, reason: impl Into<String>) -> WorkloadError {
    WorkloadError::ScoredLine {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// Reads a scored JSONL file into items (shots taken out) and a description of it.
fn read(path: &Path, fewshot: u32) -> Result<(Vec<Item>, String), WorkloadError> {
    let text = super::read_utf8(path, |line| {
        line_error(path, line, "not UTF-8 text; re-save the file as UTF-8")
    })?;
    let mut shots: Vec<(String, String)> = Vec::new();
    let mut questions = Vec::new();
    let mut items = Vec::new();
    let (mut gsm8k, mut generic) = (0usize, 0usize);
    for (i, l) in text.split('\n').enumerate() {
        let line = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let parsed: Line =
            serde_json::from_str(l).map_err(|e| line_error(path, line, serde_reason(&e)))?;
        let answer = match &parsed.answer {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => {
                return Err(line_error(
                    path,
                    line,
                    "\"answer\" must be a string or a number",
                ))
            }
        };
        match (parsed.question, parsed.prompt) {
            (Some(q), None) => {
                if parsed.pattern.is_some() {
                    return Err(line_error(path, line, "\"pattern\" applies to \"prompt\" lines; GSM8K lines use the #### rule"));
                }
                let reference = gsm8k_reference(&answer).ok_or_else(|| {
                    line_error(path, line, "a GSM8K \"answer\" must end with `#### <answer>`")
                })?;
                gsm8k += 1;
                if (shots.len() as u32) < fewshot {
                    shots.push((q, answer));
                } else {
                    questions.push((q, reference));
                }
            }
            (None, Some(prompt)) => {
                let extract = match &parsed.pattern {
                    None => Extract::Gsm8k,
                    Some(p) => Extract::Pattern(Pattern::new(p).map_err(|e| {
                        line_error(path, line, format!("\"pattern\" is not a valid regular expression: {}", super::one_line(&e.to_string())))
                    })?),
                };
                if answer.trim().is_empty() {
                    return Err(line_error(path, line, "\"answer\" is empty"));
                }
                generic += 1;
                items.push(Item {
                    prompt,
                    key: AnswerKey {
                        reference: answer,
                        extract,
                    },
                });
            }
            _ => {
                return Err(line_error(
                    path,
                    line,
                    "give either \"question\" (GSM8K's shape) or \"prompt\" (with \"answer\" and an optional \"pattern\")",
                ))
            }
        }
    }
    if (shots.len() as u32) < fewshot {
        return Err(WorkloadError::Scored {
            reason: format!(
                "--fewshot {fewshot} needs {fewshot} GSM8K-shaped lines of {} for the examples, and it has {}",
                path.display(),
                shots.len()
            ),
        });
    }
    for (q, reference) in questions {
        items.push(Item {
            prompt: gsm8k_prompt(&shots, &q),
            key: AnswerKey {
                reference,
                extract: Extract::Gsm8k,
            },
        });
    }
    if items.is_empty() {
        return Err(WorkloadError::Scored {
            reason: format!(
                "{} has no items to score (after {fewshot} few-shot examples); put one JSON object per line",
                path.display()
            ),
        });
    }
    let shape = match (gsm8k, generic) {
        (_, 0) => format!("GSM8K-shaped, {fewshot}-shot"),
        (0, _) => "generic (prompt, answer, pattern)".to_string(),
        _ => format!("{gsm8k} GSM8K-shaped ({fewshot}-shot) and {generic} generic lines"),
    };
    Ok((items, format!("{} ({shape})", path.display())))
}

/// The seeded arithmetic set: `count` questions and `fewshot` solved examples, drawn
/// in that order (examples first) from `rng`.
fn arithmetic(fewshot: u32, count: usize, rng: &mut ChaCha8Rng) -> Vec<Item> {
    let mut draw = || {
        let (a, b) = (10 + below(rng, 90) as i64, 2 + below(rng, 48) as i64);
        match below(rng, 3) {
            0 => (
                format!("What is {a} + {b}?"),
                a + b,
                format!("{a} + {b} = {}", a + b),
            ),
            1 => (
                format!("What is {a} - {b}?"),
                a - b,
                format!("{a} - {b} = {}", a - b),
            ),
            _ => {
                let b = b % 9 + 2;
                (
                    format!("What is {a} times {b}?"),
                    a * b,
                    format!("{a} * {b} = {}", a * b),
                )
            }
        }
    };
    let shots: Vec<(String, String)> = (0..fewshot)
        .map(|_| {
            let (q, v, work) = draw();
            (q, format!("{work}.\n#### {v}"))
        })
        .collect();
    (0..count)
        .map(|_| {
            let (q, v, _) = draw();
            Item {
                prompt: gsm8k_prompt(&shots, &q),
                key: AnswerKey {
                    reference: v.to_string(),
                    extract: Extract::Gsm8k,
                },
            }
        })
        .collect()
}

fn check_fewshot(fewshot: u32) -> Result<(), WorkloadError> {
    if fewshot > MAX_FEWSHOT {
        return Err(WorkloadError::Scored {
            reason: format!("--fewshot {fewshot} is above the limit of {MAX_FEWSHOT} examples"),
        });
    }
    Ok(())
}

/// `--dataset scored` (`path` given) or `--dataset arithmetic` (`path` None).
pub(crate) fn build(
    path: Option<&Path>,
    output_len: u32,
    fewshot: u32,
    tok: &Tokenizer,
    count: usize,
    seed: u64,
    rng: &mut ChaCha8Rng,
) -> Result<Workload, WorkloadError> {
    check_fewshot(fewshot)?;
    if output_len == 0 {
        return Err(WorkloadError::Scored {
            reason: "--output-len 0: a scored request needs at least 1 token to answer".into(),
        });
    }
    let (mut items, source) = match path {
        Some(p) => read(p, fewshot)?,
        None => (
            arithmetic(fewshot, count, rng),
            format!(
                "arithmetic (seeded sums, differences and products, GSM8K-shaped, {fewshot}-shot)"
            ),
        ),
    };
    let distinct = items.len();
    shuffle(rng, &mut items);
    let mut work = Vec::with_capacity(distinct);
    let mut keys = Vec::with_capacity(distinct);
    for it in items {
        work.push(WorkItem {
            prompt: Arc::from(tok.encode(&it.prompt)?),
            output_len,
        });
        keys.push(it.key);
    }
    let (work, cycled) = cycle_to(work, count);
    let keys: Vec<AnswerKey> = (0..work.len())
        .map(|i| keys[i % distinct].clone())
        .collect();
    let mut description = format!(
        "{}: {count} scored requests from {source}, {distinct} items shuffled with seed {seed}, output up to {output_len} tokens",
        if path.is_some() { "scored" } else { "arithmetic" }
    );
    if let Some(note) = cycled {
        description.push_str("; ");
        description.push_str(&note);
    }
    let mut w = Workload::new(work, description);
    w.answers = Some(keys);
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::super::testutil;
    use super::super::{build as build_workload, WorkloadSpec};
    use super::*;
    use std::io::Write as _;

    fn file(lines: &[&str]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        f
    }

    fn spec(path: &Path, fewshot: u32) -> WorkloadSpec {
        WorkloadSpec::Scored {
            path: path.to_path_buf(),
            output_len: 16,
            fewshot,
        }
    }

    #[test]
    fn gsm8k_lines_make_prompts_with_shots_and_references() {
        let (_d, tok) = testutil::tiny();
        let f = file(&[
            r#"{"question": "the fox", "answer": "a b\n#### 1,234"}"#,
            "",
            r#"{"question": "the dog", "answer": "b\n#### -3"}"#,
        ]);
        let w = build_workload(&spec(f.path(), 1), Some(&tok), 1, 7).unwrap();
        let keys = w.answers.as_ref().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].reference, "-3");
        assert_eq!(keys[0].extract, Extract::Gsm8k);
        let expected = tok
            .encode("Question: the fox\nAnswer: a b\n#### 1,234\n\nQuestion: the dog\nAnswer:")
            .unwrap();
        assert_eq!(&*w.items[0].prompt, expected.as_slice());
        assert!(w.description.contains("1-shot"), "{}", w.description);
        // Zero-shot: both lines are asked.
        let w = build_workload(&spec(f.path(), 0), Some(&tok), 4, 7).unwrap();
        let mut refs: Vec<_> = w
            .answers
            .unwrap()
            .iter()
            .map(|k| k.reference.clone())
            .collect();
        refs.sort();
        assert_eq!(refs, ["-3", "-3", "1,234", "1,234"]);
    }

    #[test]
    fn generic_lines_keep_their_prompt_and_pattern() {
        let (_d, tok) = testutil::tiny();
        let f = file(&[r#"{"prompt": "hello world", "answer": 42, "pattern": "is (\\d+)"}"#]);
        let w = build_workload(&spec(f.path(), 0), Some(&tok), 1, 0).unwrap();
        let k = &w.answers.as_ref().unwrap()[0];
        assert_eq!(k.reference, "42");
        assert_eq!(
            k.extract,
            Extract::Pattern(Pattern::new(r"is (\d+)").unwrap())
        );
        assert_eq!(
            &*w.items[0].prompt,
            tok.encode("hello world").unwrap().as_slice()
        );
    }

    #[test]
    fn bad_lines_name_the_line_and_the_fix() {
        let (_d, tok) = testutil::tiny();
        for (lines, want) in [
            (
                vec![r#"{"question": "q", "answer": "no marker"}"#],
                "line 1: a GSM8K \"answer\" must end with `#### <answer>`",
            ),
            (
                vec!["", r#"{"prompt": "p"}"#],
                "line 2: missing field `answer`",
            ),
            (
                vec![r#"{"prompt": "p", "answer": "1", "pattern": "("}"#],
                "line 1: \"pattern\" is not a valid regular expression",
            ),
            (
                vec![r#"{"answer": "1"}"#],
                "line 1: give either \"question\"",
            ),
            (
                vec![r#"{"prompt": "p", "answer": [1]}"#],
                "line 1: \"answer\" must be a string or a number",
            ),
            (vec!["not json"], "line 1: expected ident"),
            (
                vec![r#"{"prompt": "p", "answer": "1", "extra": 1}"#],
                "line 1: unknown field `extra`",
            ),
        ] {
            let f = file(&lines);
            let e = build_workload(&spec(f.path(), 0), Some(&tok), 1, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let f = file(&["{\"question\": \"q\", \"answer\": \"#### 1\"}"]);
        let e = build_workload(&spec(f.path(), 1), Some(&tok), 1, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no items to score"), "{e}");
        let e = build_workload(&spec(f.path(), 2), Some(&tok), 1, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--fewshot 2 needs 2"), "{e}");
    }

    #[test]
    fn arithmetic_is_seeded_and_answers_itself() {
        let (_d, tok) = testutil::tiny();
        let spec = WorkloadSpec::Arithmetic {
            output_len: 8,
            fewshot: 2,
        };
        let a = build_workload(&spec, Some(&tok), 20, 3).unwrap();
        assert_eq!(a, build_workload(&spec, Some(&tok), 20, 3).unwrap());
        assert_ne!(
            a.answers,
            build_workload(&spec, Some(&tok), 20, 4).unwrap().answers
        );
        assert_eq!(a.answers.as_ref().unwrap().len(), 20);
        // The questions' texts hold their own answers' operands: recompute each.
        let mut rng = ChaCha8Rng::seed_from_u64_stable(3);
        let items = arithmetic(2, 20, &mut rng);
        for it in &items {
            let q = it.prompt.rsplit("Question: What is ").next().unwrap();
            let q = q.trim_end_matches("?\nAnswer:");
            let v: i64 = if let Some((x, y)) = q.split_once(" + ") {
                x.parse::<i64>().unwrap() + y.parse::<i64>().unwrap()
            } else if let Some((x, y)) = q.split_once(" - ") {
                x.parse::<i64>().unwrap() - y.parse::<i64>().unwrap()
            } else {
                let (x, y) = q.split_once(" times ").unwrap();
                x.parse::<i64>().unwrap() * y.parse::<i64>().unwrap()
            };
            assert_eq!(it.key.reference, v.to_string(), "{q}");
            assert_eq!(it.prompt.matches("####").count(), 2, "two solved examples");
        }
    }

    use super::super::SeedStable as _;
}
