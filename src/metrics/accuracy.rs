//! Task accuracy: each scored request's output text against its reference answer, and a
//! point's share of correct answers with its Wilson 95 % interval.
//!
//! A scored workload ([`crate::workload::scored`]) carries an [`AnswerKey`] per item: the
//! reference answer and the rule that extracts the model's answer from its output.
//! [`score`] reads a point's records (their generated token ids, decoded by the caller
//! with the model's tokenizer) into [`ScoreRecord`]s, which the run keeps as
//! `scores.jsonl`; [`summarize`] counts them. Both are pure: `harness report` recounts
//! `scores.jsonl`, and a reader can recount it by hand (`correct` over lines).

use super::Estimate;
use crate::core::request::RequestId;
use crate::trace::RequestTrace;
use crate::workload::one_line;
#[cfg(test)]
use crate::workload::scored::Pattern;
use crate::workload::scored::{AnswerKey, Extract, QUESTION_MARKER};
use serde::{Deserialize, Serialize};

/// The 97.5 % quantile of the standard normal (the 95 % two-sided interval).
const Z95: f64 = 1.959_963_984_540_054;

/// How `accuracy` is computed, printed with the results.
pub const DEFINITION: &str = "correct / scored requests of the point (every completed request \
     of a scored workload is scored); an answer is correct when the extracted answer equals \
     the reference after normalisation (numbers: no `,` `$` or trailing `.`, no leading `+`, \
     no trailing decimal zeros, so 1,234.50 = 1234.5; text: whitespace collapsed). Extraction: \
     with a pattern, its first match (group 1 when it has groups); GSM8K's rule otherwise: the \
     output up to the first `Question:` (the prompt template's next question), then the number \
     after the last `####`, else the last number. Interval: Wilson score, 95 %. Each verdict \
     is a line of scores.jsonl.";

/// One scored request, a line of `scores.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub id: RequestId,
    pub point: u32,
    /// The reference answer, normalised.
    pub reference: String,
    /// The answer extracted from the output, normalised; `None` when the rule found none.
    pub answer: Option<String>,
    pub correct: bool,
    /// The generated text the answer was extracted from (special tokens skipped).
    pub output: String,
}

/// A point's accuracy: counts and the Wilson interval of `correct / scored`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub scored: usize,
    pub correct: usize,
    /// Requests whose output had an answer the rule could extract (right or wrong).
    pub answered: usize,
    /// `mean` = correct / scored; `ci95_low`/`ci95_high` the Wilson bounds; the
    /// half-width is half their distance (what `harness compare` weighs).
    pub estimate: Estimate,
}

/// Scores every completed request of `records` that has generated token ids, against
/// `keys[id % keys.len()]` (the driver submits workload item `id`, cycling). `decode`
/// turns token ids into text (the model's tokenizer, special tokens skipped).
pub fn score<E>(
    records: &[RequestTrace],
    keys: &[AnswerKey],
    mut decode: impl FnMut(&[u32]) -> Result<String, E>,
) -> Result<Vec<ScoreRecord>, E> {
    let mut out = Vec::new();
    if keys.is_empty() {
        return Ok(out);
    }
    for r in records.iter().filter(|r| r.is_success()) {
        let Some(ids) = &r.token_ids else { continue };
        let key = &keys[(r.id % keys.len() as u64) as usize];
        let output = decode(ids)?;
        let reference = normalise(&key.reference);
        let answer = extract(&key.extract, &output).map(|a| normalise(&a));
        out.push(ScoreRecord {
            id: r.id,
            point: r.point,
            correct: answer.as_deref() == Some(reference.as_str()),
            reference,
            answer,
            output,
        });
    }
    Ok(out)
}

impl Accuracy {
    /// `6/10 = 0.600 [0.313, 0.832]`: the counts, the share and its Wilson interval, as
    /// every output that prints an accuracy spells it.
    pub fn describe(&self) -> String {
        let e = &self.estimate;
        format!(
            "{}/{} = {:.3} [{:.3}, {:.3}]",
            self.correct,
            self.scored,
            e.mean.unwrap_or(0.0),
            e.ci95_low.unwrap_or(0.0),
            e.ci95_high.unwrap_or(0.0)
        )
    }
}

