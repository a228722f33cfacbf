"""The Python bridge's own helpers, checked in plain Python (stdlib only, no engine):
the margins rule, the event packing, refusals at submit, the stream-adapter base
driven by a fake producer, ``engine_info``'s shape and its TypedDicts against the Rust types
src/engine/python/mod.rs parses ``info()`` into, and every adapter's methods against
the ``EngineAdapter`` protocol. The TensorRT-LLM adapter also runs here end to end on
its test stand-in (tests/trtllm_py_standin).

Run by tests/python_engines.rs with the machine's python3 (every ``cargo test``);
plain asserts, exits non-zero on the first failure, prints ``check_bridge: ok`` last.
"""

import asyncio
import importlib.util
import inspect
import json
import logging
import os
import re
import struct
import sys
import tempfile
import threading
import time
import typing

sys.dont_write_bytecode = True  # no __pycache__ in engines/ from a test run
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINES = os.path.join(ROOT, "engines")


def load(name, path):
    """A module from its file under the name the Rust bridge gives it (never by putting
    engines/ on sys.path: engines/sglang.py would shadow sglang)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


hb = load("harness_bridge", os.path.join(ENGINES, "harness_bridge.py"))
for helper in sorted(os.listdir(os.path.join(ENGINES, "common"))):
    if helper.endswith(".py"):
        load(helper[:-3], os.path.join(ENGINES, "common", helper))


STEP_STATS = typing.get_type_hints(hb.StepStats)


def check_stats(stats):
    """A step()'s third element against the StepStats TypedDict."""
    if stats is None:
        return
    assert isinstance(stats, dict) and set(stats) <= set(STEP_STATS), stats
    for k, v in stats.items():
        assert v is None or type(v) is STEP_STATS[k] or (STEP_STATS[k] is float and type(v) is int), (k, v)
    if stats.get("kv_usage") is not None:
        assert 0.0 <= stats["kv_usage"] <= 1.0, stats


def unpack(result):
    assert isinstance(result, tuple) and len(result) in (2, 3), result
    data, extras = result[:2]
    if len(result) == 3:
        check_stats(result[2])
    assert isinstance(data, bytes) and isinstance(extras, list), result
    assert len(data) % 32 == 0, len(data)
    return [struct.unpack_from("<4q", data, i) for i in range(0, len(data), 32)], dict(extras)


# ---------------------------------------------------------------------------- margins
class Logprob:  # vLLM's and TensorRT-LLM's shape
    def __init__(self, logprob, rank=None):
        self.logprob, self.rank = logprob, rank


def close(a, b):
    return a is not None and len(a) == len(b) and all(abs(x - y) < 1e-9 for x, y in zip(a, b))


# vLLM: top-2 plus the sampled token (a third entry when it is not among them), any order.
vllm_like = [{5: Logprob(-0.1), 9: Logprob(-2.1)}, {3: Logprob(-3.0), 4: Logprob(-0.5), 7: Logprob(-1.0)}]
assert close(hb.top2_margins(vllm_like, 2), [2.0, 0.5])
# SGLang: (logprob, token_id, text), best first; also as JSON lists.
assert close(hb.top2_margins([[(-0.2, 1, "a"), (-1.2, 2, "b")], [[-0.3, 1, None], [-0.4, 2, None]]], 2), [1.0, 0.1])
# TensorRT-LLM: {token_id: Logprob}; HF: the top-2 logits as plain numbers.
assert close(hb.top2_margins([{1: Logprob(-0.25, 1), 2: Logprob(-2.25, 2)}], 1), [2.0])
assert close(hb.top2_margins([[7.5, 5.0], (3.0, 3.0)], 2), [2.5, 0.0])
# One answer to a missing top-2: None for the whole request, whatever is missing.
assert hb.top2_margins([{1: Logprob(-0.1)}, {1: Logprob(-0.1), 2: Logprob(-0.2)}], 2) is None  # no runner-up
assert hb.top2_margins([None, [(-0.1, 1, ""), (-0.2, 2, "")]], 2) is None  # a token without logprobs
assert hb.top2_margins(None, 3) is None  # no logprobs at all
assert hb.top2_margins([[1.0, 0.0]], 2) is None  # fewer entries than tokens
assert hb.top2_margins([[1.0, 0.0]] * 3, 2) is None  # more
assert hb.top2_margins([["x", "y"]], 1) is None  # not log-probabilities
assert hb.top2_margins(None, 0) == [] and hb.top2_margins([], 0) == []  # nothing generated, nothing missing
# A few tokens at a time (vLLM's DELTA outputs): once one token has none, the request has none.
acc = hb.extend_margins([], [[1.0, 0.5]], 1)
acc = hb.extend_margins(acc, None, 0)
acc = hb.extend_margins(acc, [[2.0, 0.0], [0.0, -1.0]], 2)
assert close(acc, [0.5, 2.0, 1.0]), acc
assert hb.extend_margins(hb.extend_margins([], [[1.0]], 1), [[1.0, 0.0]], 1) is None

