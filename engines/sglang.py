"""SGLang adapter: ``sglang.Engine``, SGLang's in-process front end, driven by streaming.

SGLang has no in-process scheduler: ``Engine`` keeps its TokenizerManager (asyncio) in
this process and starts its scheduler and detokenizer as child processes (by design;
``info()`` and the load output say so). The adapter owns an asyncio loop on a
background thread, ``sglang-loop``; the Engine is built on that thread, so SGLang
installs no signal handler in the harness (it does so only on the main thread; its
SIGQUIT handler would kill the whole process tree, harness included). Each request
is one ``async_generate(input_ids=..., stream=True)`` task on that loop; every
streamed chunk is stamped with ``time.monotonic_ns()`` (CLOCK_MONOTONIC, the harness's
clock) the moment it arrives, with the exact number of new tokens: SGLang's chunks are
cumulative (``incremental_streaming_output=False``, its default), so the count is the
growth of ``meta_info["completion_tokens"]``.

SGLang's own per-request figures (``enable_metrics``) are kept beside the harness's
stamps, never used for its metrics: ``request_received_ts``, ``request_finished_ts``
and ``response_sent_to_client_ts`` are wall clock (SGLang's ``time.perf_counter()``
plus a calibrated wall-clock offset); the adapter converts them back with SGLang's own
offset (``req_time_stats.global_diff_realtime_monotonic``) to perf_counter, which is
CLOCK_MONOTONIC on Linux (checked at load). First-token and queue stamps are derived
from those plus SGLang's durations; the raw values go in ``engine.meta``.

``--engine-arg KEY=VALUE`` sets any ``ServerArgs`` field (typed from its annotations,
choices checked, close-match hints). On a host without CUDA the CPU defaults from
shared CPU_ENGINES.md apply (device cpu, torch_native attention, float32,
mem_fraction_static 0.1 of system RAM); with a GPU SGLang's own defaults do.

On CPU, ``sgl_kernel`` (SGLang's kernel package) must import, but the registry's
build is CUDA-only: when it cannot load, the project's plain-torch stand-in
(engines/cpu_shims/sgl_kernel) goes first on ``sys.path``, which the spawned
scheduler inherits; ``info()`` states it and the ops it implements.

Processes: the loop thread blocks SIGINT before SGLang spawns its children (they
inherit the mask), so Ctrl-C reaches the harness, which stops the run and then shuts
SGLang down. ``shutdown()`` runs SGLang's own ``Engine.shutdown()`` with its
process-tree kill narrowed to the processes SGLang started (it would kill every child
of the host), then reaps them. A scheduler or detokenizer that dies mid-run is noticed
within half a second and fails the run with the process named. How those processes are
found, watched and ended lives in ``child_procs`` and ``sglang_procs`` (engines/common/); the
request table, the stream and the finish bookkeeping in ``harness_bridge.StreamAdapter``.
"""

import asyncio
import importlib.metadata
import os
import sys
import time
import typing

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import child_procs
import harness_bridge as hb
import sglang_procs

# Known to work on a CPU-only host (shared CPU_ENGINES.md). mem_fraction_static is a
# fraction of system RAM on CPU (0.05 is below the minimum for fp32 Gemma 3 270M).
# The longest flush_cache() may take (it waits for the scheduler's reply).
FLUSH_S = 120
# The longest one prompt_logprobs request may take (s).
LOGPROBS_S = 600
# sleep_on_idle: an idle scheduler otherwise polls its sockets in a busy loop, taking a
# whole core from the model's threads and this process on a small CPU host; it sleeps
# in a poll on the same sockets, so a request still wakes it at once.
CPU_DEFAULTS = {"device": "cpu", "attention_backend": "torch_native", "disable_cuda_graph": True,
                "dtype": "float32", "mem_fraction_static": 0.1, "sleep_on_idle": True}
