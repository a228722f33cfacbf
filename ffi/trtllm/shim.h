// A narrow, cxx-friendly API over TensorRT-LLM's C++ Executor
// (tensorrt_llm::executor, releases up to 1.2.x), for src/engine/trtllm/ffi.rs.
//
// The shim owns every TensorRT-LLM object. Rust sees one opaque Executor with a
// factory, enqueue, await, cancel, shutdown and iteration stats; inputs are scalars and
// token slices, outputs are flat records. Every function the bridge declares returns
// Result, and the trycatch below turns any C++ exception (TensorRT-LLM's TllmException,
// std::exception, or anything else) into an Err, so nothing unwinds into Rust.
#pragma once

#include "rust/cxx.h"
#include "tensorrt_llm/executor/executor.h"

#include <cstdint>
#include <exception>
#include <memory>

namespace rust::behavior {
// cxx calls this around every Result-returning function. Its default catches
// std::exception only; a throw of anything else would reach the noexcept boundary and
// terminate the process.
template <typename Try, typename Fail>
static void trycatch(Try&& func, Fail&& fail) noexcept try {
    func();
} catch (std::exception const& e) {
    fail(e.what());
} catch (...) {
    fail("a C++ exception that is not a std::exception");
}
}  // namespace rust::behavior

namespace llm_harness::trtllm {

struct ExecutorSettings;
struct RequestParams;
struct ResponseRecord;

class Executor {
public:
    explicit Executor(std::unique_ptr<tensorrt_llm::executor::Executor> inner);

    // Const because Rust shares the object between the thread that submits and the
    // thread that awaits; TensorRT-LLM's Executor locks internally (see ffi.rs).
    std::uint64_t enqueue(rust::Slice<std::int32_t const> tokens, RequestParams const& params) const;
    rust::Vec<ResponseRecord> await_responses(std::uint32_t timeout_ms) const;
    void cancel(std::uint64_t request_id) const;
    void shutdown() const;
    rust::Vec<rust::String> latest_iteration_stats() const;

private:
    std::unique_ptr<tensorrt_llm::executor::Executor> inner_;
};

rust::String trtllm_version();
std::unique_ptr<Executor> create_executor(rust::Str engine_dir, ExecutorSettings const& settings);

}  // namespace llm_harness::trtllm
