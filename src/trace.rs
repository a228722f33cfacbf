//! The trace: what happened to every request, as measured by the driver.
//!
//! One [`RequestTrace`] per request: its submit time, every token arrival (with the
//! number of tokens each event carried), its finish and why. Arrival times are kept as
//! nanosecond offsets from submit in two parallel vectors reserved to the request's
//! token budget, so a request costs 12 bytes per token event in memory (8 for the
//! offset, 4 for the count) and nothing for reallocation.
//!
//! Each request is handed to the writer thread in the loop pass it finishes in and is
//! in `requests.jsonl` microseconds later ([`TraceWriter`]), so a crash or Ctrl-C
//! keeps everything already measured.

use crate::core::clock::{thread_cpu_ns, MonoNs};
use crate::core::request::{EngineStamps, FinishReason, RequestId};
use crate::core::step::StepStats;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// The file each finished request is appended to.
pub const REQUESTS_FILE: &str = "requests.jsonl";

/// The file each measured engine step is appended to.
pub const STEPS_FILE: &str = "steps.jsonl";

/// One poll of the engine with requests in flight, as one line of `steps.jsonl`: the
/// driver's own timing of it and, where the engine reports them, what the step held
/// (for step engines a poll is one engine step; for stream engines it is one drain of
/// arrivals and carries no engine fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Index of the sweep point.
    pub point: u32,
    /// The step's number in its point's measured phase, from 0.
    pub step: u64,
    /// When the driver called the engine, and when the call returned (its tokens'
    /// stamp).
    pub start_ns: MonoNs,
    pub end_ns: MonoNs,
    /// The driver's own time since the previous poll returned (or since the phase
    /// started): stamping, tracing, submitting, bookkeeping.
    pub gap_ns: u64,
    /// Requests the driver had in flight when it called.
    pub in_flight: u32,
    /// Token events the call returned, the tokens they carried, and the requests they
    /// finished.
    pub events: u32,
    pub tokens: u32,
    pub finished: u32,
    /// GPU time of the step from CUDA events on the engine's stream (ms), where the
    /// engine runs on a CUDA device and the step was timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_ms: Option<f64>,
    /// The engine's own account of the step.
    #[serde(flatten)]
    pub engine: StepStats,
}

impl StepRecord {
    /// Nanoseconds inside the engine call.
    pub fn engine_call_ns(&self) -> u64 {
        self.end_ns.since(self.start_ns)
    }
}

/// Token events reserved per request up front (64 KiB); longer outputs grow the vector.
const RESERVE_TOKENS: u32 = 8192;

/// One request's life, as one line of `requests.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestTrace {
    pub id: RequestId,
    /// Index of the sweep point (0 for a single run).
    pub point: u32,
    /// Batch mode: which batch of the point the request ran in (rounds are the samples
    /// of the point's confidence intervals). `None` in the other modes, where each
    /// request is its own round.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub round: Option<u32>,
    /// Prompt tokens (`prompt_tokens` in result formats 1 and 2).
    #[serde(alias = "prompt_tokens")]
    pub input_len: u32,
    /// The token budget (`max_tokens` in result formats 1 and 2).
    #[serde(alias = "max_tokens")]
    pub output_len: u32,
    /// When the driver handed the request to the engine.
    pub submit_ns: MonoNs,
    /// Open-loop runs: when the arrival process scheduled the request (≤ submit).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub intended_ns: Option<MonoNs>,
    /// Under `--max-concurrency`: when the slot this request took became free (the
    /// driver's poll that returned the finish of the request before it), present only
    /// when that was after `intended_ns` (the request waited in the client queue).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub slot_free_ns: Option<MonoNs>,
    /// Token event times, nanoseconds after `submit_ns`, non-decreasing.
    pub token_ns: Vec<u64>,
    /// Tokens carried by each event; omitted in the file when every event carried one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub token_counts: Option<Vec<u32>>,
    /// When the request ended, as seen by the driver (`None` while in flight).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finish_ns: Option<MonoNs>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finish_reason: Option<FinishReason>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// The engine's own stamps, for comparison only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub engine: Option<EngineStamps>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub token_ids: Option<Vec<u32>>,
    /// Per generated token, the engine's top-1 minus top-2 logit (with token ids, from
    /// engines that report it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub top2_margins: Option<Vec<f32>>,
    /// Prompt tokens the engine served from its prefix cache, as it reports them;
    /// absent where it does not (run.json's `engine.scheduler` names the source).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cached_prompt_tokens: Option<u32>,
    /// `--dataset conversations`: which conversation of the run the request is a turn
    /// of (numbered from 0 in the order they started, warmup included)...
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub conversation: Option<u64>,
    /// ...and which turn (from 0).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub turn: Option<u32>,
    /// A conversation turn's prompt exactly as sent (with `--save-token-ids`): the
    /// previous turn's prompt, its generated `token_ids`, then this turn's user message.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prompt_token_ids: Option<Vec<u32>>,
}

