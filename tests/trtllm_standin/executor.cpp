// llm-harness TEST STAND-IN for TensorRT-LLM's C++ Executor. NOT TensorRT-LLM.
//
// Defines the subset of tensorrt_llm::executor that ffi/trtllm/shim.cpp uses, against
// the same Executor headers the shim is compiled with (TensorRT-LLM 1.2's), so the
// shim, the cxx bridge and the Rust engine run unchanged on a machine without a GPU.
// scripts/setup.d/trtllm_standin.sh builds it into a TRTLLM_ROOT-shaped tree as
// lib/libtensorrt_llm.so; tests/trtllm_standin.rs drives it. Its version() says
// "llm-harness stand-in", and the harness labels every run on it as an instrument.
//
// Instead of a model it plays a schedule read from ENGINE_DIR/standin.cfg (key=value
// lines); without that file the constructor throws, so a real engine directory never
// "runs" here. Every request streams one token per response on its own clock:
//   token k (1-based) is due at start + prefill_ms + (k-1)*decode_ms,
// where start is its enqueue time, or, when max_batch_size requests are already
// active, the due time of the last token of the request whose slot it takes.
// Greedy requests (top-k 1) echo their prompt (token k = prompt[(k-1) % len]); sampled
// ones draw from a hash of (seed, top-k, top-p, temperature, k).
//
// Faults, keyed on a request's first prompt token:
//   error_token        the request gets an error Response at its first token's time
//   error_client       likewise the request whose client id (the harness's request id) is this
//   hang_token         the request never produces a token (until cancelled)
//   throw_token        enqueueRequest throws TensorRT-LLM's TllmException
//   throw_other_token  enqueueRequest throws an int (not a std::exception)
//   await_throw_token  awaitResponses throws std::runtime_error at its first token
// eos_at=K: a request with an end id >= 0 ends with that id as token K (kEND_ID),
// unless its minTokens is above K.
// Iteration stats (getLatestIterationStats): the tokens due by an awaitResponses call
// are cut into iterations, each giving every request at most one token (a request due
// again starts the next one), as a real step does. Each iteration reports, from this
// schedule: the requests active and queued after it, the context requests (first token)
// and their prompt tokens, the generation requests (later tokens), the requests it
// completed, its span (iterLatencyMS: from the earliest start of its tokens' work to its
// last token) and a KV cache of kv_blocks blocks of tokens_per_block tokens, each active
// request holding ceil((prompt + produced) / tokens_per_block). A batch of cancellations
// alone is one iteration without tokens.
// expect_*: the constructor checks the ExecutorConfig it receives and throws on a
// mismatch (max_batch_size, max_num_tokens, kv_fraction, block_reuse,
// scheduler_policy, chunked_context; -1 = must be unset).
#include "tensorrt_llm/common/tllmException.h"
#include "tensorrt_llm/executor/executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tle = tensorrt_llm::executor;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------
// TensorRT-LLM's exception type, so the shim sees what the real library throws.
TRTLLM_NAMESPACE_BEGIN
namespace common {
TllmException::TllmException(char const* file, std::size_t line, char const* msg)
    : std::runtime_error(std::string(msg) + " (" + file + ":" + std::to_string(line) + ")"), mNbFrames(0) {}
TllmException::~TllmException() noexcept = default;
}  // namespace common
TRTLLM_NAMESPACE_END

