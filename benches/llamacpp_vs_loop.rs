//! The harness's llama.cpp engine against a plain loop over the same library calls:
//! what the harness (driver, slot scheduler, tracing) costs on top of llama.cpp.
//!
//! The plain loop is what llama.cpp's `batched` example does, through the same thin
//! layer (`engine::llamacpp::ffi`): all B prompts in one batch, then one batch of B
//! tokens per step, each sequence sampled with a greedy chain, until every sequence has
//! its tokens. The harness runs the same B prompts as one batch-mode point through the
//! real driver and the `llamacpp` engine (its scheduler, stamps, trace, requests.jsonl).
//! Both run in this process on the same GGUF with the same context settings, one
//! after the other, interleaved (the order alternates each round), so a noisy neighbour
//! hits both alike; the figure is the per-round ratio harness/loop of output tokens per
//! second (first submit to last token), reported as its median with min and max.
//!
//! `cargo bench --features llamacpp --bench llamacpp_vs_loop`; rounds:
//! LLAMACPP_BENCH_ROUNDS (default 5); threads: LLAMACPP_BENCH_THREADS (default: the
//! CPUs this process may use). Needs the GGUF from scripts/setup.sh.

use llm_harness::driver::{progress::Progress, Driver, DriverOptions, LoadPoint, Sampling};
use llm_harness::engine::llamacpp::ffi::{
    Batch, Context, ContextParams, Model, ModelParams, Sampler, SamplerConfig,
};
use llm_harness::engine::{Engine, EngineConfig};
use llm_harness::trace::TraceWriter;
use llm_harness::workload::{WorkItem, Workload};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

const BATCHES: [usize; 3] = [1, 8, 32];
const PROMPT: usize = 32;
const NEW: u32 = 64;
const SLOTS: usize = 32;
/// Context per sequence: prompt + new tokens fit with room to spare.
const CTX_PER_SEQ: u32 = 128;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// B prompts of PROMPT ids: BOS, then ordinary vocabulary ids (seeded, distinct).
fn prompts(b: usize) -> Vec<Vec<u32>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..b)
        .map(|_| {
            let mut p = vec![2u32];
            while p.len() < PROMPT {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                p.push(1000 + (x % 200_000) as u32);
            }
            p
        })
        .collect()
}

