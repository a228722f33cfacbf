//! The llama.cpp engine's settings, from `--engine-arg KEY=VALUE`: typed, bounded, with
//! a close-match hint for a mistyped key. Names follow llama.cpp's own (`llama-server`
//! and `llama-bench` flags and `llama_context_params` fields); the short flags users
//! type (`ngl`, `fa`, `ctk`, `np`, ...) are accepted as aliases.
//!
//! Defaults are llama.cpp's, except where the harness has a reason to differ, said at
//! each field: the slot count and per-slot context (a benchmark sweeps batch sizes),
//! top-k/top-p off (the harness's `--temperature` means the same on every engine) and
//! the thread count (robust on a shared machine, see [`Options::threads`]).

use crate::engine::EngineError;

/// Default slots: the harness's sweeps go to batch 64 (llama-server's default is 4).
pub const DEFAULT_PARALLEL: u32 = 64;
/// Default context per slot when `n_ctx` is not given (capped by the model's training
/// context): `n_ctx = n_parallel × this`.
pub const DEFAULT_CTX_PER_SLOT: u32 = 4096;
/// Upper bounds that catch typos before llama.cpp tries to allocate them.
const MAX_THREADS: u32 = 1024;
const MAX_CTX: u32 = 1 << 24;
const MAX_BATCH: u32 = 1 << 20;

/// llama.cpp's KV-cache element types (`--cache-type-k/-v`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KvType {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Iq4Nl,
    Q5_0,
    Q5_1,
}

impl KvType {
    pub const ALL: [KvType; 9] = [
        KvType::F32,
        KvType::F16,
        KvType::Bf16,
        KvType::Q8_0,
        KvType::Q4_0,
        KvType::Q4_1,
        KvType::Iq4Nl,
        KvType::Q5_0,
        KvType::Q5_1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Bf16 => "bf16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
            KvType::Q4_1 => "q4_1",
            KvType::Iq4Nl => "iq4_nl",
            KvType::Q5_0 => "q5_0",
            KvType::Q5_1 => "q5_1",
        }
    }
}

/// When llama.cpp uses flash attention (`-fa auto|on|off`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FlashAttn {
    Auto,
    On,
    Off,
}

impl FlashAttn {
    pub fn name(self) -> &'static str {
        match self {
            FlashAttn::Auto => "auto",
            FlashAttn::On => "on",
            FlashAttn::Off => "off",
        }
    }
}

/// Everything `--engine-arg` can set for llama.cpp.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Threads for single-token decoding (`-t`). `None`: chosen at load from the CPUs
    /// this process may use and how busy the machine is (see `engine::default_threads`).
    pub threads: Option<u32>,
    /// Threads for prompt and batch processing (`-tb`); `None`: as `threads`.
    pub threads_batch: Option<u32>,
    /// Slots, i.e. sequences decoded together (`-np`).
    pub n_parallel: u32,
    /// Total context (`-c`), shared by the slots; `None`: n_parallel × min(training
    /// context, [`DEFAULT_CTX_PER_SLOT`]).
    pub n_ctx: Option<u32>,
    /// Most tokens per `llama_decode` (`-b`), llama.cpp's default 2048.
    pub n_batch: u32,
    /// Physical micro-batch (`-ub`), llama.cpp's default 512; at most `n_batch`.
    pub n_ubatch: u32,
    pub flash_attn: FlashAttn,
    pub cache_type_k: KvType,
    pub cache_type_v: KvType,
    pub mmap: bool,
    pub mlock: bool,
    /// Repack weights at load into the CPU backend's faster layouts (llama.cpp's
    /// default; `--no-repack` is `repack=false`).
    pub repack: bool,
    /// Layers offloaded to a GPU (`-ngl`); -1 = all (llama.cpp's default), which on a
    /// build without a GPU backend means none.
    pub n_gpu_layers: i32,
    /// One KV buffer for all slots (`-kvu`); llama.cpp's default is one stream per slot.
    pub kv_unified: bool,
    /// Full-size sliding-window cache; off as in llama-server (the context default is on).
    pub swa_full: bool,
    /// Thread-pool busy-wait level, 0-100 (`--poll`, llama.cpp's default 50).
    pub poll: u32,
    /// Sampling, applied only when `--temperature` > 0: top-k (0 = off), top-p (1 = off),
    /// min-p (0 = off). Off by default so a temperature means the same on every engine
    /// (llama.cpp's CLI defaults are 40, 0.95 and 0.05).
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: None,
            threads_batch: None,
            n_parallel: DEFAULT_PARALLEL,
            n_ctx: None,
            n_batch: 2048,
            n_ubatch: 512,
            flash_attn: FlashAttn::Auto,
            cache_type_k: KvType::F16,
            cache_type_v: KvType::F16,
            mmap: true,
            mlock: false,
            repack: true,
            n_gpu_layers: -1,
            kv_unified: false,
            swa_full: false,
            poll: 50,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        }
    }
}