namespace tensorrt_llm::executor {

char const* version() noexcept { return "llm-harness stand-in for tensorrt_llm::executor 1.2 (not TensorRT-LLM)"; }

// ---------------------------------------------------------------------------------
// Value classes: constructors and the accessors the shim and this file use.

SamplingConfig::SamplingConfig(SizeType32 beamWidth, std::optional<SizeType32> const& topK,
                               std::optional<FloatType> const& topP, std::optional<FloatType> const& topPMin,
                               std::optional<TokenIdType> const& topPResetIds,
                               std::optional<FloatType> const& topPDecay, std::optional<RandomSeedType> const& seed,
                               std::optional<FloatType> const& temperature, std::optional<SizeType32> const& minTokens,
                               std::optional<FloatType> const& beamSearchDiversityRate,
                               std::optional<FloatType> const& repetitionPenalty,
                               std::optional<FloatType> const& presencePenalty,
                               std::optional<FloatType> const& frequencyPenalty,
                               std::optional<FloatType> const& lengthPenalty,
                               std::optional<SizeType32> const& earlyStopping,
                               std::optional<SizeType32> const& noRepeatNgramSize,
                               std::optional<SizeType32> const& numReturnSequences,
                               std::optional<FloatType> const& minP,
                               std::optional<std::vector<SizeType32>> const& beamWidthArray)
    : mBeamWidth(beamWidth),
      mTopK(topK),
      mTopP(topP),
      mTopPMin(topPMin),
      mTopPResetIds(topPResetIds),
      mTopPDecay(topPDecay),
      mSeed(seed),
      mTemperature(temperature),
      mMinTokens(minTokens),
      mBeamSearchDiversityRate(beamSearchDiversityRate),
      mRepetitionPenalty(repetitionPenalty),
      mPresencePenalty(presencePenalty),
      mFrequencyPenalty(frequencyPenalty),
      mLengthPenalty(lengthPenalty),
      mEarlyStopping(earlyStopping),
      mNoRepeatNgramSize(noRepeatNgramSize),
      mNumReturnSequences(numReturnSequences),
      mNumReturnBeams(beamWidth),
      mMinP(minP),
      mBeamWidthArray(beamWidthArray) {}

std::optional<SizeType32> SamplingConfig::getTopK() const { return mTopK; }
std::optional<FloatType> SamplingConfig::getTopP() const { return mTopP; }
std::optional<RandomSeedType> SamplingConfig::getSeed() const { return mSeed; }
std::optional<FloatType> SamplingConfig::getTemperature() const { return mTemperature; }
std::optional<SizeType32> SamplingConfig::getMinTokens() const { return mMinTokens; }
void SamplingConfig::setTopK(std::optional<SizeType32> const& topK) { mTopK = topK; }
void SamplingConfig::setTopP(std::optional<FloatType> const& topP) { mTopP = topP; }
void SamplingConfig::setSeed(std::optional<RandomSeedType> const& seed) { mSeed = seed; }
void SamplingConfig::setTemperature(std::optional<FloatType> const& temperature) { mTemperature = temperature; }
void SamplingConfig::setMinTokens(std::optional<SizeType32> const& minTokens) { mMinTokens = minTokens; }

OutputConfig::OutputConfig(bool returnLogProbs, bool returnContextLogits, bool returnGenerationLogits,
                           bool excludeInputFromOutput, bool returnEncoderOutput, bool returnPerfMetrics,
                           std::optional<std::vector<AdditionalModelOutput>> additionalModelOutputs)
    : returnLogProbs(returnLogProbs),
      returnContextLogits(returnContextLogits),
      returnGenerationLogits(returnGenerationLogits),
      excludeInputFromOutput(excludeInputFromOutput),
      returnEncoderOutput(returnEncoderOutput),
      returnPerfMetrics(returnPerfMetrics),
      additionalModelOutputs(std::move(additionalModelOutputs)) {}

KvCacheConfig::KvCacheConfig(bool enableBlockReuse, std::optional<SizeType32> const& maxTokens,
                             std::optional<std::vector<SizeType32>> const& maxAttentionWindowVec,
                             std::optional<SizeType32> const& sinkTokenLength,
                             std::optional<FloatType> const& freeGpuMemoryFraction,
                             std::optional<size_t> const& hostCacheSize, bool onboardBlocks,
                             std::optional<FloatType> const& crossKvCacheFraction,
                             std::optional<RetentionPriority> secondaryOffloadMinPriority, size_t eventBufferMaxSize,
                             bool enablePartialReuse, bool copyOnPartialReuse, bool useUvm,
                             SizeType32 attentionDpEventsGatherPeriodMs,
                             std::optional<tensorrt_llm::runtime::RuntimeDefaults> const& /*runtimeDefaults*/,
                             uint64_t const& maxGpuTotalBytes)
    : mEnableBlockReuse(enableBlockReuse),
      mMaxTokens(maxTokens),
      mMaxAttentionWindowVec(maxAttentionWindowVec),
      mSinkTokenLength(sinkTokenLength),
      mFreeGpuMemoryFraction(freeGpuMemoryFraction),
      mCrossKvCacheFraction(crossKvCacheFraction),
      mHostCacheSize(hostCacheSize),
      mOnboardBlocks(onboardBlocks),
      mSecondaryOffloadMinPriority(secondaryOffloadMinPriority),
      mEventBufferMaxSize(eventBufferMaxSize),
      mEnablePartialReuse(enablePartialReuse),
      mCopyOnPartialReuse(copyOnPartialReuse),
      mUseUvm(useUvm),
      mAttentionDpEventsGatherPeriodMs(attentionDpEventsGatherPeriodMs),
      mMaxGpuTotalBytes(maxGpuTotalBytes) {}

bool KvCacheConfig::getEnableBlockReuse() const { return mEnableBlockReuse; }
std::optional<FloatType> KvCacheConfig::getFreeGpuMemoryFraction() const { return mFreeGpuMemoryFraction; }
void KvCacheConfig::setFreeGpuMemoryFraction(FloatType f) { mFreeGpuMemoryFraction = f; }

SchedulerConfig::SchedulerConfig(CapacitySchedulerPolicy capacitySchedulerPolicy,
                                 std::optional<ContextChunkingPolicy> contextChunkingPolicy,
                                 std::optional<DynamicBatchConfig> dynamicBatchConfig)
    : mCapacitySchedulerPolicy(capacitySchedulerPolicy),
      mContextChunkingPolicy(contextChunkingPolicy),
      mDynamicBatchConfig(std::move(dynamicBatchConfig)) {}

CapacitySchedulerPolicy SchedulerConfig::getCapacitySchedulerPolicy() const { return mCapacitySchedulerPolicy; }

ExtendedRuntimePerfKnobConfig::ExtendedRuntimePerfKnobConfig(bool multiBlockMode, bool enableContextFMHAFP32Acc,
                                                             bool cudaGraphMode, SizeType32 cudaGraphCacheSize)
    : mMultiBlockMode(multiBlockMode),
      mEnableContextFMHAFP32Acc(enableContextFMHAFP32Acc),
      mCudaGraphMode(cudaGraphMode),
      mCudaGraphCacheSize(cudaGraphCacheSize) {}

ExecutorConfig::ExecutorConfig(
    SizeType32 maxBeamWidth, SchedulerConfig schedulerConfig, KvCacheConfig kvCacheConfig, bool enableChunkedContext,
    bool normalizeLogProbs, SizeType32 iterStatsMaxIterations, SizeType32 requestStatsMaxIterations,
    BatchingType batchingType, std::optional<SizeType32> maxBatchSize, std::optional<SizeType32> maxNumTokens,
    std::optional<ParallelConfig> parallelConfig, std::optional<PeftCacheConfig> const& peftCacheConfig,
    std::optional<LogitsPostProcessorConfig> logitsPostProcessorConfig, std::optional<DecodingConfig> decodingConfig,
    bool useGpuDirectStorage, float gpuWeightsPercent, std::optional<SizeType32> maxQueueSize,
    ExtendedRuntimePerfKnobConfig const& extendedRuntimePerfKnobConfig, std::optional<DebugConfig> debugConfig,
    SizeType32 recvPollPeriodMs, uint64_t maxSeqIdleMicroseconds,
    std::optional<SpeculativeDecodingConfig> specDecConfig, std::optional<GuidedDecodingConfig> guidedDecodingConfig,
    std::optional<std::vector<AdditionalModelOutput>> additionalModelOutputs,
    std::optional<CacheTransceiverConfig> cacheTransceiverConfig, bool gatherGenerationLogits,
    bool promptTableOffloading, bool enableTrtOverlap, bool failFastOnAttentionWindowTooLarge)
    : mMaxBeamWidth(maxBeamWidth),
      mSchedulerConfig(std::move(schedulerConfig)),
      mKvCacheConfig(std::move(kvCacheConfig)),
      mEnableChunkedContext(enableChunkedContext),
      mNormalizeLogProbs(normalizeLogProbs),
      mIterStatsMaxIterations(iterStatsMaxIterations),
      mRequestStatsMaxIterations(requestStatsMaxIterations),
      mBatchingType(batchingType),
      mMaxBatchSize(maxBatchSize),
      mMaxNumTokens(maxNumTokens),
      mParallelConfig(std::move(parallelConfig)),
      mPeftCacheConfig(peftCacheConfig),
      mLogitsPostProcessorConfig(std::move(logitsPostProcessorConfig)),
      mDecodingConfig(std::move(decodingConfig)),
      mUseGpuDirectStorage(useGpuDirectStorage),
      mGpuWeightsPercent(gpuWeightsPercent),
      mMaxQueueSize(maxQueueSize),
      mExtendedRuntimePerfKnobConfig(extendedRuntimePerfKnobConfig),
      mDebugConfig(std::move(debugConfig)),
      mRecvPollPeriodMs(recvPollPeriodMs),
      mMaxSeqIdleMicroseconds(maxSeqIdleMicroseconds),
      mSpeculativeDecodingConfig(std::move(specDecConfig)),
      mGuidedDecodingConfig(std::move(guidedDecodingConfig)),
      mAdditionalModelOutputs(std::move(additionalModelOutputs)),
      mCacheTransceiverConfig(std::move(cacheTransceiverConfig)),
      mGatherGenerationLogits(gatherGenerationLogits),
      mPromptTableOffloading(promptTableOffloading),
      mEnableTrtOverlap(enableTrtOverlap),
      mFailFastOnAttentionWindowTooLarge(failFastOnAttentionWindowTooLarge) {}

SchedulerConfig ExecutorConfig::getSchedulerConfig() const { return mSchedulerConfig; }
KvCacheConfig ExecutorConfig::getKvCacheConfig() const { return mKvCacheConfig; }
bool ExecutorConfig::getEnableChunkedContext() const { return mEnableChunkedContext; }
SizeType32 ExecutorConfig::getIterStatsMaxIterations() const { return mIterStatsMaxIterations; }
std::optional<SizeType32> ExecutorConfig::getMaxBatchSize() const { return mMaxBatchSize; }
std::optional<SizeType32> ExecutorConfig::getMaxNumTokens() const { return mMaxNumTokens; }
void ExecutorConfig::setMaxBatchSize(SizeType32 v) { mMaxBatchSize = v; }
void ExecutorConfig::setMaxNumTokens(SizeType32 v) { mMaxNumTokens = v; }

// Result holds an optional ContextPhaseParams (disaggregated serving); never engaged here.
ContextPhaseParams::ContextPhaseParams(ContextPhaseParams const& o)
    : mReqId(o.mReqId), mFirstGenTokens(o.mFirstGenTokens), mState(nullptr, deleter), mDraftTokens(o.mDraftTokens) {}
ContextPhaseParams::ContextPhaseParams(ContextPhaseParams&& o) noexcept = default;
ContextPhaseParams& ContextPhaseParams::operator=(ContextPhaseParams const& o) {
    mReqId = o.mReqId;
    mFirstGenTokens = o.mFirstGenTokens;
    mDraftTokens = o.mDraftTokens;
    return *this;
}
ContextPhaseParams& ContextPhaseParams::operator=(ContextPhaseParams&& o) noexcept = default;
ContextPhaseParams::~ContextPhaseParams() = default;
void ContextPhaseParams::deleter(void const*) {}

// ---------------------------------------------------------------------------------
// Request and Response (pimpl classes).

class Request::Impl {
public:
    VecTokens tokens;
    SizeType32 maxTokens;
    bool streaming;
    SamplingConfig sampling;
    OutputConfig output;
    std::optional<SizeType32> endId;
    std::optional<IdType> clientId;
};

Request::Request(VecTokens inputTokenIds, SizeType32 maxTokens, bool streaming, SamplingConfig const& samplingConfig,
                 OutputConfig const& outputConfig, std::optional<SizeType32> const& endId,
                 std::optional<SizeType32> const&, std::optional<std::vector<SizeType32>>,
                 std::optional<std::list<VecTokens>>, std::optional<std::list<VecTokens>>, std::optional<Tensor>,
                 std::optional<ExternalDraftTokensConfig>, std::optional<PromptTuningConfig>,
                 std::optional<MultimodalInput>, std::optional<Tensor>, std::optional<MropeConfig>,
                 std::optional<LoraConfig>, std::optional<LookaheadDecodingConfig>,
                 std::optional<KvCacheRetentionConfig>, std::optional<std::string>,
                 std::optional<LogitsPostProcessor>, std::optional<VecTokens>, std::optional<IdType> clientId, bool,
                 PriorityType, RequestType, std::optional<ContextPhaseParams>, std::optional<Tensor>,
                 std::optional<SizeType32>, std::optional<Tensor>, SizeType32, std::optional<EagleConfig>,
                 std::optional<Tensor>, std::optional<GuidedDecodingParams>, std::optional<SizeType32>,
                 std::optional<MillisecondsType>, std::optional<CacheSaltIDType>)
    : mImpl(std::make_unique<Impl>(
          Impl{std::move(inputTokenIds), maxTokens, streaming, samplingConfig, outputConfig, endId, clientId})) {}
Request::Request(Request const& o) : mImpl(std::make_unique<Impl>(*o.mImpl)) {}
Request::Request(Request&& o) noexcept = default;
Request& Request::operator=(Request const& o) {
    mImpl = std::make_unique<Impl>(*o.mImpl);
    return *this;
}
Request& Request::operator=(Request&& o) noexcept = default;
Request::~Request() = default;
void Request::setClientId(IdType clientId) { mImpl->clientId = clientId; }
VecTokens Request::getInputTokenIds() const { return mImpl->tokens; }
SizeType32 Request::getMaxTokens() const { return mImpl->maxTokens; }
bool Request::getStreaming() const { return mImpl->streaming; }
SamplingConfig Request::getSamplingConfig() const { return mImpl->sampling; }
OutputConfig Request::getOutputConfig() const { return mImpl->output; }
std::optional<SizeType32> Request::getEndId() const { return mImpl->endId; }
std::optional<IdType> Request::getClientId() const { return mImpl->clientId; }

class Response::Impl {
public:
    IdType requestId;
    std::optional<std::string> error;
    std::optional<Result> result;
    std::optional<IdType> clientId;
};

Response::Response(IdType requestId, std::string errorMsg, std::optional<IdType> clientId)
    : mImpl(std::make_unique<Impl>(Impl{requestId, std::move(errorMsg), std::nullopt, clientId})) {}
Response::Response(IdType requestId, Result result, std::optional<IdType> clientId)
    : mImpl(std::make_unique<Impl>(Impl{requestId, std::nullopt, std::move(result), clientId})) {}
Response::~Response() = default;
Response::Response(Response const& o) : mImpl(std::make_unique<Impl>(*o.mImpl)) {}
Response::Response(Response&& o) noexcept = default;
Response& Response::operator=(Response const& o) {
    mImpl = std::make_unique<Impl>(*o.mImpl);
    return *this;
}
Response& Response::operator=(Response&& o) noexcept = default;
IdType Response::getRequestId() const { return mImpl->requestId; }
std::optional<IdType> Response::getClientId() const { return mImpl->clientId; }
bool Response::hasError() const { return mImpl->error.has_value(); }
std::string const& Response::getErrorMsg() const {
    if (!mImpl->error) throw std::runtime_error("stand-in: getErrorMsg on a response without an error");
    return *mImpl->error;
}
Result const& Response::getResult() const {
    if (!mImpl->result) throw std::runtime_error("stand-in: getResult on an error response");
    return *mImpl->result;
}

// ---------------------------------------------------------------------------------
// The Executor: a schedule instead of a model.

namespace {

struct Schedule {
    double prefill_ms = 20.0;
    double decode_ms = 10.0;
    long error_token = -1, hang_token = -1, throw_token = -1, throw_other_token = -1, await_throw_token = -1;
    long error_client = -1;
    int eos_at = 0;
    int kv_blocks = 1000, tokens_per_block = 32;
    std::map<std::string, double> expect;
};

Schedule read_schedule(std::filesystem::path const& dir) {
    std::ifstream in(dir / "standin.cfg");
    if (!in) {
        throw std::runtime_error("llm-harness stand-in for tensorrt_llm::executor (not TensorRT-LLM): " +
                                 (dir / "standin.cfg").string() +
                                 " not found; this build is linked against the test stand-in, not a real "
                                 "TensorRT-LLM (rebuild with TRTLLM_ROOT set to a TensorRT-LLM 1.2.x installation)");
    }
    Schedule s;
    std::string line;
    while (std::getline(in, line)) {
        auto eq = line.find('=');
        if (line.empty() || line[0] == '#' || eq == std::string::npos) continue;
        std::string k = line.substr(0, eq);
        double v = std::stod(line.substr(eq + 1));
        if (k == "prefill_ms") s.prefill_ms = v;
        else if (k == "decode_ms") s.decode_ms = v;
        else if (k == "error_token") s.error_token = static_cast<long>(v);
        else if (k == "error_client") s.error_client = static_cast<long>(v);
        else if (k == "hang_token") s.hang_token = static_cast<long>(v);
        else if (k == "throw_token") s.throw_token = static_cast<long>(v);
        else if (k == "throw_other_token") s.throw_other_token = static_cast<long>(v);
        else if (k == "await_throw_token") s.await_throw_token = static_cast<long>(v);
        else if (k == "eos_at") s.eos_at = static_cast<int>(v);
        else if (k == "kv_blocks") s.kv_blocks = static_cast<int>(v);
        else if (k == "tokens_per_block") s.tokens_per_block = std::max(1, static_cast<int>(v));
        else if (k.rfind("expect_", 0) == 0) s.expect[k.substr(7)] = v;
        else throw std::runtime_error("stand-in: unknown key in standin.cfg: " + k);
    }
    return s;
}

void check_config(Schedule const& s, ExecutorConfig const& c) {
    auto opt = [](auto o) { return o ? static_cast<double>(*o) : -1.0; };
    auto kv = c.getKvCacheConfig();
    std::map<std::string, double> got = {
        {"max_batch_size", opt(c.getMaxBatchSize())},
        {"max_num_tokens", opt(c.getMaxNumTokens())},
        {"kv_fraction", opt(kv.getFreeGpuMemoryFraction())},
        {"block_reuse", kv.getEnableBlockReuse() ? 1.0 : 0.0},
        {"scheduler_policy", static_cast<double>(c.getSchedulerConfig().getCapacitySchedulerPolicy())},
        {"chunked_context", c.getEnableChunkedContext() ? 1.0 : 0.0},
    };
    for (auto const& [k, want] : s.expect) {
        auto it = got.find(k);
        if (it == got.end()) throw std::runtime_error("stand-in: unknown expect_" + k);
        if (std::abs(it->second - want) > 1e-6) {
            std::ostringstream m;
            m << "stand-in: ExecutorConfig " << k << " is " << it->second << ", standin.cfg expects " << want;
            throw std::runtime_error(m.str());
        }
    }
}

Clock::duration ms(double v) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(v));
}