/// The plain loop: prefill every prompt in one batch, then B tokens per step.
/// Returns output tokens per second and the generated ids.
fn plain_loop(ctx: &mut Context, prompts: &[Vec<u32>]) -> (f64, Vec<Vec<u32>>) {
    let b = prompts.len();
    let mut batch = Batch::new(2048);
    let mut samplers: Vec<Sampler> = (0..b)
        .map(|_| {
            Sampler::new(&SamplerConfig {
                temperature: 0.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed: None,
            })
            .unwrap()
        })
        .collect();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let start = Instant::now();
    let mut logits_at = vec![0i32; b];
    for (s, p) in prompts.iter().enumerate() {
        for (i, &t) in p.iter().enumerate() {
            let at = batch.push(t, i as u32, s as i32, i + 1 == p.len()).unwrap();
            logits_at[s] = at;
        }
    }
    ctx.decode(&batch).unwrap();
    loop {
        for s in 0..b {
            let t = ctx.sample(&mut samplers[s], logits_at[s]).unwrap();
            out[s].push(t);
        }
        if out[0].len() as u32 >= NEW {
            break;
        }
        batch.clear();
        for s in 0..b {
            let pos = (prompts[s].len() + out[s].len() - 1) as u32;
            logits_at[s] = batch
                .push(*out[s].last().unwrap(), pos, s as i32, true)
                .unwrap();
        }
        ctx.decode(&batch).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    for s in 0..b {
        ctx.remove_sequence(s as i32).unwrap();
    }
    ((b as u64 * u64::from(NEW)) as f64 / secs, out)
}

/// The harness: one batch-mode point of the same prompts through the driver.
fn harness(engine: &mut dyn Engine, prompts: &[Vec<u32>], ids: bool) -> (f64, Vec<Vec<u32>>) {
    let b = prompts.len();
    let items = prompts
        .iter()
        .map(|p| WorkItem {
            prompt: p.clone().into(),
            output_len: NEW,
        })
        .collect();
    let w = Workload::new(items, "bench".into());
    let o = DriverOptions {
        sampling: Sampling {
            return_token_ids: ids,
            ..Sampling::EXACT_GREEDY
        },
        ..DriverOptions::requests(b)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut writer = TraceWriter::create(dir.path()).unwrap();
    let cancel = AtomicBool::new(false);
    let run = Driver::new(engine, &cancel)
        .run_point(
            0,
            LoadPoint::Batch { batch: b as u32 },
            &w,
            &o,
            &mut writer,
            &Progress::hidden(),
        )
        .unwrap();
    let first = run.records.iter().map(|r| r.submit_ns).min().unwrap();
    let last = run
        .records
        .iter()
        .filter_map(|r| r.finish_ns)
        .max()
        .unwrap();
    let tokens: u64 = run.records.iter().map(|r| r.output_tokens()).sum();
    assert_eq!(tokens, b as u64 * u64::from(NEW));
    let mut recs = run.records;
    recs.sort_by_key(|r| r.id);
    let ids = recs
        .into_iter()
        .map(|r| r.token_ids.unwrap_or_default())
        .collect();
    (tokens as f64 / (last.since(first) as f64 / 1e9), ids)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let cache = std::env::var_os("LLM_HARNESS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/llm-harness")
        });
    let model_dir = cache.join("models/gemma-3-270m-gguf");
    let gguf = model_dir.join("gemma-3-270m-Q4_K_M.gguf");
    if !gguf.is_file() {
        eprintln!("{} missing: run scripts/setup.sh", gguf.display());
        std::process::exit(1);
    }
    let rounds = env_usize("LLAMACPP_BENCH_ROUNDS", 5);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = env_usize("LLAMACPP_BENCH_THREADS", cpus) as i32;
    let n_ctx = SLOTS as u32 * CTX_PER_SEQ;

    // The harness's engine, loaded once (as a sweep would).
    let cfg = EngineConfig {
        model: Some(model_dir.clone()),
        engine_args: [
            ("n_parallel", SLOTS.to_string()),
            ("n_ctx", n_ctx.to_string()),
            ("threads", threads.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        ..Default::default()
    };
    let mut engine = (llm_harness::engine::llamacpp::SPEC.load)(&cfg).unwrap();
    // The plain loop's own model and context, with the same settings the engine used.
    let model = Rc::new(
        Model::load(
            &gguf,
            &ModelParams {
                n_gpu_layers: -1,
                mmap: true,
                mlock: false,
                repack: true,
            },
        )
        .unwrap(),
    );
    let mut ctx = Context::new(
        model,
        &ContextParams {
            n_ctx,
            n_batch: 2048,
            n_ubatch: 512,
            n_seq_max: SLOTS as u32,
            n_threads: threads,
            n_threads_batch: threads,
            poll: 50,
            flash_attn: llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
            type_k: llama_cpp_sys_2::GGML_TYPE_F16,
            type_v: llama_cpp_sys_2::GGML_TYPE_F16,
            kv_unified: false,
            swa_full: false,
        },
        || false,
    )
    .unwrap();

    println!(
        "llama.cpp: harness vs plain loop, Gemma 3 270M Q4_K_M, prompt {PROMPT}, {NEW} new tokens each, {threads} threads, {rounds} interleaved rounds"
    );
    // Warm both up, and check they generate the same tokens (same calls, greedy).
    for &b in &BATCHES {
        let p = prompts(b);
        let (_, loop_ids) = plain_loop(&mut ctx, &p);
        let (_, harness_ids) = harness(engine.as_mut(), &p, true);
        assert_eq!(
            loop_ids, harness_ids,
            "batch {b}: the two paths generated different tokens"
        );
    }
    println!("warm-up: identical greedy tokens from both paths at batch 1, 8 and 32");
    let mut rows = Vec::new();
    for &b in &BATCHES {
        let p = prompts(b);
        let (mut h, mut l, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (th, tl) = if round % 2 == 0 {
                let tl = plain_loop(&mut ctx, &p).0;
                (harness(engine.as_mut(), &p, false).0, tl)
            } else {
                let th = harness(engine.as_mut(), &p, false).0;
                (th, plain_loop(&mut ctx, &p).0)
            };
            h.push(th);
            l.push(tl);
            ratio.push(th / tl);
        }
        let (lo, hi) = ratio
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        rows.push((
            b,
            median(&mut h),
            median(&mut l),
            median(&mut ratio),
            lo,
            hi,
        ));
    }
    println!(
        "| batch | harness out tok/s (median) | plain loop out tok/s (median) | ratio harness/loop: median [min, max] |"
    );
    println!("|---|---|---|---|");
    for (b, h, l, r, lo, hi) in rows {
        println!("| {b} | {h:.1} | {l:.1} | {r:.3} [{lo:.3}, {hi:.3}] |");
    }
    engine.shutdown().unwrap();
}
