"""vLLM's engine arguments as the harness sets them, shared by the in-process adapter
(``engines/vllm.py``) and the managed server (``engines/common/vllm_server.py``), so
``--engine vllm`` and ``--engine vllm-server`` run the same engine configuration: the
same defaults and the same ``--engine-arg KEY=VALUE`` mapping onto ``vllm.EngineArgs``
fields (typed from the field annotations, with close-match hints for unknown keys).

Loaded as the module ``vllm_args`` after ``harness_bridge``; imports vLLM only inside
its functions.
"""

import os

import harness_bridge as hb

# Known to work on a CPU-only host (shared CPU_ENGINES.md).
CPU_DEFAULTS = {"dtype": "float32", "max_model_len": 2048, "enforce_eager": True}
# Always: a fixed seed and stats on (vLLM's own per-request stamps need them).
# Scheduling stays vLLM's own default (overlapped on a GPU; the CPU platform forces
# lock-step), in-process and served alike.
DEFAULTS = {"seed": 0, "disable_log_stats": False}
# Listed first when an unknown key is given.
COMMON_KEYS = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "dtype", "enforce_eager",
               "gpu_memory_utilization", "kv_cache_memory_bytes", "enable_prefix_caching",
               "enable_chunked_prefill", "block_size", "seed", "tensor_parallel_size")
# GiB of CPU KV cache: vLLM sizes it from a whole NUMA node unless told.
CPU_KVCACHE_GIB = "1"


def on_gpu():
    import torch

    return torch.cuda.is_available()


def set_cpu_env(gpu):
    """The environment vLLM needs on a CPU-only host (before the engine is built)."""
    if not gpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)


def engine_args(engine, model, options, gpu):
    """``(args, from_user)``: the EngineArgs fields to build the engine with (defaults,
    then the CPU defaults unless on a GPU, then the user's typed options, then the
    model) and the sorted keys the user gave. UsageError for bad options."""
    from vllm import EngineArgs

    opts = hb.parse_options(engine, options, EngineArgs, common=COMMON_KEYS, see="vllm.EngineArgs")
    if "model" in opts:
        raise hb.UsageError("pass the model as --model DIR, not --engine-arg model=")
    args = {**DEFAULTS, **({} if gpu else CPU_DEFAULTS), **opts, "model": model}
    return args, sorted(opts)


def build(args):
    """``vllm.EngineArgs(**args)``, or a UsageError with vLLM's reason."""
    from vllm import EngineArgs

    try:
        return EngineArgs(**args)
    except (TypeError, ValueError) as e:
        raise hb.UsageError(f"vllm.EngineArgs rejected the engine args: {str(e).splitlines()[0]}") from None


def version():
    import importlib.metadata

    for dist in ("vllm-cpu", "vllm"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import vllm

        return getattr(vllm, "__version__", "unknown")
    except Exception:
        return "unknown"

