"""TensorRT-LLM adapter through its Python ``LLM`` API (``--engine trtllm-py``).

``tensorrt_llm.LLM`` with the PyTorch backend by default; a built TensorRT engine
directory (``config.json`` beside ``rank0.engine``) selects the engine-dir backend
(``tensorrt_llm._tensorrt_engine.LLM``). Each request is one
``generate_async({"prompt_token_ids": ids}, SamplingParams, streaming=True)`` iterated
on an asyncio loop the adapter owns on a background thread. TensorRT-LLM's executor
produces tokens on its own thread and hands each update to that loop; the adapter
stamps every update with ``time.monotonic_ns()`` as it arrives and counts its new tokens
(``outputs[0].token_ids`` is cumulative; an update can carry several tokens). Where the
version has them (``SamplingParams.return_perf_metrics``), the request's
``RequestPerfMetrics`` timing (arrival, first scheduled, first and last token, on the
C++ steady clock: CLOCK_MONOTONIC on Linux) is kept beside the harness's stamps.

With ``--engine-arg enable_iter_perf_stats=true`` each ``step()`` also drains
``LLM.get_stats(0)`` (the executor's iteration stats, the C++ ``IterationStats`` keys)
and returns them as the step's :class:`hb.StepStats` (see ``STEP_STATS_SOURCE``).

``--engine-arg KEY=VALUE`` goes to the ``LLM`` constructor, typed from its args class
(``TorchLlmArgs`` / ``TrtLlmArgs``); a config object (``kv_cache_config``,
``scheduler_config``, ...) takes JSON, e.g. ``kv_cache_config={"free_gpu_memory_fraction": 0.5}``.

TensorRT-LLM cannot be installed from the package registries these machines reach and
needs a CUDA GPU: the adapter is tested against a stand-in module (tests/trtllm_py_standin),
which it recognises (``tensorrt_llm.HARNESS_STAND_IN``) and reports as an instrument,
never as a TensorRT-LLM result.
"""

import importlib.metadata
import json
import math
import os
import sys
import time
import typing

import harness_bridge as hb

COMMON_KEYS = ("max_batch_size", "max_num_tokens", "max_seq_len", "kv_cache_config", "scheduler_config", "dtype",
               "tensor_parallel_size", "enable_chunked_prefill", "backend")


# Where the step stats come from (SchedulerFacts.step_stats_source); the same mapping as
# the C++ Executor path (src/engine/trtllm/iteration.rs).
STEP_STATS_SOURCE = (
    "TensorRT-LLM LLM.get_stats (iteration stats, with enable_iter_perf_stats=true), drained at each "
    "step(): running/waiting = numActiveRequests/numQueuedRequests, kv_usage = kvCacheStats "
    "usedNumBlocks/maxNumBlocks, prefill_requests/prefill_tokens = inflightBatchingStats "
    "numContextRequests/numCtxTokens (the context tokens it scheduled), decode_requests = numGenRequests, "
    "decode_tokens = numGenRequests plus specDecodingStats numDraftTokens where given, preempted = "
    "numPausedRequests, spec_* = specDecodingStats numDraftTokens/numAcceptedTokens, engine_ms = "
    "iterLatencyMS; no per-step prefix-cache figures (kvCacheStats reusedBlocks/missedBlocks count "
    "blocks, not prompt tokens)"
)

def _count(v):
    """A count as the stats hold it (None: absent, negative or not a number)."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def step_stats(entries, last_iter):
    """TensorRT-LLM iteration stats (``get_stats`` dicts or their JSON texts, oldest
    first) as one :class:`hb.StepStats` dict, each iteration once (by its ``iter``
    counter, after ``last_iter``). Returns ``(stats or None, the last iter seen)``."""
    total = None
    for e in entries:
        if isinstance(e, str):
            e = json.loads(e)
        n = e.get("iter")
        if isinstance(n, int):
            if last_iter is not None and n <= last_iter:
                continue
            last_iter = n
        ifb = e.get("inflightBatchingStats") or {}
        kv = e.get("kvCacheStats") or {}
        spec = e.get("specDecodingStats") or {}
        gen, drafts = _count(ifb.get("numGenRequests")), _count(spec.get("numDraftTokens"))
        used, blocks = _count(kv.get("usedNumBlocks")), _count(kv.get("maxNumBlocks"))
        ms = e.get("iterLatencyMS")
        one = {
            "engine_steps": 1,
            "running": _count(e.get("numActiveRequests")),
            "waiting": _count(e.get("numQueuedRequests")),
            "preempted": _count(ifb.get("numPausedRequests")),
            "prefill_requests": _count(ifb.get("numContextRequests")),
            "prefill_tokens": _count(ifb.get("numCtxTokens")),
            "decode_requests": gen,
            # Each generating request computes one token, plus its drafts with speculation.
            "decode_tokens": None if gen is None else gen + (drafts or 0),
            "kv_usage": used / blocks if used is not None and blocks else None,
            "spec_draft_tokens": drafts,
            "spec_accepted_tokens": _count(spec.get("numAcceptedTokens")),
            "engine_ms": float(ms) if isinstance(ms, (int, float)) and math.isfinite(ms) and ms >= 0 else None,
        }
        total = hb.fold_step_stats(total, one)
    return total, last_iter


def _is_engine_dir(model):
    return os.path.isfile(os.path.join(model, "rank0.engine"))


def _model_class(ty):
    """The config class behind an annotation (``Optional[KvCacheConfig]`` -> ``KvCacheConfig``)."""
    for t in (typing.get_args(ty) or (ty,)):
        if isinstance(t, type) and hasattr(t, "model_fields"):
            return t
    return None


def _args_schema(args_cls):
    """``{field: annotation}`` of a pydantic LLM-args class (``model_fields``)."""
    return {name: getattr(f, "annotation", typing.Any) for name, f in args_cls.model_fields.items()}


def _td_ns(td):
    """A timedelta since the steady clock's epoch -> ns (None when unset)."""
    if td is None:
        return None
    s = td.total_seconds() if hasattr(td, "total_seconds") else float(td)
    return int(round(s * 1e9)) if s > 0 else None


