"""Shared helpers for llm-harness's Python engine adapters.

The Rust bridge (src/engine/python/mod.rs) loads this module as ``harness_bridge``
before any adapter (and before the helper modules in engines/common/). An adapter is
``engines/STEM.py``, loaded as the module ``harness_engine_STEM``; it defines
``create(model, options)`` returning an object that implements :class:`EngineAdapter`,
the typed protocol of the interface (``info()`` returns an :class:`EngineInfo`,
``step()`` a :data:`StepResult` whose finish details are :class:`FinishExtras`).
``create("", {})`` of an engine that needs a model raises ``UsageError``
(``require_model_dir``) before importing anything heavy.

``step`` returns a compact record: 4 little-endian int64 per event
``[rid, new_tokens, finish_code, at_ns]`` packed in one bytes object (see
:class:`EventBuffer`), plus a list of ``(rid, FinishExtras)``. ``at_ns == 0`` asks the
Rust driver to stamp the event when ``step`` returns (step engines); stream engines
stamp each arrival with ``time.monotonic_ns()`` on the thread that saw it
(:class:`StreamQueue`, :class:`StreamAdapter`).

What is shared: :class:`StreamAdapter`, the base of the adapters whose engine streams
each request on an asyncio loop (SGLang, TensorRT-LLM's LLM API); ``top2_margins``,
the one rule for parity margins; ``engine_info``, which builds ``info()``'s value.
"""

import array
import dataclasses
import difflib
import enum
import os
import queue
import sys
import threading
import time
import traceback
import types
import typing

NOT_FINISHED = -1
LENGTH = 0
STOP = 1
ABORT = 2
ERROR = 3

_FINISH_BY_NAME = {"length": LENGTH, "stop": STOP, "abort": ABORT, "error": ERROR}


# ------------------------------------------------------------------------------ the interface
# What src/engine/python/mod.rs calls and reads: TypedDicts and a Protocol a type checker
# can hold adapters to. Nothing checks the dicts' shapes at run time (tests/python/
# check_bridge.py does, in every cargo test).


class CudaPlacement(typing.TypedDict):
    """The CUDA device and stream the engine computes on (the harness's CUDA-event step
    timing records on that stream)."""

    device: int
    stream: int


class HostCompute(typing.TypedDict, total=False):
    """How the engine computes on the host: ``threads`` (torch threads on the thread
    that runs ``step()``), ``cpus`` (the CPUs it binds its threads to, a CPU list such
    as ``"0-3"``), ``reserved_cpus`` (CPUs it keeps for other work)."""

    threads: int
    cpus: str
    reserved_cpus: str


class SchedulerFacts(typing.TypedDict, total=False):
    """The engine's own scheduling limits, each only where the engine reports it:
    ``max_running`` (requests it runs at once; the harness warns when a load point
    asks for more), ``kv_cache_tokens`` (KV-cache capacity in tokens),
    ``prefix_caching``, ``cached_prompt_tokens_source`` (where each request's
    ``cached_prompt_tokens`` comes from; absent: the engine does not report them),
    ``chunked_prefill``, ``step_stats_source`` (where the :class:`StepStats` fields
    ``step()`` returns come from and which the engine cannot give; absent: it returns
    none)."""

    max_running: int
    kv_cache_tokens: int
    prefix_caching: bool
    cached_prompt_tokens_source: str
    chunked_prefill: bool
    step_stats_source: str


class Rank(typing.TypedDict, total=False):
    """One worker of a parallel layout as the engine reports it (``rank`` required):
    ``node`` (hostname), ``node_ip`` and ``ray_node_id`` (on Ray), ``pid``, ``device``
    (``cuda:0``, ``cpu``), ``tp_rank``, ``pp_rank``."""

    rank: int
    node: str
    node_ip: str
    ray_node_id: str
    pid: int
    device: str
    tp_rank: int
    pp_rank: int


class ParallelLayout(typing.TypedDict, total=False):
    """How the engine spreads the model (src/engine/layout.rs): ``tensor_parallel``,
    ``pipeline_parallel``, ``data_parallel``, ``backend`` (its distributed executor),
    ``ranks`` (every :class:`Rank` it reports), ``source`` (where the facts come
    from). Absent: one device."""

    tensor_parallel: int
    pipeline_parallel: int
    data_parallel: int
    backend: str
    ranks: list
    source: str


