"""Shared helpers for llm-harness's Python engine adapters.

The Rust bridge (src/engine/python.rs) loads this module as ``harness_bridge``
before any adapter. An adapter module defines ``create(model, options)`` that
returns an object with::

    info() -> dict              # name, version, model, dtype, device, kind, metadata
    submit(rid, prompt_token_ids, max_tokens, min_tokens, ignore_eos,
           temperature, seed, return_token_ids) -> None
    step(timeout_s) -> (bytes, list)   # one engine step; see EventBuffer
    in_flight() -> int
    abort(rid) -> None
    shutdown() -> None

``step`` returns a compact record: 4 little-endian int64 per event
``[rid, new_tokens, finish_code, at_ns]`` packed in one bytes object, plus a
list of ``(rid, dict)`` finish details (``token_ids``, ``error``, ``engine``
stamps in CLOCK_MONOTONIC ns). ``at_ns == 0`` asks the Rust driver to stamp the
event when ``step`` returns (step engines); stream engines stamp each arrival
with ``time.monotonic_ns()`` on the thread that saw it.
"""

import array
import dataclasses
import queue
import sys
import time
import traceback
import typing

NOT_FINISHED = -1
LENGTH = 0
STOP = 1
ABORT = 2
ERROR = 3

_FINISH_BY_NAME = {"length": LENGTH, "stop": STOP, "abort": ABORT, "error": ERROR}


class UsageError(Exception):
    """Bad user input (unknown engine arg, bad value, unusable model): exit code 2."""


def finish_code(reason) -> int:
    """Maps an engine's finish reason ("length", "stop", ...) to a finish code."""
    if reason is None:
        return NOT_FINISHED
    return _FINISH_BY_NAME.get(str(reason).lower(), STOP)


class EventBuffer:
    """Collects one step's events and packs them for the Rust side."""

    __slots__ = ("_flat", "_extras")

    def __init__(self):
        self._flat = array.array("q")
        self._extras = []

    def add(self, rid: int, new_tokens: int, finish: int = NOT_FINISHED, at_ns: int = 0):
        self._flat.extend((rid, new_tokens, finish, at_ns))

    def finish_info(self, rid: int, token_ids=None, error=None, engine=None):
        d = {}
        if token_ids is not None:
            d["token_ids"] = list(token_ids)
        if error is not None:
            d["error"] = error
        if engine is not None:
            d["engine"] = engine
        if d:
            self._extras.append((rid, d))

    def take(self):
        flat = self._flat
        if sys.byteorder != "little":
            flat.byteswap()
        out = (flat.tobytes(), self._extras)
        self._flat = array.array("q")
        self._extras = []
        return out


EMPTY = (b"", [])


def secs_to_ns(ts):
    """time.monotonic() seconds -> int ns (None for missing or zero)."""
    if ts is None or ts <= 0:
        return None
    return int(round(ts * 1e9))


def format_exception(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


class StreamQueue:
    """Arrivals from producer threads, stamped where they happen.

    Producers call ``push(rid, n, finish, extra)``; the stamp is taken there with
    ``time.monotonic_ns()``. ``step(timeout_s)`` blocks (GIL released) for the first
    arrival, then drains the rest without blocking.
    """

    def __init__(self):
        self._q = queue.SimpleQueue()

    def push(self, rid: int, new_tokens: int, finish: int = NOT_FINISHED, extra=None, at_ns=None):
        self._q.put((rid, new_tokens, finish, at_ns or time.monotonic_ns(), extra))

    def step(self, timeout_s: float):
        buf = EventBuffer()
        try:
            item = self._q.get(timeout=max(timeout_s, 0.0)) if timeout_s > 0 else self._q.get_nowait()
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


def _convert(engine: str, key: str, value: str, ty):
    origin = typing.get_origin(ty)
    args = [a for a in typing.get_args(ty) if a is not type(None)]
    if value.lower() in ("none", "null") and (type(None) in typing.get_args(ty) or ty is type(None)):
        return None
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        for a in args:
            try:
                return _convert(engine, key, value, a)
            except UsageError:
                continue
        raise UsageError(f"--engine-arg {key}={value}: not a valid value for {engine} ({ty})")
    if ty is bool:
        v = value.lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        raise UsageError(f"--engine-arg {key}={value}: expected true or false")
    if ty in (int, float):
        try:
            return ty(value)
        except ValueError:
            raise UsageError(f"--engine-arg {key}={value}: expected {'an integer' if ty is int else 'a number'}") from None
    if ty is str or ty is typing.Any:
        return value
    if typing.get_origin(ty) is typing.Literal:
        allowed = typing.get_args(ty)
        if value in allowed:
            return value
        raise UsageError(f"--engine-arg {key}={value}: expected one of {', '.join(map(str, allowed))}")
    # Anything else (lists, dicts, enums): accept JSON, else the plain string.
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value


def parse_options(engine: str, options: dict, schema) -> dict:
    """Converts ``{key: "string"}`` to typed values using ``schema``: a dataclass or a
    ``{key: type}`` dict. Unknown keys and unparsable values raise UsageError."""
    if dataclasses.is_dataclass(schema):
        try:
            hints = typing.get_type_hints(schema)
        except Exception:
            hints = {}
        types = {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(schema)}
    else:
        types = dict(schema)
    out = {}
    for key, value in options.items():
        if key not in types:
            import difflib

            close = difflib.get_close_matches(key.replace("-", "_"), list(types), n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            if len(types) <= 20:
                valid = "valid keys: " + ", ".join(sorted(types))
            else:
                valid = f"{len(types)} valid keys: the fields of {getattr(schema, '__name__', 'the engine options')}"
            raise UsageError(f"unknown --engine-arg '{key}' for {engine}{hint}; {valid}")
        ty = types[key]
        if isinstance(ty, str):  # unresolved annotation: treat as text unless it looks numeric
            ty = {"int": int, "float": float, "bool": bool, "str": str}.get(ty, typing.Any)
        out[key] = _convert(engine, key, str(value), ty)
    return out
