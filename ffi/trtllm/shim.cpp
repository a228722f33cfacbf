// See shim.h. Compiled by build.rs (cxx-build) against the Executor headers of
// TRTLLM_ROOT / TRTLLM_INCLUDE_DIR and CUDA_HOME's headers.
#include "llm-harness/ffi/trtllm/shim.h"
#include "llm-harness/src/engine/trtllm/ffi.rs.h"

#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// From tensorrt_llm/plugins/api/tllmPlugin.h (in libnvinfer_plugin_tensorrt_llm), which
// is not among the Executor headers and pulls in TensorRT's own: declared here as the
// library defines it. Registers TensorRT-LLM's TensorRT plugins; an engine that uses
// them cannot be deserialized before this runs.
extern "C" bool initTrtLlmPlugins(void* logger, char const* libNamespace);

namespace tle = tensorrt_llm::executor;

namespace llm_harness::trtllm {

namespace {

// RequestPerfMetrics' time points are steady_clock's, which libstdc++ and libc++ read
// from CLOCK_MONOTONIC on Linux: the harness's clock, so the nanoseconds since the
// epoch are directly comparable with its stamps.
static_assert(std::is_same_v<tle::RequestPerfMetrics::TimePoint::clock, std::chrono::steady_clock>,
              "RequestPerfMetrics must use steady_clock (CLOCK_MONOTONIC)");

std::int64_t to_ns(tle::RequestPerfMetrics::TimePoint t) {
    // A default-constructed time point (the epoch) means "not recorded".
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

tle::SamplingConfig sampling_of(RequestParams const& p) {
    tle::SamplingConfig s;  // beam width 1
    if (p.temperature > 0.0f) {
        s.setTemperature(p.temperature);
        if (p.top_k > 0) s.setTopK(p.top_k);
        if (p.top_p > 0.0f) s.setTopP(p.top_p);
    } else {
        s.setTopK(1);  // greedy
    }
    if (p.has_seed) s.setSeed(p.seed);
    if (p.min_tokens > 0) s.setMinTokens(p.min_tokens);
    return s;
}

ResponseRecord record_of(tle::Response const& r) {
    ResponseRecord rec{};
    rec.request_id = r.getRequestId();
    rec.finish_reason = tle::FinishReason::kNOT_FINISHED;
    if (r.hasError()) {
        rec.has_error = true;
        rec.is_final = true;
        rec.error = rust::String::lossy(r.getErrorMsg());
        return rec;
    }
    tle::Result const& res = r.getResult();
    rec.is_final = res.isFinal;
    if (!res.outputTokenIds.empty()) {
        auto const& beam = res.outputTokenIds.front();
        rec.tokens.reserve(beam.size());
        for (auto t : beam) rec.tokens.push_back(t);
    }
    if (!res.finishReasons.empty()) rec.finish_reason = res.finishReasons.front();
    if (res.requestPerfMetrics) {
        auto const& t = res.requestPerfMetrics->timingMetrics;
        rec.has_perf = true;
        rec.perf.arrival_ns = to_ns(t.arrivalTime);
        rec.perf.first_scheduled_ns = to_ns(t.firstScheduledTime);
        rec.perf.first_token_ns = to_ns(t.firstTokenTime);
        rec.perf.last_token_ns = to_ns(t.lastTokenTime);
    }
    return rec;
}

}  // namespace

Executor::Executor(std::unique_ptr<tle::Executor> inner) : inner_(std::move(inner)) {}

std::uint64_t Executor::enqueue(rust::Slice<std::int32_t const> tokens, RequestParams const& p) const {
    tle::VecTokens ids(tokens.begin(), tokens.end());
    tle::OutputConfig output(/*returnLogProbs=*/false, /*returnContextLogits=*/false,
                             /*returnGenerationLogits=*/false, /*excludeInputFromOutput=*/true,
                             /*returnEncoderOutput=*/false, /*returnPerfMetrics=*/p.return_perf_metrics);
    std::optional<tle::SizeType32> end_id;
    if (p.has_end_id) end_id = p.end_id;
    tle::Request request(std::move(ids), p.max_tokens, p.streaming, sampling_of(p), output, end_id);
    request.setClientId(p.client_id);
    return inner_->enqueueRequest(request);
}

rust::Vec<ResponseRecord> Executor::await_responses(std::uint32_t timeout_ms) const {
    auto responses = inner_->awaitResponses(std::chrono::milliseconds(timeout_ms));
    rust::Vec<ResponseRecord> out;
    out.reserve(responses.size());
    for (auto const& r : responses) out.push_back(record_of(r));
    return out;
}

void Executor::cancel(std::uint64_t request_id) const { inner_->cancelRequest(request_id); }

void Executor::shutdown() const { inner_->shutdown(); }

rust::Vec<rust::String> Executor::latest_iteration_stats() const {
    auto stats = inner_->getLatestIterationStats();
    rust::Vec<rust::String> out;
    out.reserve(stats.size());
    for (auto const& s : stats) out.push_back(rust::String::lossy(tle::JsonSerialization::toJsonStr(s)));
    return out;
}

rust::String trtllm_version() { return rust::String::lossy(tle::version()); }

std::unique_ptr<Executor> create_executor(rust::Str engine_dir, ExecutorSettings const& s) {
    static std::once_flag plugins;
    // A throw leaves the flag unset, so a later load tries again.
    std::call_once(plugins, [] {
        if (!initTrtLlmPlugins(nullptr, "tensorrt_llm")) {
            throw std::runtime_error("initTrtLlmPlugins failed to register TensorRT-LLM's plugins");
        }
    });
    tle::KvCacheConfig kv(s.enable_block_reuse);
    if (s.kv_cache_free_gpu_memory_fraction > 0.0f) kv.setFreeGpuMemoryFraction(s.kv_cache_free_gpu_memory_fraction);
    tle::SchedulerConfig scheduler(s.scheduler_policy);
    // iterStatsMaxIterations stays at its default (1000): the iteration stats the step
    // records read (latest_iteration_stats) are kept between reads.
    tle::ExecutorConfig config(/*maxBeamWidth=*/1, scheduler, kv, s.enable_chunked_context);
    if (s.max_batch_size > 0) config.setMaxBatchSize(s.max_batch_size);
    if (s.max_num_tokens > 0) config.setMaxNumTokens(s.max_num_tokens);
    std::filesystem::path dir(std::string(engine_dir.data(), engine_dir.size()));
    auto inner = std::make_unique<tle::Executor>(dir, tle::ModelType::kDECODER_ONLY, config);
    return std::make_unique<Executor>(std::move(inner));
}

}  // namespace llm_harness::trtllm
