//! `--engine trtllm` end to end against the TEST STAND-IN of TensorRT-LLM's C++
//! Executor (tests/trtllm_standin/, built by scripts/setup.d/trtllm_standin.sh): the real cxx
//! bridge, the real shim compiled against TensorRT-LLM 1.2's headers, and the real
//! engine and driver. The stand-in is not TensorRT-LLM and these figures are no
//! benchmark: it plays a token schedule, so the harness's measurements have a known
//! answer (the calibration engine's tolerance: medians within 1 ms + 2 %).
//!
//! Run with `TRTLLM_ROOT=$(scripts/setup.d/trtllm_standin.sh | tail -n1)
//! CUDA_HOME=$(scripts/setup.d/cuda_headers.sh | tail -n1) cargo test --features trtllm-standin
//! --test trtllm_standin` (scripts/test.sh does).
#![cfg(feature = "trtllm-standin")]

mod common;

use common::{close, driver_opts, sorted_ttfts_ms};
use llm_harness::core::request::FinishReason;
use llm_harness::driver::{progress::Progress, Driver, DriverOptions, LoadPoint, Outcome};
use llm_harness::engine::trtllm::TrtllmEngine;
use llm_harness::engine::{Engine, EngineConfig, EngineError, GenRequest, TokenEvent};
use llm_harness::metrics::{summarize, Slo};
use llm_harness::trace::{read_requests, RequestTrace, TraceWriter, REQUESTS_FILE};
use llm_harness::workload::{WorkItem, Workload};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Prompt tokens the stand-in's standin.cfg below turns into faults.
const ERROR_TOKEN: u32 = 7;
const HANG_TOKEN: u32 = 8;
const THROW_TOKEN: u32 = 9;
const THROW_OTHER_TOKEN: u32 = 10;
const AWAIT_THROW_TOKEN: u32 = 11;

/// One test at a time: the stand-in's schedule is timed on the host, and a test's
/// awaiting thread woken late by another test on the 2 cores reads as harness lag.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An engine directory as trtllm-build writes one, with the stand-in's schedule and the
/// faults above.
fn engine_dir(schedule: &str) -> tempfile::TempDir {
    let faults = format!(
        "error_token={ERROR_TOKEN}\nhang_token={HANG_TOKEN}\nthrow_token={THROW_TOKEN}\n\
         throw_other_token={THROW_OTHER_TOKEN}\nawait_throw_token={AWAIT_THROW_TOKEN}\n"
    );
    common::trtllm_standin_engine_dir(&format!("{schedule}\n{faults}"))
}

fn load(dir: &Path, args: &[(&str, &str)]) -> Result<TrtllmEngine, EngineError> {
    TrtllmEngine::load(&EngineConfig {
        model: Some(dir.to_path_buf()),
        engine_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        python_env: None,
        log_dir: None,
    })
}

/// `n` prompts of `input` tokens; ordinary ones start at 100 (clear of the faults).
fn workload(input: usize, output: u32, n: usize, first: impl Fn(usize) -> u32) -> Workload {
    let items = (0..n)
        .map(|i| {
            let mut p = vec![100 + (i % 1000) as u32; input];
            p[0] = first(i);
            WorkItem {
                prompt: p.into(),
                output_len: output,
            }
        })
        .collect();
    Workload::new(items, "stand-in test".into())
}

fn ordinary(i: usize) -> u32 {
    100 + i as u32
}