std::uint64_t mix(std::uint64_t x) {  // splitmix64
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

}  // namespace

class Executor::Impl {
public:
    // A request as the stand-in keeps it, read through Request's public getters.
    struct Active {
        IdType id;
        VecTokens tokens;
        SizeType32 maxTokens;
        SamplingConfig sampling;
        OutputConfig output;
        std::optional<SizeType32> endId;
        std::optional<IdType> clientId;
        Clock::time_point arrival, start, first_token, next_due;
        SizeType32 produced = 0;
    };

    Impl(std::filesystem::path const& dir, ExecutorConfig const& config)
        : config_(config), schedule_(read_schedule(dir)) {
        check_config(schedule_, config_);
    }

    IdType enqueue(Request const& r) {
        auto tokens = r.getInputTokenIds();
        if (tokens.empty()) {
            throw tensorrt_llm::common::TllmException(__FILE__, __LINE__, "stand-in: empty prompt");
        }
        long first = tokens.front();
        if (first == schedule_.throw_token) {
            throw tensorrt_llm::common::TllmException(__FILE__, __LINE__,
                                                      "stand-in: enqueueRequest rejected the request (throw_token)");
        }
        if (first == schedule_.throw_other_token) throw 42;
        if (!r.getStreaming()) throw std::invalid_argument("stand-in: only streaming requests are served");
        std::lock_guard<std::mutex> lock(m_);
        auto now = Clock::now();
        IdType id = next_id_++;
        waiting_.push_back(Active{id, std::move(tokens), r.getMaxTokens(), r.getSamplingConfig(), r.getOutputConfig(),
                                  r.getEndId(), r.getClientId(), now, now, {}, {}, 0});
        admit(now);
        cv_.notify_all();
        return id;
    }

