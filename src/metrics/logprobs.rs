//! Log-probability parity: two engines' teacher-forced log-probabilities of the same
//! texts ([`TextLogprobs`]), compared position by position. Pure: the records in, the
//! figures out.
//!
//! For each position i (the i-th token after a text's first) with log-probabilities
//! a_i and b_i: |Δ|_i = |a_i − b_i|. Per text and over all texts: the largest |Δ| and
//! where, the mean |Δ| (over positions, every position weighing the same), the
//! top-1 agreement (positions where both engines rank the same token first), and each
//! engine's mean log-probability (the negative of its cross-entropy on the texts).

use crate::core::logprobs::TextLogprobs;
use serde::Serialize;

/// One position where the engines differ, for the "largest differences" list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    pub text: usize,
    /// From 1: the position's token is `text[position]`.
    pub position: usize,
    pub token: u32,
    pub logprobs: [f32; 2],
    pub top1: [u32; 2],
    pub abs_diff: f64,
}

/// One text's comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TextParity {
    pub text: usize,
    pub positions: usize,
    pub max_abs_diff: f64,
    /// Where the largest |Δ| is (from 1); `None` for a text of one token.
    pub max_at: Option<usize>,
    pub mean_abs_diff: f64,
    pub top1_agree: usize,
}

/// The comparison over every text.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogprobParity {
    pub texts: Vec<TextParity>,
    pub positions: usize,
    pub max_abs_diff: f64,
    pub mean_abs_diff: f64,
    pub top1_agree: usize,
    /// Each engine's mean log-probability over all positions (nats).
    pub mean_logprob: [f64; 2],
    /// The largest differences, largest first.
    pub largest: Vec<Difference>,
}

impl LogprobParity {
    /// Share of positions whose top-1 tokens agree (1 with no positions).
    pub fn top1_agreement(&self) -> f64 {
        if self.positions == 0 {
            1.0
        } else {
            self.top1_agree as f64 / self.positions as f64
        }
    }
}

/// Compares `a` and `b`, each one [`TextLogprobs`] per text of `texts`, and keeps the
/// `keep` largest differences. Errors name the text whose records do not fit it.
pub fn compare(
    texts: &[Vec<u32>],
    a: &[TextLogprobs],
    b: &[TextLogprobs],
    keep: usize,
) -> Result<LogprobParity, String> {
    if a.len() != texts.len() || b.len() != texts.len() {
        return Err(format!(
            "{} and {} scored texts for {} texts",
            a.len(),
            b.len(),
            texts.len()
        ));
    }
    let mut out = LogprobParity {
        texts: Vec::with_capacity(texts.len()),
        positions: 0,
        max_abs_diff: 0.0,
        mean_abs_diff: 0.0,
        top1_agree: 0,
        mean_logprob: [0.0; 2],
        largest: Vec::new(),
    };
    let (mut sum, mut sums) = (0.0f64, [0.0f64; 2]);
    let mut all: Vec<Difference> = Vec::new();
    for (k, ((text, x), y)) in texts.iter().zip(a).zip(b).enumerate() {
        for (side, r) in [x, y].iter().enumerate() {
            r.check(text.len())
                .map_err(|e| format!("text {k}, engine {}: {e}", side + 1))?;
        }
        let mut t = TextParity {
            text: k,
            positions: x.logprobs.len(),
            max_abs_diff: 0.0,
            max_at: None,
            mean_abs_diff: 0.0,
            top1_agree: 0,
        };
        let mut text_sum = 0.0;
        for i in 0..x.logprobs.len() {
            let (p, q) = (x.logprobs[i], y.logprobs[i]);
            let d = (f64::from(p) - f64::from(q)).abs();
            text_sum += d;
            sums[0] += f64::from(p);
            sums[1] += f64::from(q);
            if t.max_at.is_none() || d > t.max_abs_diff {
                (t.max_abs_diff, t.max_at) = (d, Some(i + 1));
            }
            t.top1_agree += usize::from(x.top1[i] == y.top1[i]);
            all.push(Difference {
                text: k,
                position: i + 1,
                token: text[i + 1],
                logprobs: [p, q],
                top1: [x.top1[i], y.top1[i]],
                abs_diff: d,
            });
        }
        if t.positions > 0 {
            t.mean_abs_diff = text_sum / t.positions as f64;
        }
        sum += text_sum;
        out.positions += t.positions;
        out.top1_agree += t.top1_agree;
        out.max_abs_diff = out.max_abs_diff.max(t.max_abs_diff);
        out.texts.push(t);
    }
    if out.positions > 0 {
        let n = out.positions as f64;
        out.mean_abs_diff = sum / n;
        out.mean_logprob = sums.map(|s| s / n);
    }
    // Largest first; ties in text order.
    all.sort_by(|p, q| q.abs_diff.total_cmp(&p.abs_diff));
    all.truncate(keep);
    out.largest = all;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(logprobs: &[f32], top1: &[u32]) -> TextLogprobs {
        TextLogprobs {
            logprobs: logprobs.to_vec(),
            top1: top1.to_vec(),
        }
    }

    #[test]
    fn known_differences() {
        let texts = vec![vec![1, 2, 3, 4], vec![5, 6]];
        let a = [lp(&[-1.0, -2.0, -0.5], &[2, 9, 4]), lp(&[-0.25], &[6])];
        let b = [lp(&[-1.5, -2.0, -0.25], &[2, 8, 4]), lp(&[-0.25], &[7])];
        let p = compare(&texts, &a, &b, 2).unwrap();
        assert_eq!(p.positions, 4);
        assert_eq!(p.max_abs_diff, 0.5);
        // (0.5 + 0 + 0.25 + 0) / 4
        assert_eq!(p.mean_abs_diff, 0.1875);
        assert_eq!(p.top1_agree, 2);
        assert_eq!(p.top1_agreement(), 0.5);
        assert_eq!(p.mean_logprob, [-3.75 / 4.0, -4.0 / 4.0]);
        assert_eq!(p.texts[0].max_at, Some(1));
        assert_eq!(p.texts[0].mean_abs_diff, 0.25);
        assert_eq!(p.texts[0].top1_agree, 2);
        assert_eq!(p.texts[1].max_abs_diff, 0.0);
        assert_eq!(p.texts[1].top1_agree, 0);
        assert_eq!(
            p.largest[0],
            Difference {
                text: 0,
                position: 1,
                token: 2,
                logprobs: [-1.0, -1.5],
                top1: [2, 2],
                abs_diff: 0.5
            }
        );
        assert_eq!((p.largest[1].text, p.largest[1].position), (0, 3));
        assert_eq!(p.largest.len(), 2);
    }

    #[test]
    fn records_that_do_not_fit_their_text_are_refused() {
        let texts = vec![vec![1, 2, 3]];
        let good = lp(&[-1.0, -1.0], &[2, 3]);
        let short = lp(&[-1.0], &[2]);
        let e = compare(&texts, std::slice::from_ref(&good), &[short], 3).unwrap_err();
        assert!(e.contains("text 0, engine 2"), "{e}");
        let positive = lp(&[0.5, -1.0], &[2, 3]);
        let e = compare(&texts, &[positive], std::slice::from_ref(&good), 3).unwrap_err();
        assert!(e.contains("not a log-probability"), "{e}");
        assert!(compare(&texts, &[], &[good], 3).is_err());
        // A one-token text has nothing to compare.
        let p = compare(&[vec![7]], &[lp(&[], &[])], &[lp(&[], &[])], 3).unwrap();
        assert_eq!((p.positions, p.top1_agreement()), (0, 1.0));
    }
}