# ---------------------------------------------------------------------------- event packing
buf = hb.EventBuffer()
assert buf.take() is hb.EMPTY and len(buf) == 0
buf.add(1, 3)
buf.add(2, 1, hb.LENGTH, at_ns=123456789012)
buf.finish_info(2, token_ids=(4, 5), top2_margins=[1, 2], error=None, engine={"queued_ns": 7})
buf.finish_info(3)  # nothing to say: no entry
assert len(buf) == 2
events, extras = unpack(buf.take())
assert events == [(1, 3, hb.NOT_FINISHED, 0), (2, 1, hb.LENGTH, 123456789012)], events
assert extras == {2: {"token_ids": [4, 5], "top2_margins": [1.0, 2.0], "engine": {"queued_ns": 7}}}, extras
assert all(type(m) is float for m in extras[2]["top2_margins"])
assert buf.take() is hb.EMPTY  # taken: empty again
assert [hb.finish_code(r) for r in (None, "length", "STOP", "abort", "error", "eos")] == [-1, 0, 1, 2, 3, 1]

# Refusals: requests refused at submit fail alone, with their reason, at the next step.
refused = hb.Refusals()
assert not refused and refused.take() is hb.EMPTY
refused.add(4, "too long")
refused.add(5, "bad parameters")
refused.drop(5)  # aborted before its step
refused.drop(99)
assert len(refused) == 1
assert unpack(refused.take()) == ([(4, 0, hb.ERROR, 0)], {4: {"error": "too long"}})
assert not refused and refused.take() is hb.EMPTY

# StreamQueue: stamped where pushed, drained in order, EMPTY after a timeout.
q = hb.StreamQueue()
t0 = time.monotonic_ns()
threading.Thread(target=lambda: (q.push(1, 2), q.push(1, 1, hb.STOP, {"error": None, "token_ids": [1]}))).start()
time.sleep(0.05)
events, extras = unpack(q.step(1.0))
assert [e[:3] for e in events] == [(1, 2, -1), (1, 1, hb.STOP)] and extras == {1: {"token_ids": [1]}}, (events, extras)
assert t0 < events[0][3] <= events[1][3] <= time.monotonic_ns()
t = time.monotonic()
assert q.step(0.05) is hb.EMPTY and time.monotonic() - t >= 0.04
assert q.step(0.0) is hb.EMPTY


