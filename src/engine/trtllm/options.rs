//! `--engine-arg KEY=VALUE` for `--engine trtllm`: typed, bounded, with a hint for a
//! misspelt key. Pure Rust, in every build, so a bad argument reads the same with or
//! without the feature.

use crate::engine::EngineError;

/// TensorRT-LLM's capacity scheduler policies (`CapacitySchedulerPolicy`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SchedulerPolicy {
    MaxUtilization,
    GuaranteedNoEvict,
    StaticBatch,
}

impl SchedulerPolicy {
    const NAMES: &'static [(&'static str, SchedulerPolicy)] = &[
        ("max_utilization", SchedulerPolicy::MaxUtilization),
        ("guaranteed_no_evict", SchedulerPolicy::GuaranteedNoEvict),
        ("static_batch", SchedulerPolicy::StaticBatch),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }
}

/// The Executor settings and request defaults a run can set. `None` leaves
/// TensorRT-LLM's (or the engine's build-time) value.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub max_batch_size: Option<u32>,
    pub max_num_tokens: Option<u32>,
    pub kv_cache_free_gpu_memory_fraction: Option<f32>,
    /// Off by default, as in upstream's own C++ benchmark: the harness never sends a
    /// prompt twice, so reuse would only cost lookups.
    pub enable_block_reuse: bool,
    pub scheduler_policy: SchedulerPolicy,
    /// Off by default (upstream's C++ benchmark and LLM API default): it needs an
    /// engine built with paged context attention.
    pub enable_chunked_context: bool,
    /// The end (EOS) token id. Without it a request that does not ignore EOS runs to
    /// its token budget: the Executor has no tokenizer to find one.
    pub end_id: Option<i32>,
    /// For sampled requests (`--temperature` > 0); greedy requests use top-k 1.
    pub top_k: Option<u32>,
    pub top_p: Option<f32>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_batch_size: None,
            max_num_tokens: None,
            kv_cache_free_gpu_memory_fraction: None,
            enable_block_reuse: false,
            scheduler_policy: SchedulerPolicy::GuaranteedNoEvict,
            enable_chunked_context: false,
            end_id: None,
            top_k: None,
            top_p: None,
        }
    }
}

/// Every key, with what it takes (the message for an unknown key lists them).
const KEYS: &[(&str, &str)] = &[
    (
        "max_batch_size",
        "requests in flight, 1..=65536 (default: the engine's)",
    ),
    (
        "max_num_tokens",
        "tokens per iteration, 1..=16777216 (default: the engine's)",
    ),
    (
        "kv_cache_free_gpu_memory_fraction",
        "share of free GPU memory for the KV cache, above 0 up to 1 (default 0.9)",
    ),
    ("enable_block_reuse", "true or false (default false)"),
    (
        "scheduler_policy",
        "max_utilization, guaranteed_no_evict or static_batch (default guaranteed_no_evict)",
    ),
    ("enable_chunked_context", "true or false (default false)"),
    ("end_id", "the EOS token id, 0..=2147483647"),
    ("top_k", "0..=1048576 for sampled requests (0: off)"),
    ("top_p", "above 0 up to 1 for sampled requests"),
];

impl Options {
    pub fn from_args(args: &[(String, String)]) -> Result<Options, EngineError> {
        let mut o = Options::default();
        for (k, v) in args {
            let Some(&(_, what)) = KEYS.iter().find(|(n, _)| n == k) else {
                return Err(unknown_key(k));
            };
            let bad = || EngineError::Usage(format!("--engine-arg {k}={v}: expected {what}"));
            let int = |lo: u64, hi: u64| {
                v.parse::<u64>()
                    .ok()
                    .filter(|x| (lo..=hi).contains(x))
                    .ok_or_else(bad)
            };
            let fraction = || {
                v.parse::<f32>()
                    .ok()
                    .filter(|x| x.is_finite() && *x > 0.0 && *x <= 1.0)
                    .ok_or_else(bad)
            };
            let boolean = || match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(bad()),
            };
            match k.as_str() {
                "max_batch_size" => o.max_batch_size = Some(int(1, 65_536)? as u32),
                "max_num_tokens" => o.max_num_tokens = Some(int(1, 1 << 24)? as u32),
                "kv_cache_free_gpu_memory_fraction" => {
                    o.kv_cache_free_gpu_memory_fraction = Some(fraction()?)
                }
                "enable_block_reuse" => o.enable_block_reuse = boolean()?,
                "scheduler_policy" => {
                    o.scheduler_policy = SchedulerPolicy::NAMES
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(v))
                        .map(|&(_, p)| p)
                        .ok_or_else(bad)?
                }
                "enable_chunked_context" => o.enable_chunked_context = boolean()?,
                "end_id" => o.end_id = Some(int(0, i32::MAX as u64)? as i32),
                "top_k" => o.top_k = Some(int(0, 1 << 20)? as u32),
                "top_p" => o.top_p = Some(fraction()?),
                // Every key of KEYS is matched above.
                _ => return Err(unknown_key(k)),
            }
        }
        Ok(o)
    }

    /// The effective settings, for the run metadata.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "max_batch_size": self.max_batch_size,
            "max_num_tokens": self.max_num_tokens,
            "kv_cache_free_gpu_memory_fraction": self.kv_cache_free_gpu_memory_fraction,
            "enable_block_reuse": self.enable_block_reuse,
            "scheduler_policy": self.scheduler_policy.name(),
            "enable_chunked_context": self.enable_chunked_context,
            "end_id": self.end_id,
            "top_k": self.top_k,
            "top_p": self.top_p,
        })
    }
}