/// The accuracy of `scores` (one point's); `None` when nothing was scored.
pub fn summarize(scores: &[ScoreRecord]) -> Option<Accuracy> {
    let scored = scores.len();
    if scored == 0 {
        return None;
    }
    let correct = scores.iter().filter(|s| s.correct).count();
    let answered = scores.iter().filter(|s| s.answer.is_some()).count();
    let (lo, hi) = wilson(correct, scored);
    Some(Accuracy {
        scored,
        correct,
        answered,
        estimate: Estimate {
            n: scored,
            mean: Some(correct as f64 / scored as f64),
            ci95_half_width: Some((hi - lo) / 2.0),
            ci95_low: Some(lo),
            ci95_high: Some(hi),
            cv: None,
        },
    })
}

/// The Wilson score interval (95 %) of `k` successes in `n > 0` trials.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The model's answer in `text` by `rule`, not yet normalised; `None` when there is none.
pub fn extract(rule: &Extract, text: &str) -> Option<String> {
    match rule {
        Extract::Pattern(re) => {
            let m = re.regex().captures(text)?;
            let g = if m.len() > 1 { m.get(1) } else { m.get(0) };
            g.map(|g| g.as_str().to_string())
        }
        Extract::Gsm8k => {
            let text = text.split(QUESTION_MARKER).next().unwrap_or("");
            if let Some((_, after)) = text.rsplit_once("####") {
                if let Some(n) = numbers(after).next() {
                    return Some(n.to_string());
                }
            }
            numbers(text).last().map(str::to_string)
        }
    }
}

/// The numbers in `text`, in order: an optional `-`, then digits with `,` and one `.`
/// (`1,234.5`, `-3`, `.5`); a trailing `.` or `,` is punctuation, not part of it.
fn numbers(text: &str) -> impl Iterator<Item = &str> {
    let b = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            let start = i;
            let neg = b[i] == b'-';
            let j = if neg { i + 1 } else { i };
            let starts_number = j < b.len()
                && (b[j].is_ascii_digit()
                    || (b[j] == b'.' && j + 1 < b.len() && b[j + 1].is_ascii_digit()));
            if !starts_number {
                i += 1;
                continue;
            }
            let mut end = j;
            let mut dot = false;
            while end < b.len() {
                let c = b[end];
                let next_digit = end + 1 < b.len() && b[end + 1].is_ascii_digit();
                if c.is_ascii_digit() || (c == b',' && next_digit && end > j) {
                    end += 1;
                } else if c == b'.' && !dot && next_digit {
                    dot = true;
                    end += 1;
                } else {
                    break;
                }
            }
            i = end;
            return Some(&text[start..end]);
        }
        None
    })
}