# ---------------------------------------------------------------------------- the stream base
class Fake(hb.StreamAdapter):
    """A fake engine on the stream base: request ``rid`` streams ``script[rid]``, a list
    of (cumulative tokens, finished, raise) updates, one every 10 ms, each noting when it
    was produced."""

    ENDED = "fake stream ended"
    FAILED = "fake failed: "

    def __init__(self, script):
        super().__init__()
        self.script = script
        self.produced = {}  # rid -> [ns an update was produced]
        self.cancelled, self.calls = [], []
        self.lt = hb.LoopThread("fake-loop")

    def info(self):
        return hb.engine_info("fake", "0", "none", "-", "host", "stream", {})

    def submit(self, rid, prompt_token_ids, output_len, min_tokens, ignore_eos, temperature, seed, return_token_ids):
        self._launch(hb.StreamRequest(rid, return_token_ids), self.script[rid])

    async def _open(self, req, updates):
        async def gen():
            for u in updates:
                await asyncio.sleep(0.01)
                if u[2]:
                    raise ValueError(f"injected failure of request {req.rid}")
                self.produced.setdefault(req.rid, []).append(time.monotonic_ns())
                yield u

        return gen()

    def _update(self, req, u):
        tokens, finished, _ = u
        if not finished:
            return tokens, None
        extra = {"token_ids": list(range(tokens)) if req.want_ids else None, "error": None,
                 "top2_margins": hb.top2_margins([[1.0, 0.0]] * tokens, tokens) if req.want_ids else None}
        return tokens, (hb.LENGTH, extra)

    def _cancel(self, req):
        self.cancelled.append(req.rid)

    def _close_engine(self):
        self.calls.append(("close", self.lt.thread.is_alive()))

    def _after_close(self):
        self.calls.append(("after", self.lt.thread.is_alive()))


def drain(a, until, limit_s=5.0):
    """Events and extras until ``until(events)``, each event with the ns step returned."""
    events, extras = [], {}
    t = time.monotonic()
    while not until(events):
        assert time.monotonic() - t < limit_s, f"stream base stalled: {events}"
        e, x = unpack(a.step(0.05))
        now = time.monotonic_ns()
        events += [ev + (now,) for ev in e]
        extras.update(x)
    return events, extras


def finished(*rids):
    return lambda evs: {e[0] for e in evs if e[2] != hb.NOT_FINISHED} >= set(rids)


a = Fake({
    1: [(3, False, False), (3, False, False), (6, False, False), (10, True, False)],  # 3 + 3 + 4, an empty update
    2: [(1, False, False), (2, False, False), (2, False, True)],  # raises mid-stream
    3: [(1, False, False)],  # ends without a finish
    4: [(k, False, False) for k in range(1, 200)],  # aborted mid-stream
    5: [(2, True, False)],
})
assert isinstance(a, hb.EngineAdapter)
for rid in (1, 2, 3, 4):
    a.submit(rid, [1], 10, 0, True, 0.0, None, rid == 1)
assert a.in_flight() == 4
events, extras = drain(a, lambda evs: finished(1, 2, 3)(evs) and sum(e[0] == 4 for e in evs) >= 2)
a.abort(4)
a.abort(4)  # twice, and an unknown id: nothing happens
a.abort(99)
assert a.cancelled == [4] and a.in_flight() == 0, (a.cancelled, a.in_flight())
time.sleep(0.05)
late, _ = unpack(a.step(0.0))
assert all(e[0] != 4 or e[2] == hb.NOT_FINISHED for e in late), late  # nothing finishes an aborted request
# Request 1: the growth of each update (an update without new tokens adds no event), then the finish.
one = [e for e in events if e[0] == 1]
assert [(e[1], e[2]) for e in one] == [(3, -1), (3, -1), (4, hb.LENGTH)], one
# Each stamp is taken on the loop's thread when the update arrives: after it was
# produced, before step() handed it over.
made = a.produced[1]
assert [made[0], made[2], made[3]] <= [e[3] for e in one], (made, one)
assert all(m <= e[3] <= e[4] for m, e in zip([made[0], made[2], made[3]], one)), (made, one)
assert extras[1] == {"token_ids": list(range(10)), "top2_margins": [1.0] * 10}, extras[1]  # None values dropped
two = [e for e in events if e[0] == 2]
assert two[-1][1:3] == (0, hb.ERROR) and sum(e[1] for e in two) == 2, two
assert extras[2]["error"].startswith("fake failed: Traceback") and "injected failure of request 2" in extras[2]["error"]
assert [e[1:3] for e in events if e[0] == 3] == [(1, -1), (0, hb.ERROR)] and extras[3] == {"error": "fake stream ended"}
# A finish with nothing new: one event carrying the finish; no ids asked, no extras.
a.submit(5, [1], 2, 0, True, 0.0, None, False)
events, extras = drain(a, finished(5))
assert [e[1:3] for e in events] == [(2, hb.LENGTH)] and 5 not in extras, (events, extras)
# Live requests at shutdown are cancelled; the engine closes with the loop still up,
# then the loop stops, then what follows; a second shutdown does nothing. (The fake
# engine closes at once, so the loop stops before the cancelled task has run again:
# asyncio's complaint about that, at exit, is silenced.)
logging.getLogger("asyncio").setLevel(logging.CRITICAL)
a.submit(4, [1], 10, 0, True, 0.0, None, False)
live = a.live[4]
time.sleep(0.03)  # its task has started
a.shutdown()
assert live.future.cancelled()
a.shutdown()
assert a.calls == [("close", True), ("after", False)] and a.in_flight() == 0, a.calls
# A dead engine fails every later step with its reason.
b = Fake({})
b.dead = "fake process exited"
try:
    b.step(0.0)
    raise AssertionError("step on a dead engine returned")
