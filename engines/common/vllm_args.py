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


def bind_cpus_for_ranks(args, gpu):
    """vLLM's CPU workers each bind their OpenMP threads to CPUs; with more than one
    rank on a single NUMA node its automatic binding refuses ("Not enough allowed NUMA
    nodes to bind threads of 2 local CPUWorkers"). Unless the user set
    ``VLLM_CPU_OMP_THREADS_BIND``, the CPUs this process may use are split evenly
    among the local ranks (``0|1`` for two ranks on two CPUs), in vLLM's own syntax.
    Returns what was set (None: nothing)."""
    ranks = int(args.get("tensor_parallel_size") or 1) * int(args.get("pipeline_parallel_size") or 1)
    if gpu or ranks <= 1 or "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < ranks:
        raise hb.UsageError(f"{ranks} ranks (tensor_parallel_size x pipeline_parallel_size) on the CPU need at least "
                            f"{ranks} CPUs, and this process may use {len(cpus)}; lower the sizes or set "
                            "VLLM_CPU_OMP_THREADS_BIND yourself")
    per = len(cpus) // ranks
    parts = [cpus[i * per:(i + 1) * per] for i in range(ranks)]
    bind = "|".join(",".join(str(c) for c in part) for part in parts)
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = bind
    return bind


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

