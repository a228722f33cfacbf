"""Conformance of engines/sglang.py and engines/common/sglang_procs.py with the installed
SGLang: every callable, argument name and field they use, checked against this
version's signatures, dataclass and msgspec fields, so an upstream rename fails here,
loudly, rather than as a strange run. Run by tests/sglang.rs with the sglang env's
python; exits non-zero with every failed check listed. (The meta_info keys the adapter
reads are also checked on a real run there: engine.meta in requests.jsonl.)
"""

import inspect
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# As the adapter does on a CPU-only host, before sglang is imported.
os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
try:
    import sgl_kernel  # noqa: F401
except Exception:
    sys.modules.pop("sgl_kernel", None)
    sys.path.insert(0, os.path.join(HERE, "..", "..", "engines", "cpu_shims"))

import msgspec  # noqa: E402
import sglang  # noqa: E402
import sglang.srt.entrypoints.engine as engine_module  # noqa: E402
from sglang.srt.managers.tokenizer_manager import TokenizerManager  # noqa: E402
from sglang.srt.mem_cache import allocation  # noqa: E402
from sglang.srt.observability import req_time_stats  # noqa: E402
from sglang.srt.sampling.sampling_params import SamplingParams  # noqa: E402
from sglang.srt.server_args import ServerArgs  # noqa: E402

import importlib.util  # noqa: E402


def load(name, path):
    # By file, not by putting engines/ on sys.path: engines/sglang.py would shadow sglang.
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ENGINES = os.path.join(HERE, "..", "..", "engines")
load("harness_bridge", os.path.join(ENGINES, "harness_bridge.py"))  # the adapter imports them
load("child_procs", os.path.join(ENGINES, "common", "child_procs.py"))
procs = load("sglang_procs", os.path.join(ENGINES, "common", "sglang_procs.py"))
adapter = load("harness_engine_sglang", os.path.join(ENGINES, "sglang.py"))


failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def params(fn):
    return set(inspect.signature(fn).parameters)


# sglang.Engine is the class the adapter builds, with the methods it calls.
Engine = engine_module.Engine
# sglang.Engine is a lazy alias (LazyImport) that builds this class when called.
alias = sglang.Engine
check(alias is Engine or (callable(alias) and getattr(alias, "_load", lambda: None)() is Engine),
      "sglang.Engine resolves to sglang.srt.entrypoints.engine.Engine")
for name in ("async_generate", "get_all_child_pids", "get_server_info", "shutdown"):
    check(callable(getattr(Engine, name, None)), f"Engine.{name}")
check(inspect.iscoroutinefunction(Engine.async_generate), "Engine.async_generate is async")
want = {"input_ids", "sampling_params", "stream", "rid", "return_logprob", "top_logprobs_num"}
check(want <= params(Engine.async_generate), f"Engine.async_generate takes {sorted(want - params(Engine.async_generate))}")
check(callable(getattr(TokenizerManager, "abort_request", None)) and "rid" in params(TokenizerManager.abort_request),
      "TokenizerManager.abort_request(rid=...)")
# Engine.shutdown() kills the host's children through this name, which sglang_procs.shutdown narrows.
check({"parent_pid", "include_parent", "skip_pid", "wait_timeout"} <= params(engine_module.kill_process_tree),
      "engine.kill_process_tree(parent_pid, include_parent, skip_pid, wait_timeout)")
check("kill_process_tree" in inspect.getsource(Engine.shutdown), "Engine.shutdown calls kill_process_tree")
# sglang_procs stops multiprocessing's resource tracker through its private API.
from multiprocessing import resource_tracker  # noqa: E402

check(callable(getattr(resource_tracker._resource_tracker, "_stop", None)) and procs.resource_tracker_pid() is None,
      "multiprocessing.resource_tracker._resource_tracker._stop() and ._pid (None before it starts)")

# ServerArgs: every field the adapter sets or reads, and the schema it builds from them.
schema = adapter._server_args_schema(ServerArgs)
used = set(adapter.CPU_DEFAULTS) | set(adapter.DEFAULTS) | set(adapter.COMMON_KEYS) | {
    "model_path", "incremental_streaming_output", "page_size", "max_prefill_tokens", "disable_overlap_schedule"}