except RuntimeError as e:
    assert str(e) == "fake process exited"
b.shutdown()


# ---------------------------------------------------------------------------- info()'s shape
def check_info(info):
    """``info`` against the EngineInfo TypedDict and its parts."""
    hints = typing.get_type_hints(hb.EngineInfo)
    assert hb.EngineInfo.__required_keys__ == {"name", "version", "model", "dtype", "device", "kind", "metadata"}
    assert set(info) <= set(hints), set(info) - set(hints)
    assert hb.EngineInfo.__required_keys__ <= set(info), info
    for k in ("name", "version", "model", "dtype", "device"):
        assert isinstance(info[k], str), (k, info[k])
    assert info["kind"] in ("step", "stream") and isinstance(info["metadata"], dict)
    assert all(isinstance(n, str) and n for n in info.get("notes", [1] if "notes" in info else [])), info
    for key, td in (("cuda", hb.CudaPlacement), ("compute", hb.HostCompute), ("scheduler", hb.SchedulerFacts)):
        if key in info:
            parts = typing.get_type_hints(td)
            assert info[key] and set(info[key]) <= set(parts), (key, info[key])
            for k, v in info[key].items():
                assert type(v) is parts[k], (key, k, v)
    if "layout" in info:
        lay, parts = info["layout"], typing.get_type_hints(hb.ParallelLayout)
        assert set(lay) <= set(parts) and {"tensor_parallel", "pipeline_parallel", "source"} <= set(lay), lay
        rank_parts = typing.get_type_hints(hb.Rank)
        for r in lay.get("ranks", []):
            assert "rank" in r and set(r) <= set(rank_parts), r
            assert all(type(v) is rank_parts[k] for k, v in r.items()), r
    import json

    json.dumps(info)


# The TypedDicts name the fields of the Rust types src/engine/python/mod.rs parses
# info() into (src/engine/mod.rs; load_time_s is the harness's own).
RUST = open(os.path.join(ROOT, "src", "engine", "mod.rs")).read()


LAYOUT_RS = open(os.path.join(ROOT, "src", "engine", "layout.rs")).read()


def rust_fields(name, text=RUST):
    body = re.search(r"pub struct " + name + r" \{(.*?)\n\}", text, re.S)
    assert body, f"no pub struct {name}"
    return set(re.findall(r"^\s*pub (\w+):", body[1], re.M))


for td, rust in ((hb.EngineInfo, "EngineInfo"), (hb.CudaPlacement, "CudaPlacement"), (hb.HostCompute, "HostCompute"),
                 (hb.SchedulerFacts, "SchedulerFacts")):
    assert set(typing.get_type_hints(td)) == rust_fields(rust) - {"load_time_s"}, (td, rust_fields(rust))
for td, rust in ((hb.ParallelLayout, "ParallelLayout"), (hb.Rank, "Rank")):
    assert set(typing.get_type_hints(td)) == rust_fields(rust, LAYOUT_RS), (td, rust_fields(rust, LAYOUT_RS))