fn run(
    engine: &mut TrtllmEngine,
    point: LoadPoint,
    w: &Workload,
    o: &DriverOptions,
) -> llm_harness::driver::PointRun {
    let dir = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let mut writer = TraceWriter::create(dir.path()).unwrap();
    let run = Driver::new(engine, &cancel)
        .run_point(0, point, w, o, &mut writer, &Progress::hidden())
        .unwrap();
    assert_eq!(
        read_requests(&dir.path().join(REQUESTS_FILE)).unwrap(),
        run.records
    );
    run
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn usage(r: Result<TrtllmEngine, EngineError>) -> String {
    match r {
        Err(EngineError::Usage(m)) => m,
        Err(e) => panic!("expected a usage error, got: {e}"),
        Ok(_) => panic!("expected a usage error, got an engine"),
    }
}

fn failure(r: Result<TrtllmEngine, EngineError>) -> String {
    match r {
        Err(EngineError::Failed { message, .. }) => message,
        Err(e) => panic!("expected an engine failure, got: {e}"),
        Ok(_) => panic!("expected an engine failure, got an engine"),
    }
}

#[test]
fn streamed_tokens_are_measured_to_the_known_answer() {
    let _serial = serial();
    let (prefill, decode) = (30.0, 10.0);
    let dir = engine_dir(&format!("prefill_ms={prefill}\ndecode_ms={decode}"));
    let mut engine = load(dir.path(), &[]).unwrap();
    let info = engine.info().clone();
    assert!(
        info.instrument && info.version.starts_with("llm-harness stand-in"),
        "{info:?}"
    );
    assert_eq!(info.kind, llm_harness::engine::EngineKind::Stream);
    let (b, output) = (4usize, 12u32);
    let r = run(
        &mut engine,
        LoadPoint::Batch { batch: b as u32 },
        &workload(16, output, 12, ordinary),
        &driver_opts(8, 4),
    );
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(r.records.len(), 8);
    assert!(r
        .records
        .iter()
        .all(|t| t.finish_reason == Some(FinishReason::Length)
            && t.output_tokens() == output as u64
            && t.token_ns.len() == output as usize));
    let s = summarize(&r.records, &Slo::default());
    assert_eq!(s.completed, 8);
    let e2el = prefill + (output - 1) as f64 * decode;
    eprintln!(
        "stand-in known answers (ms): ttft p50 {:.3} (truth {prefill}), tpot p50 {:.3} (truth {decode}), \
         itl p50 {:.3} (truth {decode}), e2el p50 {:.3} (truth {e2el}), engine_ttft_delta p50 {:.3}",
        s.ttft.median.unwrap_or(f64::NAN),
        s.tpot.median.unwrap_or(f64::NAN),
        s.itl.median.unwrap_or(f64::NAN),
        s.e2el.median.unwrap_or(f64::NAN),
        s.engine_ttft_delta.as_ref().and_then(|d| d.median).unwrap_or(f64::NAN),
    );
    close("p50 ttft", s.ttft.median, prefill);
    close("p50 tpot", s.tpot.median, decode);
    close("p50 itl", s.itl.median, decode);
    close("p50 e2el", s.e2el.median, e2el);
    // Two batches back to back: 2·B·N tokens over two batch lifetimes.
    let truth = (2 * b) as f64 * output as f64 / (2.0 * e2el / 1e3);
    let got = s.output_throughput.unwrap();
    assert!(
        (got - truth).abs() / truth < 0.03,
        "output throughput {got:.1} vs {truth:.1} tok/s"
    );

    // TensorRT-LLM's RequestPerfMetrics reach the trace as the engine's stamps, on the
    // harness's clock: arrival just after the driver's submit, first and last token
    // just before the harness stamped them (the awaiting thread's wakeup).
    let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1e6;
    let mut queued_after_submit = Vec::new();
    let (mut first_lag, mut last_lag) = (Vec::new(), Vec::new());
    for t in &r.records {
        let e = t
            .engine
            .as_ref()
            .expect("perf metrics on every final response");
        let (q, sch, f, l) = (
            e.queued_ns.unwrap().0,
            e.scheduled_ns.unwrap().0,
            e.first_token_ns.unwrap().0,
            e.last_token_ns.unwrap().0,
        );
        assert!(q <= sch && sch <= f && f <= l, "{e:?}");
        queued_after_submit.push(ms(q, t.submit_ns.0));
        let harness_first = t.first_token_ns().unwrap().0;
        let harness_last = t.last_token_ns().unwrap().0;
        assert!(
            harness_first >= f && harness_last >= l,
            "stamped before the token was due: {t:?}"
        );
        first_lag.push(ms(harness_first, f));
        last_lag.push(ms(harness_last, l));
    }
    assert!(
        queued_after_submit.iter().all(|&d| d >= 0.0),
        "{queued_after_submit:?}"
    );
    assert!(median(queued_after_submit) < 1.0);
    assert!(median(first_lag.clone()) < 1.0, "{first_lag:?}");
    assert!(median(last_lag.clone()) < 1.0, "{last_lag:?}");
    let delta = s.engine_ttft_delta.as_ref().unwrap();
    assert!(delta.median.unwrap().abs() < 1.0, "{delta:?}");
    engine.shutdown().unwrap();
}

#[test]
fn max_batch_size_reaches_the_executor_and_queues_the_rest() {
    let _serial = serial();
    let (prefill, decode, output) = (20.0, 5.0, 6u32);
    let dir = engine_dir(&format!(
        "prefill_ms={prefill}\ndecode_ms={decode}\nexpect_max_batch_size=2\nexpect_max_num_tokens=4096\n\
         expect_kv_fraction=0.5\nexpect_block_reuse=1\nexpect_scheduler_policy=2\nexpect_chunked_context=1"
    ));
    let args = [
        ("max_batch_size", "2"),
        ("max_num_tokens", "4096"),
        ("kv_cache_free_gpu_memory_fraction", "0.5"),
        ("enable_block_reuse", "true"),
        ("scheduler_policy", "static_batch"),
        ("enable_chunked_context", "true"),
    ];
    let mut engine = load(dir.path(), &args).unwrap();
    assert_eq!(
        engine.info().metadata["executor"]["scheduler_policy"],
        "static_batch"
    );
    let r = run(
        &mut engine,
        LoadPoint::Batch { batch: 4 },
        &workload(8, output, 4, ordinary),
        &driver_opts(4, 0),
    );
    let ttfts = sorted_ttfts_ms(&r.records);
    let first_wave = prefill;
    let second_wave = prefill + (output - 1) as f64 * decode + prefill;
    close("first wave ttft", Some(ttfts[0]), first_wave);
    close("queued wave ttft", Some(ttfts[3]), second_wave);
    // The steps show the Executor's batch limit: two running, the rest queued.
    let running = r.steps.iter().filter_map(|s| s.engine.running).max();
    assert_eq!(running, Some(2), "{:?}", r.steps);
    assert!(r.steps.iter().any(|s| s.engine.waiting == Some(2)));
    // The Executor saw the settings: its iteration stats carry max_batch_size (read
    // raw here; the run's steps took what came before).
    engine.submit(&request(9, 150, 2)).unwrap();
    until_finished(&mut engine, 9);
    let stats = engine.iteration_stats().unwrap();
    assert!(!stats.is_empty());
    for s in &stats {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        assert_eq!(v["maxBatchSizeStatic"], 2, "{s}");
        assert_eq!(v["maxNumTokensStatic"], 4096, "{s}");
    }
    engine.shutdown().unwrap();

    // The check can fail: the same expectations without the arguments refuse to load.
    let e = failure(load(dir.path(), &[]));
    assert!(
        e.contains("ExecutorConfig block_reuse is 0, standin.cfg expects 1"),
        "{e}"
    );
    // Defaults as documented: TensorRT-LLM's own for what is not given, reuse and
    // chunking off, guaranteed_no_evict.
    let d = engine_dir(
        "expect_max_batch_size=-1\nexpect_max_num_tokens=-1\nexpect_kv_fraction=-1\n\
                        expect_block_reuse=0\nexpect_scheduler_policy=1\nexpect_chunked_context=0",
    );
    load(d.path(), &[]).unwrap().shutdown().unwrap();
}

/// The step records carry the Executor's iteration stats, which the stand-in computes
/// from its schedule: every prompt token prefilled once, every token after a request's
/// first decoded once, at most max_batch_size running, the KV cache its blocks.
#[test]
fn iteration_stats_reach_the_steps_as_the_schedule_ran_them() {
    let _serial = serial();
    let dir = engine_dir("prefill_ms=8\ndecode_ms=4\nkv_blocks=100\ntokens_per_block=16");
    let mut engine = load(dir.path(), &[("max_batch_size", "2")]).unwrap();
    let source = engine
        .info()
        .scheduler
        .as_ref()
        .unwrap()
        .step_stats_source
        .clone();
    assert!(
        source
            .as_deref()
            .unwrap()
            .contains("Executor::getLatestIterationStats"),
        "{source:?}"
    );
    let (n, input, output) = (6usize, 16usize, 5u32);
    let r = run(
        &mut engine,
        LoadPoint::Concurrency {
            concurrency: n as u32,
        },
        &workload(input, output, n, ordinary),
        &driver_opts(n, 0),
    );
    assert_eq!(r.outcome, Outcome::Completed);
    let produced: u64 = r.records.iter().map(|t| t.output_tokens()).sum();
    assert_eq!(produced, n as u64 * output as u64);
    let steps: Vec<_> = r.steps.iter().map(|s| &s.engine).collect();
    let sum = |f: fn(&llm_harness::engine::StepStats) -> Option<u32>| -> u64 {
        steps.iter().filter_map(|s| f(s)).map(u64::from).sum()
    };
    // Each request's first token ends its context phase; the rest are generation.
    assert_eq!(sum(|s| s.prefill_requests), n as u64, "{steps:?}");
    assert_eq!(sum(|s| s.prefill_tokens), (n * input) as u64);
    assert_eq!(sum(|s| s.decode_requests), produced - n as u64);
    assert_eq!(sum(|s| s.decode_tokens), produced - n as u64);
    assert!(
        sum(|s| s.engine_steps) >= u64::from(output) * 3,
        "{steps:?}"
    );
    assert_eq!(sum(|s| s.preempted), 0);
    assert!(steps
        .iter()
        .all(|s| s.running <= Some(2) && s.waiting <= Some(4)));
    assert!(steps.iter().any(|s| s.waiting == Some(4)), "{steps:?}");
    // Two running requests past their first token hold two 16-token blocks each.
    let kv = steps.iter().filter_map(|s| s.kv_usage).fold(0.0, f64::max);
    assert_eq!(kv, 0.04, "{steps:?}");
    // The last iteration's stats may come with an earlier step than its last token.
    let last = steps.iter().rev().find(|s| s.running.is_some()).unwrap();
    assert_eq!(
        (last.running, last.waiting, last.kv_usage),
        (Some(0), Some(0), Some(0.0))
    );
    // The iterations' spans lie within the phase and overlap nothing.
    let busy: f64 = steps.iter().filter_map(|s| s.engine_ms).sum();
    let from = r.records.iter().map(|t| t.submit_ns.0).min().unwrap();
    let to = r
        .records
        .iter()
        .filter_map(|t| t.last_token_ns())
        .map(|t| t.0)
        .max()
        .unwrap();
    let span = (to - from) as f64 / 1e6;
    assert!(
        busy > 0.0 && busy <= span + 1.0,
        "{busy} ms of iterations in {span} ms"
    );
    // Nothing is counted twice: what the Executor still holds is new.
    assert_eq!(engine.take_step_stats(), None);
    engine.shutdown().unwrap();
}

#[test]
fn final_flags_errors_and_timeouts_map_onto_the_trace() {
    let _serial = serial();
    let dir = engine_dir("prefill_ms=10\ndecode_ms=5");
    let mut engine = load(dir.path(), &[]).unwrap();
    let mut o = driver_opts(4, 0);
    o.request_timeout = Duration::from_millis(300);
    let firsts = [ordinary(0), ERROR_TOKEN, HANG_TOKEN, ordinary(3)];
    let r = run(
        &mut engine,
        LoadPoint::Concurrency { concurrency: 4 },
        &workload(8, 5, 4, |i| firsts[i]),
        &o,
    );
    assert_eq!(r.outcome, Outcome::Completed);
    let by_id = |id| r.records.iter().find(|t| t.id == id).unwrap();
    for id in [0, 3] {
        assert_eq!(by_id(id).finish_reason, Some(FinishReason::Length));
        assert_eq!(by_id(id).output_tokens(), 5);
    }
    let err = by_id(1);
    assert_eq!(err.finish_reason, Some(FinishReason::Error));
    assert!(
        err.error
            .as_deref()
            .unwrap()
            .contains("the request failed (error_token)"),
        "{err:?}"
    );
    assert_eq!(err.output_tokens(), 0);
    let hung = by_id(2);
    assert_eq!(hung.finish_reason, Some(FinishReason::Timeout));
    assert!(
        hung.error.as_deref().unwrap().contains("--request-timeout"),
        "{hung:?}"
    );
    // The timeout cancelled the request in the Executor: nothing is left in flight.
    assert_eq!(engine.in_flight(), 0);
    std::thread::sleep(Duration::from_millis(100));
    let last = engine.iteration_stats().unwrap();
    let last: serde_json::Value =
        serde_json::from_str(last.last().expect("an iteration after the cancel")).unwrap();
    assert_eq!(last["numActiveRequests"], 0, "{last}");
    engine.shutdown().unwrap();
}

/// Polls until `id` finishes (or 2 s pass); returns its events.
fn until_finished(engine: &mut TrtllmEngine, id: u64) -> Vec<TokenEvent> {
    let start = Instant::now();
    let (mut mine, mut out) = (Vec::new(), Vec::new());
    while start.elapsed() < Duration::from_secs(2) {
        out.clear();
        engine.poll(Duration::from_millis(20), &mut out).unwrap();
        for ev in out.drain(..) {
            if ev.request == id {
                let done = ev.finish.is_some();
                mine.push(ev);
                if done {
                    return mine;
                }
            }
        }
    }
    panic!("request {id} did not finish: {mine:?}");
}

fn request(id: u64, first: u32, output_len: u32) -> GenRequest {
    let mut prompt = vec![200 + id as u32; 6];
    prompt[0] = first;
    GenRequest {
        id,
        prompt: Arc::from(prompt),
        output_len,
        min_tokens: 0,
        ignore_eos: false,
        temperature: 0.0,
        seed: Some(id),
        return_token_ids: true,
    }
}

fn token_ids(events: &[TokenEvent]) -> (FinishReason, Vec<u32>) {
    let f = events.last().unwrap().finish.as_ref().unwrap();
    let n: u32 = events.iter().map(|e| e.new_tokens).sum();
    let ids = f.token_ids.clone().unwrap();
    assert_eq!(ids.len() as u32, n);
    assert!(
        events.iter().all(|e| e.at.is_some()),
        "a stream engine stamps every event"
    );
    (f.reason, ids)
}

#[test]
fn end_id_ignore_eos_and_sampling_reach_each_request() {
    let _serial = serial();
    let dir = engine_dir("prefill_ms=2\ndecode_ms=1\neos_at=3");
    // With an end id, the stand-in's EOS (token 3) ends the request as a stop.
    let mut engine = load(dir.path(), &[("end_id", "2")]).unwrap();
    engine.submit(&request(1, 150, 8)).unwrap();
    let (reason, ids) = token_ids(&until_finished(&mut engine, 1));
    assert_eq!((reason, ids), (FinishReason::Stop, vec![150, 201, 2]));
    // --ignore-eos: end id -1 and min tokens = the budget; runs to its length.
    let mut r = request(2, 150, 8);
    r.ignore_eos = true;
    r.min_tokens = 8;
    engine.submit(&r).unwrap();
    let (reason, ids) = token_ids(&until_finished(&mut engine, 2));
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(ids.len(), 8);
    engine.shutdown().unwrap();

    // Without an end id only the budget ends a request, and a note says so.
    let mut engine = load(dir.path(), &[("top_k", "40"), ("top_p", "0.9")]).unwrap();
    assert!(
        engine.info().notes.iter().any(|n| n.contains("end_id")),
        "{:?}",
        engine.info().notes
    );
    engine.submit(&request(3, 150, 5)).unwrap();
    let (reason, greedy) = token_ids(&until_finished(&mut engine, 3));
    assert_eq!(reason, FinishReason::Length);
    // Greedy (temperature 0) is top-k 1: the stand-in echoes the prompt.
    assert_eq!(greedy, vec![150, 203, 203, 203, 203]);
    // Sampled: temperature, seed, top-k and top-p reach the SamplingConfig.
    let sampled = |engine: &mut TrtllmEngine, id: u64, seed: u64| {
        let mut r = request(id, 150, 5);
        r.temperature = 0.8;
        r.seed = Some(seed);
        engine.submit(&r).unwrap();
        token_ids(&until_finished(engine, id)).1
    };
    let a = sampled(&mut engine, 4, 11);
    assert_ne!(a, greedy);
    assert_eq!(sampled(&mut engine, 5, 11), a, "same seed, same tokens");
    assert_ne!(sampled(&mut engine, 6, 12), a, "another seed, other tokens");
    engine.shutdown().unwrap();
    let mut engine = load(dir.path(), &[("top_k", "41"), ("top_p", "0.9")]).unwrap();
    assert_ne!(sampled(&mut engine, 7, 11), a, "top_k reaches the request");
    engine.shutdown().unwrap();
}

#[test]
fn tokens_are_stamped_when_they_arrive_not_when_polled() {
    let _serial = serial();
    let dir = engine_dir("prefill_ms=5\ndecode_ms=5");
    let mut engine = load(dir.path(), &[]).unwrap();
    let mut r = request(1, 150, 4);
    r.ignore_eos = true;
    engine.submit(&r).unwrap();
    // The driver comes back long after the request finished (5 + 3·5 = 20 ms).
    std::thread::sleep(Duration::from_millis(150));
    let polled = llm_harness::core::clock::now();
    let events = until_finished(&mut engine, 1);
    let stamps = events
        .last()
        .unwrap()
        .finish
        .as_ref()
        .unwrap()
        .engine
        .clone()
        .unwrap();
    let first = events[0].at.unwrap();
    let last = events.last().unwrap().at.unwrap();
    let lag_ms = |a: u64, b: u64| (a as f64 - b as f64) / 1e6;
    assert!(
        polled.since(last) as f64 / 1e6 > 100.0,
        "the last token was stamped at the poll, not on arrival"
    );
    assert!(
        (0.0..5.0).contains(&lag_ms(first.0, stamps.first_token_ns.unwrap().0)),
        "first token stamped {:.3} ms after it was due",
        lag_ms(first.0, stamps.first_token_ns.unwrap().0)
    );
    assert!((0.0..5.0).contains(&lag_ms(last.0, stamps.last_token_ns.unwrap().0)));
    engine.shutdown().unwrap();
}

#[test]
fn cancellation_reaches_the_executor() {
    let _serial = serial();
    let dir = engine_dir("prefill_ms=2\ndecode_ms=1");
    let mut engine = load(dir.path(), &[]).unwrap();
    engine.submit(&request(1, HANG_TOKEN, 4)).unwrap();
    engine.submit(&request(2, 150, 4)).unwrap();
    until_finished(&mut engine, 2);
    let stats = engine.iteration_stats().unwrap();
    let last: serde_json::Value = serde_json::from_str(stats.last().unwrap()).unwrap();
    assert_eq!(
        last["numActiveRequests"], 1,
        "the hung request is still active: {last}"
    );
    assert_eq!(engine.in_flight(), 1);
    engine.abort(1).unwrap();
    assert_eq!(engine.in_flight(), 0);
    // The Executor's cancelled response arrives and is dropped: the harness already
    // ended the request.
    let mut out = Vec::new();
    engine.poll(Duration::from_millis(100), &mut out).unwrap();
    assert!(out.iter().all(|e| e.request != 1), "{out:?}");
    let stats = engine.iteration_stats().unwrap();
    let last: serde_json::Value = serde_json::from_str(stats.last().unwrap()).unwrap();
    assert_eq!(
        (
            last["numActiveRequests"].as_i64(),
            last["numCompletedRequests"].as_i64()
        ),
        (Some(0), Some(0))
    );
    // Aborting twice, or an unknown request, is a no-op.
    engine.abort(1).unwrap();
    engine.abort(99).unwrap();
    engine.shutdown().unwrap();
}

#[test]
fn cpp_exceptions_become_errors_and_nothing_unwinds() {
    let _serial = serial();
    let dir = engine_dir("prefill_ms=2\ndecode_ms=1");
    let mut engine = load(dir.path(), &[]).unwrap();
    // TensorRT-LLM's own TllmException from enqueueRequest.
    let e = engine
        .submit(&request(1, THROW_TOKEN, 4))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("TensorRT-LLM enqueueRequest: stand-in: enqueueRequest rejected the request (throw_token)"), "{e}");
    // Something that is not a std::exception: still an error, not an abort.
    let e = engine
        .submit(&request(2, THROW_OTHER_TOKEN, 4))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a std::exception"), "{e}");
    assert_eq!(engine.in_flight(), 0);
    // The engine is still usable.
    engine.submit(&request(3, 150, 3)).unwrap();
    assert_eq!(token_ids(&until_finished(&mut engine, 3)).1.len(), 3);
    // awaitResponses throwing ends the awaiting thread; poll reports it, then keeps saying so.
    engine.submit(&request(4, AWAIT_THROW_TOKEN, 3)).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    let err = loop {
        match engine.poll(Duration::from_millis(20), &mut out) {
            Err(e) => break e.to_string(),
            Ok(()) => assert!(
                start.elapsed() < Duration::from_secs(2),
                "no error from awaitResponses"
            ),
        }
    };
    assert!(
        err.contains("TensorRT-LLM awaitResponses: stand-in: awaitResponses failed"),
        "{err}"
    );
    let again = engine
        .poll(Duration::from_millis(20), &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        again.contains("thread awaiting responses has ended"),
        "{again}"
    );
    engine.shutdown().unwrap();

    // The Executor's constructor throwing: an engine failure with its message.
    let bare = engine_dir("");
    std::fs::remove_file(bare.path().join("standin.cfg")).unwrap();
    let e = failure(load(bare.path(), &[]));
    assert!(
        e.starts_with("TensorRT-LLM Executor(") && e.contains("standin.cfg not found"),
        "{e}"
    );
}

