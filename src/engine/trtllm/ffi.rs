//! The cxx bridge to `ffi/trtllm/shim.{h,cpp}`, and the conversions at its edge.
//!
//! Glue only: the shim owns every TensorRT-LLM type; what crosses is scalars, token
//! slices and flat records. TensorRT-LLM's own `FinishReason` and
//! `CapacitySchedulerPolicy` cross as they are: cxx checks each variant's value against
//! the Executor header at build time, so a header that disagrees fails the build. Every
//! call returns `Result`: the shim turns any C++ exception into an `Err`.

use super::options::{Options, SchedulerPolicy};
use crate::core::clock::MonoNs;
use crate::core::request::{EngineStamps, FinishReason as HarnessFinish};
use crate::engine::GenRequest;

#[cxx::bridge(namespace = "llm_harness::trtllm")]
pub(crate) mod bridge {
    /// `tensorrt_llm::executor::FinishReason`, checked against the header.
    #[namespace = "tensorrt_llm::executor"]
    #[repr(i32)]
    #[derive(Debug)]
    enum FinishReason {
        #[cxx_name = "kNOT_FINISHED"]
        NotFinished = 0,
        #[cxx_name = "kEND_ID"]
        EndId = 1,
        #[cxx_name = "kSTOP_WORDS"]
        StopWords = 2,
        #[cxx_name = "kLENGTH"]
        Length = 3,
        #[cxx_name = "kTIMED_OUT"]
        TimedOut = 4,
        #[cxx_name = "kCANCELLED"]
        Cancelled = 5,
    }

    /// `tensorrt_llm::executor::CapacitySchedulerPolicy`, checked against the header.
    #[namespace = "tensorrt_llm::executor"]
    #[repr(i32)]
    #[derive(Debug)]
    enum CapacitySchedulerPolicy {
        #[cxx_name = "kMAX_UTILIZATION"]
        MaxUtilization = 0,
        #[cxx_name = "kGUARANTEED_NO_EVICT"]
        GuaranteedNoEvict = 1,
        #[cxx_name = "kSTATIC_BATCH"]
        StaticBatch = 2,
    }

    /// The executor settings users tune. Zero means "TensorRT-LLM's own default".
    #[derive(Debug)]
    struct ExecutorSettings {
        /// 0: the engine's build-time maximum.
        max_batch_size: i32,
        /// 0: the engine's build-time maximum.
        max_num_tokens: i32,
        /// 0: TensorRT-LLM's default (0.9 of the free GPU memory).
        kv_cache_free_gpu_memory_fraction: f32,
        enable_block_reuse: bool,
        scheduler_policy: CapacitySchedulerPolicy,
        enable_chunked_context: bool,
    }

    /// One request. Optional values travel with a `has_` flag (cxx has no `Option`).
    #[derive(Debug)]
    struct RequestParams {
        /// The harness's request id, set as the Executor's client id (shows in its logs).
        client_id: u64,
        max_tokens: i32,
        /// EOS cannot end the request before this many tokens (SamplingConfig::minTokens).
        min_tokens: i32,
        streaming: bool,
        has_end_id: bool,
        /// -1: no end token (ignore EOS).
        end_id: i32,
        /// 0: greedy (top-k 1).
        temperature: f32,
        /// 0: unset.
        top_k: i32,
        /// 0: unset.
        top_p: f32,
        has_seed: bool,
        seed: u64,
        /// OutputConfig::returnPerfMetrics: the Result carries RequestPerfMetrics.
        return_perf_metrics: bool,
    }

    /// RequestPerfMetrics' time points in nanoseconds on CLOCK_MONOTONIC; 0 = unset.
    #[derive(Debug, Default)]
    struct PerfTimes {
        arrival_ns: i64,
        first_scheduled_ns: i64,
        first_token_ns: i64,
        last_token_ns: i64,
    }

    /// One `tensorrt_llm::executor::Response`, flattened.
    #[derive(Debug)]
    struct ResponseRecord {
        /// The Executor's request id (what `enqueue` returned).
        request_id: u64,
        /// The new tokens of beam 0 (streaming: only those since the last response).
        tokens: Vec<i32>,
        is_final: bool,
        finish_reason: FinishReason,
        /// An error response: `error` holds the Executor's message. Always final.
        has_error: bool,
        error: String,
        has_perf: bool,
        perf: PerfTimes,
    }

    #[namespace = "tensorrt_llm::executor"]
    unsafe extern "C++" {
        include!("llm-harness/ffi/trtllm/shim.h");
        type FinishReason;
        type CapacitySchedulerPolicy;
    }

    unsafe extern "C++" {
        include!("llm-harness/ffi/trtllm/shim.h");

        /// The shim's owner of one `tensorrt_llm::executor::Executor`.
        type Executor;

        /// `tensorrt_llm::executor::version()` of the linked library.
        fn trtllm_version() -> String;

        /// Registers TensorRT-LLM's plugins (once per process) and builds a
        /// decoder-only Executor from an engine directory.
        fn create_executor(
            engine_dir: &str,
            settings: &ExecutorSettings,
        ) -> Result<UniquePtr<Executor>>;

        /// Enqueues a request; returns the Executor's request id.
        fn enqueue(self: &Executor, tokens: &[i32], params: &RequestParams) -> Result<u64>;

        /// Waits up to `timeout_ms` for responses (any request's); empty on timeout.
        fn await_responses(self: &Executor, timeout_ms: u32) -> Result<Vec<ResponseRecord>>;

        fn cancel(self: &Executor, request_id: u64) -> Result<()>;

        /// Blocks until the Executor has stopped (TensorRT-LLM's `shutdown`).
        fn shutdown(self: &Executor) -> Result<()>;

        /// The iteration stats since the last call, one JSON text each
        /// (TensorRT-LLM's own `JsonSerialization::toJsonStr`).
        fn latest_iteration_stats(self: &Executor) -> Result<Vec<String>>;
    }
}