class _EngineInfoRequired(typing.TypedDict):
    name: str
    version: str
    model: str
    dtype: str
    device: str
    kind: typing.Literal["step", "stream"]
    metadata: dict


class EngineInfo(_EngineInfoRequired, total=False):
    """``info()``'s value (build it with :func:`engine_info`). ``kind``: ``step`` (the
    driver stamps events when ``step()`` returns) or ``stream`` (the adapter stamps
    them). ``instrument``: the adapter runs against a stand-in of its engine, so its
    figures measure the harness. ``notes``: what a user must know about this run
    (printed after loading, kept in run.json). ``metadata``: every other fact, for
    run.json only; nothing reads it back."""

    instrument: bool
    notes: list
    cuda: CudaPlacement
    compute: HostCompute
    scheduler: SchedulerFacts
    layout: ParallelLayout


class EngineStamps(typing.TypedDict, total=False):
    """The engine's own per-request stamps, CLOCK_MONOTONIC ns (None: not known), and
    ``meta``, its own per-request figures (JSON values)."""

    queued_ns: typing.Optional[int]
    scheduled_ns: typing.Optional[int]
    first_token_ns: typing.Optional[int]
    last_token_ns: typing.Optional[int]
    meta: typing.Optional[dict]


class FinishExtras(typing.TypedDict, total=False):
    """A finished request's details: ``token_ids`` (with ``return_token_ids``),
    ``top2_margins`` (one per generated token, see :func:`top2_margins`), ``error``
    (the reason or traceback of a failed request), ``engine`` (its stamps),
    ``cached_prompt_tokens`` (prompt tokens served from the engine's prefix cache, as it
    counts them)."""

    token_ids: list
    top2_margins: list
    error: str
    engine: EngineStamps
    cached_prompt_tokens: int


class StepStats(typing.TypedDict, total=False):
    """What the engine says about the step(s) one ``step()`` ran (src/core/step.rs
    ``StepStats``): each key only where the engine's own API reports it, never a guess;
    a missing key or None: not reported. Gauges (``running``, ``waiting``,
    ``kv_usage`` 0..1) as of the end of the last step; counts summed over the steps:
    ``engine_steps``, ``preempted``, ``prefill_requests``, ``prefill_tokens`` (computed,
    prefix-cache hits excluded), ``decode_requests``, ``decode_tokens``,
    ``prefix_queried``/``prefix_hits`` (prompt tokens looked up / found),
    ``spec_draft_tokens``/``spec_accepted_tokens``, ``engine_ms`` (the engine's own
    time for the step). An unknown key fails the step (a typo must not vanish)."""

    engine_steps: int
    running: int
    waiting: int
    preempted: int
    prefill_requests: int
    prefill_tokens: int
    decode_requests: int
    decode_tokens: int
    kv_usage: float
    prefix_queried: int
    prefix_hits: int
    spec_draft_tokens: int
    spec_accepted_tokens: int
    engine_ms: float


#: One text's :meth:`EngineAdapter.prompt_logprobs`: ``(logprobs, top1)``, one entry
#: per token after the first: ``ln p(token[i] | token[:i])`` (natural log) and the token
#: the engine ranks first at position i (src/core/logprobs.rs ``TextLogprobs``).
TextLogprobs = typing.Tuple[typing.List[float], typing.List[int]]


#: The :class:`StepStats` keys that are gauges; every other key is a count.
STEP_GAUGES = frozenset(("running", "waiting", "kv_usage"))


def fold_step_stats(held: typing.Optional[StepStats], step: StepStats) -> StepStats:
    """Adds ``step`` to ``held`` (the stats of the steps before it since the last
    ``step()``, or None), as src/core/step.rs ``StepStats::fold`` does: gauges take the
    later value, counts add; a None value is no figure. Returns the folded stats."""
    if held is None:
        held = {}
    for k, v in step.items():
        if v is not None:
            held[k] = v if k in STEP_GAUGES or k not in held else held[k] + v
    return held