/// Canonical keys and their aliases, in listing order.
const KEYS: &[(&str, &[&str])] = &[
    ("threads", &["t", "n_threads"]),
    ("threads_batch", &["tb", "n_threads_batch"]),
    ("n_parallel", &["np", "parallel", "slots", "max_batch"]),
    ("n_ctx", &["c", "ctx_size"]),
    ("n_batch", &["b", "batch_size"]),
    ("n_ubatch", &["ub", "ubatch_size"]),
    ("flash_attn", &["fa"]),
    ("cache_type_k", &["ctk", "type_k"]),
    ("cache_type_v", &["ctv", "type_v"]),
    ("mmap", &[]),
    ("mlock", &[]),
    ("repack", &[]),
    ("n_gpu_layers", &["ngl", "gpu_layers"]),
    ("kv_unified", &["kvu"]),
    ("swa_full", &[]),
    ("poll", &[]),
    ("top_k", &[]),
    ("top_p", &[]),
    ("min_p", &[]),
];

/// The canonical key for `k` (itself or an alias).
fn canonical(k: &str) -> Option<&'static str> {
    KEYS.iter()
        .find(|(name, aliases)| *name == k || aliases.contains(&k))
        .map(|(name, _)| *name)
}

/// Levenshtein distance (keys are short; no allocation beyond one row).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The known key (or alias) closest to `k`, if it is close enough to be a typo.
pub fn closest(k: &str, known: &[&'static str]) -> Option<&'static str> {
    let k = k.to_ascii_lowercase().replace('-', "_");
    known
        .iter()
        .map(|&n| (distance(&k, n), n))
        .filter(|&(d, n)| d <= (n.len() / 3).max(1) || n.starts_with(&k) && k.len() >= 3)
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n)
}

fn bool_value(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

impl Options {
    pub fn from_args(args: &[(String, String)]) -> Result<Options, EngineError> {
        let mut o = Options::default();
        for (k, v) in args {
            let Some(key) = canonical(k) else {
                let all: Vec<&'static str> = KEYS
                    .iter()
                    .flat_map(|(n, a)| std::iter::once(*n).chain(a.iter().copied()))
                    .collect();
                let hint = closest(k, &all)
                    .map(|n| match canonical(n) {
                        Some(c) if c != n => format!("did you mean '{n}' ({c})? "),
                        _ => format!("did you mean '{n}'? "),
                    })
                    .unwrap_or_default();
                let names: Vec<&str> = KEYS.iter().map(|(n, _)| *n).collect();
                return Err(EngineError::Usage(format!(
                    "unknown --engine-arg '{k}' for llamacpp; {hint}valid keys: {}",
                    names.join(", ")
                )));
            };
            let bad = |what: &str| {
                EngineError::Usage(format!(
                    "--engine-arg {k}={v}: expected {what} for llamacpp ({key})"
                ))
            };
            let uint = |lo: u32, hi: u32| -> Result<u32, EngineError> {
                v.parse::<u32>()
                    .ok()
                    .filter(|x| (lo..=hi).contains(x))
                    .ok_or_else(|| bad(&format!("an integer from {lo} to {hi}")))
            };
            let boolean = || bool_value(v).ok_or_else(|| bad("true or false"));
            let kv = || {
                KvType::ALL
                    .into_iter()
                    .find(|t| t.name() == v.to_ascii_lowercase())
                    .ok_or_else(|| {
                        let names: Vec<&str> = KvType::ALL.iter().map(|t| t.name()).collect();
                        bad(&format!("one of {}", names.join(", ")))
                    })
            };
            match key {
                "threads" => o.threads = Some(uint(1, MAX_THREADS)?),
                "threads_batch" => o.threads_batch = Some(uint(1, MAX_THREADS)?),
                // llama.cpp's own limit (LLAMA_MAX_SEQ) is checked again at load.
                "n_parallel" => o.n_parallel = uint(1, 4096)?,
                "n_ctx" => o.n_ctx = Some(uint(1, MAX_CTX)?),
                "n_batch" => o.n_batch = uint(1, MAX_BATCH)?,
                "n_ubatch" => o.n_ubatch = uint(1, MAX_BATCH)?,
                "flash_attn" => {
                    o.flash_attn = match v.to_ascii_lowercase().as_str() {
                        "auto" => FlashAttn::Auto,
                        other => match bool_value(other) {
                            Some(true) => FlashAttn::On,
                            Some(false) => FlashAttn::Off,
                            None => return Err(bad("auto, on or off")),
                        },
                    }
                }
                "cache_type_k" => o.cache_type_k = kv()?,
                "cache_type_v" => o.cache_type_v = kv()?,
                "mmap" => o.mmap = boolean()?,
                "mlock" => o.mlock = boolean()?,
                "repack" => o.repack = boolean()?,
                "n_gpu_layers" => {
                    o.n_gpu_layers = v
                        .parse::<i32>()
                        .ok()
                        .filter(|x| (-1..=100_000).contains(x))
                        .ok_or_else(|| bad("-1 (all) or a layer count from 0"))?
                }
                "kv_unified" => o.kv_unified = boolean()?,
                "swa_full" => o.swa_full = boolean()?,
                "poll" => o.poll = uint(0, 100)?,
                "top_k" => o.top_k = uint(0, 1 << 20)?,
                "top_p" => {
                    o.top_p = v
                        .parse::<f32>()
                        .ok()
                        .filter(|x| *x > 0.0 && *x <= 1.0)
                        .ok_or_else(|| bad("a number in (0, 1] (1 = off)"))?
                }
                "min_p" => {
                    o.min_p = v
                        .parse::<f32>()
                        .ok()
                        .filter(|x| (0.0..1.0).contains(x))
                        .ok_or_else(|| bad("a number in [0, 1) (0 = off)"))?
                }
                _ => unreachable!("every canonical key is matched above"),
            }
        }
        // As llama.cpp does: the micro-batch never exceeds the batch (the context
        // reports what it used; run.json records both).
        o.n_ubatch = o.n_ubatch.min(o.n_batch);
        if let Some(c) = o.n_ctx {
            if c < o.n_parallel {
                return Err(EngineError::Usage(format!(
                    "--engine-arg n_ctx={c} is smaller than n_parallel={}: each slot needs context; raise n_ctx or lower n_parallel",
                    o.n_parallel
                )));
            }
        }
        Ok(o)
    }

    /// The total context to ask llama.cpp for, given the model's training context.
    pub fn context_size(&self, n_ctx_train: u32) -> u32 {
        self.n_ctx.unwrap_or_else(|| {
            let per_slot = DEFAULT_CTX_PER_SLOT.min(n_ctx_train.max(1));
            self.n_parallel.saturating_mul(per_slot).min(MAX_CTX)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn usage(kv: &[(&str, &str)]) -> String {
        match Options::from_args(&args(kv)) {
            Err(EngineError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn typed_values_and_aliases() {
        let o = Options::from_args(&args(&[
            ("threads", "2"),
            ("tb", "1"),
            ("np", "8"),
            ("c", "8192"),
            ("ngl", "0"),
            ("fa", "on"),
            ("ctk", "Q8_0"),
            ("cache_type_v", "q4_0"),
            ("mmap", "false"),
            ("mlock", "yes"),
            ("kvu", "1"),
            ("poll", "0"),
            ("top_k", "40"),
            ("top_p", "0.95"),
            ("min_p", "0.05"),
        ]))
        .unwrap();
        assert_eq!(o.threads, Some(2));
        assert_eq!(o.threads_batch, Some(1));
        assert_eq!(o.n_parallel, 8);
        assert_eq!(o.n_ctx, Some(8192));
        assert_eq!(o.n_gpu_layers, 0);
        assert_eq!(o.flash_attn, FlashAttn::On);
        assert_eq!(
            (o.cache_type_k, o.cache_type_v),
            (KvType::Q8_0, KvType::Q4_0)
        );
        assert!(!o.mmap && o.mlock && o.kv_unified);
        assert_eq!((o.poll, o.top_k), (0, 40));
        assert_eq!((o.top_p, o.min_p), (0.95, 0.05));
        assert_eq!(Options::from_args(&[]).unwrap(), Options::default());
    }

    #[test]
    fn typos_get_the_closest_key() {
        assert!(
            usage(&[("thread", "2")]).contains("did you mean 'threads'?"),
            "{}",
            usage(&[("thread", "2")])
        );
        assert!(usage(&[("n_ubatchh", "2")]).contains("did you mean 'n_ubatch'?"));
        assert!(usage(&[("flash-attn", "on")]).contains("did you mean 'flash_attn'?"));
        assert!(usage(&[("ctx-size", "1")]).contains("'ctx_size' (n_ctx)"));
        let far = usage(&[("temperature", "1")]);
        assert!(!far.contains("did you mean"), "{far}");
        assert!(far.contains("valid keys: threads, threads_batch, n_parallel"));
    }

    #[test]
    fn values_are_checked() {
        assert!(usage(&[("threads", "0")]).contains("an integer from 1 to 1024"));
        assert!(usage(&[("threads", "two")]).contains("threads=two"));
        assert!(usage(&[("fa", "maybe")]).contains("auto, on or off"));
        assert!(usage(&[("ctk", "q3")]).contains("one of f32, f16, bf16, q8_0"));
        assert!(usage(&[("mmap", "2")]).contains("true or false"));
        assert!(usage(&[("ngl", "-2")]).contains("-1 (all)"));
        assert!(usage(&[("top_p", "0")]).contains("(0, 1]"));
        assert!(usage(&[("min_p", "1")]).contains("[0, 1)"));
        assert!(usage(&[("poll", "101")]).contains("from 0 to 100"));
        let o = Options::from_args(&args(&[("n_batch", "64")])).unwrap();
        assert_eq!((o.n_batch, o.n_ubatch), (64, 64));
        assert!(usage(&[("n_ctx", "4"), ("np", "8")]).contains("smaller than n_parallel"));
    }

    #[test]
    fn context_defaults_per_slot() {
        let o = Options::default();
        assert_eq!(
            o.context_size(32768),
            DEFAULT_PARALLEL * DEFAULT_CTX_PER_SLOT
        );
        assert_eq!(o.context_size(1024), DEFAULT_PARALLEL * 1024);
        let o = Options::from_args(&args(&[("n_ctx", "1000")])).unwrap();
        assert_eq!(o.context_size(32768), 1000);
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("same", "same"), 0);
    }
}
