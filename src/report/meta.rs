//! `run.json`: what ran, where, when and how, as typed structs. Written before the
//! first request and again after every point, read back by [`super::RunResult::load`].
//!
//! Fields a newer harness adds are optional here, so a directory written before them
//! still loads; a field this harness does not know, or one it needs and cannot find,
//! is an error naming the file and the field, never a silently empty report.

use crate::cli::RunArgs;
use crate::core::measure::Measures;
use crate::driver::{LoadPoint, Sampling, Stop};
use crate::engine::EngineInfo;
use crate::metrics::capacity::SearchSpec;
use crate::metrics::Slo;
use crate::workload::WorkloadSpec;
use serde::{Deserialize, Serialize};

/// The file name.
pub const RUN_FILE: &str = "run.json";

/// The `run.json` layout this harness writes. 1: before `format` existed (read the
/// same way); 2: adds `format`, per-point `measures` and the stop floors; 3: one name
/// per concept (requests carry `input_len` and `output_len`, were `prompt_tokens` and
/// `max_tokens`; the `config` block is snake_case) and the engine's typed `notes`,
/// `cuda`, `compute` and `scheduler`; 4: adds `search` (`harness search`'s dimension,
/// bracket, resolution and pass rule; its probes are the points); 5: adds
/// `driver.realtime_minus_monotonic_ns` and the engine's `scheduler.step_stats_source`
/// (the run also writes `steps.jsonl` and `trace.json`). Formats 1 to 4 still load.
pub const FORMAT: u32 = 5;

fn format_v1() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunMeta {
    #[serde(default = "format_v1")]
    pub format: u32,
    pub harness: HarnessMeta,
    pub command_line: Vec<String>,
    /// RFC 3339, local time.
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub status: RunStatus,
    pub host: HostMeta,
    pub engine: EngineInfo,
    pub model: Option<String>,
    pub tokenizer: Option<String>,
    pub workload: WorkloadMeta,
    /// The load points in run order; a result holds the prefix that ran.
    pub points: Vec<LoadPoint>,
    pub slo: Slo,
    pub driver: DriverMeta,
    /// The effective flags (`config.toml` holds the same, re-runnable).
    pub config: RunArgs,
    /// Per point, by index: measurements beside the trace (the harness's own cost,
    /// the machine's load, why the point stopped).
    #[serde(default)]
    pub measures: Vec<Measures>,
    /// `harness search`: what the search looked for. Its probes are `points`, in the
    /// order they ran; the answer is recomputed from them (see
    /// [`super::RunResult::search`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarnessMeta {
    pub version: String,
    pub git_revision: String,
}

impl HarnessMeta {
    pub fn this() -> HarnessMeta {
        HarnessMeta {
            version: env!("CARGO_PKG_VERSION").into(),
            git_revision: env!("HARNESS_GIT_REV").into(),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still running (or killed before it could say otherwise).
    Running,
    Completed,
    Interrupted,
    EngineFailed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostMeta {
    pub hostname: String,
    pub cpu: String,
    pub cpus: usize,
    pub gpu: String,
    /// The CPU frequency governor, where the kernel shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governor: Option<String>,
    /// 1-minute load average when the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadavg_1m: Option<f64>,
}

impl HostMeta {
    /// This machine, now.
    pub fn this() -> HostMeta {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_else(|| "unknown".into());
        let hostname = crate::engine::layout::hostname().unwrap_or_default();
        HostMeta {
            hostname,
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            gpu: crate::gpu::describe(),
            governor: crate::host::governor(),
            loadavg_1m: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadMeta {
    pub spec: WorkloadSpec,
    /// One line: source, lengths, seed, vocabulary, repetition.
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverMeta {
    /// Warmup requests of each point.
    pub warmup: Vec<usize>,
    /// Exact measured requests of each point (null: by duration or the floors).
    pub num_requests: Vec<Option<usize>>,
    /// Exact submit window per point (`--duration`).
    pub duration_s: Option<f64>,
    /// The floors and the cap, when no exact amount was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rounds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<f64>,
    pub request_timeout_s: f64,
    pub sampling: Sampling,
    pub seed: u64,
    /// How token events are stamped.
    pub clock: String,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC when the run started (ns): a stamp of this
    /// run plus it is wall-clock time, the clock torch.profiler's traces are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime_minus_monotonic_ns: Option<i64>,
}

impl DriverMeta {
    /// The floors as run.json states them (absent when an exact amount was given).
    pub fn set_floors(&mut self, stop: &Stop) {
        if stop.num_requests.is_none() && stop.duration.is_none() {
            self.min_rounds = Some(stop.min_rounds);
            self.min_duration_s = Some(stop.min_duration.as_secs_f64());
            self.max_duration_s = Some(stop.max_duration.as_secs_f64());
        }
    }
}

/// How token events are stamped, stated in every run.json.
pub const CLOCK: &str = "CLOCK_MONOTONIC; step engines stamped by the driver when each poll \
                         returns, stream engines on arrival by the engine's thread";