#: ``step()``'s value: the packed events and the finish details of those that finished,
#: optionally followed by the step's :class:`StepStats` (or None), parsed in the same
#: call, so reporting them costs no second crossing.
StepResult = typing.Union[
    typing.Tuple[bytes, typing.List[typing.Tuple[int, FinishExtras]]],
    typing.Tuple[bytes, typing.List[typing.Tuple[int, FinishExtras]], typing.Optional[StepStats]],
]


@typing.runtime_checkable
class EngineAdapter(typing.Protocol):
    """The adapter interface: what ``create(model, options)`` returns. Every adapter
    class names it as a base, so a method it lacks fails loudly, here."""

    def info(self) -> EngineInfo:
        """What the engine is and how this run of it is set up (called once, after load)."""
        raise NotImplementedError

    def submit(self, rid: int, prompt_token_ids: typing.List[int], output_len: int, min_tokens: int,
               ignore_eos: bool, temperature: float, seed: typing.Optional[int], return_token_ids: bool) -> None:
        """Starts request ``rid``: at most ``output_len`` new tokens (the engine's own
        max_tokens), at least ``min_tokens`` unless it stops at EOS; ``seed`` is for
        sampling at ``temperature > 0``; ``return_token_ids`` asks for the ids (and
        margins) in its finish details."""
        raise NotImplementedError

    def step(self, timeout_s: float) -> StepResult:
        """One engine step (a step engine), or what arrived (a stream engine), waiting up
        to ``timeout_s`` when there is nothing yet."""
        raise NotImplementedError

    def in_flight(self) -> int:
        """Requests submitted and not yet finished or aborted (the Rust side keeps its
        own count; this is the adapter's, for tests and the adapter itself)."""
        raise NotImplementedError

    def abort(self, rid: int) -> None:
        """Stops request ``rid`` (no event follows for it); unknown ids are ignored."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Releases the engine, its threads and child processes; a second call does nothing."""
        raise NotImplementedError

    def reset_prefix_cache(self) -> bool:
        """Empties the engine's prefix cache (``--fresh-cache``), nothing in flight;
        False: it cannot (the default)."""
        return False

    def prompt_logprobs(self, texts: typing.List[typing.List[int]]) -> typing.Optional[typing.List[TextLogprobs]]:
        """Teacher forcing, nothing in flight (``harness parity --logprobs``): for each
        text (token ids), the engine's log-probability of every token after the first
        given the tokens before it, and its top-1 token there, from its own API.
        None: it cannot (the default)."""
        return None


#: An adapter module's ``create(model, options)``: ``options`` are ``--engine-arg``
#: strings, for :func:`parse_options`.
Create = typing.Callable[[str, typing.Dict[str, str]], EngineAdapter]


class UsageError(Exception):
    """Bad user input (unknown engine arg, bad value, unusable model): exit code 2."""


def require_model_dir(engine: str, model: str, allow_gguf: bool = False):
    """A checkpoint directory with config.json, or a UsageError naming the fix. With
    ``allow_gguf``, also a GGUF file or a directory holding exactly one: returns
    ``(directory, gguf file name or None)``."""
    if not model:
        raise UsageError(f"{engine} needs --model DIR (a Hugging Face checkpoint directory)")
    if os.path.isdir(model) and os.path.isfile(os.path.join(model, "config.json")):
        return model, None
    if allow_gguf:
        if os.path.isfile(model) and model.endswith(".gguf"):
            return os.path.dirname(os.path.abspath(model)), os.path.basename(model)
        if os.path.isdir(model):
            found = sorted(f for f in os.listdir(model) if f.endswith(".gguf"))
            if len(found) == 1:
                return model, found[0]
    raise UsageError(
        f"--model {model}: not a checkpoint directory with config.json"
        + (" nor a directory holding one GGUF" if allow_gguf else "")
        + " (models cannot be downloaded here; run scripts/setup.sh for models/gemma-3-270m)"
    )


def finish_code(reason) -> int:
    """Maps an engine's finish reason ("length", "stop", ...) to a finish code."""
    if reason is None:
        return NOT_FINISHED
    return _FINISH_BY_NAME.get(str(reason).lower(), STOP)