#[test]
fn bad_input_is_a_usage_error_before_the_executor_loads() {
    let _serial = serial();
    let e = usage(TrtllmEngine::load(&EngineConfig::default()));
    assert!(
        e.starts_with("--model is required for --engine trtllm") && e.contains("trtllm-build"),
        "{e}"
    );
    let hf = tempfile::tempdir().unwrap();
    std::fs::write(hf.path().join("config.json"), "{}").unwrap();
    std::fs::write(hf.path().join("model.safetensors"), "").unwrap();
    assert!(usage(load(hf.path(), &[])).contains("no rank0.engine"));
    let dir = engine_dir("");
    let e = usage(load(dir.path(), &[("max_batch", "8")]));
    assert!(e.contains("did you mean 'max_batch_size'?"), "{e}");
    // A prompt id outside the engine's vocabulary never reaches the Executor.
    let mut engine = load(dir.path(), &[]).unwrap();
    let e = engine
        .submit(&request(1, 40_000, 3))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("outside the engine's vocabulary (32000 ids)"),
        "{e}"
    );
    engine.shutdown().unwrap();
}

#[test]
fn the_cli_runs_the_stand_in_and_labels_it() {
    let _serial = serial();
    use assert_cmd::Command;
    let dir = engine_dir("prefill_ms=5\ndecode_ms=2");
    let out = tempfile::tempdir().unwrap();
    let res = out.path().join("run");
    let done = Command::cargo_bin("harness")
        .unwrap()
        .args([
            "--engine",
            "trtllm",
            "--batch",
            "4",
            "--input-len",
            "16",
            "--output-len",
            "6",
        ])
        .args([
            "--num-requests",
            "8",
            "--warmup",
            "0",
            "--ignore-eos",
            "--no-progress",
        ])
        .arg("--model")
        .arg(dir.path())
        .arg("--out")
        .arg(&res)
        .assert()
        .code(0);
    // The stand-in's note reaches the terminal, as every engine's notes do.
    let said = String::from_utf8_lossy(&done.get_output().stderr).into_owned();
    assert!(said.contains("not TensorRT-LLM"), "{said}");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(res.join("run.json")).unwrap()).unwrap();
    let engine = &run["engine"];
    assert_eq!(engine["name"], "trtllm");
    assert_eq!(engine["instrument"], true, "{engine}");
    assert!(
        engine["version"].as_str().unwrap().contains("stand-in"),
        "{engine}"
    );
    assert!(
        engine["notes"][0]
            .as_str()
            .unwrap()
            .contains("not TensorRT-LLM"),
        "{engine}"
    );
    let summary = std::fs::read_to_string(res.join("summary.json")).unwrap();
    assert!(summary.contains("CALIBRATION INSTRUMENT"), "{summary}");
    // The Executor's iteration stats reached the step records, and run.json says so.
    let steps = std::fs::read_to_string(res.join("steps.jsonl")).unwrap();
    let decoded: u64 = steps
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["decode_tokens"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(decoded, 8 * 5, "{steps}");
    assert!(
        engine["scheduler"]["step_stats_source"]
            .as_str()
            .unwrap()
            .contains("getLatestIterationStats"),
        "{engine}"
    );
    let recs: Vec<RequestTrace> = read_requests(&res.join(REQUESTS_FILE)).unwrap();
    assert_eq!(recs.len(), 8);
    assert!(recs
        .iter()
        .all(|r| r.engine.is_some() && r.output_tokens() == 6));

    // `harness engines` lists it as ready, with the stand-in's version.
    let listing = Command::cargo_bin("harness")
        .unwrap()
        .arg("engines")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    let mine: Vec<&str> = listing
        .lines()
        .skip_while(|l| !l.starts_with("trtllm "))
        .take(2)
        .collect();
    assert!(mine[0].contains("ready"), "{listing}");
    assert!(
        mine[1].contains("stream engine; C++ Executor linked from") && mine[1].contains("stand-in"),
        "{listing}"
    );
}
