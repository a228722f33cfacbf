"""STAND-IN for TensorRT-LLM's Python LLM API, for llm-harness's tests only (see
tests/trtllm_py_standin/README.md). Not TensorRT-LLM: it computes nothing and echoes prompts."""

import asyncio
import dataclasses
import datetime
import threading
import time
from typing import Any, Optional

HARNESS_STAND_IN = True
__version__ = "1.2.0-standin"

# The KV cache its iteration stats report: blocks of this many tokens, this many blocks.
TOKENS_PER_BLOCK = 32
KV_BLOCKS = 1000


@dataclasses.dataclass
class SamplingParams:
    max_tokens: int = 32
    min_tokens: Optional[int] = None
    ignore_eos: bool = False
    temperature: Optional[float] = None
    seed: Optional[int] = None
    detokenize: bool = True
    logprobs: Optional[int] = None
    return_perf_metrics: bool = False


class RequestError(RuntimeError):
    """TensorRT-LLM's error for a failed request (raised by the result's iterator)."""


@dataclasses.dataclass
class Logprob:
    logprob: float
    rank: Optional[int] = None


@dataclasses.dataclass
class TimingMetrics:
    arrival_time: Optional[datetime.timedelta] = None
    first_scheduled_time: Optional[datetime.timedelta] = None
    first_token_time: Optional[datetime.timedelta] = None
    last_token_time: Optional[datetime.timedelta] = None


@dataclasses.dataclass
class KvCacheMetrics:
    num_total_allocated_blocks: int = 0
    num_new_allocated_blocks: int = 0
    num_reused_blocks: int = 0
    num_missed_blocks: int = 0


@dataclasses.dataclass
class RequestPerfMetrics:
    timing_metrics: TimingMetrics
    kv_cache_metrics: KvCacheMetrics
    first_iter: Optional[int] = None
    last_iter: Optional[int] = None


@dataclasses.dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list = dataclasses.field(default_factory=list)
    logprobs: Any = None
    finish_reason: Optional[str] = None
    request_perf_metrics: Optional[RequestPerfMetrics] = None
    _last_token_ids_len: int = 0

    @property
    def token_ids_diff(self):
        return self.token_ids[self._last_token_ids_len:]