    std::vector<Response> await(std::optional<std::chrono::milliseconds> const& timeout) {
        std::unique_lock<std::mutex> lock(m_);
        auto deadline = timeout ? Clock::now() + *timeout : Clock::time_point::max();
        for (;;) {
            if (shut_) return {};
            auto now = Clock::now();
            std::vector<Response> out = std::move(ready_);
            ready_.clear();
            produce(now, out);
            if (!out.empty()) {
                close_iteration(iteration_.seen.empty() ? now : iteration_.end);
                return out;
            }
            if (now >= deadline) return {};
            auto wake = deadline;
            for (auto const& a : active_) wake = std::min(wake, a.next_due);
            cv_.wait_until(lock, wake);
        }
    }

    void cancel(IdType id) {
        std::lock_guard<std::mutex> lock(m_);
        auto hit = [id](Active const& a) { return a.id == id; };
        bool found = false;
        for (auto* q : {&active_, &waiting_}) {
            auto it = std::find_if(q->begin(), q->end(), hit);
            if (it != q->end()) {
                q->erase(it);
                found = true;
            }
        }
        if (!found) return;
        Result r{};
        r.isFinal = true;
        r.isSequenceFinal = true;
        r.outputTokenIds = {{}};
        r.finishReasons = {FinishReason::kCANCELLED};
        ready_.emplace_back(id, std::move(r));
        admit(Clock::now());
        cv_.notify_all();
    }

