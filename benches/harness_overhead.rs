//! The harness's own cost, measured against engines that cost (almost) nothing:
//!
//! - `driver/token_event/B`: host time per token event through the whole driver loop
//!   (poll, stamp, trace, finish, JSONL write) with an engine that answers at once,
//!   B requests per batch. At B = 1 one poll round carries one event, so that figure
//!   is also the cost of a poll round.
//! - `harness_per_step/B`: the driver's own host time per engine step
//!   (`harness_us_per_step`, as a run reports it) on the calibration engine with 2 ms
//!   decode steps (+ 0.1 ms per sequence: 8.4 ms at B = 64), about a small model's
//!   step on a GPU. Criterion's "time" is that figure per step; the share of the
//!   phase's wall time and the trace-writer thread's CPU time per step (the
//!   serializing and writing it does beside the loop) are printed after each B. Each
//!   B runs with the step timeline on (`steps.jsonl`, the default) and off.
//! - `calibration_error/batch64`: measured minus true TTFT and TPOT of the calibration
//!   engine at batch 64 (reported as "time": the error itself, per run).
//! - `python_bridge/noop_step`: one pyo3 crossing to an adapter step that does no work.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use llm_harness::core::request::{FinishReason, RequestId};
use llm_harness::driver::{progress::Progress, Driver, DriverOptions, LoadPoint, PointRun};
use llm_harness::engine::calibration::{CalibrationEngine, Schedule};
use llm_harness::engine::{
    Engine, EngineError, EngineInfo, EngineKind, Finish, GenRequest, TokenEvent,
};
use llm_harness::metrics::{summarize, Slo};
use llm_harness::trace::TraceWriter;
use llm_harness::workload::{WorkItem, Workload};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Answers every poll at once with one token for every running request.
struct NullEngine {
    info: EngineInfo,
    running: Vec<(RequestId, u32, u32)>,
}

impl NullEngine {
    fn new() -> NullEngine {
        NullEngine {
            info: EngineInfo {
                name: "null".into(),
                version: "0".into(),
                model: "-".into(),
                dtype: "-".into(),
                device: "host".into(),
                kind: EngineKind::Step,
                instrument: true,
                ..Default::default()
            },
            running: Vec::new(),
        }
    }
}

impl Engine for NullEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }
    fn submit(&mut self, req: &GenRequest) -> Result<(), EngineError> {
        self.running.push((req.id, 0, req.output_len));
        Ok(())
    }
    fn poll(&mut self, _timeout: Duration, out: &mut Vec<TokenEvent>) -> Result<(), EngineError> {
        for r in &mut self.running {
            r.1 += 1;
            let done = r.1 >= r.2;
            out.push(TokenEvent {
                request: r.0,
                new_tokens: 1,
                at: None,
                finish: done.then(|| Box::new(Finish::new(FinishReason::Length))),
            });
        }
        self.running.retain(|r| r.1 < r.2);
        Ok(())
    }
    fn in_flight(&self) -> usize {
        self.running.len()
    }
    fn abort(&mut self, id: RequestId) -> Result<(), EngineError> {
        self.running.retain(|r| r.0 != id);
        Ok(())
    }
    fn shutdown(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
}

fn workload(n: usize, input: usize, output: u32) -> Workload {
    let items = (0..n)
        .map(|_| WorkItem {
            prompt: vec![7u32; input].into(),
            output_len: output,
        })
        .collect();
    Workload::new(items, "bench".into())
}

/// One batch-mode point of `w` on `engine`, its requests written under `dir`.
fn batch_point(
    engine: &mut dyn Engine,
    batch: u32,
    w: &Workload,
    o: &DriverOptions,
    dir: &std::path::Path,
) -> PointRun {
    let cancel = AtomicBool::new(false);
    let mut writer = TraceWriter::create(dir).unwrap();
    Driver::new(engine, &cancel)
        .run_point(
            0,
            LoadPoint::Batch { batch },
            w,
            o,
            &mut writer,
            &Progress::hidden(),
        )
        .unwrap()
}

fn options(n: usize) -> DriverOptions {
    DriverOptions {
        request_timeout: Duration::from_secs(60),
        ..DriverOptions::requests(n)
    }
}