def _steady():
    """The C++ steady clock as TensorRT-LLM's bindings hand it over: a timedelta since
    its epoch (CLOCK_MONOTONIC on Linux)."""
    return datetime.timedelta(microseconds=time.monotonic_ns() // 1000)


class RequestOutput:
    """One request's result: async-iterable when streaming; updates arrive from the
    executor thread through the loop's call_soon_threadsafe, as in TensorRT-LLM."""

    def __init__(self, rid, prompt, sp, loop):
        self.id = rid
        self.prompt_token_ids = prompt
        self.sampling_params = sp
        self.outputs = [CompletionOutput(0)]
        self.finished = False
        self._loop = loop
        self._queue = asyncio.Queue()
        self._aborted = False

    def _deliver(self, tokens, finished, error=None):  # on the loop's thread
        c = self.outputs[0]
        c._last_token_ids_len = len(c.token_ids)
        c.token_ids = c.token_ids + tokens
        self._queue.put_nowait((finished, error))

    def abort(self):
        self._aborted = True

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.finished:
            raise StopAsyncIteration
        finished, error = await self._queue.get()
        if error is not None:
            raise RequestError(error)
        self.finished = finished
        return self


class LLM:
    def __init__(self, model, **kwargs):
        from .llmapi import llm_args
        from .llmapi.llm_args import TorchLlmArgs

        unknown = sorted(set(kwargs) - set(TorchLlmArgs.model_fields))
        if unknown:
            raise TypeError(f"LLM got unexpected arguments {unknown}")
        self.model = model
        self.args = llm_args.ResolvedArgs(model, **kwargs)
        self.per_update = int(kwargs.get("standin_tokens_per_update", 1))
        self.step_s = float(kwargs.get("standin_step_ms", 5.0)) / 1e3
        self.fail_request = kwargs.get("standin_fail_request")
        self.margin = float(kwargs.get("standin_margin", 2.0))
        self._next_id = 0
        self._active = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._iter = 0
        # Iteration stats (with enable_iter_perf_stats): dicts with the C++ IterationStats
        # keys, as TensorRT-LLM's get_stats returns them, until get_stats drains them.
        self.iter_perf_stats = bool(kwargs.get("enable_iter_perf_stats", False))
        self._stats = []
        self._stats_iter = 0
        self._sends = []
        # The executor: tokens are produced here, on a thread of its own.
        self._thread = threading.Thread(target=self._executor, name="standin-executor", daemon=True)
        self._thread.start()

    def generate_async(self, inputs, sampling_params=None, streaming=False, **kwargs):
        prompt = list(inputs["prompt_token_ids"] if isinstance(inputs, dict) else inputs)
        sp = sampling_params or SamplingParams()
        loop = asyncio.get_running_loop()
        with self._lock:
            self._next_id += 1
            r = RequestOutput(self._next_id, prompt, sp, loop)
            r._arrival = _steady()
            r._produced = 0
            r._stamps = {}
            self._active.append(r)
        return r

    def _executor(self):
        while not self._stop.wait(self.step_s):
            with self._lock:
                active = list(self._active)
            self._iter += 1
            made = [(r, r._produced, self._advance(r)) for r in active]
            # The step's stats before its tokens, so whoever sees a token can read its step.
            if self.iter_perf_stats and active:
                self._record(made)
            sends, self._sends = self._sends, []
            for r, args in sends:
                r._loop.call_soon_threadsafe(r._deliver, *args)

    def _send(self, r, *args):
        """Hands an update to the request's loop once the executor step is done."""
        self._sends.append((r, args))

    def _advance(self, r):
        sp = r.sampling_params
        now = _steady()
        r._stamps.setdefault("first_scheduled_time", now)
        if r._aborted:
            self._retire(r)
            self._send(r, [], True)
            r.outputs[0].finish_reason = "cancelled"
            return 0
        if self.fail_request is not None and r.id == int(self.fail_request) and r._produced > 0:
            self._retire(r)
            self._send(r, [], False, f"stand-in executor error in request {r.id}")
            return 0
        n = min(self.per_update, sp.max_tokens - r._produced)
        tokens = [r.prompt_token_ids[(r._produced + k) % len(r.prompt_token_ids)] for k in range(n)]
        r._produced += n
        r._stamps.setdefault("first_token_time", now)
        r._stamps["last_token_time"] = now
        r._stamps.setdefault("first_iter", self._iter)
        done = r._produced >= sp.max_tokens
        c = r.outputs[0]
        if sp.logprobs:
            lp = [{t: Logprob(-0.25, 1), t + 1: Logprob(-0.25 - self.margin, 2)} for t in tokens]
            c.logprobs = (c.logprobs or []) + lp
        if done:
            self._retire(r)
            c.finish_reason = "length"
            if sp.return_perf_metrics:
                c.request_perf_metrics = RequestPerfMetrics(
                    TimingMetrics(r._arrival, r._stamps["first_scheduled_time"], r._stamps["first_token_time"],
                                  r._stamps["last_token_time"]),
                    KvCacheMetrics(num_total_allocated_blocks=1),
                    first_iter=r._stamps["first_iter"], last_iter=self._iter)
        self._send(r, tokens, done)
        return n

    def _record(self, made):
        """One executor step's iteration stats: a step that gave a request n tokens stands
        for n iterations, each computing one token per request; a request's first token
        is its context phase (its whole prompt), every later one a generation step. The
        gauges are as the step leaves them; iterLatencyMS is the step's share."""
        with self._lock:
            active = list(self._active)
        used = sum(-(-(len(r.prompt_token_ids) + r._produced) // TOKENS_PER_BLOCK) for r in active)
        rounds = max(n for _, _, n in made)
        stats = []
        for j in range(rounds):
            ctx = [r for r, before, n in made if j < n and before + j == 0]
            gen = sum(1 for r, before, n in made if j < n and before + j > 0)
            stats.append({
                "timestamp": str(time.monotonic_ns() // 1000), "iter": self._stats_iter,
                "iterLatencyMS": self.step_s * 1e3 / rounds,
                "numActiveRequests": len(active), "numQueuedRequests": 0,
                "numCompletedRequests": sum(1 for r, _, n in made if n and r not in active) if j == rounds - 1 else 0,
                "kvCacheStats": {"maxNumBlocks": KV_BLOCKS, "freeNumBlocks": KV_BLOCKS - used,
                                 "usedNumBlocks": used, "tokensPerBlock": TOKENS_PER_BLOCK},
                "inflightBatchingStats": {"numScheduledRequests": len(ctx) + gen, "numContextRequests": len(ctx),
                                          "numGenRequests": gen, "numPausedRequests": 0,
                                          "numCtxTokens": sum(len(r.prompt_token_ids) for r in ctx)},
                "specDecodingStats": None,
            })
            self._stats_iter += 1
        with self._lock:
            self._stats.extend(stats)

    def get_stats(self, timeout):
        """The iteration stats since the last call (TensorRT-LLM waits up to ``timeout``
        for them; these are ready or absent)."""
        with self._lock:
            out, self._stats = self._stats, []
        return out

    def _retire(self, r):
        with self._lock:
            if r in self._active:
                self._active.remove(r)

    def shutdown(self):
        self._stop.set()
        self._thread.join(timeout=5)