    void shutdown() {
        std::lock_guard<std::mutex> lock(m_);
        shut_ = true;
        cv_.notify_all();
    }

    std::deque<IterationStats> stats() {
        std::lock_guard<std::mutex> lock(m_);
        return std::exchange(stats_, {});
    }

private:
    // Active requests up to max_batch_size; each starts at `at`.
    void admit(Clock::time_point at) {
        auto limit = config_.getMaxBatchSize().value_or(std::numeric_limits<SizeType32>::max());
        while (!waiting_.empty() && static_cast<SizeType32>(active_.size()) < limit) {
            Active a = std::move(waiting_.front());
            waiting_.pop_front();
            a.start = std::max(at, a.arrival);
            a.first_token = a.start + ms(schedule_.prefill_ms);
            a.next_due = a.tokens.front() == schedule_.hang_token ? Clock::time_point::max() : a.first_token;
            active_.push_back(std::move(a));
        }
    }

    TokenIdType token(Active const& a, SizeType32 k) const {
        auto const& s = a.sampling;
        bool greedy = s.getTopK().value_or(0) == 1 || !s.getTemperature() || *s.getTemperature() <= 0.0f;
        if (greedy) return a.tokens[static_cast<size_t>(k - 1) % a.tokens.size()];
        std::uint64_t h = mix(s.getSeed().value_or(0));
        h = mix(h ^ static_cast<std::uint64_t>(s.getTopK().value_or(0)));
        h = mix(h ^ static_cast<std::uint64_t>(s.getTopP().value_or(0.0f) * 1e6));
        h = mix(h ^ static_cast<std::uint64_t>(*s.getTemperature() * 1e6));
        return static_cast<TokenIdType>(mix(h ^ static_cast<std::uint64_t>(k)) % 32000);
    }

