"""vLLM's KV cache as vLLM itself sizes and reports it, for the ``vllm`` adapter's
``info()`` (engines/vllm.py): read from an in-process ``LLMEngine``
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), whose engine core, scheduler and model runner
live in this process.

Loaded as the module ``vllm_kv`` after ``harness_bridge``; imports vLLM and torch only
inside its functions.
"""


def core(engine):
    """The in-process EngineCore of an ``LLMEngine``, or None."""
    return getattr(getattr(engine, "engine_core", None), "engine_core", None)


def kv_cache(engine):
    """The KV cache as vLLM itself sizes and reports it.

    ``tokens`` and ``max_concurrency`` are the figures vLLM logs ("KV cache size: N
    tokens, Maximum concurrency for max_model_len tokens per request: Xx"): the values
    ``update_kv_cache_capacity`` stores in the cache config, else vLLM's own
    ``get_kv_cache_capacity`` on the scheduler's KV-cache config. A request at
    max_model_len takes blocks in every cache group (a sliding-window group only its
    window), all from one shared pool of ``num_blocks``, so the token capacity is not
    ``num_blocks * block_size`` (that counts every group's blocks as tokens).
    ``allocated_bytes`` is the one backing allocation all KV-cache tensors view (the
    live tensors' storage where reachable): every ``KVCacheTensor`` of the config
    carries that same ``size``, so summing them counted it once per group.
    """
    cfg = engine.vllm_config
    cc = cfg.cache_config
    c = core(engine)
    kcc = None
    if c is not None:
        kcc = getattr(getattr(c, "scheduler", None), "kv_cache_config", None)
    blocks = cc.num_gpu_blocks
    kv = {
        "num_blocks": blocks,
        "block_size": cc.block_size,
        "cache_dtype": str(cc.cache_dtype),
        "memory_bytes_requested": getattr(cc, "kv_cache_memory_bytes", None),
        "memory_bytes_available": getattr(c, "available_gpu_memory_for_kv_cache", None),
    }
    tokens = getattr(cc, "kv_cache_size_tokens", None)
    conc = getattr(cc, "kv_cache_max_concurrency", None)
    source = "vllm cache_config (update_kv_cache_capacity)"
    if (tokens is None or conc is None) and kcc is not None:
        tokens, conc, source = _capacity(cfg, kcc)
    kv["tokens"] = tokens
    kv["max_concurrency"] = conc
    kv["max_concurrency_at_len"] = cfg.model_config.max_model_len
    kv["capacity_source"] = source
    if kcc is not None:
        groups = kcc.kv_cache_groups
        kv["groups"] = len(groups)
        kv["layers"] = sum(len(g.layer_names) for g in groups)
        kv["group_specs"] = _group_summary(groups)
        sizes = sorted({t.size for t in kcc.kv_cache_tensors})
        # vLLM's allocate_kv_cache: one zeroed int8 buffer of this size, viewed per layer.
        kv["config_bytes"] = sizes[-1] if sizes else 0
        if blocks:
            kv["bytes_per_block"] = kv["config_bytes"] // blocks
        if len(sizes) > 1:
            kv["config_bytes_note"] = f"tensor sizes differ: {sizes}"
        dtypes = sorted({str(getattr(s, "dtype", "")).replace("torch.", "") for s in _layer_specs(groups)} - {""})
        if dtypes:
            kv["dtype"] = dtypes[0] if len(dtypes) == 1 else dtypes
    live = _live_bytes(c)
    if live is not None:
        kv["allocated_bytes"], kv["allocations"] = live
        kv["allocated_source"] = "the model runner's KV-cache tensors (distinct storages)"
    elif "config_bytes" in kv:
        kv["allocated_bytes"] = kv["config_bytes"]
        kv["allocated_source"] = "KVCacheConfig (one backing allocation shared by its tensors)"
    return kv


def _layer_specs(groups):
    """Each group's per-layer KV-cache specs (a UniformTypeKVCacheSpecs holds several)."""
    for g in groups:
        spec = g.kv_cache_spec
        inner = getattr(spec, "kv_cache_specs", None)
        yield from (inner.values() if isinstance(inner, dict) else [spec])


def _group_summary(groups):
    """[{spec, block_size, page_size_bytes, sliding_window?, groups, layers_each}, ...]: equal groups merged."""
    out = []
    for g in groups:
        spec = g.kv_cache_spec
        d = {"spec": type(spec).__name__, "block_size": getattr(spec, "block_size", None),
             "page_size_bytes": getattr(spec, "page_size_bytes", None)}
        if getattr(spec, "sliding_window", None):
            d["sliding_window"] = spec.sliding_window
        for o in out:
            if {k: v for k, v in o.items() if k not in ("groups", "layers_each")} == d and o["layers_each"] == len(g.layer_names):
                o["groups"] += 1
                break
        else:
            out.append({**d, "groups": 1, "layers_each": len(g.layer_names)})
    return out


def _capacity(cfg, kcc):
    """(tokens, max_concurrency, source) the way vLLM computes them: its own helpers
    where this version has them, else the same formula (kv_cache_utils.py, 0.32)."""
    try:
        from vllm.v1.core.kv_cache_utils import get_kv_cache_capacity

        tokens, conc = get_kv_cache_capacity(cfg, kcc)
        return tokens, conc, "vllm get_kv_cache_capacity"
    except ImportError:
        pass
    max_len = cfg.model_config.max_model_len
    try:
        from vllm.v1.core.kv_cache_utils import get_max_concurrency_for_kv_cache_config

        conc = get_max_concurrency_for_kv_cache_config(cfg, kcc)
        return int(conc * max_len), conc, "vllm get_max_concurrency_for_kv_cache_config"
    except ImportError:
        pass
    # Blocks one request at max_model_len takes, summed over the groups (one shared pool).
    per_request = sum(-(-g.kv_cache_spec.max_memory_usage_bytes(cfg) // g.kv_cache_spec.page_size_bytes)
                      for g in kcc.kv_cache_groups)
    conc = kcc.num_blocks / per_request
    return int(conc * max_len), conc, "re-implementation of vLLM's get_kv_cache_capacity"


def _live_bytes(c):
    """(bytes, count) of the distinct storages behind the model runner's KV caches."""
    try:
        import torch

        worker = c.model_executor.driver_worker
        runner = getattr(worker, "worker", worker).model_runner
        storages = {}

        def walk(x):
            if isinstance(x, torch.Tensor):
                st = x.untyped_storage()
                storages[st.data_ptr()] = st.nbytes()
            elif isinstance(x, (list, tuple)):
                for y in x:
                    walk(y)
            elif isinstance(x, dict):
                for y in x.values():
                    walk(y)

        walk(runner.kv_caches)
        if storages:
            return sum(storages.values()), len(storages)
    except Exception:
        pass
    return None
