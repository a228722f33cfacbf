//! Known-answer tests: the calibration engine emits tokens on an exact schedule, and
//! the harness must measure that schedule through every driver mode.
//!
//! Tolerance: medians within 1 ms + 2 % of the truth. A real bug (stamping at submit
//! instead of on return, an off-by-one step, prefill counted in TPOT, a lost wakeup)
//! moves a figure by at least one whole step (≥ 10 ms here); the harness's own
//! wakeup latency on a busy 2-core machine is tens of microseconds at the median and
//! rarely a few milliseconds, so medians (not maxima) keep the test from flaking.

mod common;

use common::{close, driver_opts, sorted_ttfts_ms};
use llm_harness::core::clock::MonoNs;
use llm_harness::core::request::FinishReason;
use llm_harness::driver::{
    arrivals, progress::Progress, Driver, DriverOptions, LoadPoint, Outcome, Stop,
};
use llm_harness::engine::calibration::{CalibrationEngine, Schedule};
use llm_harness::metrics::{summarize, Slo, Summary};
use llm_harness::trace::{
    read_requests, read_steps, RequestTrace, StepRecord, TraceWriter, REQUESTS_FILE, STEPS_FILE,
};
use llm_harness::workload::{WorkItem, Workload};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn workload(input: usize, output: u32, n: usize) -> Workload {
    let items = (0..n)
        .map(|i| WorkItem {
            prompt: vec![(i % 1000) as u32; input].into(),
            output_len: output,
        })
        .collect();
    Workload::new(items, "test".into())
}

struct Measured {
    records: Vec<RequestTrace>,
    summary: Summary,
    outcome: Outcome,
}

/// One measurement at a time: timing tests must not compete for the 2 cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The most the host may keep the engine off its schedule (half of `close`'s 1 ms),
/// and how many runs a test gets when it does.
const HOST_LATE_BOUND: Duration = Duration::from_micros(500);
const MEASURE_ATTEMPTS: usize = 3;

/// Runs one point on a fresh calibration engine; returns the run and the engine's
/// own count of the time spent outside it between calls.
fn measure_with_engine(
    schedule: Schedule,
    point: LoadPoint,
    w: &Workload,
    o: &DriverOptions,
) -> (llm_harness::driver::PointRun, Duration) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut attempt = 1;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = CalibrationEngine::new(schedule.clone());
        let cancel = AtomicBool::new(false);
        let mut writer = TraceWriter::create(dir.path()).unwrap();
        let run = Driver::new(&mut engine, &cancel)
            .run_point(0, point, w, o, &mut writer, &Progress::hidden())
            .unwrap();
        // What reached the disk is what the driver returned.
        assert_eq!(
            read_requests(&dir.path().join(REQUESTS_FILE)).unwrap(),
            run.records
        );
        assert_eq!(read_steps(&dir.path().join(STEPS_FILE)).unwrap(), run.steps);
        // A busy host can wake the engine late, which moves the truth itself; the
        // engine sees that from its side, and only then is the run measured again.
        let late = engine.max_oversleep();
        if late <= HOST_LATE_BOUND || attempt == MEASURE_ATTEMPTS {
            return (run, engine.time_between_calls());
        }
        eprintln!("attempt {attempt}: the host woke the engine {late:?} late; measuring again");
        attempt += 1;
    }
}