// SAFETY: the shim's Executor holds only a `std::unique_ptr` to TensorRT-LLM's Executor,
// which has no thread affinity: it is created on one thread and used and destroyed on
// others (upstream's gptManagerBenchmark and its Python LLM API worker both do).
unsafe impl Send for bridge::Executor {}

// SAFETY: every method the bridge exposes forwards to an Executor method that TensorRT-LLM
// guards with its own locks (enqueueRequest, awaitResponses, cancelRequest,
// getLatestIterationStats): upstream calls awaitResponses on a dedicated thread while
// other threads enqueue and cancel (gptManagerBenchmark's wait thread, the LLM API's
// await_response_thread). The stand-in Executor in tests/ takes one mutex per call.
unsafe impl Sync for bridge::Executor {}

impl From<SchedulerPolicy> for bridge::CapacitySchedulerPolicy {
    fn from(p: SchedulerPolicy) -> Self {
        match p {
            SchedulerPolicy::MaxUtilization => bridge::CapacitySchedulerPolicy::MaxUtilization,
            SchedulerPolicy::GuaranteedNoEvict => {
                bridge::CapacitySchedulerPolicy::GuaranteedNoEvict
            }
            SchedulerPolicy::StaticBatch => bridge::CapacitySchedulerPolicy::StaticBatch,
        }
    }
}

impl From<&Options> for bridge::ExecutorSettings {
    fn from(o: &Options) -> Self {
        bridge::ExecutorSettings {
            max_batch_size: o.max_batch_size.map_or(0, |v| v as i32),
            max_num_tokens: o.max_num_tokens.map_or(0, |v| v as i32),
            kv_cache_free_gpu_memory_fraction: o.kv_cache_free_gpu_memory_fraction.unwrap_or(0.0),
            enable_block_reuse: o.enable_block_reuse,
            scheduler_policy: o.scheduler_policy.into(),
            enable_chunked_context: o.enable_chunked_context,
        }
    }
}

/// How a final response ended, in the harness's terms; `None` for a response that is
/// not final. A final response with no reason is an engine error: TensorRT-LLM always
/// gives one.
pub(crate) fn finish_of(r: &bridge::ResponseRecord) -> Option<(HarnessFinish, Option<String>)> {
    if r.has_error {
        return Some((HarnessFinish::Error, Some(r.error.clone())));
    }
    if !r.is_final {
        return None;
    }
    Some(match r.finish_reason {
        bridge::FinishReason::EndId | bridge::FinishReason::StopWords => {
            (HarnessFinish::Stop, None)
        }
        bridge::FinishReason::Length => (HarnessFinish::Length, None),
        bridge::FinishReason::TimedOut => (
            HarnessFinish::Timeout,
            Some("TensorRT-LLM timed the request out (allotted time)".into()),
        ),
        bridge::FinishReason::Cancelled => (
            HarnessFinish::Abort,
            Some("cancelled by TensorRT-LLM".into()),
        ),
        other => (
            HarnessFinish::Error,
            Some(format!(
                "TensorRT-LLM sent a final response with finish reason {}",
                other.repr
            )),
        ),
    })
}

fn stamp(ns: i64) -> Option<MonoNs> {
    (ns > 0).then_some(MonoNs(ns as u64))
}

impl From<&bridge::PerfTimes> for EngineStamps {
    /// RequestPerfMetrics → the harness's engine stamps: arrival is when the Executor
    /// queued the request, first scheduled when a batch first took it.
    fn from(p: &bridge::PerfTimes) -> Self {
        EngineStamps {
            queued_ns: stamp(p.arrival_ns),
            scheduled_ns: stamp(p.first_scheduled_ns),
            first_token_ns: stamp(p.first_token_ns),
            last_token_ns: stamp(p.last_token_ns),
            meta: None,
        }
    }
}

/// A harness request as the Executor takes it: always streamed, always with perf
/// metrics. `--ignore-eos` is end id -1 (no end token) plus `min_tokens` = the budget,
/// which the driver sets; otherwise the `end_id` engine arg, if any.
pub(crate) fn request_params(req: &GenRequest, o: &Options) -> bridge::RequestParams {
    let clamp = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let end_id = if req.ignore_eos { Some(-1) } else { o.end_id };
    bridge::RequestParams {
        client_id: req.id,
        max_tokens: clamp(req.output_len),
        min_tokens: clamp(req.min_tokens),
        streaming: true,
        has_end_id: end_id.is_some(),
        end_id: end_id.unwrap_or(-1),
        temperature: req.temperature,
        top_k: o.top_k.map_or(0, clamp),
        top_p: o.top_p.unwrap_or(0.0),
        has_seed: req.seed.is_some(),
        seed: req.seed.unwrap_or(0),
        return_perf_metrics: true,
    }
}