check(not used - set(schema), f"ServerArgs fields {sorted(used - set(schema))}")
check(len(schema) > 100, f"ServerArgs schema read through msgspec ({len(schema)} fields)")
lit = schema.get("attention_backend")
check("torch_native" in str(lit), f"attention_backend choices include torch_native: {lit}")
check(schema.get("incremental_streaming_output") is bool, "incremental_streaming_output: bool")

# Sampling: the keys the adapter sends.
sp_fields = {f.name for f in msgspec.structs.fields(SamplingParams)}
want = {"max_new_tokens", "min_new_tokens", "ignore_eos", "temperature", "sampling_seed"}
check(want <= sp_fields, f"SamplingParams fields {sorted(want - sp_fields)}")

# Clock: SGLang's wall-clock stamps are perf_counter + this offset, per process.
check(isinstance(getattr(req_time_stats, "global_diff_realtime_monotonic", None), float),
      "req_time_stats.global_diff_realtime_monotonic")
src = inspect.getsource(req_time_stats)
for key in ("request_received_ts", "first_token_latency", "response_sent_to_client_ts", "request_finished_ts",
            "forward_entry_time", "queue_time", "decode_throughput"):
    check(f'"{key}"' in src, f"req_time_stats sets meta_info[{key!r}]")
check("convert_time_to_realtime" in src and "global_diff_realtime_monotonic" in inspect.getsource(
    req_time_stats.convert_time_to_realtime), "meta_info *_ts = perf_counter + global_diff_realtime_monotonic")
tm_src = inspect.getsource(TokenizerManager)
for key in ("completion_tokens", "cached_tokens", "finish_reason", "output_top_logprobs", "num_retractions", "e2e_latency"):
    check(f'"{key}"' in tm_src or f"'{key}'" in tm_src, f"TokenizerManager sets meta_info[{key!r}]")

# Step stats: the load snapshot the TokenizerManager reads from shared memory, with the
# fields the adapter reads, published by the scheduler after each processed step.
from sglang.srt.managers import load_snapshot  # noqa: E402

snap_fields = {f.name for f in msgspec.structs.fields(load_snapshot.LoadSnapshot)}
want = {"timestamp", "dp_rank", "num_running_reqs", "num_waiting_reqs", "num_used_tokens", "max_total_num_tokens",
        "total_prefill_uncached_tokens"}
check(want <= snap_fields, f"LoadSnapshot fields {sorted(want - snap_fields)}")
# The adapter knows the reader by this class name (the other, ZMQ, is not read off-loop).
check(callable(getattr(getattr(load_snapshot, "ShmLoadSnapshotReader", None), "read_all", None)),
      "load_snapshot.ShmLoadSnapshotReader.read_all")
check("load_snapshot_reader = create_load_snapshot_reader" in tm_src, "TokenizerManager.load_snapshot_reader")

# The CPU kernel path: the op the stand-in implements is the one SGLang calls on CPU,
# with the arguments in the stand-in's order.
cpu_call = inspect.getsource(allocation.assign_req_to_token_pool_func)
check("assign_req_to_token_pool_cpu(" in cpu_call, "allocation calls assign_req_to_token_pool_cpu on CPU")
check(getattr(allocation, "assign_req_to_token_pool_cpu", None) is not None,
      "allocation binds assign_req_to_token_pool_cpu at import")
shim = sys.modules["sgl_kernel"]
if getattr(shim, "HARNESS_CPU_SHIM", False):
    shim_params = list(inspect.signature(shim.assign_req_to_token_pool_cpu).parameters)
    check(shim_params == ["req_pool_indices", "req_to_token", "start_offset", "end_offset", "out_cache_loc", "pool_len"],
          f"stand-in signature {shim_params}")

if failures:
    print(f"sglang {sglang.__version__}: {len(failures)} conformance check(s) failed:", file=sys.stderr)
    for f in failures:
        print(f"  - {f}", file=sys.stderr)
    sys.exit(1)
print(f"sglang {sglang.__version__}: every callable, argument and field the adapter uses is there")