fn measure(schedule: Schedule, point: LoadPoint, w: &Workload, o: &DriverOptions) -> Measured {
    let (run, _) = measure_with_engine(schedule, point, w, o);
    let summary = summarize(&run.records, &Slo::default());
    Measured {
        records: run.records,
        summary,
        outcome: run.outcome,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn batch_mode_measures_the_schedule() {
    let s = Schedule::default();
    let (b, input, output) = (8usize, 64usize, 20u32);
    let m = measure(
        s.clone(),
        LoadPoint::Batch { batch: b as u32 },
        &workload(input, output, 24),
        &driver_opts(16, 8),
    );
    assert_eq!(m.outcome, Outcome::Completed);
    assert_eq!(m.summary.completed, 16);
    assert!(m.records.iter().all(|r| r.output_tokens() == output as u64));
    let ttft = ms(s.prefill(b, (b * input) as u64));
    let tpot = ms(s.decode(b));
    close("p50 ttft", m.summary.ttft.median, ttft);
    close("p50 tpot", m.summary.tpot.median, tpot);
    close("p50 itl", m.summary.itl.median, tpot);
    close(
        "p50 e2el",
        m.summary.e2el.median,
        ttft + (output - 1) as f64 * tpot,
    );
    // Two back-to-back batches: 2·B·N tokens over two batch lifetimes.
    let per_batch_s = (ttft + (output - 1) as f64 * tpot) / 1e3;
    let truth = (2 * b) as f64 * output as f64 / (2.0 * per_batch_s);
    let got = m.summary.output_throughput.unwrap();
    assert!(
        (got - truth).abs() / truth < 0.03,
        "output throughput {got:.1} vs {truth:.1} tok/s"
    );
    // The engine's own stamps agree with the harness's to well under a millisecond.
    let delta = m.summary.engine_ttft_delta.as_ref().unwrap();
    assert!(delta.median.unwrap().abs() < 1.0, "{delta:?}");
}

#[test]
fn concurrency_mode_refills_as_requests_finish() {
    // Equal lengths finish together, so each refill is a fresh prefill of C requests.
    let s = Schedule::default();
    let (c, input, output) = (4usize, 32usize, 10u32);
    let m = measure(
        s.clone(),
        LoadPoint::Concurrency {
            concurrency: c as u32,
        },
        &workload(input, output, 20),
        &driver_opts(12, 4),
    );
    assert_eq!(m.summary.completed, 12);
    close(
        "p50 ttft",
        m.summary.ttft.median,
        ms(s.prefill(c, (c * input) as u64)),
    );
    close("p50 tpot", m.summary.tpot.median, ms(s.decode(c)));
}

#[test]
fn max_batch_queues_the_rest() {
    let s = Schedule {
        max_batch: 4,
        ..Schedule::default()
    };
    let (input, output) = (16usize, 5u32);
    let m = measure(
        s.clone(),
        LoadPoint::Batch { batch: 8 },
        &workload(input, output, 8),
        &driver_opts(8, 0),
    );
    let ttfts = sorted_ttfts_ms(&m.records);
    let first = ms(s.prefill(4, 4 * input as u64));
    let second = first + (output - 1) as f64 * ms(s.decode(4)) + ms(s.prefill(4, 4 * input as u64));
    close("first wave ttft", Some(ttfts[1]), first);
    close("queued wave ttft", Some(ttfts[6]), second);
}

#[test]
fn rate_mode_follows_the_seeded_arrivals() {
    let s = Schedule::default();
    let (rate, n) = (25.0, 30usize);
    let o = driver_opts(n, 0);
    let m = measure(
        s,
        LoadPoint::Rate {
            rate,
            burstiness: 1.0,
        },
        &workload(16, 4, n),
        &o,
    );
    assert_eq!(m.summary.completed, n);
    let mut recs = m.records.clone();
    recs.sort_by_key(|r| r.id);
    let truth = arrivals::arrival_offsets(rate, 1.0, o.seed, n);
    let t0 = recs[0].intended_ns.unwrap();
    for (r, &off) in recs.iter().zip(&truth) {
        let intended = r.intended_ns.unwrap();
        assert_eq!(intended.since(t0), off, "request {} arrival", r.id);
        // Submitted on time: the driver sleeps in poll until the next arrival.
        let late_ms = r.submit_ns.since(intended) as f64 / 1e6;
        assert!(
            late_ms < 20.0,
            "request {} submitted {late_ms:.2} ms late",
            r.id
        );
    }
    let late: Vec<f64> = recs
        .iter()
        .map(|r| r.submit_ns.since(r.intended_ns.unwrap()) as f64 / 1e6)
        .collect();
    let mut sorted = late.clone();
    sorted.sort_by(f64::total_cmp);
    assert!(
        sorted[n / 2] < 1.0,
        "median submit lateness {:.3} ms",
        sorted[n / 2]
    );
    let delta = m.summary.engine_ttft_delta.as_ref().unwrap();
    assert!(delta.median.unwrap().abs() < 1.0, "{delta:?}");
}

#[test]
fn engine_failure_mid_run_marks_in_flight_requests_failed() {
    // 4 requests × 5 tokens: steps 1..5 finish the first batch; step 7 fails the second.
    let s = Schedule {
        fail_at_step: Some(7),
        ..Schedule::default()
    };
    let m = measure(
        s,
        LoadPoint::Batch { batch: 4 },
        &workload(8, 5, 12),
        &driver_opts(12, 0),
    );
    assert!(
        matches!(m.outcome, Outcome::EngineFailed(ref e) if e.contains("injected failure at step 7"))
    );
    let ok = m.records.iter().filter(|r| r.is_success()).count();
    let failed: Vec<&RequestTrace> = m
        .records
        .iter()
        .filter(|r| r.finish_reason == Some(FinishReason::Error))
        .collect();
    assert_eq!((ok, failed.len()), (4, 4));
    assert!(failed
        .iter()
        .all(|r| r.error.as_deref().unwrap().contains("injected failure")));
    assert_eq!(m.summary.completed, 4);
    assert_eq!(m.summary.failed, 4);
}

#[test]
fn dropped_request_times_out_and_bad_request_fails_alone() {
    let s = Schedule {
        drop_request: Some(1),
        fail_request: Some(2),
        ..Schedule::default()
    };
    let mut o = driver_opts(4, 0);
    o.request_timeout = Duration::from_millis(300);
    let m = measure(
        s,
        LoadPoint::Concurrency { concurrency: 4 },
        &workload(8, 3, 4),
        &o,
    );
    assert_eq!(m.outcome, Outcome::Completed);
    let reason = |id| {
        m.records
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.finish_reason)
    };
    assert_eq!(reason(0), Some(FinishReason::Length));
    assert_eq!(reason(1), Some(FinishReason::Timeout));
    assert_eq!(reason(2), Some(FinishReason::Error));
    assert_eq!(reason(3), Some(FinishReason::Length));
    assert_eq!(m.summary.completed, 2);
    assert_eq!(m.summary.failures.len(), 2);
}

#[test]
fn duration_stop_condition() {
    let s = Schedule::default();
    let mut o = driver_opts(0, 0);
    o.stop = Stop {
        num_requests: None,
        duration: Some(Duration::from_millis(300)),
        ..Stop::requests(0)
    };
    let m = measure(
        s,
        LoadPoint::Concurrency { concurrency: 2 },
        &workload(8, 3, 100),
        &o,
    );
    // Each wave of 2 lasts prefill(2,16)=22.16 + 2·10.2 = 42.56 ms: ~7 waves in 300 ms.
    let n = m.summary.completed;
    assert!((10..=18).contains(&n), "{n} requests in 300 ms");
    let last_submit = m.records.iter().map(|r| r.submit_ns).max().unwrap();
    let first_submit = m.records.iter().map(|r| r.submit_ns).min().unwrap();
    assert!(last_submit.since(first_submit) < 300_000_000 + 60_000_000);
    let _ = MonoNs(0);
}

#[test]
fn hung_engine_times_out_every_request() {
    // From step 3 on nothing progresses: every request times out, none is lost.
    let s = Schedule {
        hang_at_step: Some(3),
        ..Schedule::default()
    };
    let mut o = driver_opts(3, 0);
    o.request_timeout = Duration::from_millis(200);
    let m = measure(s, LoadPoint::Batch { batch: 3 }, &workload(8, 10, 3), &o);
    assert_eq!(m.outcome, Outcome::Completed);
    assert_eq!(m.records.len(), 3);
    assert!(m
        .records
        .iter()
        .all(|r| r.finish_reason == Some(FinishReason::Timeout) && r.output_tokens() == 2));
    assert_eq!(m.summary.failed, 3);
}

#[test]
fn confidence_intervals_cover_a_jittered_schedule_and_are_narrow_without_jitter() {
    // 12 batches of 4 × 20 tokens. Every step lasts its scheduled time × U(0.7, 1.3)
    // (seeded), so the true means are the schedule's; without jitter the rounds agree.
    let (b, input, output, rounds) = (4usize, 64usize, 20u32, 12usize);
    let w = workload(input, output, b * rounds);
    let o = driver_opts(b * rounds, 0);
    let point = LoadPoint::Batch { batch: b as u32 };
    let base = Schedule::default();
    let ttft = ms(base.prefill(b, (b * input) as u64));
    let tpot = ms(base.decode(b));
    let thr = (b as u32 * output) as f64 / ((ttft + (output - 1) as f64 * tpot) / 1e3);

    let jittered = Schedule {
        jitter_pct: 30.0,
        jitter_seed: 7,
        ..base.clone()
    };
    let r = summarize(&measure(jittered, point, &w, &o).records, &Slo::default()).rounds;
    assert_eq!(r.count, rounds);
    for (what, e, truth) in [
        ("mean tpot", &r.mean_tpot_ms, tpot),
        ("mean ttft", &r.mean_ttft_ms, ttft),
        ("output throughput", &r.output_throughput, thr),
    ] {
        let (lo, hi) = (e.ci95_low.unwrap(), e.ci95_high.unwrap());
        assert!(
            lo <= truth && truth <= hi,
            "{what}: truth {truth:.3} outside [{lo:.3}, {hi:.3}] ({e:?})"
        );
        assert_eq!(e.n, rounds, "{what}");
    }
    // ±30 % on every step: the 19 decode steps of a round average out, the one
    // prefill step does not.
    assert!(r.mean_ttft_ms.cv.unwrap() > 0.05, "{:?}", r.mean_ttft_ms);

    // Without jitter every round is the same to within the harness's wakeup latency.
    // One scheduler stall on a shared 2-core machine can still widen an interval, so
    // the clean run gets up to five attempts; all of them wide is a failure.
    let widest = |r: &llm_harness::metrics::Rounds| {
        [&r.mean_tpot_ms, &r.mean_ttft_ms, &r.output_throughput]
            .iter()
            .map(|e| e.ci95_half_width.unwrap() / e.mean.unwrap())
            .fold(0.0f64, f64::max)
    };
    let mut clean = summarize(
        &measure(base.clone(), point, &w, &o).records,
        &Slo::default(),
    )
    .rounds;
    for attempt in 1..5 {
        if widest(&clean) < 0.01 {
            break;
        }
        eprintln!(
            "clean schedule, attempt {attempt} wide ({:.2} %): {clean:?}",
            widest(&clean) * 100.0
        );
        clean = summarize(
            &measure(base.clone(), point, &w, &o).records,
            &Slo::default(),
        )
        .rounds;
    }
    for (what, e, truth) in [
        ("mean tpot", &clean.mean_tpot_ms, tpot),
        ("mean ttft", &clean.mean_ttft_ms, ttft),
        ("output throughput", &clean.output_throughput, thr),
    ] {
        let m = e.mean.unwrap();
        close(what, Some(m), truth);
        let rel = e.ci95_half_width.unwrap() / m;
        assert!(
            rel < 0.01,
            "{what}: clean half-width {:.2} % ({e:?})",
            rel * 100.0
        );
        assert!(!e.is_noisy(), "{what}: {e:?}");
    }
    // The jittered intervals are far wider than the clean ones.
    assert!(widest(&r) > 10.0 * widest(&clean), "{r:?} vs {clean:?}");
}

#[test]
fn harness_cost_matches_the_engines_view_of_it() {
    // The driver's own time (wall - time inside engine calls) must equal what the
    // engine sees from its side: the gaps between one call's return and the next.
    let (run, between) = measure_with_engine(
        Schedule {
            decode_ms: 2.0,
            ..Schedule::default()
        },
        LoadPoint::Batch { batch: 16 },
        &workload(16, 20, 64),
        &driver_opts(64, 0),
    );
    let cost = run.cost.unwrap();
    let engine_view = between.as_secs_f64();
    // The driver also counts its work before the first call (the first trace) and
    // after the last (writing the last batch's requests), which the engine cannot see:
    // about one batch's share of the total. Less than the engine's view would mean the
    // driver lost some of its own time.
    let diff = cost.harness_s - engine_view;
    let one_batch = cost.harness_s / 4.0;
    assert!(
        (-20e-6..=one_batch + 50e-6).contains(&diff),
        "harness {:.1} µs vs engine's view {:.1} µs",
        cost.harness_s * 1e6,
        engine_view * 1e6
    );
    // 4 batches × 20 engine steps and 64 × 20 tokens. A poll that comes late (a busy
    // machine) collects every step that ended meanwhile, so there are at most 80 polls.
    assert_eq!(cost.tokens, 64 * 20);
    assert!((1..=80).contains(&cost.steps), "{cost:?}");
    // The engine sleeps, the harness does not.
    assert!(cost.harness_s < 0.05 * cost.wall_s, "{cost:?}");
    assert!(cost.engine_s > 0.9 * cost.wall_s, "{cost:?}");
}

#[test]
fn overlapped_scheduling_stamps_tokens_when_the_caller_gets_them() {
    // With output_lag, as vLLM's async scheduling on a GPU, step N's tokens come back
    // with step N+1 and the last step's at the next poll. The harness stamps a token
    // when the caller can first use it, so with prefill P, decode step D and n tokens:
    // TTFT = P + D, e2el = P + (n-1)·D, TPOT = (n-2)·D/(n-1), ITL median D; the engine's
    // own first-token stamp stays at P, so engine_ttft_delta shows the one step of lag.
    let s = Schedule {
        output_lag: true,
        ..Schedule::default()
    };
    let (b, input, n) = (4usize, 32usize, 10u32);
    let m = measure(
        s.clone(),
        LoadPoint::Batch { batch: b as u32 },
        &workload(input, n, 8),
        &driver_opts(8, 0),
    );
    assert_eq!(m.outcome, Outcome::Completed);
    assert_eq!(m.summary.completed, 8);
    assert!(m.records.iter().all(|r| r.output_tokens() == n as u64));
    let p = ms(s.prefill(b, (b * input) as u64));
    let d = ms(s.decode(b));
    close("p50 ttft", m.summary.ttft.median, p + d);
    close("p50 e2el", m.summary.e2el.median, p + (n - 1) as f64 * d);
    close(
        "p50 tpot",
        m.summary.tpot.median,
        (n - 2) as f64 * d / (n - 1) as f64,
    );
    close("p50 itl", m.summary.itl.median, d);
    let delta = m.summary.engine_ttft_delta.as_ref().unwrap();
    close("engine ttft delta", delta.median, d);
}

/// 1 ms per uncached prompt token and nothing else in a prefill step, 1 ms per decode
/// step, a prefix cache of blocks of 16.
fn cached_schedule() -> Schedule {
    Schedule {
        prefill_ms: 0.0,
        prefill_ms_per_request: 0.0,
        prefill_us_per_token: 1000.0,
        decode_ms: 1.0,
        decode_ms_per_seq: 0.0,
        prefix_cache_tokens: 1 << 20,
        block_size: 16,
        ..Schedule::default()
    }
}

/// 2 groups × 4 prompts, system prompt 64 tokens, question 24, 2 output tokens, in
/// group order; 1 ms per uncached prompt token, nothing else in a prefill step.
fn shared_prefix() -> (Workload, Schedule) {
    use llm_harness::workload::shared_prefix::{GroupOrder, SharedPrefix};
    use llm_harness::workload::{build, LengthDist, WorkloadSpec};
    let spec = WorkloadSpec::SharedPrefix(SharedPrefix {
        num_groups: 2,
        prompts_per_group: 4,
        system_prompt_len: LengthDist::Fixed { len: 64 },
        question_len: LengthDist::Fixed { len: 24 },
        output_len: LengthDist::Fixed { len: 2 },
        order: GroupOrder::Grouped,
    });
    (build(&spec, None, 8, 0).unwrap(), cached_schedule())
}

#[test]
fn shared_prefix_hits_and_ttft_follow_the_prefix_cache_model() {
    let (w, schedule) = shared_prefix();
    let m = measure(
        schedule,
        LoadPoint::Batch { batch: 1 },
        &w,
        &driver_opts(8, 0),
    );
    let mut recs = m.records;
    recs.sort_by_key(|r| r.id);
    // A group's first prompt computes all 88 tokens; the others find the 4 blocks of
    // the system prompt (the 5th block mixes in their own question).
    let cached: Vec<Option<u32>> = recs.iter().map(|r| r.cached_prompt_tokens).collect();
    let (c0, c1) = (Some(0), Some(64));
    assert_eq!(cached, [c0, c1, c1, c1, c0, c1, c1, c1]);
    let rate = m.summary.prefix_cache_hit_rate.unwrap();
    assert!((rate - 6.0 * 64.0 / (8.0 * 88.0)).abs() < 1e-12, "{rate}");
    assert_eq!(m.summary.cached_prompt_tokens, Some(6 * 64));
    // TTFT is the prefill of the uncached tokens: 88 ms cold, 24 ms on a hit.
    for r in &recs {
        let ttft = r.token_ns[0] as f64 / 1e6;
        let want = if r.cached_prompt_tokens == Some(0) {
            88.0
        } else {
            24.0
        };
        close(&format!("request {} TTFT ms", r.id), Some(ttft), want);
    }
}

#[test]
fn fresh_cache_empties_the_cache_between_points_and_says_so() {
    let (w, schedule) = shared_prefix();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    // Two points on one engine: the second sends the 8 prompts again.
    let second_point = |fresh: bool| {
        let mut engine = CalibrationEngine::new(schedule.clone());
        let mut writer = TraceWriter::create(dir.path()).unwrap();
        let mut driver = Driver::new(&mut engine, &cancel);
        let o = DriverOptions {
            fresh_cache: fresh,
            ..driver_opts(8, 0)
        };
        for i in 0..2 {
            let run = driver
                .run_point(
                    i,
                    LoadPoint::Batch { batch: 1 },
                    &w,
                    &o,
                    &mut writer,
                    &Progress::hidden(),
                )
                .unwrap();
            if i == 1 {
                return run;
            }
        }
        unreachable!()
    };
    let again = second_point(false);
    // Every prompt is cached whole (5 blocks of its 87 reusable tokens), no figure of
    // what --fresh-cache did.
    assert!(again
        .records
        .iter()
        .all(|r| r.cached_prompt_tokens == Some(80)));
    assert!(again.measures.0.iter().all(|m| m.name != "fresh_cache"));
    let fresh = second_point(true);
    let mut cached: Vec<u32> = fresh
        .records
        .iter()
        .filter_map(|r| r.cached_prompt_tokens)
        .collect();
    cached.sort();
    assert_eq!(cached, [0, 0, 64, 64, 64, 64, 64, 64]);
    let m = fresh
        .measures
        .0
        .iter()
        .find(|m| m.name == "fresh_cache")
        .unwrap();
    assert_eq!(m.figures[0].value, Some(1.0));
}

#[test]
fn fresh_cache_says_when_the_engine_has_no_cache_to_empty() {
    let w = workload(8, 2, 4);
    let schedule = Schedule {
        decode_ms: 1.0,
        prefill_ms: 1.0,
        ..Schedule::default()
    };
    let o = DriverOptions {
        fresh_cache: true,
        ..driver_opts(4, 0)
    };
    let (run, _) = measure_with_engine(schedule, LoadPoint::Batch { batch: 2 }, &w, &o);
    let m = run
        .measures
        .0
        .iter()
        .find(|m| m.name == "fresh_cache")
        .unwrap();
    assert_eq!(m.figures[0].value, Some(0.0));
    assert!(m
        .warning
        .as_deref()
        .unwrap()
        .contains("cannot empty its prefix cache"));
    // No prefix cache: nothing reported, not zero.
    assert!(run.records.iter().all(|r| r.cached_prompt_tokens.is_none()));
}

/// `conversations` × `turns`, user messages of 32 ids, 8 output tokens; 1 ms per
/// uncached prompt token, 1 ms per decode step, a prefix cache of blocks of 16.
fn conversations(conversations: usize, turns: u32, think_ms: Option<u32>) -> (Workload, Schedule) {
    use llm_harness::workload::conversations::{ConversationSource, ConversationSpec};
    use llm_harness::workload::{build, LengthDist, WorkloadSpec};
    let spec = WorkloadSpec::Conversations(ConversationSpec {
        turns: LengthDist::Fixed { len: turns },
        think_time_ms: think_ms.map(|len| LengthDist::Fixed { len }),
        source: ConversationSource::Synthetic {
            input_len: LengthDist::Fixed { len: 32 },
            output_len: LengthDist::Fixed { len: 8 },
        },
    });
    let count = conversations * turns as usize;
    (build(&spec, None, count, 0).unwrap(), cached_schedule())
}

fn by_id(mut recs: Vec<RequestTrace>) -> Vec<RequestTrace> {
    recs.sort_by_key(|r| r.id);
    recs
}

#[test]
fn a_conversations_turns_carry_the_engines_replies_and_hit_the_cache_by_turn() {
    let (w, schedule) = conversations(3, 4, None);
    let o = DriverOptions {
        sampling: llm_harness::driver::Sampling {
            return_token_ids: true,
            ..llm_harness::driver::Sampling::EXACT_GREEDY
        },
        ..driver_opts(12, 0)
    };
    let m = measure(schedule, LoadPoint::Concurrency { concurrency: 1 }, &w, &o);
    let recs = by_id(m.records);
    assert_eq!(recs.len(), 12);
    let layout = w.conversations.as_ref().unwrap();
    for (i, r) in recs.iter().enumerate() {
        let (c, k) = (i / 4, (i % 4) as u32);
        assert_eq!(
            (r.conversation, r.turn),
            (Some(c as u64), Some(k)),
            "request {i}"
        );
        // Prompt k = 32 + k·(8 + 32) tokens: the context so far, then the user message.
        assert_eq!(r.input_len, 32 + 40 * k, "request {i}");
        let prompt = r.prompt_token_ids.as_deref().unwrap();
        let user = &w.items[layout.turns(c).start + k as usize].prompt;
        assert!(prompt.ends_with(user));
        if k > 0 {
            let prev = &recs[i - 1];
            let mut want = prev.prompt_token_ids.clone().unwrap();
            want.extend(prev.token_ids.as_deref().unwrap());
            want.extend(user.iter());
            assert_eq!(
                prompt,
                &want[..],
                "turn {k} = turn {} + reply + user",
                k - 1
            );
        }
        // The cache holds the previous context in whole blocks: ⌊40k / 16⌋ · 16.
        let cached = (40 * k / 16) * 16;
        assert_eq!(r.cached_prompt_tokens, Some(cached), "request {i}");
        // The engine's first token ends the prefill of the uncached tokens, 1 ms each
        // (its own stamp: the schedule's truth, whatever the machine's load)...
        let first = r.engine.as_ref().and_then(|e| e.first_token_ns).unwrap();
        close(
            &format!("request {i} engine TTFT ms"),
            Some(first.since(r.submit_ns) as f64 / 1e6),
            f64::from(r.input_len - cached),
        );
    }
    // ...and the harness's TTFT by turn is that, at the median.
    let want_ttft = [32.0, 40.0, 32.0, 40.0];
    for (t, want) in m.summary.by_turn.as_ref().unwrap().iter().zip(want_ttft) {
        close(&format!("turn {} TTFT median", t.turn), t.ttft.median, want);
    }
    let turns = m.summary.by_turn.as_ref().unwrap();
    let rates: Vec<f64> = turns
        .iter()
        .map(|t| t.prefix_cache_hit_rate.unwrap())
        .collect();
    let want = [0.0, 32.0 / 72.0, 80.0 / 112.0, 112.0 / 152.0];
    for (got, want) in rates.iter().zip(want) {
        assert!((got - want).abs() < 1e-12, "{rates:?}");
    }
    let c = m.summary.conversations.as_ref().unwrap();
    assert_eq!((c.count, c.completed), (3, 3));
    assert_eq!(c.turns.mean, Some(4.0));
}

#[test]
fn think_time_delays_each_next_turn_and_is_its_scheduled_arrival() {
    let (w, schedule) = conversations(2, 3, Some(30));
    let m = measure(
        schedule,
        LoadPoint::Concurrency { concurrency: 2 },
        &w,
        &driver_opts(6, 0),
    );
    let recs = by_id(m.records);
    for c in 0..2u64 {
        let turns: Vec<&RequestTrace> = recs.iter().filter(|r| r.conversation == Some(c)).collect();
        assert_eq!(turns.len(), 3);
        assert!(
            turns[0].intended_ns.is_none(),
            "a closed loop's first turn is due at once"
        );
        for k in 1..3 {
            let prev_finish = turns[k - 1].finish_ns.unwrap();
            let intended = turns[k].intended_ns.unwrap();
            assert_eq!(
                intended.0 - prev_finish.0,
                30_000_000,
                "turn {k}: finish + 30 ms"
            );
            let late = turns[k].submit_ns.since(intended) as f64 / 1e6;
            assert!(late < 5.0, "turn {k} submitted {late} ms after it was due");
        }
        let d = m
            .summary
            .conversations
            .as_ref()
            .unwrap()
            .duration
            .max
            .unwrap();
        assert!(d > 0.06, "two think times in each conversation: {d} s");
    }
    // queue_time is each later turn's lateness: small.
    close(
        "queue_time median",
        m.summary.queue_time.unwrap().median,
        0.0,
    );
}

#[test]
fn a_rate_starts_conversations_on_the_arrival_schedule_and_num_requests_cuts_the_last() {
    let (w, schedule) = conversations(4, 3, None);
    let rate = 40.0;
    let m = measure(
        schedule,
        LoadPoint::Rate {
            rate,
            burstiness: 1.0,
        },
        &w,
        &driver_opts(10, 0),
    );
    let recs = by_id(m.records);
    // 10 requests: conversations of 3, 3, 3 and the last cut to 1.
    assert_eq!(recs.len(), 10);
    let per: Vec<usize> = (0..4u64)
        .map(|c| recs.iter().filter(|r| r.conversation == Some(c)).count())
        .collect();
    assert_eq!(per, [3, 3, 3, 1]);
    // Each conversation's first turn is due on the seeded arrival process.
    let firsts: Vec<&RequestTrace> = recs.iter().filter(|r| r.turn == Some(0)).collect();
    let t0 = firsts[0].intended_ns.unwrap();
    let truth = arrivals::arrival_offsets(rate, 1.0, driver_opts(10, 0).seed, 4);
    for (r, &off) in firsts.iter().zip(&truth) {
        assert_eq!(
            r.intended_ns.unwrap().since(t0),
            off,
            "conversation arrival"
        );
    }
    // A turn starts only after the previous one finished.
    for r in &recs {
        if let Some(k @ 1..) = r.turn {
            let prev = recs
                .iter()
                .find(|p| p.conversation == r.conversation && p.turn == Some(k - 1))
                .unwrap();
            assert!(r.submit_ns >= prev.finish_ns.unwrap());
        }
    }
}

#[test]
fn a_batch_of_conversations_ends_before_the_next_starts() {
    let (w, schedule) = conversations(4, 2, None);
    let m = measure(
        schedule,
        LoadPoint::Batch { batch: 2 },
        &w,
        &driver_opts(8, 0),
    );
    let recs = by_id(m.records);
    assert_eq!(recs.len(), 8);
    for r in &recs {
        let c = r.conversation.unwrap();
        assert_eq!(r.round, Some((c / 2) as u32), "conversation {c}");
    }
    let end0 = recs
        .iter()
        .filter(|r| r.round == Some(0))
        .map(|r| r.finish_ns.unwrap())
        .max()
        .unwrap();
    assert!(recs
        .iter()
        .filter(|r| r.round == Some(1))
        .all(|r| r.submit_ns >= end0));
    assert_eq!(m.summary.rounds.count, 2);
}

/// The step sequence of one batch of 6 under `max_batch=4`, 5 tokens each: (prefill
/// requests, prefill tokens, decode requests, running after, waiting after).
const ONE_BATCH: [(u32, u32, u32, u32, u32); 10] = [
    (4, 128, 0, 4, 2),
    (0, 0, 4, 4, 2),
    (0, 0, 4, 4, 2),
    (0, 0, 4, 4, 2),
    (0, 0, 4, 0, 2),
    (2, 64, 0, 2, 0),
    (0, 0, 2, 2, 0),
    (0, 0, 2, 2, 0),
    (0, 0, 2, 2, 0),
    (0, 0, 2, 0, 0),
];

#[test]
fn step_records_follow_the_schedule_and_their_figures_are_its_answer() {
    let s = Schedule {
        max_batch: 4,
        decode_ms_per_seq: 2.0,
        ..Schedule::default()
    };
    let (run, _) = measure_with_engine(
        s.clone(),
        LoadPoint::Batch { batch: 6 },
        &workload(32, 5, 20),
        &driver_opts(12, 1),
    );
    assert_eq!(run.outcome, Outcome::Completed);
    let steps: &[StepRecord] = &run.steps;
    let engine_steps: u32 = steps.iter().map(|r| r.engine.engine_steps.unwrap()).sum();
    assert_eq!(engine_steps, 20, "two batches of 10 engine steps");
    let sum = |f: fn(&StepRecord) -> Option<u32>| -> u32 { steps.iter().filter_map(f).sum() };
    assert_eq!(sum(|r| r.engine.prefill_tokens), 2 * (128 + 64));
    assert_eq!(sum(|r| r.engine.prefill_requests), 12);
    // Every output token is a prefill's first token or a decode step's.
    let output: u64 = run.records.iter().map(|r| r.output_tokens()).sum();
    assert_eq!(
        u64::from(sum(|r| r.engine.decode_tokens) + sum(|r| r.engine.prefill_requests)),
        output
    );
    assert_eq!(sum(|r| Some(r.tokens)) as u64, output);
    assert_eq!(sum(|r| r.engine.preempted), 0);
    if steps.len() != 20 {
        eprintln!(
            "note: {} records for 20 engine steps (the driver fell behind)",
            steps.len()
        );
    }
    // The driver polled once per engine step unless it fell a whole step behind; then
    // the engine folds the steps it caught up on into one record.
    if steps.len() == 20 {
        for (i, r) in steps.iter().enumerate() {
            let (p, pt, d, running, waiting) = ONE_BATCH[i % 10];
            let e = &r.engine;
            let got = (
                e.prefill_requests.unwrap(),
                e.prefill_tokens.unwrap(),
                e.decode_requests.unwrap(),
                e.running.unwrap(),
                e.waiting.unwrap(),
            );
            assert_eq!(got, (p, pt, d, running, waiting), "step {i}");
            assert_eq!(r.step, i as u64);
            // The engine's own time for the step is the schedule's, exactly.
            let truth = if p > 0 {
                s.prefill(p as usize, u64::from(pt))
            } else {
                s.decode(d as usize)
            };
            assert!((e.engine_ms.unwrap() - ms(truth)).abs() < 1e-6, "step {i}");
            // The driver saw the requests it had in flight.
            assert_eq!(r.in_flight, if i % 10 < 5 { 6 } else { 2 }, "step {i}");
        }
    }
    for w in steps.windows(2) {
        assert!(w[1].start_ns >= w[0].end_ns, "polls do not overlap");
        assert_eq!(w[1].gap_ns, w[1].start_ns.since(w[0].end_ns));
    }
    // The figures: decode-only steps at R = 4 and 2 lie on decode_ms + 2·R. Step time
    // is the host's time of the call, which is the schedule's (the engine's own
    // `engine_ms`, exact) plus the host's wakeup at its end; on a loaded machine that
    // excess varies by step, and the line moves by at most its spread (the points sit
    // at R = 2 and 4), which the tolerance adds.
    let f = llm_harness::metrics::steps::summarize(steps, None);
    let mut excess: Vec<f64> = steps
        .iter()
        .filter(|r| {
            r.engine.engine_steps == Some(1)
                && r.engine.prefill_requests == Some(0)
                && r.engine.decode_requests.is_some_and(|d| d > 0)
        })
        .map(|r| r.engine_call_ns() as f64 / 1e6 - r.engine.engine_ms.unwrap())
        .collect();
    excess.sort_by(f64::total_cmp);
    let spread = excess.last().unwrap() - excess[0];
    let (per_seq, fixed) = (
        f.decode_step_ms_per_seq.unwrap(),
        f.decode_step_ms_fixed.unwrap(),
    );
    eprintln!(
        "decode line: per_seq {per_seq:.4} (truth 2), fixed {fixed:.4} (truth {}); host \
         excess over the schedule {:.3}..{:.3} ms",
        s.decode_ms,
        excess[0],
        excess.last().unwrap()
    );
    assert!(
        (per_seq - 2.0).abs() < 0.1 + spread,
        "per_seq {per_seq}, excess {excess:?}"
    );
    let fixed_truth = s.decode_ms + excess[excess.len() / 2];
    assert!(
        (fixed - fixed_truth).abs() < 0.2 + 4.0 * spread,
        "fixed {fixed} vs {fixed_truth}, excess {excess:?}"
    );
    if steps.len() == 20 {
        assert_eq!(f.prefill_step_share, Some(4.0 / 20.0));
    }
    assert_eq!(f.preemptions, Some(0));
    assert_eq!(f.waiting_peak, Some(2));
    // Time-weighted batch: 4 over the first prefill and its decodes, 2 over the rest.
    let (p4, p2) = (ms(s.prefill(4, 128)), ms(s.prefill(2, 64)));
    let (d4, d2) = (4.0 * ms(s.decode(4)), 4.0 * ms(s.decode(2)));
    let truth = (4.0 * (p4 + d4) + 2.0 * (p2 + d2)) / (p4 + d4 + p2 + d2);
    let got = f.batch_mean.unwrap();
    assert!(
        (got - truth).abs() / truth < 0.02,
        "batch mean {got:.3} vs {truth:.3}"
    );
}

/// A GPU stand-in for the step observer: each measured step "takes" 1.5 + its number
/// ms and resolves three steps later, as CUDA events read back without waiting do.
#[derive(Default)]
struct LaggingGpu {
    measured: bool,
    begun: u64,
    handed: u64,
}

impl llm_harness::core::observe::StepObserver for LaggingGpu {
    fn phase_started(&mut self, _label: &str, measured: bool) {
        (self.measured, self.begun, self.handed) = (measured, 0, 0);
    }
    fn before_step(&mut self) {
        self.begun += 1;
    }
    fn times_steps(&self) -> bool {
        self.measured
    }
    fn take_step_gpu_ms(&mut self, wait: bool, out: &mut Vec<(u64, f64)>) {
        let upto = if wait {
            self.begun
        } else {
            self.begun.saturating_sub(3)
        };
        out.extend((self.handed..upto).map(|s| (s, 1.5 + s as f64)));
        self.handed = self.handed.max(upto);
    }
}

#[test]
fn each_step_record_carries_its_gpu_time_once_it_resolves() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let s = Schedule {
        decode_ms: 0.2,
        decode_ms_per_seq: 0.0,
        prefill_ms: 0.2,
        prefill_ms_per_request: 0.0,
        prefill_us_per_token: 0.0,
        ..Schedule::default()
    };
    let mut engine = CalibrationEngine::new(s);
    let cancel = AtomicBool::new(false);
    let mut gpu = LaggingGpu::default();
    let mut writer = TraceWriter::create(dir.path()).unwrap();
    // 400 steps: more than one batch of records handed to the writer.
    let run = Driver::new(&mut engine, &cancel)
        .observe(&mut gpu)
        .run_point(
            0,
            LoadPoint::Batch { batch: 1 },
            &workload(8, 200, 4),
            &driver_opts(2, 1),
            &mut writer,
            &Progress::hidden(),
        )
        .unwrap();
    assert_eq!(run.outcome, Outcome::Completed);
    assert!(run.steps.len() >= 300, "{}", run.steps.len());
    for r in &run.steps {
        assert_eq!(r.gpu_ms, Some(1.5 + r.step as f64), "step {}", r.step);
    }
    assert_eq!(read_steps(&dir.path().join(STEPS_FILE)).unwrap(), run.steps);
}
