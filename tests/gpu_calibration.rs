//! The calibration engine on a GPU, against a fake GPU: the engine's spin-kernel
//! launches and the harness's CUDA events go to one fake stream, and the whole path
//! (driver, step observer, event ring, engine) runs as it does on a device. The real
//! device is checked by scripts/gpu_check.sh.
//!
//! The fake runs on the host's monotonic clock: work queued on its stream ends its
//! duration after the later of its launch and the end of the work before it, and an
//! event is reached once the work queued before it has ended.

mod common;

use common::driver_opts;
use llm_harness::core::clock;
use llm_harness::driver::{progress::Progress, Driver, LoadPoint, Outcome};
use llm_harness::engine::calibration::{CalibrationEngine, Schedule};
use llm_harness::engine::{CudaPlacement, Engine};
use llm_harness::gpu::spin::StepDevice;
use llm_harness::gpu::timing::EventClock;
use llm_harness::gpu::Gpu;
use llm_harness::trace::TraceWriter;
use llm_harness::workload::{WorkItem, Workload};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Record(usize),
    Launch(u64),
    Wait,
}

#[derive(Default)]
struct Stream {
    /// When the work queued so far ends (host ns).
    queued_until: u64,
    log: Vec<Op>,
    events: usize,
    /// Reads of an event the fake GPU had not reached (a synchronisation).
    blocking_reads: u32,
    /// Whether the measured phase is over (then reads may wait).
    draining: bool,
}

#[derive(Clone, Default)]
struct FakeGpu(Rc<RefCell<Stream>>);

struct Ev {
    id: usize,
    at: Cell<Option<u64>>,
}

impl EventClock for FakeGpu {
    type Event = Ev;
    fn new_event(&mut self) -> Result<Ev, String> {
        let mut s = self.0.borrow_mut();
        s.events += 1;
        Ok(Ev {
            id: s.events,
            at: Cell::new(None),
        })
    }
    fn record(&mut self, e: &Ev) -> Result<(), String> {
        let mut s = self.0.borrow_mut();
        e.at.set(Some(s.queued_until.max(clock::now().0)));
        s.log.push(Op::Record(e.id));
        Ok(())
    }
    fn is_complete(&self, e: &Ev) -> Result<bool, String> {
        Ok(e.at.get().is_some_and(|t| t <= clock::now().0))
    }
    fn elapsed_ms(&self, a: &Ev, b: &Ev) -> Result<f64, String> {
        let mut s = self.0.borrow_mut();
        if !s.draining && !self.is_complete(b)? {
            s.blocking_reads += 1;
        }
        Ok((b.at.get().unwrap_or(0) as f64 - a.at.get().unwrap_or(0) as f64) / 1e6)
    }
}

impl StepDevice for FakeGpu {
    fn launch(&mut self, ns: u64) -> Result<(), String> {
        let mut s = self.0.borrow_mut();
        s.queued_until = s.queued_until.max(clock::now().0) + ns;
        s.log.push(Op::Launch(ns));
        Ok(())
    }
    fn wait(&mut self) -> Result<(), String> {
        let until = {
            let mut s = self.0.borrow_mut();
            s.log.push(Op::Wait);
            s.queued_until
        };
        clock::sleep_until(clock::MonoNs(until));
        Ok(())
    }
    fn placement(&self) -> (usize, u64) {
        (0, 0xbeef)
    }
    fn describe(&self) -> String {
        "a fake GPU".into()
    }
}

/// Steps of 2 ms (decode) and 3 ms (prefill) at batch 4: 1 prefill and 15 decode
/// steps per round of 4 requests of 16 tokens.
fn schedule() -> Schedule {
    Schedule {
        prefill_ms: 3.0,
        prefill_ms_per_request: 0.0,
        prefill_us_per_token: 0.0,
        decode_ms: 2.0,
        decode_ms_per_seq: 0.0,
        device: Some(0),
        ..Schedule::default()
    }
}