class EventBuffer:
    """Collects one step's events and packs them for the Rust side: ``take()`` returns a
    :data:`StepResult`, ``(bytes, extras)``, the bytes 4 int64 per event ``[rid,
    new_tokens, finish, at_ns]`` (little-endian), extras ``[(rid, FinishExtras), ...]``."""

    __slots__ = ("_flat", "_extras")

    def __init__(self):
        self._flat = []
        self._extras = []

    def __len__(self):
        return len(self._flat) // 4

    def add(self, rid: int, new_tokens: int, finish: int = NOT_FINISHED, at_ns: int = 0):
        self._flat += (rid, new_tokens, finish, at_ns)

    def finish_info(self, rid: int, token_ids=None, error=None, engine=None, top2_margins=None,
                    cached_prompt_tokens=None):
        d = {}
        if cached_prompt_tokens is not None:
            d["cached_prompt_tokens"] = int(cached_prompt_tokens)
        if token_ids is not None:
            d["token_ids"] = list(token_ids)
        if top2_margins is not None:
            d["top2_margins"] = [float(m) for m in top2_margins]
        if error is not None:
            d["error"] = str(error)
        if engine is not None:
            d["engine"] = engine
        if d:
            self._extras.append((rid, d))

    def take(self):
        if not self._flat and not self._extras:
            return EMPTY
        flat = array.array("q", self._flat)
        if sys.byteorder != "little":
            flat.byteswap()
        out = (flat.tobytes(), self._extras)
        self._flat = []
        self._extras = []
        return out


EMPTY = (b"", [])


class Refusals:
    """Requests an engine refused at submit (a prompt too long for its context, bad
    parameters): each fails alone, with its reason, at the next ``step()``, rather than
    failing the run. A step engine keeps one, counts it in ``in_flight()``, drops an
    aborted request from it, and returns ``take()`` first from ``step()`` while it is
    not empty."""

    __slots__ = ("_refused",)

    def __init__(self):
        self._refused = []  # (rid, reason)

    def add(self, rid: int, reason: str):
        self._refused.append((rid, reason))

    def drop(self, rid: int):
        self._refused = [r for r in self._refused if r[0] != rid]

    def __len__(self):
        return len(self._refused)

    def take(self) -> StepResult:
        """An ERROR finish with its reason for each refused request, then empty."""
        buf = EventBuffer()
        for rid, reason in self._refused:
            buf.add(rid, 0, ERROR)
            buf.finish_info(rid, error=reason)
        self._refused = []
        return buf.take()

#: Where the Rust bridge wrote the adapters' CPU shims (engines/cpu_shims/...), as a
#: directory on disk that child processes can import from; None outside the harness
#: (a script that loads an adapter from engines/ finds engines/cpu_shims beside it).
SHIMS_DIR = None


def secs_to_ns(ts):
    """time.monotonic() seconds -> int ns (None for missing or zero)."""
    if ts is None or ts <= 0:
        return None
    return int(round(ts * 1e9))