/// An answer as compared: a number in canonical decimal form (no `,`, `$`, leading `+`,
/// trailing `.` or decimal zeros, `-0` is `0`), or text with whitespace collapsed.
pub fn normalise(answer: &str) -> String {
    let t = answer.trim();
    let n: String = t
        .trim_end_matches('.')
        .chars()
        .filter(|c| !matches!(c, ',' | '$') && !c.is_whitespace())
        .collect();
    let n = n.strip_prefix('+').unwrap_or(&n);
    let (neg, digits) = match n.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, n),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let is_number = !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|c| c.is_ascii_digit())
        && frac.bytes().all(|c| c.is_ascii_digit());
    if !is_number {
        return one_line(t);
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let mut s = String::new();
    if neg && !(int.is_empty() && frac.is_empty()) {
        s.push('-');
    }
    s.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        s.push('.');
        s.push_str(frac);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::MonoNs;
    use crate::core::request::FinishReason;

    fn gsm(text: &str) -> Option<String> {
        extract(&Extract::Gsm8k, text).map(|a| normalise(&a))
    }

    #[test]
    fn gsm8k_answers_with_commas_negatives_decimals_and_none() {
        assert_eq!(
            gsm(" She pays 3 * 4 = 12 dollars.\n#### 12").as_deref(),
            Some("12")
        );
        assert_eq!(gsm("#### 1,234").as_deref(), Some("1234"));
        assert_eq!(gsm("so the total is $1,234.50.").as_deref(), Some("1234.5"));
        assert_eq!(gsm("The change is -7 degrees").as_deref(), Some("-7"));
        assert_eq!(gsm("#### -0.50").as_deref(), Some("-0.5"));
        assert_eq!(gsm("it is .5 of 10, so 5.").as_deref(), Some("5"));
        assert_eq!(gsm("no number here"), None);
        assert_eq!(gsm(""), None);
        // The next question the model wrote is not its answer.
        assert_eq!(
            gsm(" 4 + 5 = 9.\n#### 9\n\nQuestion: What is 7 + 1?\nAnswer: 8").as_deref(),
            Some("9")
        );
        // `####` without a number falls back to the last number before it.
        assert_eq!(gsm("it is 41 or 42 ####").as_deref(), Some("42"));
        // The last `####` wins, and its first number.
        assert_eq!(gsm("#### 3\n#### 4 then 5").as_deref(), Some("4"));
        // A hyphen before a digit reads as a sign, as GSM8K's flexible rule reads it.
        assert_eq!(gsm("between 3-4").as_deref(), Some("-4"));
    }

    #[test]
    fn patterns_take_group_one_or_the_whole_match() {
        let p = |s: &str| Extract::Pattern(Pattern::new(s).unwrap());
        assert_eq!(
            extract(&p(r"answer is (\w+)"), "the answer is Paris, I think").as_deref(),
            Some("Paris")
        );
        assert_eq!(extract(&p(r"\d+"), "a 12 b 13").as_deref(), Some("12"));
        assert_eq!(extract(&p(r"answer is (\w+)"), "no idea"), None);
    }

    #[test]
    fn normalisation_makes_equal_numbers_equal() {
        for (a, b) in [
            ("1,234", "1234"),
            ("$18.00", "18"),
            ("+5", "5"),
            ("-0", "0"),
            ("007", "7"),
            ("0.50", "0.5"),
            ("12.", "12"),
            (" New   York ", "New York"),
        ] {
            assert_eq!(normalise(a), normalise(b), "{a} vs {b}");
        }
        assert_ne!(normalise("12"), normalise("12.5"));
        assert_ne!(normalise("Paris"), normalise("paris"));
        assert_eq!(normalise("-"), "-");
    }

    #[test]
    fn wilson_matches_known_values() {
        // Reference values (Wilson 1927; e.g. statsmodels proportion_confint method="wilson").
        let close = |(lo, hi): (f64, f64), (a, b): (f64, f64)| {
            assert!((lo - a).abs() < 5e-5 && (hi - b).abs() < 5e-5, "{lo} {hi}");
        };
        close(wilson(8, 10), (0.49016, 0.94331));
        close(wilson(0, 10), (0.0, 0.27753));
        close(wilson(10, 10), (0.72247, 1.0));
        close(wilson(50, 100), (0.40383, 0.59617));
    }

    fn record(id: u64, ids: Option<Vec<u32>>, reason: FinishReason) -> RequestTrace {
        let mut r = RequestTrace::new(id, 0, 4, 4, MonoNs(0));
        r.token_ns = vec![1];
        r.finish_ns = Some(MonoNs(2));
        r.finish_reason = Some(reason);
        r.token_ids = ids;
        r
    }

    #[test]
    fn scores_count_completed_requests_against_their_item() {
        let keys = vec![
            AnswerKey {
                reference: "7".into(),
                extract: Extract::Gsm8k,
            },
            AnswerKey {
                reference: "1,000".into(),
                extract: Extract::Gsm8k,
            },
        ];
        let recs = vec![
            record(0, Some(vec![7]), FinishReason::Length),
            record(1, Some(vec![1000]), FinishReason::Stop),
            record(2, Some(vec![8]), FinishReason::Length), // item 0 again: wrong
            record(3, Some(vec![]), FinishReason::Length),  // no answer
            record(4, Some(vec![7]), FinishReason::Error),  // failed: not scored
            record(5, None, FinishReason::Length),          // no ids: not scored
        ];
        let decode = |ids: &[u32]| -> Result<String, ()> {
            Ok(ids.iter().map(|i| format!("#### {i}")).collect())
        };
        let s = score(&recs, &keys, decode).unwrap();
        let verdicts: Vec<_> = s.iter().map(|s| (s.id, s.correct)).collect();
        assert_eq!(verdicts, [(0, true), (1, true), (2, false), (3, false)]);
        assert_eq!(s[1].reference, "1000");
        assert_eq!(s[3].answer, None);
        let a = summarize(&s).unwrap();
        assert_eq!((a.scored, a.correct, a.answered), (4, 2, 3));
        assert_eq!(a.estimate.mean, Some(0.5));
        let (lo, hi) = wilson(2, 4);
        assert_eq!(
            (a.estimate.ci95_low, a.estimate.ci95_high),
            (Some(lo), Some(hi))
        );
        assert_eq!(a.describe(), "2/4 = 0.500 [0.150, 0.850]");
        assert_eq!(summarize(&[]), None);
    }
}