# StepStats lives in src/core/step.rs.
STEP_RS = open(os.path.join(ROOT, "src", "core", "step.rs")).read()
step_body = re.search(r"pub struct StepStats \{(.*?)\n\}", STEP_RS, re.S)
assert step_body and set(STEP_STATS) == set(re.findall(r"^\s*pub (\w+):", step_body[1], re.M)), STEP_STATS

info = hb.engine_info("e", "1", "m", "float32", "cpu", "step", {"x": 1}, notes=("a note",), cuda={"device": 0, "stream": 7},
                      compute={"threads": 2, "cpus": None}, scheduler={"max_running": 8, "kv_cache_tokens": None},
                      layout={"tensor_parallel": 2, "pipeline_parallel": 1, "source": "t",
                              "ranks": [{"rank": 0, "pid": 1}, {"rank": 1, "pid": 2}]})
check_info(info)
assert info["compute"] == {"threads": 2} and info["scheduler"] == {"max_running": 8} and "instrument" not in info
assert info["notes"] == ["a note"] and info["cuda"] == {"device": 0, "stream": 7}
bare = hb.engine_info("e", "1", "m", "-", "host", "stream", {}, compute={"threads": None}, scheduler={})
check_info(bare)
assert set(bare) == hb.EngineInfo.__required_keys__, bare
assert hb.jsonable({1: (2, None, {3}), "p": [type]}) == {"1": [2, None, "{3}"], "p": ["<class 'type'>"]}


# ---------------------------------------------------------------------------- every adapter
PROTOCOL = {name: inspect.signature(getattr(hb.EngineAdapter, name))
            for name in ("info", "submit", "step", "in_flight", "abort", "shutdown")}
adapters = {}
for f in sorted(os.listdir(ENGINES)):
    if f.endswith(".py") and f != "harness_bridge.py":
        stem = f[:-3]
        m = load(f"harness_engine_{stem}", os.path.join(ENGINES, f))
        assert callable(getattr(m, "create", None)), f"{f}: no create(model, options)"
        classes = [c for c in vars(m).values() if isinstance(c, type) and c.__module__ == m.__name__
                   and hb.EngineAdapter in c.__mro__]
        assert len(classes) == 1, f"{f}: adapter classes implementing EngineAdapter: {classes}"
        for name, sig in PROTOCOL.items():
            impl = inspect.signature(getattr(classes[0], name))
            assert list(impl.parameters) == list(sig.parameters), f"{f}: {name}{impl}, the protocol says {name}{sig}"
        adapters[stem] = m
assert {"vllm", "sglang", "hf", "trtllm_llmapi", "test_adapter"} <= set(adapters), sorted(adapters)


def usage_error(fn, *args):
    try:
        fn(*args)
    except hb.UsageError as e:
        assert "\n" not in str(e), repr(e)  # one line, for the harness's error line
        return str(e)
    raise AssertionError(f"{fn.__qualname__}{args} did not raise UsageError")


# An engine that needs a model says so before it imports anything heavy (here, with
# none of its packages installed); so does one given a directory that is no checkpoint.
with tempfile.TemporaryDirectory() as empty:
    for stem in ("vllm", "sglang", "hf", "trtllm_llmapi"):
        assert "--model" in usage_error(adapters[stem].create, "", {}), stem
        assert "not a checkpoint directory" in usage_error(adapters[stem].create, empty, {}), stem
# --engine-arg values, typed (the test adapter's options): each mistake one usage error.
t = adapters["test_adapter"]
for options, want in (({"nope": "1"}, "unknown --engine-arg 'nope'"), ({"step_ms": "x"}, "expected a number"),
                      ({"fail_at_step": "four"}, "expected an integer"), ({"noop": "maybe"}, "expected true or false"),
                      ({"mode": "batch"}, "expected step or stream"), ({"step-ms": "1"}, None)):
    if want is None:
        t.create("", options).shutdown()  # - and _ both spell a key
    else:
        assert want in usage_error(t.create, "", options), (options, want)
assert "did you mean step_ms" in usage_error(t.create, "", {"step_mss": "1"})

