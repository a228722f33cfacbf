//! `cargo bench --bench offline_throughput`: an offline throughput sweep of a real
//! engine, one criterion benchmark per batch size, so criterion's saved baselines flag a
//! throughput regression between two commits of an engine or of the harness.
//!
//! Each iteration is one full batch round (B requests submitted at once, until the last
//! finishes), timed by the harness's own clock (first submit → last finish, the
//! summary's `duration`), and criterion reports output tokens per second
//! (`Throughput::Elements`). The engine loads once per group; every request draws a
//! fresh prompt, so no prefix cache serves a repeated one.
//!
//! Environment (defaults: what `scripts/quickstart.sh` set up):
//!
//! | variable | default |
//! |---|---|
//! | `LLM_HARNESS_BENCH_ENGINE` | `vllm` under `cargo bench` when its env and model exist, else `calibration` |
//! | `LLM_HARNESS_BENCH_MODEL` | `$LLM_HARNESS_CACHE/models/gemma-3-270m` |
//! | `LLM_HARNESS_BENCH_PYTHON_ENV` | the engine's own env |
//! | `LLM_HARNESS_BENCH_ENGINE_ARGS` | `max_num_seqs=64` for vllm (comma-separated KEY=VALUE) |
//! | `LLM_HARNESS_BENCH_BATCHES` | `1,2,4,8,16,32,64` |
//! | `LLM_HARNESS_BENCH_INPUT_LEN`, `..._OUTPUT_LEN` | `64`, `16` (ignore EOS) |
//!
//! Without a real engine it runs the calibration engine and says so: that is a
//! self-test of the harness, not a benchmark of anything.
//!
//! Rounds take seconds, so each batch size takes 10 samples of one round each (after
//! one warmup round); criterion then prints "Unable to complete 10 samples in …",
//! which is expected here.

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use llm_harness::driver::{progress::Progress, Driver, DriverOptions, LoadPoint};
use llm_harness::engine::{venv::cache_dir, Engine, EngineConfig, Registry};
use llm_harness::metrics::{summarize, Slo};
use llm_harness::terminal::Capture;
use llm_harness::trace::TraceWriter;
use llm_harness::workload::{self, LengthDist, Tokenizer, WorkloadSpec};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match var(name) {
        None => default,
        Some(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("offline_throughput: {name}={v} is not a number; using the default");
            default
        }),
    }
}

/// What to benchmark.
struct Setup {
    engine: String,
    config: EngineConfig,
    tokenizer: Option<PathBuf>,
    batches: Vec<u32>,
    input_len: u32,
    output_len: u32,
}

fn setup() -> Setup {
    let registry = Registry::builtin();
    let model = var("LLM_HARNESS_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models").join("gemma-3-270m"));
    let python_env = var("LLM_HARNESS_BENCH_PYTHON_ENV").map(PathBuf::from);
    // `cargo bench` passes --bench; `cargo test` and `-- --test` runs are quick checks.
    let real_run =
        std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--test");
    let engine = var("LLM_HARNESS_BENCH_ENGINE").unwrap_or_else(|| {
        let vllm_ready = registry.find("vllm").is_some_and(|s| {
            (s.availability)(&EngineConfig {
                python_env: python_env.clone(),
                ..Default::default()
            })
            .is_usable()
        }) && model.join("config.json").is_file();
        if real_run && vllm_ready {
            "vllm"
        } else {
            "calibration"
        }
        .to_string()
    });
    let needs_model = registry.find(&engine).is_some_and(|s| s.model.needed());
    let args = var("LLM_HARNESS_BENCH_ENGINE_ARGS").unwrap_or_else(|| {
        if engine == "vllm" {
            "max_num_seqs=64"
        } else {
            ""
        }
        .to_string()
    });
    let engine_args = args
        .split(',')
        .filter(|kv| !kv.trim().is_empty())
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let batches = var("LLM_HARNESS_BENCH_BATCHES")
        .unwrap_or_else(|| "1,2,4,8,16,32,64".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .filter(|&b| (1..=4096).contains(&b))
        .collect();
    Setup {
        config: EngineConfig {
            model: needs_model.then(|| model.clone()),
            engine_args,
            python_env,
            log_dir: None,
        },
        tokenizer: needs_model
            .then(|| model.join("tokenizer.json"))
            .filter(|t| t.is_file()),
        engine,
        batches,
        input_len: num("LLM_HARNESS_BENCH_INPUT_LEN", 64),
        output_len: num("LLM_HARNESS_BENCH_OUTPUT_LEN", 16),
    }
}