    // Every token due by `now`, one Response each, in due order; cut into iterations.
    void produce(Clock::time_point now, std::vector<Response>& out) {
        for (;;) {
            auto it = std::min_element(active_.begin(), active_.end(),
                                       [](Active const& x, Active const& y) { return x.next_due < y.next_due; });
            if (it == active_.end() || it->next_due > now) return;
            Active& a = *it;
            auto due = a.next_due;
            if (iteration_.seen.count(a.id)) close_iteration(iteration_.end);
            iteration_.seen.insert(a.id);
            iteration_.end = due;
            // Its work began at its start (the first token) or at its previous token.
            auto began = a.produced == 0 ? a.start : due - ms(schedule_.decode_ms);
            iteration_.begin = iteration_.seen.size() == 1 ? began : std::min(iteration_.begin, began);
            long first = a.tokens.front();
            if (first == schedule_.await_throw_token) {
                throw std::runtime_error("stand-in: awaitResponses failed (await_throw_token)");
            }
            auto const& req = a;
            bool final = false;
            bool error_client = schedule_.error_client >= 0 && req.clientId &&
                                static_cast<long>(*req.clientId) == schedule_.error_client;
            if (first == schedule_.error_token || error_client) {
                out.emplace_back(a.id, std::string("stand-in: the request failed (error_token)"), req.clientId);
                final = true;
            } else {
                SizeType32 k = ++a.produced;
                if (k == 1) {
                    ++iteration_.ctx_requests;
                    iteration_.ctx_tokens += static_cast<SizeType32>(a.tokens.size());
                } else {
                    ++iteration_.gen_requests;
                }
                Result r{};
                TokenIdType tok = token(a, k);
                FinishReason reason = FinishReason::kNOT_FINISHED;
                SizeType32 min_tokens = req.sampling.getMinTokens().value_or(0);
                if (req.endId && *req.endId >= 0 && schedule_.eos_at > 0 && k == schedule_.eos_at &&
                    k >= min_tokens) {
                    tok = *req.endId;
                    reason = FinishReason::kEND_ID;
                } else if (k >= req.maxTokens) {
                    reason = FinishReason::kLENGTH;
                }
                final = reason != FinishReason::kNOT_FINISHED;
                r.isFinal = final;
                r.isSequenceFinal = final;
                r.outputTokenIds = {{tok}};
                r.finishReasons = {reason};
                r.decodingIter = k;
                if (req.output.returnPerfMetrics) {
                    RequestPerfMetrics p{};
                    p.timingMetrics.arrivalTime = a.arrival;
                    p.timingMetrics.firstScheduledTime = a.start;
                    p.timingMetrics.firstTokenTime = a.first_token;
                    p.timingMetrics.lastTokenTime = due;
                    r.requestPerfMetrics = p;
                }
                out.emplace_back(a.id, std::move(r), req.clientId);
                a.next_due = due + ms(schedule_.decode_ms);
            }
            if (final) {
                active_.erase(it);
                ++iteration_.completed;
                admit(due);
            }
        }
    }