fn driver_overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("driver/token_event");
    const TOKENS: u32 = 256;
    for batch in [1u32, 64] {
        let w = workload(batch as usize, 16, TOKENS);
        let o = options(batch as usize);
        g.throughput(Throughput::Elements(batch as u64 * TOKENS as u64));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            let dir = tempfile::tempdir().unwrap();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut engine = NullEngine::new();
                    let t = Instant::now();
                    batch_point(&mut engine, batch, &w, &o, dir.path());
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn harness_per_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("harness_per_step");
    // Each iteration is a whole point (4 batches of 64 tokens): seconds at B = 64.
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    let s = Schedule {
        decode_ms: 2.0,
        ..Schedule::default()
    };
    const ROUNDS: usize = 4;
    for (batch, timeline) in [1u32, 8, 64]
        .into_iter()
        .flat_map(|b| [(b, true), (b, false)])
    {
        let n = batch as usize * ROUNDS;
        let w = workload(n, 16, 64);
        let o = DriverOptions {
            timeline,
            ..options(n)
        };
        let id = format!("{batch}/timeline_{}", if timeline { "on" } else { "off" });
        // (sum of shares, sum of the writer thread's µs per step, points)
        let share = std::cell::Cell::new((0.0, 0.0, 0u32));
        g.bench_with_input(BenchmarkId::from_parameter(&id), &batch, |b, &batch| {
            let dir = tempfile::tempdir().unwrap();
            b.iter_custom(|iters| {
                let mut per_step = Duration::ZERO;
                for _ in 0..iters {
                    let mut engine = CalibrationEngine::new(s.clone());
                    let run = batch_point(&mut engine, batch, &w, &o, dir.path());
                    let cost = run.cost.unwrap();
                    per_step += Duration::from_secs_f64(cost.harness_s / cost.steps as f64);
                    let (sum, writer, k) = share.get();
                    share.set((
                        sum + cost.harness_s / cost.wall_s * 100.0,
                        writer + cost.writer_cpu_us_per_step().unwrap_or(f64::NAN),
                        k + 1,
                    ));
                }
                per_step
            })
        });
        let (sum, writer, k) = share.get();
        if k == 0 {
            continue; // filtered out: nothing ran
        }
        let k = f64::from(k);
        eprintln!(
            "harness_per_step/{id}: harness share {:.3} % of wall time; trace-writer \
             thread {:.2} us CPU per step beside it (means of {k} points)",
            sum / k,
            writer / k
        );
    }
    g.finish();
}

fn calibration_error(c: &mut Criterion) {
    let mut g = c.benchmark_group("calibration_error");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_millis(500));
    let s = Schedule::default();
    let (batch, input, output) = (64usize, 128usize, 8u32);
    let w = workload(batch, input, output);
    let o = options(batch);
    let true_ttft = s.prefill(batch, (batch * input) as u64).as_secs_f64() * 1e3;
    let true_tpot = s.decode(batch).as_secs_f64() * 1e3;
    for (name, which) in [("batch64_ttft_p50", 0), ("batch64_tpot_p50", 1)] {
        g.bench_function(name, |b| {
            let dir = tempfile::tempdir().unwrap();
            b.iter_custom(|iters| {
                let mut err_ms = 0.0;
                for _ in 0..iters {
                    let mut engine = CalibrationEngine::new(s.clone());
                    let run = batch_point(&mut engine, batch as u32, &w, &o, dir.path());
                    let sum = summarize(&run.records, &Slo::default());
                    let (m, t) = if which == 0 {
                        (sum.ttft.median, true_ttft)
                    } else {
                        (sum.tpot.median, true_tpot)
                    };
                    err_ms += (m.unwrap_or(f64::NAN) - t).abs();
                }
                Duration::from_secs_f64(err_ms / 1e3)
            })
        });
    }
    g.finish();
}

#[cfg(feature = "python")]
fn python_bridge(c: &mut Criterion) {
    use llm_harness::engine::{python::test_adapter, EngineConfig};
    let cfg = EngineConfig {
        engine_args: vec![("noop".into(), "true".into())],
        ..Default::default()
    };
    let mut engine = match (test_adapter::SPEC.load)(&cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("skipped python_bridge: {e}");
            return;
        }
    };
    let mut out = Vec::new();
    c.bench_function("python_bridge/noop_step", |b| {
        b.iter(|| {
            out.clear();
            engine.poll(Duration::ZERO, &mut out).unwrap();
        })
    });
    let _ = engine.shutdown();
}

#[cfg(not(feature = "python"))]
fn python_bridge(_c: &mut Criterion) {
    eprintln!("skipped python_bridge: built without the `python` feature");
}

criterion_group!(
    benches,
    driver_overhead,
    harness_per_step,
    calibration_error,
    python_bridge
);
criterion_main!(benches);