impl RequestTrace {
    pub fn new(
        id: RequestId,
        point: u32,
        input_len: u32,
        output_len: u32,
        submit_ns: MonoNs,
    ) -> RequestTrace {
        RequestTrace {
            id,
            point,
            round: None,
            input_len,
            output_len,
            submit_ns,
            intended_ns: None,
            slot_free_ns: None,
            // One event per token is the common case; reserving the budget avoids
            // reallocation on the hot path and keeps memory at 8 bytes per token. The
            // reservation is capped: a huge output_len that EOS cuts short must not
            // allocate gigabytes up front.
            token_ns: Vec::with_capacity(output_len.min(RESERVE_TOKENS) as usize),
            token_counts: None,
            finish_ns: None,
            finish_reason: None,
            error: None,
            engine: None,
            token_ids: None,
            top2_margins: None,
            cached_prompt_tokens: None,
            conversation: None,
            turn: None,
            prompt_token_ids: None,
        }
    }

    /// Records `n` tokens arriving at `at`. Zero-token events record nothing.
    pub fn record_tokens(&mut self, n: u32, at: MonoNs) {
        if n == 0 {
            return;
        }
        let off = at.since(self.submit_ns);
        // Stream engines stamp on their own thread; keep the series monotonic even if
        // two threads' stamps interleave by a few nanoseconds.
        let off = self.token_ns.last().map_or(off, |&last| off.max(last));
        match (&mut self.token_counts, n) {
            (None, 1) => {}
            (None, _) => {
                let mut counts = Vec::with_capacity(self.token_ns.capacity());
                counts.resize(self.token_ns.len(), 1);
                counts.push(n);
                self.token_counts = Some(counts);
            }
            (Some(c), _) => c.push(n),
        }
        self.token_ns.push(off);
    }

    pub fn output_tokens(&self) -> u64 {
        match &self.token_counts {
            Some(c) => c.iter().map(|&n| n as u64).sum(),
            None => self.token_ns.len() as u64,
        }
    }

    /// Tokens carried by event `i`.
    pub fn count_at(&self, i: usize) -> u32 {
        self.token_counts.as_ref().map_or(1, |c| c[i])
    }

    pub fn first_token_ns(&self) -> Option<MonoNs> {
        self.token_ns.first().map(|&o| MonoNs(self.submit_ns.0 + o))
    }

    pub fn last_token_ns(&self) -> Option<MonoNs> {
        self.token_ns.last().map(|&o| MonoNs(self.submit_ns.0 + o))
    }

    pub fn is_success(&self) -> bool {
        self.finish_reason.is_some_and(FinishReason::is_success)
    }