    // Records the iteration being cut, ending at `end`, with the gauges as they stand.
    void close_iteration(Clock::time_point end) {
        IterationStats s{};
        s.timestamp = std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(
                                         end.time_since_epoch()).count());
        s.iter = iter_++;
        auto began = iteration_.seen.empty() ? end : iteration_.begin;
        if (last_iter_) began = std::max(began, *last_iter_);
        s.iterLatencyMS = std::chrono::duration<double, std::milli>(std::max(end - began, Clock::duration{})).count();
        s.numActiveRequests = static_cast<SizeType32>(active_.size());
        s.numQueuedRequests = static_cast<SizeType32>(waiting_.size());
        s.numCompletedRequests = iteration_.completed;
        s.maxBatchSizeStatic = config_.getMaxBatchSize().value_or(0);
        s.maxNumTokensStatic = config_.getMaxNumTokens().value_or(0);
        KvCacheStats kv{};
        kv.maxNumBlocks = schedule_.kv_blocks;
        kv.tokensPerBlock = schedule_.tokens_per_block;
        for (auto const& a : active_) {
            auto held = static_cast<SizeType32>(a.tokens.size()) + a.produced;
            kv.usedNumBlocks += (held + kv.tokensPerBlock - 1) / kv.tokensPerBlock;
        }
        kv.freeNumBlocks = std::max<SizeType32>(kv.maxNumBlocks - kv.usedNumBlocks, 0);
        kv.allocTotalBlocks = kv.usedNumBlocks;
        s.kvCacheStats = kv;
        InflightBatchingStats ib{};
        ib.numScheduledRequests = iteration_.ctx_requests + iteration_.gen_requests;
        ib.numContextRequests = iteration_.ctx_requests;
        ib.numGenRequests = iteration_.gen_requests;
        ib.numCtxTokens = iteration_.ctx_tokens;
        ib.avgNumDecodedTokensPerIter = iteration_.gen_requests > 0 ? 1.0f : 0.0f;
        s.inflightBatchingStats = ib;
        last_iter_ = end;
        iteration_ = {};
        stats_.push_back(std::move(s));
        while (static_cast<SizeType32>(stats_.size()) > std::max<SizeType32>(config_.getIterStatsMaxIterations(), 1)) {
            stats_.pop_front();
        }
    }

    // The iteration being cut from the tokens due (see the top of the file).
    struct Iteration {
        std::set<IdType> seen;
        Clock::time_point begin{}, end{};
        SizeType32 ctx_requests = 0, ctx_tokens = 0, gen_requests = 0, completed = 0;
    };

    ExecutorConfig config_;
    Schedule schedule_;
    std::mutex m_;
    std::condition_variable cv_;
    std::deque<Active> waiting_;
    std::deque<Active> active_;
    std::vector<Response> ready_;
    std::deque<IterationStats> stats_;
    std::optional<Clock::time_point> last_iter_;
    Iteration iteration_;
    IdType next_id_ = 1;
    IterationType iter_ = 0;
    bool shut_ = false;
};

