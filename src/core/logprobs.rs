//! Teacher-forced log-probabilities of a given text: what an engine computes for each
//! token of a fixed token sequence after the tokens before it (vLLM's
//! `prompt_logprobs`, SGLang's `input_token_logprobs`, a forward pass's log-softmax),
//! the record `harness parity --logprobs` compares across engines.

use serde::{Deserialize, Serialize};

/// One text's log-probabilities from one engine. Position `i` (from 1) is the `i`-th
/// token after the first; the first token has no prediction and no entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TextLogprobs {
    /// `ln p(token[i] | token[..i])` for i = 1..n, natural log, as the engine computes it.
    pub logprobs: Vec<f32>,
    /// The token the engine ranks first at each of those positions (its greedy choice
    /// had it generated there).
    pub top1: Vec<u32>,
}

impl TextLogprobs {
    /// Checks the shape against the text it scores (`n` tokens): one entry per
    /// position after the first, finite log-probabilities at most 0.
    pub fn check(&self, n: usize) -> Result<(), String> {
        let want = n.saturating_sub(1);
        if self.logprobs.len() != want || self.top1.len() != want {
            return Err(format!(
                "{} log-probabilities and {} top-1 tokens for a text of {n} tokens (want {want} of each)",
                self.logprobs.len(),
                self.top1.len()
            ));
        }
        // A rounding error may put a certain token a hair above 0.
        if let Some((i, lp)) = self
            .logprobs
            .iter()
            .enumerate()
            .find(|(_, lp)| !lp.is_finite() || **lp > 1e-3)
        {
            return Err(format!(
                "log-probability {lp} at position {}: not a log-probability",
                i + 1
            ));
        }
        Ok(())
    }
}