fn unknown_key(k: &str) -> EngineError {
    let names: Vec<&str> = KEYS.iter().map(|(n, _)| *n).collect();
    let hint = match closest(k, &names) {
        Some(c) => format!("did you mean '{c}'? "),
        None => String::new(),
    };
    EngineError::Usage(format!(
        "unknown --engine-arg '{k}' for --engine trtllm; {hint}valid keys: {}",
        names.join(", ")
    ))
}

/// The known key closest to `k` by edit distance, when close enough to be a typo: at
/// most a third of the key's length (and at least 1) edits away, or a shortened key
/// (a prefix of 4 characters or more).
fn closest<'a>(k: &str, known: &[&'a str]) -> Option<&'a str> {
    let k = k.to_ascii_lowercase();
    known
        .iter()
        .map(|n| (edit_distance(&k, n), *n))
        .filter(|&(d, n)| d <= (n.len() / 3).max(1) || (k.len() >= 4 && n.starts_with(&k)))
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kv: &[(&str, &str)]) -> Result<Options, String> {
        let args: Vec<(String, String)> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::from_args(&args).map_err(|e| match e {
            EngineError::Usage(m) => m,
            other => panic!("not a usage error: {other}"),
        })
    }

    #[test]
    fn every_key_is_typed() {
        let o = parse(&[
            ("max_batch_size", "32"),
            ("max_num_tokens", "8192"),
            ("kv_cache_free_gpu_memory_fraction", "0.85"),
            ("enable_block_reuse", "true"),
            ("scheduler_policy", "MAX_UTILIZATION"),
            ("enable_chunked_context", "on"),
            ("end_id", "2"),
            ("top_k", "40"),
            ("top_p", "0.95"),
        ])
        .unwrap();
        assert_eq!(
            o,
            Options {
                max_batch_size: Some(32),
                max_num_tokens: Some(8192),
                kv_cache_free_gpu_memory_fraction: Some(0.85),
                enable_block_reuse: true,
                scheduler_policy: SchedulerPolicy::MaxUtilization,
                enable_chunked_context: true,
                end_id: Some(2),
                top_k: Some(40),
                top_p: Some(0.95),
            }
        );
        assert_eq!(parse(&[]).unwrap(), Options::default());
        assert_eq!(o.to_json()["scheduler_policy"], "max_utilization");
    }

    #[test]
    fn bad_values_name_the_key_and_what_it_takes() {
        for (k, v, needle) in [
            ("max_batch_size", "0", "1..=65536"),
            ("max_batch_size", "-3", "1..=65536"),
            ("kv_cache_free_gpu_memory_fraction", "1.5", "up to 1"),
            ("kv_cache_free_gpu_memory_fraction", "NaN", "up to 1"),
            ("enable_block_reuse", "maybe", "true or false"),
            ("scheduler_policy", "fifo", "guaranteed_no_evict"),
            ("end_id", "2147483648", "0..=2147483647"),
            ("top_p", "0", "above 0"),
        ] {
            let e = parse(&[(k, v)]).unwrap_err();
            assert!(
                e.starts_with(&format!("--engine-arg {k}={v}: expected")) && e.contains(needle),
                "{e}"
            );
        }
    }

    #[test]
    fn typos_get_the_closest_key() {
        let e = parse(&[("max_batch", "8")]).unwrap_err();
        assert!(e.contains("did you mean 'max_batch_size'?"), "{e}");
        let e = parse(&[("schedular_policy", "static_batch")]).unwrap_err();
        assert!(e.contains("did you mean 'scheduler_policy'?"), "{e}");
        let e = parse(&[("Top_K", "3")]).unwrap_err();
        assert!(e.contains("did you mean 'top_k'?"), "{e}");
        // Nothing close: no guess, the whole list.
        let e = parse(&[("gpu_memory_utilization", "0.5")]).unwrap_err();
        assert!(!e.contains("did you mean"), "{e}");
        assert!(e.contains("valid keys: max_batch_size, "), "{e}");
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("top_k", "top_k"), 0);
    }
}