Executor::Executor(std::filesystem::path const& modelPath, ModelType modelType, ExecutorConfig const& executorConfig) {
    if (modelType != ModelType::kDECODER_ONLY) throw std::invalid_argument("stand-in: decoder-only models only");
    mImpl = std::make_unique<Impl>(modelPath, executorConfig);
}
Executor::~Executor() = default;
IdType Executor::enqueueRequest(Request const& request) { return mImpl->enqueue(request); }
std::vector<Response> Executor::awaitResponses(std::optional<std::chrono::milliseconds> const& timeout) {
    return mImpl->await(timeout);
}
void Executor::cancelRequest(IdType requestId) { mImpl->cancel(requestId); }
void Executor::shutdown() { mImpl->shutdown(); }
std::deque<IterationStats> Executor::getLatestIterationStats() { return mImpl->stats(); }

// As TensorRT-LLM's serializer names them: the members' names, null for an unset optional.
std::string JsonSerialization::toJsonStr(IterationStats const& s) {
    std::ostringstream o;
    o << "{\"timestamp\":\"" << s.timestamp << "\",\"iter\":" << s.iter << ",\"iterLatencyMS\":" << s.iterLatencyMS
      << ",\"numActiveRequests\":" << s.numActiveRequests << ",\"numQueuedRequests\":" << s.numQueuedRequests
      << ",\"numCompletedRequests\":" << s.numCompletedRequests << ",\"maxBatchSizeStatic\":" << s.maxBatchSizeStatic
      << ",\"maxNumTokensStatic\":" << s.maxNumTokensStatic << ",\"kvCacheStats\":";
    if (auto const& kv = s.kvCacheStats) {
        o << "{\"maxNumBlocks\":" << kv->maxNumBlocks << ",\"freeNumBlocks\":" << kv->freeNumBlocks
          << ",\"usedNumBlocks\":" << kv->usedNumBlocks << ",\"tokensPerBlock\":" << kv->tokensPerBlock
          << ",\"allocTotalBlocks\":" << kv->allocTotalBlocks << ",\"allocNewBlocks\":" << kv->allocNewBlocks
          << ",\"reusedBlocks\":" << kv->reusedBlocks << ",\"missedBlocks\":" << kv->missedBlocks
          << ",\"cacheHitRate\":" << kv->cacheHitRate << "}";
    } else {
        o << "null";
    }
    o << ",\"inflightBatchingStats\":";
    if (auto const& ib = s.inflightBatchingStats) {
        o << "{\"numScheduledRequests\":" << ib->numScheduledRequests << ",\"numContextRequests\":"
          << ib->numContextRequests << ",\"numGenRequests\":" << ib->numGenRequests << ",\"numPausedRequests\":"
          << ib->numPausedRequests << ",\"numCtxTokens\":" << ib->numCtxTokens << ",\"microBatchId\":"
          << ib->microBatchId << ",\"avgNumDecodedTokensPerIter\":" << ib->avgNumDecodedTokensPerIter << "}";
    } else {
        o << "null";
    }
    o << "}";
    return o.str();
}

}  // namespace tensorrt_llm::executor