    /// Heap bytes held for the token series (the trace's per-token cost).
    pub fn token_heap_bytes(&self) -> usize {
        self.token_ns.capacity() * 8 + self.token_counts.as_ref().map_or(0, |c| c.capacity() * 4)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a request record ({source}); the file may be from another tool or damaged")]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// Appends finished requests to `requests.jsonl`, one line each, on a thread of its
/// own (`trace-writer`), so serializing and writing never sit between two engine
/// calls.
///
/// The driver hands over each loop pass's finished requests in one message
/// ([`append`]); the thread serializes them and hands them to the OS at once (one
/// write per message), so a request is in the file microseconds after it finished and
/// Ctrl-C or SIGTERM keep it. [`sync`] waits until everything appended is in the file
/// and returns the records, in order, with the thread's CPU time since the last sync
/// (the cost of writing, reported beside the driver's own: moved off the timed path,
/// not hidden). Dropping the writer writes what is left and ends the thread.
///
/// [`append`]: TraceWriter::append
/// [`sync`]: TraceWriter::sync
pub struct TraceWriter {
    path: PathBuf,
    tx: Option<mpsc::Sender<ToWriter>>,
    thread: Option<std::thread::JoinHandle<Result<(), TraceError>>>,
}

enum ToWriter {
    Records(Vec<RequestTrace>),
    Steps(Vec<StepRecord>),
    Sync(mpsc::Sender<Synced>),
}

/// What [`TraceWriter::sync`] returns: the records appended since the last sync, now
/// in the file, and what writing them cost the writer thread.
#[derive(Debug, Default)]
pub struct Synced {
    pub records: Vec<RequestTrace>,
    /// The step records appended since the last sync, now in `steps.jsonl`.
    pub steps: Vec<StepRecord>,
    /// CPU seconds of the writer thread since the last sync (serializing and writing).
    pub cpu_s: f64,
}

/// The write buffer: a batch of 64 finished requests of a few hundred tokens each
/// reaches the OS in one or two writes.
const WRITE_BUFFER: usize = 1 << 16;

impl TraceWriter {
    pub fn create(dir: &Path) -> Result<TraceWriter, TraceError> {
        let path = dir.join(REQUESTS_FILE);
        let create = |path: &Path| {
            File::create(path)
                .map(|f| BufWriter::with_capacity(WRITE_BUFFER, f))
                .map_err(|source| TraceError::Write {
                    path: path.to_path_buf(),
                    source,
                })
        };
        let requests = create(&path)?;
        let steps_path = dir.join(STEPS_FILE);
        let steps = create(&steps_path)?;
        let (tx, rx) = mpsc::channel();
        let at = path.clone();
        let thread = std::thread::Builder::new()
            .name("trace-writer".into())
            .spawn(move || serve(Out::new(&at, requests), Out::new(&steps_path, steps), rx))
            .map_err(|source| TraceError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(TraceWriter {
            path,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands `records` (finished requests) to the writer thread, which writes them at
    /// once. An error is the thread's: the file could not be written.
    pub fn append(&mut self, records: Vec<RequestTrace>) -> Result<(), TraceError> {
        if records.is_empty() {
            return Ok(());
        }
        self.send(ToWriter::Records(records))
    }

    /// Hands `steps` (step records) to the writer thread, which appends them to
    /// `steps.jsonl` at once.
    pub fn append_steps(&mut self, steps: Vec<StepRecord>) -> Result<(), TraceError> {
        if steps.is_empty() {
            return Ok(());
        }
        self.send(ToWriter::Steps(steps))
    }

    /// Waits until every appended record is in the file (handed to the OS), and
    /// returns them with the writer's CPU time since the last sync.
    pub fn sync(&mut self) -> Result<Synced, TraceError> {
        let (reply, answer) = mpsc::channel();
        self.send(ToWriter::Sync(reply))?;
        match answer.recv() {
            Ok(synced) => Ok(synced),
            Err(_) => Err(self.failure()),
        }
    }

    fn send(&mut self, msg: ToWriter) -> Result<(), TraceError> {
        match self.tx.as_ref().map(|tx| tx.send(msg)) {
            Some(Ok(())) => Ok(()),
            _ => Err(self.failure()),
        }
    }

    /// The writer thread has stopped: its error.
    fn failure(&mut self) -> TraceError {
        self.tx = None;
        let gone = || std::io::Error::other("the trace-writer thread stopped");
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            _ => TraceError::Write {
                path: self.path.clone(),
                source: gone(),
            },
        }
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One of the writer thread's files.
struct Out<'p> {
    path: &'p Path,
    file: BufWriter<File>,
}

impl<'p> Out<'p> {
    fn new(path: &'p Path, file: BufWriter<File>) -> Out<'p> {
        Out { path, file }
    }

    fn error(&self, source: std::io::Error) -> TraceError {
        TraceError::Write {
            path: self.path.to_path_buf(),
            source,
        }
    }

    /// One JSON line per item, handed to the OS at once. The records hold only
    /// numbers, strings and enums, so the only error is the file's.
    fn lines<T: Serialize>(&mut self, items: &[T]) -> Result<(), TraceError> {
        for item in items {
            serde_json::to_writer(&mut self.file, item)
                .map_err(std::io::Error::from)
                .and_then(|_| self.file.write_all(b"\n"))
                .map_err(|e| self.error(e))?;
        }
        self.file.flush().map_err(|e| self.error(e))
    }
}

/// The writer thread: serializes each message's records straight into its file and
/// flushes it, keeps the records until the next sync.
fn serve(
    mut requests: Out,
    mut steps: Out,
    rx: mpsc::Receiver<ToWriter>,
) -> Result<(), TraceError> {
    idle_priority();
    let mut kept: Vec<RequestTrace> = Vec::new();
    let mut kept_steps: Vec<StepRecord> = Vec::new();
    let mut cpu_at = thread_cpu_ns();
    for msg in rx {
        match msg {
            ToWriter::Records(records) => {
                requests.lines(&records)?;
                if kept.is_empty() {
                    kept = records;
                } else {
                    kept.extend(records);
                }
            }
            ToWriter::Steps(records) => {
                steps.lines(&records)?;
                kept_steps.extend(records);
            }
            ToWriter::Sync(reply) => {
                let now = thread_cpu_ns();
                let _ = reply.send(Synced {
                    records: std::mem::take(&mut kept),
                    steps: std::mem::take(&mut kept_steps),
                    cpu_s: now.saturating_sub(cpu_at) as f64 / 1e9,
                });
                cpu_at = now;
            }
        }
    }
    Ok(())
}

/// Puts the calling thread in SCHED_IDLE: it then runs only on CPU time nothing else
/// wants. Woken by the driver, a normal thread would be placed on the driver's core and
/// preempt it (a long sleeper's wakeup credit), putting the serialization back on the
/// timed path; an idle-class thread never preempts, and under full load still gets a
/// small share, so records reach the file within milliseconds. Best effort: where the
/// call fails the writer runs at normal priority.
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

/// Reads a `requests.jsonl`. A torn last line (the process died mid-write) is skipped;
/// a bad line anywhere else is an error naming it.
pub fn read_requests(path: &Path) -> Result<Vec<RequestTrace>, TraceError> {
    read_lines(path)
}

/// Reads a `steps.jsonl`, by the same rules as [`read_requests`].
pub fn read_steps(path: &Path) -> Result<Vec<StepRecord>, TraceError> {
    read_lines(path)
}

/// Reads a JSONL file of `T` by the rules of [`read_requests`].
pub(crate) fn read_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Vec<T>, TraceError> {
    let file = File::open(path).map_err(|source| TraceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| TraceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let mut out = Vec::with_capacity(lines.len());
    let last = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<T>(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == last => break,
            Err(source) => {
                return Err(TraceError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_token_memory_at_64_by_4096() {
        // Issue target: ≤ 16 bytes per generated token at 64 requests × 4096 tokens.
        let mut total = 0usize;
        for id in 0..64 {
            let mut r = RequestTrace::new(id, 0, 512, 4096, MonoNs(1_000));
            for t in 0..4096u64 {
                r.record_tokens(1, MonoNs(2_000 + t * 10_000));
            }
            assert_eq!(r.output_tokens(), 4096);
            total += r.token_heap_bytes();
        }
        let per_token = total as f64 / (64.0 * 4096.0);
        assert!(per_token <= 16.0, "{per_token} bytes per token");
        assert_eq!(per_token, 8.0);
    }

    #[test]
    fn synced_records_are_in_the_file_and_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TraceWriter::create(dir.path()).unwrap();
        let mut recs = Vec::new();
        for id in 0..5 {
            let mut r = RequestTrace::new(id, 0, 4, 2, MonoNs(1_000));
            r.record_tokens(1, MonoNs(2_000 + id));
            r.finish_reason = Some(FinishReason::Length);
            recs.push(r);
        }
        w.append(recs[..2].to_vec()).unwrap();
        w.append(Vec::new()).unwrap();
        w.append(recs[2..].to_vec()).unwrap();
        let synced = w.sync().unwrap();
        assert_eq!(synced.records, recs);
        assert!(synced.cpu_s > 0.0 && synced.cpu_s < 1.0, "{}", synced.cpu_s);
        // While the writer lives, the file already holds every synced record.
        let path = dir.path().join(REQUESTS_FILE);
        assert_eq!(read_requests(&path).unwrap(), recs);
        // A second sync returns only what came after the first.
        w.append(recs[..1].to_vec()).unwrap();
        assert_eq!(w.sync().unwrap().records, recs[..1]);
        drop(w);
        assert_eq!(read_requests(&path).unwrap().len(), 6);
    }

    #[test]
    fn a_write_error_reaches_the_caller_with_the_path() {
        // requests.jsonl is a link to /dev/full: every write fails with ENOSPC.
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join(REQUESTS_FILE)).unwrap();
        let mut w = TraceWriter::create(dir.path()).unwrap();
        let r = RequestTrace::new(0, 0, 4, 2, MonoNs(1_000));
        w.append(vec![r.clone()]).unwrap();
        let e = w.sync().unwrap_err();
        assert!(
            matches!(&e, TraceError::Write { path, source }
                if path.ends_with(REQUESTS_FILE) && source.raw_os_error() == Some(libc::ENOSPC)),
            "{e:?}"
        );
        // Once failed, it stays failed.
        assert!(w.append(vec![r]).is_err());
    }

    #[test]
    fn multi_token_events_switch_to_counts() {
        let mut r = RequestTrace::new(1, 0, 4, 10, MonoNs(100));
        r.record_tokens(1, MonoNs(150));
        r.record_tokens(0, MonoNs(160));
        r.record_tokens(3, MonoNs(200));
        r.record_tokens(1, MonoNs(190)); // stamped earlier on another thread: clamped
        assert_eq!(r.token_ns, vec![50, 100, 100]);
        assert_eq!(r.token_counts, Some(vec![1, 3, 1]));
        assert_eq!(r.output_tokens(), 5);
        assert_eq!(r.first_token_ns(), Some(MonoNs(150)));
        assert_eq!(r.last_token_ns(), Some(MonoNs(200)));
    }

    #[test]
    fn jsonl_round_trip_and_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TraceWriter::create(dir.path()).unwrap();
        let mut a = RequestTrace::new(7, 2, 16, 3, MonoNs(1_000));
        a.record_tokens(1, MonoNs(2_000));
        a.record_tokens(2, MonoNs(3_000));
        a.finish_ns = Some(MonoNs(3_000));
        a.finish_reason = Some(FinishReason::Length);
        a.engine = Some(EngineStamps {
            first_token_ns: Some(MonoNs(1_900)),
            ..Default::default()
        });
        w.append(vec![a.clone()]).unwrap();
        drop(w);
        let path = dir.path().join(REQUESTS_FILE);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"id\": 8, \"poi")
            .unwrap();
        let back = read_requests(&path).unwrap();
        assert_eq!(back, vec![a]);
    }

    #[test]
    fn bad_line_in_the_middle_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REQUESTS_FILE);
        std::fs::write(&path, "garbage\n{}\n").unwrap();
        let err = read_requests(&path).unwrap_err().to_string();
        assert!(err.contains(":1:"), "{err}");
    }
}