#[test]
fn each_step_launches_its_scheduled_time_between_its_events_and_the_events_read_it() {
    let fake = FakeGpu::default();
    let mut engine = CalibrationEngine::new(schedule()).on_device(Box::new(fake.clone()));
    assert_eq!(
        engine.info().cuda,
        Some(CudaPlacement {
            device: 0,
            stream: Some(0xbeef)
        })
    );
    assert_eq!(engine.info().device, "cuda:0");
    let mut gpu = Gpu::timing(fake.clone(), "the fake stream").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut writer = TraceWriter::create(dir.path()).unwrap();
    let cancel = AtomicBool::new(false);
    let items = (0..8)
        .map(|i| WorkItem {
            prompt: vec![i as u32 + 1; 8].into(),
            output_len: 16,
        })
        .collect();
    let w = Workload::new(items, "test".into());
    let run = Driver::new(&mut engine, &cancel)
        .observe(&mut gpu)
        .run_point(
            0,
            LoadPoint::Batch { batch: 4 },
            &w,
            &driver_opts(8, 0),
            &mut writer,
            &Progress::hidden(),
        )
        .unwrap();
    assert_eq!(run.outcome, Outcome::Completed);
    let s = fake.0.borrow();

    // Every busy step: begin event, one launch of its scheduled time, the wait, end
    // event; nothing else touches the stream.
    let steps: Vec<&[Op]> = s.log.chunks(4).collect();
    assert_eq!(steps.len(), 32, "2 rounds of 1 prefill + 15 decode steps");
    let mut launched = Vec::new();
    for (i, ops) in steps.iter().enumerate() {
        match ops {
            [Op::Record(b), Op::Launch(ns), Op::Wait, Op::Record(e)] if b != e => {
                launched.push(*ns)
            }
            other => panic!("step {i}: {other:?}"),
        }
    }
    let truth: Vec<u64> = (0..2)
        .flat_map(|_| std::iter::once(3_000_000).chain([2_000_000; 15]))
        .collect();
    assert_eq!(launched, truth, "the schedule, exactly");
    assert_eq!(
        s.blocking_reads, 0,
        "no event read before the GPU passed it"
    );

    // Each step record carries the events' time: the launched time plus the host's
    // launch and wake-up, never less; the median within 1 ms + 2 % (known_answer.rs).
    assert_eq!(run.steps.len(), 32);
    let mut excess: Vec<f64> = Vec::new();
    for (r, &ns) in run.steps.iter().zip(&launched) {
        let gpu_ms = r
            .gpu_ms
            .unwrap_or_else(|| panic!("step {} untimed", r.step));
        let truth_ms = ns as f64 / 1e6;
        assert!(gpu_ms >= truth_ms, "step {}: {gpu_ms} < {truth_ms}", r.step);
        excess.push(gpu_ms - truth_ms);
    }
    excess.sort_by(f64::total_cmp);
    assert!(
        excess[16] < 1.0 + 0.02 * 2.0,
        "median excess {} ms",
        excess[16]
    );

    // The point's GPU time: mean of the 32 steps; the host's time brackets it.
    let t = run.measures.get("gpu_time").expect("gpu_time measured");
    let fig = |n: &str| {
        t.figures
            .iter()
            .find(|f| f.key == n)
            .and_then(|f| f.value)
            .unwrap_or(f64::NAN)
    };
    assert_eq!(fig("gpu_steps_timed"), 32.0);
    let mean_truth = truth.iter().sum::<u64>() as f64 / 32.0 / 1e6;
    let mean = fig("gpu_ms_per_step");
    assert!(
        (mean - mean_truth).abs() <= 1.0 + 0.02 * mean_truth,
        "gpu ms/step {mean} vs {mean_truth}"
    );
    assert!(fig("host_ms_per_step") > 0.0);
    // Tokens: the engine's first token is stamped at the end of its prefill's wait.
    for r in &run.records {
        let e = r.engine.as_ref().and_then(|e| e.first_token_ns).unwrap();
        assert!(
            e.0 <= r.submit_ns.0 + r.token_ns[0],
            "engine stamp after the harness's"
        );
    }
}

#[test]
fn a_failing_device_fails_the_step_and_its_requests_with_the_reason() {
    struct Broken;
    impl StepDevice for Broken {
        fn launch(&mut self, _ns: u64) -> Result<(), String> {
            Err("CUDA device 0: launching the spin kernel: CUDA_ERROR_LAUNCH_FAILED".into())
        }
        fn wait(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn placement(&self) -> (usize, u64) {
            (0, 1)
        }
        fn describe(&self) -> String {
            "broken".into()
        }
    }
    let mut engine = CalibrationEngine::new(schedule()).on_device(Box::new(Broken));
    let dir = tempfile::tempdir().unwrap();
    let mut writer = TraceWriter::create(dir.path()).unwrap();
    let cancel = AtomicBool::new(false);
    let w = Workload::new(
        vec![WorkItem {
            prompt: vec![1; 4].into(),
            output_len: 4,
        }],
        "test".into(),
    );
    let run = Driver::new(&mut engine, &cancel)
        .run_point(
            0,
            LoadPoint::Batch { batch: 1 },
            &w,
            &driver_opts(1, 0),
            &mut writer,
            &Progress::hidden(),
        )
        .unwrap();
    assert!(
        matches!(run.outcome, Outcome::EngineFailed(ref m) if m.contains("CUDA_ERROR_LAUNCH_FAILED"))
    );
    assert!(run.records[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("CUDA_ERROR_LAUNCH_FAILED")));
}

/// Without a GPU the device check says so in one line and runs nothing (exit 3):
/// not even its output folder is made.
#[test]
fn the_device_check_needs_a_gpu_and_runs_nothing_without_one() {
    if std::path::Path::new("/proc/driver/nvidia/gpus").exists() {
        eprintln!("skipped: this machine has an NVIDIA driver; run scripts/gpu_check.sh itself");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("check");
    let o = std::process::Command::new("scripts/gpu_check.sh")
        .arg(env!("CARGO_BIN_EXE_harness"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("needs an NVIDIA GPU and its driver"), "{err}");
    assert!(o.stdout.is_empty());
    assert!(!out.exists());
}