class _Req(hb.StreamRequest):
    __slots__ = ("handle",)

    def __init__(self, rid, want_ids):
        super().__init__(rid, want_ids)
        self.handle = None


class TrtllmLlmApiAdapter(hb.StreamAdapter):
    ENDED = "TensorRT-LLM's stream ended unfinished"

    def __init__(self, model, options):
        hb.require_model_dir("trtllm-py", model)
        import tensorrt_llm
        from tensorrt_llm.llmapi import llm_args

        super().__init__()
        self.trt = tensorrt_llm
        self.stand_in = bool(getattr(tensorrt_llm, "HARNESS_STAND_IN", False))
        self.backend = "tensorrt engine dir" if _is_engine_dir(model) else "pytorch"
        args_cls = llm_args.TrtLlmArgs if self.backend != "pytorch" else llm_args.TorchLlmArgs
        schema = _args_schema(args_cls)
        opts = hb.parse_options("trtllm-py", options, schema, common=COMMON_KEYS,
                                see=f"tensorrt_llm.llmapi.llm_args.{args_cls.__name__}")
        if "model" in opts:
            raise hb.UsageError("pass the model as --model DIR, not --engine-arg model=")
        for k, v in list(opts.items()):
            cls = _model_class(schema[k])
            if cls is not None and isinstance(v, dict):
                try:
                    opts[k] = cls(**v)
                except Exception as e:
                    raise hb.UsageError(f"--engine-arg {k}: {cls.__name__} rejected {v}: {str(e).splitlines()[0]}") from None
        self.args = opts
        if self.backend == "pytorch":
            from tensorrt_llm import LLM
        else:
            from tensorrt_llm._tensorrt_engine import LLM
        self._SamplingParams = tensorrt_llm.SamplingParams
        sp_fields = self._fields(self._SamplingParams)
        self.perf_metrics = "return_perf_metrics" in sp_fields
        self.sp_fields = sp_fields
        t0 = time.monotonic()
        try:
            self.llm = LLM(model=model, **opts)
        except (TypeError, ValueError) as e:
            raise hb.UsageError(f"tensorrt_llm.LLM rejected the engine args: {str(e).splitlines()[0]}") from None
        self.load_s = time.monotonic() - t0
        self.model = model
        resolved = getattr(self.llm, "args", None)
        # Iteration stats only where the LLM collects them (a cost TensorRT-LLM leaves off).
        self.iter_stats = bool(getattr(resolved, "enable_iter_perf_stats", opts.get("enable_iter_perf_stats")))
        self.last_iter = None
        self.submitted = False
        # TensorRT-LLM's results await on the loop that iterates them.
        self.lt = hb.LoopThread("trtllm-loop")

    @staticmethod
    def _fields(cls):
        import dataclasses

        if dataclasses.is_dataclass(cls):
            return {f.name for f in dataclasses.fields(cls)}
        return set(getattr(cls, "model_fields", {}) or {})

    def info(self):
        version = getattr(self.trt, "__version__", None)
        for dist in ("tensorrt_llm", "tensorrt-llm"):
            if version:
                break
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
        meta = {
            "backend": self.backend,
            "llm_args": {k: (v if isinstance(v, (bool, int, float, str, type(None))) else repr(v))
                         for k, v in self.args.items()},
            "perf_metrics": ("RequestPerfMetrics timing (steady clock) per request" if self.perf_metrics else
                             "this version's SamplingParams has no return_perf_metrics: none"),
            "streaming": "generate_async(streaming=True): cumulative token_ids per update, each update stamped "
                         "on arrival on the adapter's loop thread with its new-token count",
            "load_s": round(self.load_s, 3),
            "step_stats": ("LLM.get_stats, drained at each step()" if self.iter_stats else
                           "none: pass --engine-arg enable_iter_perf_stats=true for the iteration stats"),
        }
        notes = []
        if self.stand_in:
            notes.append(f"STAND-IN: tensorrt_llm is the test stand-in from {os.path.dirname(self.trt.__file__)}, "
                         "not TensorRT-LLM; its figures measure the harness, never TensorRT-LLM")
        # The LLM's resolved args (its defaults filled in), where this version keeps them.
        resolved = getattr(self.llm, "args", None)
        return hb.engine_info(
            "trtllm-py", f"{version or 'unknown'}" + (" (stand-in)" if self.stand_in else ""), self.model,
            str(self.args.get("dtype", "auto")), "stand-in" if self.stand_in else "cuda", "stream", meta,
            instrument=self.stand_in, notes=notes,
            scheduler={
                "max_running": getattr(resolved, "max_batch_size", None),
                "chunked_prefill": getattr(resolved, "enable_chunked_prefill", None),
                "prefix_caching": getattr(getattr(resolved, "kv_cache_config", None), "enable_block_reuse", None),
                "step_stats_source": STEP_STATS_SOURCE if self.iter_stats else None,
            })

    def submit(self, rid, prompt_token_ids, output_len, min_tokens, ignore_eos, temperature, seed, return_token_ids):
        kw = {"max_tokens": output_len, "temperature": float(temperature)}
        optional = {"min_tokens": min_tokens, "ignore_eos": bool(ignore_eos), "detokenize": False,
                    "return_perf_metrics": True if self.perf_metrics else None,
                    "seed": seed if temperature > 0 else None, "logprobs": 2 if return_token_ids else None}
        kw.update({k: v for k, v in optional.items() if v is not None and k in self.sp_fields})
        self._launch(_Req(rid, return_token_ids), list(prompt_token_ids), self._SamplingParams(**kw))
        self.submitted = True

    def step(self, timeout_s):
        res = super().step(timeout_s)
        # Before the first submit TensorRT-LLM has no stats queue and warns on each call.
        if not (self.iter_stats and self.submitted):
            return res
        try:
            entries = self.llm.get_stats(0)
            stats, self.last_iter = step_stats(entries or (), self.last_iter)
        except Exception as e:  # the stats are a view on the run, never a reason to fail it
            self.iter_stats = False
            print(f"[llm-harness] TensorRT-LLM iteration stats: {type(e).__name__}: {e}; steps.jsonl lacks them "
                  "from here on", file=sys.stderr)
            return res
        return res if stats is None else (res[0], res[1], stats)

    async def _open(self, req, prompt, sp):
        req.handle = self.llm.generate_async({"prompt_token_ids": prompt}, sampling_params=sp, streaming=True)
        return req.handle

    def _update(self, req, out):
        """An update: its cumulative ``outputs[0].token_ids``; at the finish, the finish
        code and details."""
        c = out.outputs[0]
        if not out.finished:
            return len(c.token_ids), None
        reason = getattr(c, "finish_reason", None)
        extra = {"engine": self._stamps(c)}
        code = {"length": hb.LENGTH, "stop": hb.STOP}.get(str(reason).lower())
        if code is None:  # cancelled, timed out, or no reason at all
            code = hb.ERROR
            extra["error"] = f"TensorRT-LLM ended the request: finish_reason={reason}"
        if req.want_ids:
            extra["token_ids"] = list(c.token_ids)
            extra["top2_margins"] = hb.top2_margins(getattr(c, "logprobs", None), len(c.token_ids))
        return len(c.token_ids), (code, extra)

    def _cancel(self, req):
        if req.handle is not None and hasattr(req.handle, "abort"):
            self.lt.call(req.handle.abort)

    def _stamps(self, c):
        pm = getattr(c, "request_perf_metrics", None)
        tm = getattr(pm, "timing_metrics", None)
        if tm is None:
            return None
        meta = {}
        for group in ("kv_cache_metrics", "speculative_decoding"):
            g = getattr(pm, group, None)
            for k in dir(g) if g is not None else ():
                v = getattr(g, k, None)
                if not k.startswith("_") and isinstance(v, (int, float, bool)):
                    meta[f"{group}.{k}"] = v
        for k in ("first_iter", "last_iter", "iter"):
            v = getattr(pm, k, None)
            if isinstance(v, (int, float)):
                meta[k] = v
        return {
            "queued_ns": _td_ns(getattr(tm, "arrival_time", None)),
            "scheduled_ns": _td_ns(getattr(tm, "first_scheduled_time", None)),
            "first_token_ns": _td_ns(getattr(tm, "first_token_time", None)),
            "last_token_ns": _td_ns(getattr(tm, "last_token_time", None)),
            "meta": meta or None,
        }

    def _close_engine(self):
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.shutdown()


def create(model, options):
    return TrtllmLlmApiAdapter(model, options)