# Always (unless overridden): a fixed seed, SGLang's per-request timing on, and no
# tokenizer: prompts go in as ids and outputs come back as ids, so no text work sits on
# the timed path (SGLang then cannot honour min_new_tokens without ignore_eos, which
# needs its tokenizer for EOS: skip_tokenizer_init=false brings it back).
# load_snapshot_publish_interval=1: the scheduler publishes its load snapshot (the step
# stats' source) after every decode step, not every 15th (prefill steps always publish).
DEFAULTS = {"random_seed": 0, "enable_metrics": True, "skip_tokenizer_init": True,
            "load_snapshot_publish_interval": 1}
COMMON_KEYS = ("mem_fraction_static", "max_running_requests", "chunked_prefill_size", "attention_backend", "dtype",
               "tp_size", "max_total_tokens", "disable_radix_cache", "schedule_policy", "stream_interval",
               "random_seed", "log_level")
# SGLang matches request ids by prefix when aborting: fixed-width ids are never a
# prefix of one another.
RID = "harness-{:020d}"
WATCH_S = 0.5
# Where the step stats come from (SchedulerFacts.step_stats_source).
STEP_STATS_SOURCE = (
    "SGLang's load snapshot (TokenizerManager.load_snapshot_reader, the shared-memory LoadSnapshot "
    "the scheduler publishes after each step it processes, load_snapshot_publish_interval=1): "
    "running = its running batch's requests and waiting = its waiting queue when the step's result is "
    "processed (a prefill step's new requests join the running batch after it), kv_usage = "
    "num_used_tokens / max_total_num_tokens (evictable prefix-cache tokens excluded), prefill_tokens = "
    "growth of total_prefill_uncached_tokens (counted at the snapshot after the prefill step), read "
    "once per poll and only when a new snapshot arrived. Not reported: how many engine steps a poll "
    "covered (the snapshot keeps only the latest), per-step decode and prefill request counts, "
    "preemptions (retractions), per-step prefix hits (each request's cached_tokens are kept "
    "instead) and speculative drafts; the forward-pass metrics stream that has them times steps "
    "with CUDA events")


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _server_args_schema(server_args_cls):
    """``{field: type}`` of SGLang's ``ServerArgs`` (a msgspec Struct whose fields are
    ``Annotated[T, help or Arg(choices=...)]``): choices become a Literal."""
    import msgspec

    out = {}
    for f in msgspec.structs.fields(server_args_cls):
        if f.name.startswith("_"):
            continue
        ty = f.type
        if typing.get_origin(ty) is typing.Annotated:
            base, *meta = typing.get_args(ty)
            choices = next((m.choices for m in meta if getattr(m, "choices", None)), None)
            if choices:
                lit = typing.Literal[tuple(choices)]
                optional = type(None) in typing.get_args(base)
                ty = typing.Optional[lit] if optional else lit
            else:
                ty = base
        out[f.name] = ty
    return out


def _kernel_package(on_gpu):
    """Imports sgl_kernel: the real package where it loads, else (on CPU only) the
    project's stand-in. Returns what the run should state about it."""
    try:
        import sgl_kernel  # noqa: F401

        return {"package": f"sglang-kernel {_version('sglang-kernel')}", "stand_in": False}
    except Exception as e:  # the CUDA build fails on libcuda, nothing else is tried
        why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if on_gpu:
            raise RuntimeError(f"sgl_kernel (sglang-kernel {_version('sglang-kernel')}) cannot load: {why}") from e
    for name in [m for m in sys.modules if m == "sgl_kernel" or m.startswith("sgl_kernel.")]:
        del sys.modules[name]
    root = hb.SHIMS_DIR or os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_shims")
    if not os.path.isfile(os.path.join(root, "sgl_kernel", "__init__.py")):
        raise RuntimeError(f"the project's sgl_kernel CPU stand-in is missing from {root}")
    # First on sys.path here; SGLang's spawned processes get this process's sys.path.
    sys.path.insert(0, root)
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    import sgl_kernel

    if not getattr(sgl_kernel, "HARNESS_CPU_SHIM", False):
        raise RuntimeError(f"expected the project's sgl_kernel stand-in from {root}, imported {sgl_kernel.__file__}")
    ops = list(sgl_kernel.IMPLEMENTED)
    return {
        "package": f"llm-harness CPU stand-in ({root})",
        "stand_in": True,
        "ops": ops,
        "real_package": f"sglang-kernel {_version('sglang-kernel')}",
        "real_package_error": why,
        "statement": (f"SGLang CPU path with the project's torch implementation of {len(ops)} kernel "
                      f"op{'s' if len(ops) != 1 else ''} ({', '.join(ops)}); sglang-kernel "
                      f"{_version('sglang-kernel')} cannot load here ({why})"),
    }