def format_exception(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


class StreamQueue:
    """Arrivals from producer threads, stamped where they happen.

    Producers call ``push(rid, new_tokens, finish, extra)``; the stamp is taken there
    with ``time.monotonic_ns()`` (CLOCK_MONOTONIC, the Rust driver's clock) unless
    ``at_ns`` is given. ``step(timeout_s)`` blocks in ``queue.get`` (GIL released) up to
    ``timeout_s`` for the first arrival, then drains the rest without blocking.
    """

    def __init__(self):
        self._q = queue.SimpleQueue()

    def push(self, rid: int, new_tokens: int, finish: int = NOT_FINISHED, extra=None, at_ns=None):
        self._q.put((rid, new_tokens, finish, at_ns or time.monotonic_ns(), extra))

    def step(self, timeout_s: float):
        buf = EventBuffer()
        try:
            item = self._q.get(timeout=timeout_s) if timeout_s > 0 else self._q.get_nowait()
        except queue.Empty:
            return EMPTY
        while True:
            rid, n, fin, at, extra = item
            buf.add(rid, n, fin, at)
            if extra:
                buf.finish_info(rid, **extra)
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return buf.take()


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null"}


def _is_union(ty) -> bool:
    origin = typing.get_origin(ty)
    return origin is typing.Union or (types.UnionType is not None and origin is types.UnionType)


def _convert(engine: str, key: str, value: str, ty):
    """``value`` (a string) as a ``ty``; UsageError naming the key when it is not one."""
    if _is_union(ty):
        members = typing.get_args(ty)
        if value.strip().lower() in _NONE and type(None) in members:
            return None
        errors = []
        for a in members:
            if a is type(None):
                continue
            try:
                return _convert(engine, key, value, a)
            except UsageError as e:
                errors.append(str(e).split(": ", 1)[-1])
        raise UsageError(f"--engine-arg {key}={value}: not valid for {engine} ({' or '.join(errors) or ty})")
    if ty is type(None):
        if value.strip().lower() in _NONE:
            return None
        raise UsageError(f"--engine-arg {key}={value}: expected none")
    if ty is bool:
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        raise UsageError(f"--engine-arg {key}={value}: expected true or false (also 1/0, yes/no, on/off)")
    if ty is int:
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            raise UsageError(f"--engine-arg {key}={value}: expected an integer") from None
    if ty is float:
        try:
            return float(value)
        except ValueError:
            raise UsageError(f"--engine-arg {key}={value}: expected a number") from None
    if ty is str or ty is typing.Any:
        return value
    if typing.get_origin(ty) is typing.Literal:
        allowed = typing.get_args(ty)
        for a in allowed:
            if value == str(a):
                return a
        raise UsageError(f"--engine-arg {key}={value}: expected one of {', '.join(map(str, allowed))}")
    if isinstance(ty, type) and issubclass(ty, enum.Enum):
        for m in ty:
            if value in (m.name, str(m.value)) or value.lower() == m.name.lower():
                return m
        raise UsageError(f"--engine-arg {key}={value}: expected one of {', '.join(m.name for m in ty)}")
    # Anything else (lists, dicts, config dataclasses): JSON, else the plain string.
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value


def _field_type(f):
    """A dataclass field's type; string annotations are resolved as far as they can be
    (``int``, ``bool | None``, ...), else inferred from the default."""
    ty = f.type
    if isinstance(ty, str):
        simple = {"int": int, "float": float, "bool": bool, "str": str}
        parts = [p.strip() for p in ty.replace("Optional[", "").rstrip("]").split("|")]
        resolved = [simple.get(p, type(None) if p == "None" else None) for p in parts]
        if all(r is not None for r in resolved):
            return typing.Union[tuple(resolved)] if len(resolved) > 1 else resolved[0]
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, (bool, int, float)):
            return typing.Union[type(default), None]
        return typing.Any
    return ty


def option_types(schema) -> dict:
    """``{key: type}`` of a dataclass (its fields) or of a ``{key: type}`` dict."""
    if dataclasses.is_dataclass(schema):
        try:
            hints = typing.get_type_hints(schema)
        except Exception:  # forward references that do not resolve: per field
            hints = {}
        return {f.name: hints.get(f.name) or _field_type(f) for f in dataclasses.fields(schema)}
    return dict(schema)