fn offline_throughput(c: &mut Criterion) {
    let s = setup();
    let Some(spec) = Registry::builtin().find(&s.engine) else {
        eprintln!(
            "offline_throughput: unknown engine {}; see `harness engines`",
            s.engine
        );
        return;
    };
    let instrument = s.engine == "calibration";
    if instrument {
        eprintln!(
            "offline_throughput: SELF-TEST of the harness on the calibration engine (a known \
             schedule, not an inference engine); set LLM_HARNESS_BENCH_ENGINE=vllm (after \
             scripts/setup.sh) to benchmark a real one"
        );
    }
    // The engine's own output goes to a log beside criterion's reports while it loads.
    let log_dir =
        PathBuf::from(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
            .join("criterion");
    let _ = std::fs::create_dir_all(&log_dir);
    let log = log_dir.join(format!("offline_throughput-{}.log", s.engine));
    let capture = Capture::start(&log, false).ok();
    let loaded = (spec.load)(&s.config);
    drop(capture);
    let mut engine: Box<dyn Engine> = match loaded {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "offline_throughput: {} failed to load: {e} (log: {})",
                s.engine,
                log.display()
            );
            return;
        }
    };
    let info = engine.info().clone();
    eprintln!(
        "offline_throughput: {} {} on {} (model {}); engine log {}",
        info.name,
        info.version,
        info.device,
        info.model,
        log.display()
    );
    let tokenizer = match s.tokenizer.as_deref().map(Tokenizer::from_file).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("offline_throughput: {e}");
            return;
        }
    };
    // Enough fresh prompts for every round criterion may run (about 11 per batch size).
    let total: usize = s
        .batches
        .iter()
        .map(|&b| b as usize * 32)
        .sum::<usize>()
        .max(1);
    let spec_w = WorkloadSpec::Synthetic {
        input_len: LengthDist::Fixed { len: s.input_len },
        output_len: LengthDist::Fixed { len: s.output_len },
    };
    let work = match workload::build(&spec_w, tokenizer.as_ref(), total, 0) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("offline_throughput: {e}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("llm-harness-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let Ok(mut writer) = TraceWriter::create(&dir) else {
        eprintln!("offline_throughput: cannot write {}", dir.display());
        return;
    };
    let cancel = AtomicBool::new(false);
    let name = if instrument {
        "calibration (self-test)".to_string()
    } else {
        format!("{} {}", info.name, info.version)
    };
    let mut group = c.benchmark_group(name);
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    {
        let mut driver = Driver::new(engine.as_mut(), &cancel);
        for &b in &s.batches {
            let opts = DriverOptions::requests(b as usize);
            // One round: (the harness's duration of it, its output tokens).
            let mut round = |driver: &mut Driver| -> Option<(Duration, u64)> {
                let run = driver
                    .run_point(
                        0,
                        LoadPoint::Batch { batch: b },
                        &work,
                        &opts,
                        &mut writer,
                        &Progress::hidden(),
                    )
                    .ok()?;
                let s = summarize(&run.records, &Slo::default());
                (s.failed == 0).then_some(())?;
                Some((Duration::from_secs_f64(s.duration?), s.total_output_tokens))
            };
            // A first round warms the engine and sizes criterion's measurement time.
            let Some((first, tokens)) = round(&mut driver) else {
                eprintln!("offline_throughput: batch {b} failed; stopping the sweep");
                break;
            };
            group.throughput(Throughput::Elements(tokens));
            group.warm_up_time(Duration::from_millis(1));
            // About one round per sample: 10 rounds, the warmup one before them.
            group.measurement_time(first.mul_f64(9.0).max(Duration::from_millis(10)));
            group.bench_function(BenchmarkId::new("batch", b), |bench| {
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        match round(&mut driver) {
                            Some((d, _)) => total += d,
                            // A failed round must not look fast.
                            None => return Duration::from_secs(3600),
                        }
                    }
                    total
                })
            });
        }
    }
    group.finish();
    let _ = engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, offline_throughput);
criterion_main!(benches);