# The test adapter, both modes.
for mode in ("step", "stream"):
    t = adapters["test_adapter"].create("", {"mode": mode, "step_ms": "1", "spawn_child": "true"})
    info = t.info()
    check_info(info)
    assert info["kind"] == mode and "child process" in info["notes"][0], info
    t.submit(1, [2, 3], 3, 0, True, 0.0, None, True)
    events, extras = drain(t, finished(1))
    assert sum(e[1] for e in events) == 3 and extras[1]["token_ids"] == [2, 3, 2], (events, extras)
    if mode == "step":  # its step stats: one decoding request
        assert "step_stats_source" in info["scheduler"], info
        t.submit(2, [2], 1, 0, True, 0.0, None, False)
        r = t.step(0.05)
        assert len(r) == 3 and r[2]["running"] == 1 and r[2]["decode_tokens"] == 1, r
    t.shutdown()

# TensorRT-LLM's adapter on its stand-in: the stream base end to end.
sys.path.insert(0, os.path.join(ROOT, "tests", "trtllm_py_standin"))
with tempfile.TemporaryDirectory() as model:
    open(os.path.join(model, "config.json"), "w").write("{}")
    trt = adapters["trtllm_llmapi"].create(model, {"standin_tokens_per_update": "3", "standin_step_ms": "5",
                                                   "standin_margin": "0.5"})
    info = trt.info()
    check_info(info)
    assert info["instrument"] is True and info["notes"][0].startswith("STAND-IN"), info
    assert info["scheduler"] == {"max_running": 2048, "chunked_prefill": False, "prefix_caching": True}, info
    assert "cuda" not in info and "compute" not in info, info
    t0 = time.monotonic_ns()
    trt.submit(1, [7, 8], 7, 0, True, 0.0, None, True)
    trt.submit(2, [9], 30, 0, True, 0.0, None, False)
    events, extras = drain(trt, finished(1))
    trt.abort(2)
    assert [e[1] for e in events if e[0] == 1] == [3, 3, 1], events
    assert all(t0 < e[3] <= e[4] for e in events), events
    assert extras[1]["token_ids"] == [7, 8, 7, 8, 7, 8, 7] and close(extras[1]["top2_margins"], [0.5] * 7), extras
    assert extras[1]["engine"]["first_token_ns"] <= [e[3] for e in events if e[0] == 1][0]
    assert trt.in_flight() == 0
    trt.shutdown()
    trt.shutdown()

# TensorRT-LLM's iteration stats as step stats: gauges from the later iteration, counts
# summed, drafts added to decode tokens, an iteration seen before left out.
step_stats = adapters["trtllm_llmapi"].step_stats
its = [{"iter": 4, "numActiveRequests": 2, "numQueuedRequests": 1, "iterLatencyMS": 1.5,
        "kvCacheStats": {"maxNumBlocks": 10, "usedNumBlocks": 2},
        "inflightBatchingStats": {"numContextRequests": 1, "numCtxTokens": 12, "numGenRequests": 1,
                                  "numPausedRequests": 0}},
       json.dumps({"iter": 5, "numActiveRequests": 2, "numQueuedRequests": 0, "iterLatencyMS": 2.5,
                   "kvCacheStats": {"maxNumBlocks": 10, "usedNumBlocks": 3},
                   "inflightBatchingStats": {"numContextRequests": 0, "numCtxTokens": 0, "numGenRequests": 2,
                                             "numPausedRequests": 1},
                   "specDecodingStats": {"numDraftTokens": 4, "numAcceptedTokens": 3}})]
got, last = step_stats(its, 3)
assert last == 5 and got == {"engine_steps": 2, "running": 2, "waiting": 0, "preempted": 1, "prefill_requests": 1,
                             "prefill_tokens": 12, "decode_requests": 3, "decode_tokens": 7, "kv_usage": 0.3,
                             "spec_draft_tokens": 4, "spec_accepted_tokens": 3, "engine_ms": 4.0}, got
assert step_stats(its, 5) == (None, 5)

print("check_bridge: ok")