def parse_options(engine: str, options: dict, schema, common=(), see=None) -> dict:
    """Converts ``{key: "string"}`` (``--engine-arg KEY=VALUE``) to typed values using
    ``schema``: a dataclass or a ``{key: type}`` dict. Keys may use - or _. Unknown keys
    and unparsable values raise UsageError with a one-line message; ``common`` keys are
    listed first in it and ``see`` names where all keys are documented."""
    types_ = option_types(schema)
    out = {}
    for raw_key, value in options.items():
        key = str(raw_key).strip().replace("-", "_")
        if key not in types_:
            close = difflib.get_close_matches(key, list(types_), n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            shown = [k for k in common if k in types_] + sorted(k for k in types_ if k not in common)
            more = len(shown) - 12
            listing = ", ".join(shown[:12]) + (f", ... ({len(shown)} in all" + (f"; see {see})" if see else ")") if more > 0 else "")
            raise UsageError(f"unknown --engine-arg '{raw_key}' for {engine}{hint}; valid keys include: {listing}")
        out[key] = _convert(engine, key, str(value), types_[key])
    return out


def cuda_placement(torch) -> typing.Optional[CudaPlacement]:
    """The current torch device and stream (``info()["cuda"]``), for the harness's
    CUDA-event step timing (events go on the stream the engine computes on); None
    without CUDA."""
    try:
        if not torch.cuda.is_available():
            return None
        return {"device": torch.cuda.current_device(), "stream": int(torch.cuda.current_stream().cuda_stream)}
    except Exception:
        return None


def engine_info(name: str, version: str, model: str, dtype: str, device: str, kind: str, metadata: dict, *,
                instrument: bool = False, notes=(), cuda: typing.Optional[CudaPlacement] = None,
                compute: typing.Optional[dict] = None, scheduler: typing.Optional[dict] = None,
                layout: typing.Optional[dict] = None) -> EngineInfo:
    """``info()``'s value. The optional parts appear only where known: ``notes`` when
    there are any, ``cuda`` and ``layout`` when given, ``compute`` and ``scheduler`` with
    their None values dropped (absent, never a guess), ``instrument`` when true."""
    info = {"name": name, "version": version, "model": model, "dtype": dtype, "device": device, "kind": kind,
            "metadata": metadata}
    if instrument:
        info["instrument"] = True
    if notes:
        info["notes"] = [str(n) for n in notes]
    if cuda:
        info["cuda"] = dict(cuda)
    if layout:
        info["layout"] = dict(layout)
    for key, facts in (("compute", compute), ("scheduler", scheduler)):
        known = {k: v for k, v in (facts or {}).items() if v is not None}
        if known:
            info[key] = known
    return info


def jsonable(v):
    """``v`` with anything that is not a JSON value (enums, paths, dtypes, config
    objects) as its string, for metadata."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return str(v)


def _logprob(v) -> float:
    """One candidate's log-probability (or logit): a number, an object with
    ``.logprob`` (vLLM's and TensorRT-LLM's ``Logprob``) or a tuple whose first item is
    it (SGLang's ``(logprob, token_id, text)``)."""
    if isinstance(v, (int, float)):
        return float(v)
    lp = getattr(v, "logprob", None)
    if lp is not None:
        return float(lp)
    if isinstance(v, (tuple, list)) and v:
        return _logprob(v[0])
    raise TypeError(f"not a log-probability: {v!r}")


def top2_margins(per_token, tokens: int) -> typing.Optional[typing.List[float]]:
    """Each generated token's top-1 minus top-2 log-probability (the same as the logit
    difference: softmax shifts both by the same amount), from what the engine gives per
    generated token: its top candidates as a dict (``{token_id: Logprob}``, vLLM,
    TensorRT-LLM; the sampled token may be among them) or a sequence (SGLang's
    ``[(logprob, token_id, text), ...]``, or plain numbers), in any order.

    One rule for every engine: a margin list, when there is one, has exactly one entry
    per generated token (``tokens``). None when the engine gave no log-probabilities
    for some token, or one without a runner-up, or a count that differs."""
    per_token = [] if per_token is None else list(per_token)
    if len(per_token) != tokens:
        return None
    out = []
    for t in per_token:
        if t is None:
            return None
        try:
            vals = sorted((_logprob(v) for v in (t.values() if isinstance(t, dict) else t)), reverse=True)
        except (TypeError, ValueError):
            return None
        if len(vals) < 2:
            return None
        out.append(vals[0] - vals[1])
    return out


def extend_margins(margins: typing.Optional[list], per_token, tokens: int) -> typing.Optional[list]:
    """``margins`` (a request's so far, or None once one token had none) extended by a
    delta's: for engines that hand over a few tokens at a time."""
    more = None if margins is None else top2_margins(per_token, tokens)
    if more is None:
        return None
    margins.extend(more)
    return margins


class Profiler:
    """A torch.profiler window around an adapter's steps (``--profile``).

    The engine core runs in this process, so ``torch.profiler`` sees the model's
    operators (CPU, and CUDA kernels where there is a GPU). Each step runs inside a
    ``harness.step`` record_function range, so the trace shows exactly how many steps
    the window covered. ``stop()`` writes a Chrome/Perfetto trace and returns the top
    operators by self time."""

    def __init__(self, out_dir: str, label: str):
        import torch

        acts = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.path = os.path.join(out_dir, f"profile-{label}.json")
        self.steps = 0
        self.prof = torch.profiler.profile(activities=acts, record_shapes=False, with_stack=False)
        self.t0 = time.monotonic_ns()
        self.prof.start()

    def step(self, fn, timeout_s):
        with self.torch.profiler.record_function("harness.step"):
            out = fn(timeout_s)
        self.steps += 1
        return out

    def stop(self, top=15):
        self.prof.stop()
        window_ns = time.monotonic_ns() - self.t0
        self.prof.export_chrome_trace(self.path)
        ops = []
        for e in self.prof.key_averages():
            if e.key == "harness.step" or e.key.startswith("ProfilerStep"):
                continue
            self_us = e.self_cpu_time_total
            if self.cuda:
                self_us += getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))
            ops.append((e.key, int(e.count), float(self_us)))
        ops.sort(key=lambda o: -o[2])
        return {
            "trace_file": self.path,
            "steps": self.steps,
            "window_ns": window_ns,
            "method": "torch.profiler (CPU" + (" + CUDA" if self.cuda else "") + ") around each adapter step",
            "ops": [{"name": n, "calls": c, "self_us": t} for n, c, t in ops[:top]],
        }