def _finish_code(reason):
    """SGLang's finish_reason ({"type": "length" | "stop" | "abort", ...}) -> (code, error)."""
    kind = reason.get("type") if isinstance(reason, dict) else str(reason)
    if kind == "length":
        return hb.LENGTH, None
    if kind == "stop":
        return hb.STOP, None
    return hb.ERROR, f"SGLang ended the request: {reason}"


class _Req(hb.StreamRequest):
    __slots__ = ("ids", "tops")

    def __init__(self, rid, want_ids):
        super().__init__(rid, want_ids)
        self.ids = []
        self.tops = []  # SGLang's output_top_logprobs, one entry per output token


class SglangAdapter(hb.StreamAdapter):
    ENDED = "SGLang's stream ended without a finish reason"
    FAILED = "SGLang refused or failed the request: "

    def __init__(self, model, options):
        hb.require_model_dir("sglang", model)
        import torch

        super().__init__()
        self.torch = torch
        self.on_gpu = torch.cuda.is_available()
        if not self.on_gpu:
            # Before sglang is imported: is_cpu() and the CPU platform read it.
            os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
        self.kernels = _kernel_package(self.on_gpu)
        # Imported before the loop thread makes its loop: this import sets uvloop's
        # event-loop policy, so that loop is the kind SGLang runs on (made earlier, the
        # Engine would make and bind to a second loop of its own).
        import sglang.srt.entrypoints.engine  # noqa: F401
        from sglang.srt.observability import req_time_stats
        from sglang.srt.server_args import ServerArgs

        self._rts = req_time_stats
        opts = hb.parse_options("sglang", options, _server_args_schema(ServerArgs), common=COMMON_KEYS,
                                see="sglang.srt.server_args.ServerArgs")
        if "model_path" in opts:
            raise hb.UsageError("pass the model as --model DIR, not --engine-arg model_path=")
        self.args = {**DEFAULTS, **({} if self.on_gpu else CPU_DEFAULTS), **opts, "model_path": model}
        self.overridden = sorted(opts)
        if time.get_clock_info("perf_counter").implementation != "clock_gettime(CLOCK_MONOTONIC)":
            self._clock_ok = False  # SGLang's stamps are then not on the harness's clock: kept raw only
        else:
            self._clock_ok = True

        self.engine = None
        self._watch_future = None
        self._before = set(child_procs.children())
        t0 = time.monotonic()
        try:
            # Built on the loop's thread: SGLang binds to that loop, installs no signal
            # handler there, and its children inherit that thread's blocked SIGINT.
            self.lt = hb.LoopThread("sglang-loop", init=self._build)
        except BaseException:
            child_procs.reap_new_children(self._before)
            raise
        self.load_s = time.monotonic() - t0
        self.engine, self.server_info = self.lt.value
        self.child_pids = list(self.engine.get_all_child_pids())
        self.helpers = sorted(set(child_procs.children()) - self._before - set(self.child_pids))
        if self.engine.loop is not self.lt.loop:
            self.shutdown()
            raise RuntimeError("SGLang's Engine is bound to an event loop the adapter does not run")
        self.incremental = bool(getattr(self.engine.server_args, "incremental_streaming_output", False))
        self._loads = self._load_reader()
        self._seen = {r.dp_rank: r for r in self._read_loads()}  # the last snapshot read, per DP rank
        self._watch_future = self.lt.run(self._watch())

    # ---------------------------------------------------------------------------- step stats
    def _load_reader(self):
        """SGLang's shared-memory load-snapshot reader, None where it has none or uses
        ZMQ (multi-node DP attention: that reader's socket belongs to SGLang's loop)."""
        reader = getattr(self.engine.tokenizer_manager, "load_snapshot_reader", None)
        return reader if type(reader).__name__ == "ShmLoadSnapshotReader" else None

    def _read_loads(self):
        return self._loads.read_all() if self._loads is not None else []

    def step(self, timeout_s):
        out = super().step(timeout_s)
        stats = self._step_stats()
        return out if stats is None else (*out, stats)

    def _step_stats(self):
        """The scheduler's load snapshots that are new since the last poll, as StepStats
        (None: nothing new). Gauges sum over DP ranks; prefill tokens are the growth of
        its cumulative counter."""
        loads = self._read_loads()
        if not any(self._seen.get(r.dp_rank) is None or r.timestamp != self._seen[r.dp_rank].timestamp
                   for r in loads):
            return None
        prefill = 0
        for r in loads:
            before = self._seen.get(r.dp_rank)
            prefill += r.total_prefill_uncached_tokens - (before.total_prefill_uncached_tokens if before else 0)
            self._seen[r.dp_rank] = r
        used = sum(r.num_used_tokens for r in self._seen.values())
        total = sum(r.max_total_num_tokens for r in self._seen.values())
        return {"running": sum(r.num_running_reqs for r in self._seen.values()),
                "waiting": sum(r.num_waiting_reqs for r in self._seen.values()),
                "kv_usage": used / total if total > 0 else None,
                "prefill_tokens": max(prefill, 0)}

    # ---------------------------------------------------------------------------- loop thread
    def _build(self):
        import sglang

        engine = sglang.Engine(**self.args)
        # Sync Engine calls run on this loop, which is not running yet: this one works.
        return engine, engine.get_server_info()

    async def _watch(self):
        """Marks the engine dead when one of SGLang's processes has exited."""
        names = dict(zip(self.child_pids, ("scheduler", "detokenizer")))
        while self.dead is None:
            await asyncio.sleep(WATCH_S)
            self.dead = child_procs.exited(self.child_pids, names, "SGLang")

    async def _open(self, req, prompt, sp):
        return await self.engine.async_generate(
            input_ids=prompt, sampling_params=sp, stream=True, rid=RID.format(req.rid),
            return_logprob=req.want_ids, top_logprobs_num=2 if req.want_ids else None)

    def _update(self, req, chunk):
        """A streamed chunk: its cumulative ``completion_tokens``; at the finish, the
        finish code and details."""
        meta = chunk["meta_info"]
        if req.want_ids:
            ids = chunk.get("output_ids") or []
            tops = meta.get("output_top_logprobs") or []
            if self.incremental:
                req.ids.extend(ids)
                req.tops.extend(tops)
            else:
                req.ids = list(ids)
                req.tops = list(tops)
        tokens = int(meta["completion_tokens"])
        reason = meta.get("finish_reason")
        if reason is None:
            return tokens, None
        code, error = _finish_code(reason)
        extra = {"engine": self._engine_stamps(meta), "error": error,
                 "cached_prompt_tokens": meta.get("cached_tokens")}
        if req.want_ids:
            extra["token_ids"] = req.ids
            extra["top2_margins"] = hb.top2_margins(req.tops, len(req.ids))
        return tokens, (code, extra)

    def _cancel(self, req):
        # On the loop's thread: SGLang's TokenizerManager is not thread-safe.
        self.lt.call(self.engine.tokenizer_manager.abort_request, RID.format(req.rid))

    def _engine_stamps(self, meta):
        """SGLang's meta_info at finish: stamps on CLOCK_MONOTONIC (converted from its
        wall-clock ``*_ts`` with its own offset) plus the raw figures."""
        keep = ("request_received_ts", "first_token_latency", "queue_time", "forward_entry_time",
                "prefill_finished_time", "response_sent_to_client_ts", "request_finished_ts", "e2e_latency",
                "decode_throughput", "prompt_tokens", "completion_tokens", "cached_tokens", "num_retractions")
        raw = {k: meta[k] for k in keep if meta.get(k) is not None}
        out = {"meta": raw}
        if not self._clock_ok:
            return out
        offset = self._rts.global_diff_realtime_monotonic

        def mono(wall):
            return hb.secs_to_ns(wall - offset) if wall else None

        received = mono(raw.get("request_received_ts"))
        out["queued_ns"] = received
        if received and raw.get("first_token_latency") is not None:
            out["first_token_ns"] = received + int(round(raw["first_token_latency"] * 1e9))
        if raw.get("forward_entry_time"):
            out["scheduled_ns"] = mono(raw["forward_entry_time"])
        # response_sent_to_client_ts is the first response's send time, not the last:
        # the request's finish is the last token.
        out["last_token_ns"] = mono(raw.get("request_finished_ts"))
        return out

    # ---------------------------------------------------------------------------- interface
    def info(self):
        sa = self.engine.server_args
        si = self.server_info or {}

        def resolved(k):
            return hb.jsonable(si.get(k, getattr(sa, k, None)))

        meta = {
            "engine_args": {k: hb.jsonable(v) for k, v in self.args.items()},
            "engine_args_from_user": self.overridden,
            "processes": {
                "front_end": "sglang.Engine in this process: TokenizerManager on the adapter's asyncio thread",
                "children": "scheduler and detokenizer in spawned child processes, by SGLang's design "
                            "(no in-process scheduler): the model runs there",
                "child_pids": self.child_pids,
                "helper_pids": self.helpers,
            },
            "kernels": self.kernels,
            "kv_cache": {"max_total_num_tokens": si.get("max_total_num_tokens"),
                         "max_req_input_len": si.get("max_req_input_len"),
                         "page_size": getattr(sa, "page_size", None)},
            "scheduler": {k: resolved(k) for k in (
                "max_running_requests", "chunked_prefill_size", "max_prefill_tokens", "schedule_policy",
                "disable_radix_cache", "disable_overlap_schedule", "stream_interval", "attention_backend",
                "mem_fraction_static", "tp_size")},
            "streaming": ("incremental chunks" if self.incremental else
                          "cumulative chunks (incremental_streaming_output=False); new tokens = growth of "
                          "meta_info.completion_tokens, each chunk stamped on arrival"),
            "engine_stamps": ("queued_ns = request_received_ts, scheduled_ns = forward_entry_time, last_token_ns "
                              "= request_finished_ts: SGLang's wall-clock stamps converted back to "
                              "CLOCK_MONOTONIC with its own offset (perf_counter is CLOCK_MONOTONIC here); "
                              "first_token_ns = request_received_ts + first_token_latency" if self._clock_ok else
                              "SGLang's perf_counter is not CLOCK_MONOTONIC here: its stamps are kept raw only"),
            "load_s": round(self.load_s, 3),
            "torch": self.torch.__version__,
            "env": {k: os.environ.get(k) for k in ("SGLANG_USE_CPU_ENGINE", "OMP_NUM_THREADS",
                                                   "SGLANG_CPU_OMP_THREADS_BIND") if k in os.environ},
        }
        notes = [f"SGLang {_version('sglang')}: scheduler and detokenizer run in child processes "
                 f"(pids {', '.join(map(str, self.child_pids))}) by SGLang's design; tokens are stamped "
                 "where the streamed chunks reach this process"]
        if self.kernels.get("stand_in"):
            notes.append(self.kernels["statement"])
        chunk = _int(resolved("chunked_prefill_size"))
        radix_off = resolved("disable_radix_cache")
        # The scheduler's own limit (it sizes one when the args leave it unset), per
        # data-parallel rank.
        states = si.get("internal_states") or [{}]
        state = states[0] if isinstance(states, list) and isinstance(states[0], dict) else {}
        per_dp = _int(state.get("effective_max_running_requests_per_dp")) or _int(resolved("max_running_requests"))
        dtype = str(si.get("dtype") or getattr(sa, "dtype", "")).replace("torch.", "")
        return hb.engine_info(
            "sglang", _version("sglang") or "unknown", str(sa.model_path), dtype,
            str(getattr(sa, "device", "") or ("cuda" if self.on_gpu else "cpu")), "stream", meta,
            notes=notes,
            cuda=hb.cuda_placement(self.torch),
            scheduler={
                "max_running": per_dp * (_int(resolved("dp_size")) or 1) if per_dp else None,
                "kv_cache_tokens": _int(si.get("max_total_num_tokens")),
                "prefix_caching": None if radix_off is None else not radix_off,
                "cached_prompt_tokens_source": "SGLang meta_info.cached_tokens (prompt tokens served by "
                                               "RadixAttention's prefix cache; 0 with it off)",
                # -1 (or 0) turns chunked prefill off.
                "chunked_prefill": None if chunk is None else chunk > 0,
                **({"step_stats_source": STEP_STATS_SOURCE} if self._loads is not None else {}),
            })

    def submit(self, rid, prompt_token_ids, output_len, min_tokens, ignore_eos, temperature, seed, return_token_ids):
        sp = {"max_new_tokens": output_len, "ignore_eos": bool(ignore_eos), "temperature": float(temperature)}
        # With ignore_eos nothing ends a request before max_new_tokens: a minimum adds
        # nothing (and SGLang refuses one without its tokenizer).
        if min_tokens and not ignore_eos:
            sp["min_new_tokens"] = min_tokens
        if seed is not None and temperature > 0:
            sp["sampling_seed"] = int(seed)
        self._launch(_Req(rid, return_token_ids), list(prompt_token_ids), sp)

    def reset_prefix_cache(self):
        # TokenizerManager.flush_cache on SGLang's own loop; it refuses while requests run.
        out = self.lt.run(self.engine.tokenizer_manager.flush_cache()).result(timeout=FLUSH_S)
        return bool(getattr(out, "success", False))

    def prompt_logprobs(self, texts):
        """SGLang's own ``return_logprob`` with ``logprob_start_len=0`` and
        ``top_logprobs_num=1``: per prompt position, the log-probability of the prompt's
        token (``meta_info["input_token_logprobs"]``) and SGLang's top-1 token there
        (``input_top_logprobs``); one token generated and dropped, one text at a time."""
        sp = {"max_new_tokens": 1, "temperature": 0.0}
        out = []
        for ids in texts:
            coro = self.engine.async_generate(input_ids=list(ids), sampling_params=sp, return_logprob=True,
                                              logprob_start_len=0, top_logprobs_num=1)
            meta = self.lt.run(coro).result(timeout=LOGPROBS_S)["meta_info"]
            toks = list(meta.get("input_token_logprobs") or [])
            tops = list(meta.get("input_top_logprobs") or [])
            # The first token has no prediction: SGLang gives it a None log-probability.
            if len(toks) == len(ids):
                toks, tops = toks[1:], tops[1:]
            if len(toks) != len(ids) - 1 or len(tops) != len(toks):
                raise RuntimeError(f"SGLang returned {len(toks)} input logprobs and {len(tops)} top logprobs "
                                   f"for {len(ids)} tokens")
            lps, top1 = [], []
            for tok, (lp, tid, *_), top in zip(ids[1:], toks, tops):
                if int(tid) != int(tok) or lp is None:
                    raise RuntimeError(f"SGLang's input logprob entry ({lp}, {tid}) does not score token {tok}")
                lps.append(float(lp))
                top1.append(int(top[0][1]) if top else int(tok))
            out.append((lps, top1))
        return out

    def _close_engine(self):
        engine, self.engine = self.engine, None
        if self._watch_future is not None:
            self._watch_future.cancel()
        if engine is not None:
            sglang_procs.shutdown(engine, set(self.child_pids) | set(self.helpers))

    def _after_close(self):
        child_procs.reap_new_children(self._before)


def _int(v):
    """``v`` as an int, None when it is not one (SGLang leaves some limits unset)."""
    try:
        return None if v is None or isinstance(v, bool) else int(v)
    except (TypeError, ValueError):
        return None


def create(model, options):
    return SglangAdapter(model, options)
