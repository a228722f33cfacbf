//! The model's own tokenizer (`tokenizer.json`), through the `tokenizers` crate.
//!
//! Loading switches off any truncation or padding configured in the file: a prompt must
//! keep every one of its tokens, or "input length 512" would silently mean fewer.

use super::{one_line, WorkloadError};
use std::path::{Path, PathBuf};
use tokenizers::Model as _;

/// A loaded `tokenizer.json`, with what the workloads need to know about it.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// Special ids the post-processor puts before every single sequence (e.g. `[BOS]`).
    prefix: Vec<u32>,
    /// Special ids the post-processor puts after every single sequence (rare for LLMs).
    suffix: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .field("prefix", &self.prefix)
            .field("suffix", &self.suffix)
            .finish()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer, WorkloadError> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WorkloadError::TokenizerNotFound {
                path: path.to_path_buf(),
            },
            _ => WorkloadError::io(path, e),
        })?;
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
            WorkloadError::TokenizerInvalid {
                path: path.to_path_buf(),
                reason: one_line(&e.to_string()),
            }
        })?;
        inner
            .with_truncation(None)
            .map_err(|e| WorkloadError::TokenizerInvalid {
                path: path.to_path_buf(),
                reason: one_line(&e.to_string()),
            })?
            .with_padding(None);
        let mut tok = Tokenizer {
            inner,
            path: path.to_path_buf(),
            prefix: Vec::new(),
            suffix: Vec::new(),
        };
        (tok.prefix, tok.suffix) = tok.probe_specials()?;
        Ok(tok)
    }

    /// Loads `dir/tokenizer.json`.
    pub fn from_model_dir(dir: &Path) -> Result<Tokenizer, WorkloadError> {
        if !dir.is_dir() {
            return Err(WorkloadError::ModelDirMissing {
                dir: dir.to_path_buf(),
            });
        }
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(WorkloadError::NoTokenizerInModelDir {
                dir: dir.to_path_buf(),
            });
        }
        Tokenizer::from_file(&path)
    }

    /// Where the tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token ids of `text`, with the special tokens the post-processor adds (e.g. BOS),
    /// exactly as the model would see the prompt. Never truncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, WorkloadError> {
        self.encode_with(text, true)
    }

    pub(crate) fn encode_with(
        &self,
        text: &str,
        add_special: bool,
    ) -> Result<Vec<u32>, WorkloadError> {
        self.inner
            .encode(text, add_special)
            .map(|enc| enc.get_ids().to_vec())
            .map_err(|e| self.err("encode text", &e.to_string()))
    }

    /// Text of `ids`, special tokens kept.
    pub fn decode(&self, ids: &[u32]) -> Result<String, WorkloadError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| self.err("decode ids", &e.to_string()))
    }

    /// Text of `ids` as a user reads it: special tokens (BOS, EOS) skipped.
    pub fn decode_text(&self, ids: &[u32]) -> Result<String, WorkloadError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| self.err("decode ids", &e.to_string()))
    }

    /// Vocabulary size including added tokens (ids that overlap the model vocab counted once).
    pub fn vocab_size(&self) -> u32 {
        u32::try_from(self.inner.get_vocab_size(true)).unwrap_or(u32::MAX)
    }

    /// Special ids added before every prompt (e.g. `[2]`, Gemma's `<bos>`).
    pub fn special_prefix(&self) -> &[u32] {
        &self.prefix
    }

    /// Special ids added after every prompt (usually none).
    pub fn special_suffix(&self) -> &[u32] {
        &self.suffix
    }

    /// Number of special tokens [`encode`](Self::encode) adds to every text.
    pub fn num_special_tokens(&self) -> u32 {
        (self.prefix.len() + self.suffix.len()) as u32
    }

    /// Ids safe to put anywhere in a synthetic prompt: the model vocab minus every added
    /// token (special or not: BOS/EOS/PAD, control and unused tokens), ascending.
    pub fn ordinary_ids(&self) -> Vec<u32> {
        let added = self.inner.get_added_tokens_decoder();
        let mut ids: Vec<u32> = self
            .inner
            .get_model()
            .get_vocab()
            .into_values()
            .filter(|id| !added.contains_key(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Finds the special ids the post-processor wraps a single sequence in, by encoding
    /// a probe text with and without special tokens.
    fn probe_specials(&self) -> Result<(Vec<u32>, Vec<u32>), WorkloadError> {
        for probe in ["a", "hello", "The"] {
            let plain = self.encode_with(probe, false)?;
            let with = self.encode_with(probe, true)?;
            if plain.is_empty() || with.len() < plain.len() {
                continue;
            }
            if let Some(i) = with
                .windows(plain.len())
                .position(|w| w == plain.as_slice())
            {
                return Ok((with[..i].to_vec(), with[i + plain.len()..].to_vec()));
            }
        }
        // No probe survived (odd tokenizer): everything added to an empty text is a prefix.
        Ok((self.encode_with("", true)?, Vec::new()))
    }

    fn err(&self, op: &'static str, reason: &str) -> WorkloadError {
        WorkloadError::Tokenize {
            path: self.path.clone(),
            op,
            reason: one_line(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, BOS, VOCAB};
    use super::*;

    #[test]
    fn tiny_tokenizer_counts_words_and_adds_bos() {
        let (_d, tok) = testutil::tiny();
        assert_eq!(tok.special_prefix(), &[BOS]);
        assert!(tok.special_suffix().is_empty());
        assert_eq!(tok.num_special_tokens(), 1);
        assert_eq!(tok.encode("hello world").unwrap(), vec![BOS, 12, 13]);
        assert_eq!(tok.encode("zebra").unwrap(), vec![BOS, testutil::UNK]);
        assert_eq!(tok.vocab_size(), VOCAB);
        assert_eq!(tok.ordinary_ids(), (4..VOCAB).collect::<Vec<_>>());
        assert_eq!(tok.decode(&[12, 13]).unwrap(), "hello world");
    }

    #[test]
    fn truncation_in_file_is_switched_off() {
        // The fixture asks for truncation at 16 tokens.
        let (_d, tok) = testutil::tiny();
        assert_eq!(tok.encode(&testutil::words(100)).unwrap().len(), 101);
    }

    #[test]
    fn no_bos_tokenizer_has_no_prefix() {
        let d = tempfile::tempdir().unwrap();
        let p = testutil::write_tokenizer(d.path(), false);
        let tok = Tokenizer::from_file(&p).unwrap();
        assert!(tok.special_prefix().is_empty());
        assert_eq!(tok.encode("the fox").unwrap(), vec![4, 7]);
    }

    #[test]
    fn load_errors_are_one_line_with_fix() {
        let d = tempfile::tempdir().unwrap();
        let e = Tokenizer::from_model_dir(d.path()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "model dir {} has no tokenizer.json; pass --tokenizer FILE",
                d.path().display()
            )
        );

        let e = Tokenizer::from_model_dir(&d.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("does not exist") && e.contains("--tokenizer FILE"),
            "{e}"
        );

        let e = Tokenizer::from_file(&d.path().join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not found") && e.contains("pass --tokenizer FILE"),
            "{e}"
        );

        let bad = d.path().join("tokenizer.json");
        std::fs::write(&bad, "{\"model\": 42,\n \"x\": [").unwrap();
        let e = Tokenizer::from_file(&bad).unwrap_err().to_string();
        assert!(
            e.contains("could not be loaded") && e.contains("tokenizer.json"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");

        // from_model_dir finds a valid one.
        testutil::write_tokenizer(d.path(), true);
        assert_eq!(
            Tokenizer::from_model_dir(d.path())
                .unwrap()
                .special_prefix(),
            &[BOS]
        );
    }

    #[test]
    fn gemma_tokenizer_if_present() {
        let Some(tok) = testutil::gemma_tokenizer() else {
            return;
        };
        // Gemma 3 adds <bos> (id 2) and nothing after.
        assert_eq!(tok.special_prefix(), &[2]);
        assert!(tok.special_suffix().is_empty());
        let ids = tok.encode("Hello, world!").unwrap();
        assert_eq!(ids[0], 2);
        assert!(tok.vocab_size() >= 262_000, "{}", tok.vocab_size());
        let ordinary = tok.ordinary_ids();
        assert!(!ordinary.contains(&2) && !ordinary.contains(&1) && !ordinary.contains(&0));
        println!(
            "gemma: vocab {} ordinary {}",
            tok.vocab_size(),
            ordinary.len()
        );
    }
}