class LoopThread:
    """An asyncio loop on a thread of its own, for engines whose API is asynchronous
    (SGLang's ``Engine.async_generate``, TensorRT-LLM's ``generate_async``).

    ``init()`` runs on the loop's thread before the loop starts (an engine built there
    binds to this thread's loop, and, off the main thread, installs no signal handler;
    when it sets a loop of its own, ``loop`` becomes that one); its
    result is ``value`` and its exception is re-raised by the constructor in the
    caller's thread. With ``block_sigint`` the thread blocks SIGINT first: processes the
    engine spawns from it inherit the mask, so Ctrl-C reaches the harness alone, which
    ends the run and then shuts the engine down. ``run(coro)`` schedules a coroutine
    from any thread and returns its ``concurrent.futures.Future``."""

    def __init__(self, name: str, init=None, block_sigint: bool = True):
        import asyncio
        import signal
        import threading

        self.loop = asyncio.new_event_loop()
        self.value = None
        self._error = None
        ready = threading.Event()

        def serve():
            if block_sigint:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            asyncio.set_event_loop(self.loop)
            try:
                if init is not None:
                    self.value = init()
                    # An engine may make and set a loop of its own while it is built
                    # (SGLang does, when no loop is running): its tasks live there, so
                    # that is the loop this thread must run.
                    current = asyncio.get_event_loop_policy().get_event_loop()
                    if current is not self.loop:
                        self.loop.close()
                        self.loop = current
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = e
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, name=name, daemon=True)
        self.thread.start()
        ready.wait()
        if self._error is not None:
            self.thread.join(timeout=5)
            raise self._error

    def run(self, coro):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn, *args):
        """``fn(*args)`` on the loop's thread, soon (for objects that are not thread-safe)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout_s: float = 5.0):
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=timeout_s)


class StreamRequest:
    """One live request of a :class:`StreamAdapter`: its id, whether its ids were asked
    for, how many tokens it has reported so far, and the future of its task on the
    loop. Adapters subclass it for what else they keep per request."""

    __slots__ = ("rid", "want_ids", "seen", "future")

    def __init__(self, rid: int, want_ids: bool):
        self.rid, self.want_ids = rid, bool(want_ids)
        self.seen = 0
        self.future = None


class StreamAdapter(EngineAdapter):
    """The base of adapters whose engine streams each request's updates to an asyncio
    loop (SGLang's ``async_generate``, TensorRT-LLM's ``generate_async``).

    It keeps the live-request table and its lock, the :class:`StreamQueue`, ``step``,
    ``in_flight``, ``abort``, ``shutdown`` and the finish bookkeeping: a request
    finishes once, unless it was aborted first, and its events go out in arrival
    order. Each request is one task on ``self.lt`` (a :class:`LoopThread` the adapter
    makes); every update is stamped with ``time.monotonic_ns()`` on that thread the
    moment it arrives, before anything else is done with it.

    An adapter supplies what is its engine's own:

    - ``submit`` builds the engine's request parameters and calls
      ``self._launch(req, *args)`` with a :class:`StreamRequest`;
    - ``async _open(req, *args)``, on the loop's thread: starts the request and returns
      its async iterable of updates;
    - ``_update(req, update) -> (tokens, finish)``: ``tokens`` is the request's output
      tokens so far (cumulative: the base reports the growth); ``finish`` is None until
      the last update, then ``(finish_code, FinishExtras)`` (None values are dropped);
    - ``_cancel(req)``: tells the engine to stop an aborted request;
    - ``_close_engine()``: the engine's own shutdown; ``_after_close()``: what follows
      once the loop has stopped (reaping processes);
    - ``ENDED``: the error of a stream that ends without a finish, ``FAILED``: the
      prefix of the error of a request whose stream raised.

    ``self.dead``, once set to a reason, fails every later ``step``: the engine can no
    longer serve (a process of it has died).
    """

    ENDED = "the engine's stream ended without a finish"
    FAILED = ""

    def __init__(self):
        self.stream = StreamQueue()
        self.lock = threading.Lock()
        self.live = {}  # rid -> StreamRequest, submitted and not finished or aborted
        self.lt = None  # the LoopThread the requests run on
        self.dead = None
        self._shut_down = False

    # -------------------------------------------------------------------------- hooks
    async def _open(self, req, *args):
        raise NotImplementedError

    def _update(self, req, update):
        raise NotImplementedError

    def _cancel(self, req):
        pass

    def _close_engine(self):
        pass

    def _after_close(self):
        pass

    # -------------------------------------------------------------------------- requests
    def _launch(self, req: StreamRequest, *args):
        """Makes ``req`` live and starts its task on the loop."""
        with self.lock:
            self.live[req.rid] = req
        req.future = self.lt.run(self._serve(req, *args))

    async def _serve(self, req, *args):
        import asyncio

        try:
            updates = await self._open(req, *args)
            async for update in updates:
                at = time.monotonic_ns()
                tokens, finish = self._update(req, update)
                n = tokens - req.seen
                req.seen += n
                if finish is None:
                    if n > 0:
                        self.stream.push(req.rid, n, at_ns=at)
                    continue
                code, extra = finish
                self._finish(req, n, code, extra, at)
                return
            self._finish(req, 0, ERROR, {"error": self.ENDED}, time.monotonic_ns())
        except asyncio.CancelledError:
            raise  # aborted: nothing to report
        except Exception as e:  # a request the engine refuses or fails ends alone
            self._finish(req, 0, ERROR, {"error": self.FAILED + format_exception(e)}, time.monotonic_ns())

    def _finish(self, req, n, code, extra, at):
        with self.lock:
            if self.live.pop(req.rid, None) is None:
                return  # aborted meanwhile
        self.stream.push(req.rid, n, code, {k: v for k, v in extra.items() if v is not None}, at_ns=at)

    # -------------------------------------------------------------------------- interface
    def step(self, timeout_s: float) -> StepResult:
        if self.dead is not None:
            raise RuntimeError(self.dead)
        return self.stream.step(timeout_s)

    def in_flight(self) -> int:
        return len(self.live)

    def abort(self, rid: int) -> None:
        with self.lock:
            req = self.live.pop(rid, None)
        if req is None:
            return
        self._cancel(req)
        if req.future is not None:
            req.future.cancel()

    def shutdown(self) -> None:
        """Once: cancels every live request's task, runs ``_close_engine()``, stops the
        loop, then ``_after_close()``."""
        if self._shut_down:
            return
        self._shut_down = True
        with self.lock:
            live, self.live = list(self.live.values()), {}
        for req in live:
            if req.future is not None:
                req.future.cancel()
        try:
            self._close_engine()
        finally:
            if self.lt is not None:
                self.lt.stop()
            self._after_close()
