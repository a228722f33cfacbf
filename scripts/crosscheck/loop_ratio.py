#!/usr/bin/env python3
"""Is the harness transparent? The same engine, driven by the harness and by a plain
loop over the engine's own API, alone on the machine, interleaved.

Each pair runs ``harness run --engine E`` (batch mode: B requests, wait for all,
next B) and the reference loop below, each in its own process, in alternating order
(harness first in even pairs, the loop first in odd ones), so machine noise hits both
alike. The loop uses what the harness's run used, read from that run's files: the
engine arguments as the adapter built them (run.json ``engine.metadata``), the
environment it recorded, and the exact prompts (workload.jsonl, warmup first). Both
measure output throughput the same way: output tokens of the measured requests /
(last token - first submit), the loop with ``time.monotonic()`` around its own calls.

Prints every pair (harness tok/s, loop tok/s, ratio harness / loop), the median
ratio with min..max, and whether 1.00 is within [0.99, 1.01] or within the pairs'
spread. A pair whose two sides did not produce the same number of output tokens is an
error (exit 1): they did not do the same work.

  scripts/crosscheck/loop_ratio.py --engine vllm --harness target/release/harness \\
      --model ~/.cache/llm-harness/models/gemma-3-270m --batch 32 --input-len 128 \\
      --output-len 64 --pairs 3

Loops (``--engine``): ``vllm`` (v1 ``LLMEngine``, engine core in-process:
``add_request`` then ``step()`` until the batch is done, as the adapter does); ``hf``
(the HF adapter's own decode loop written plainly: a left-padded prefill forward, then
one forward per token over the KV cache, greedy);
``sglang`` (``sglang.Engine``, B concurrent streaming ``async_generate``, as the
adapter does) and ``sglang-nostream`` (one non-streaming ``async_generate`` of the
batch: the harness, which must stream to time tokens, against SGLang without
streaming; the difference is the cost of streaming itself, the engine's). llama.cpp's
reference loop is the bench ``cargo bench --features llamacpp --bench llamacpp_vs_loop``.

Run with any python 3; the loop runs on the engine's venv python (``--python``,
default the venv ``scripts/setup.sh ENV`` makes, where the harness looks too).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def harness_run(a, out):
    cmd = [a.harness, "run", "--engine", HARNESS_ENGINE[a.engine], "--model", a.model,
           "--batch", str(a.batch), "--num-requests", str(a.num_requests), "--warmup", str(a.warmup),
           "--input-len", str(a.input_len), "--output-len", str(a.output_len), "--ignore-eos",
           "--temperature", "0", "--no-progress", "--out", out]
    for kv in a.engine_arg:
        cmd += ["--engine-arg", kv]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"harness run failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    with open(os.path.join(out, "summary.json")) as f:
        point = json.load(f)["points"][0]
    if point.get("failed_requests"):
        sys.exit(f"the harness run in {out} had failed requests")
    return point["output_throughput"], point["total_output_tokens"]


def loop_run(a, python, first):
    cmd = [python, os.path.abspath(__file__), "--loop", first, "--engine", a.engine,
           "--batch", str(a.batch), "--num-requests", str(a.num_requests), "--warmup", str(a.warmup),
           "--front-end", a.front_end]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"the {a.engine} loop failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    got = json.loads(r.stdout.strip().splitlines()[-1])
    return got["output_throughput"], got["output_tokens"]


def children_cpu_s():
    """User + system CPU seconds of every process this one has waited for (each side's
    process and the engine processes it reaped): a side that does more work beside the
    engine's shows it here."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------------------ loops
def read_run(run_dir, batch, num_requests, warmup):
    """(metadata, warmup batches, measured batches) of the harness's run in run_dir;
    the metadata gains ``model`` and ``device`` (the engine's model path and the device
    it ran on) and ``threads`` (its compute threads, where it reports them)."""
    with open(os.path.join(run_dir, "run.json")) as f:
        engine = json.load(f)["engine"]
    meta = dict(engine["metadata"], model=engine["model"], device=engine["device"],
                threads=(engine.get("compute") or {}).get("threads"))
    with open(os.path.join(run_dir, "workload.jsonl")) as f:
        items = [json.loads(line) for line in f]
    if len(items) < warmup + num_requests:
        sys.exit(f"{run_dir}/workload.jsonl has {len(items)} items, {warmup + num_requests} needed")

    def batches(xs):
        return [xs[i:i + batch] for i in range(0, len(xs), batch)]

    return meta, batches(items[:warmup]), batches(items[warmup:warmup + num_requests])


def offline_env():
    """What every adapter sets before its engine is imported: no hub, no tokenizer threads."""
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(k, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def throughput(spans):
    """Output throughput over the measured batches' (first submit, last token, tokens)."""
    tokens = sum(s[2] for s in spans)
    duration = spans[-1][1] - spans[0][0]
    return {"output_tokens": tokens, "duration_s": duration, "output_throughput": tokens / duration}


def vllm_loop(a):
    meta, warm, measured = read_run(a.loop, a.batch, a.num_requests, a.warmup)
    # What the adapter sets before vLLM is imported, and what the run recorded.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    offline_env()
    os.environ.update(meta.get("env") or {})
    from vllm import EngineArgs, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.llm_engine import LLMEngine

    engine = LLMEngine.from_engine_args(EngineArgs(**meta["engine_args"]))
    rid = 0

    def run_batch(items):
        nonlocal rid
        first = time.monotonic()
        live, tokens, last = set(), 0, first
        for it in items:
            n = it["output_len"]
            sp = SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0,
                                detokenize=False, output_kind=RequestOutputKind.DELTA)
            engine.add_request(str(rid), TokensPrompt(prompt_token_ids=it["prompt_token_ids"]), sp)
            live.add(str(rid))
            rid += 1
        while live:
            outs = engine.step()
            now = time.monotonic()
            for o in outs:
                k = len(o.outputs[0].token_ids)
                if k:
                    tokens += k
                    last = now
                if o.finished:
                    live.discard(o.request_id)
        return first, last, tokens

    for b in warm:
        run_batch(b)
    return throughput([run_batch(b) for b in measured])


def hf_loop(a):
    """The adapter's decode loop written plainly: per batch, one left-padded prefill
    forward, then one forward per token over the KV cache, greedy argmax, under
    ``torch.inference_mode()``; the model loaded as the adapter loads it (its dtype,
    device and thread count from run.json)."""
    meta, warm, measured = read_run(a.loop, a.batch, a.num_requests, a.warmup)
    offline_env()
    import torch
    from transformers import AutoModelForCausalLM

    if meta["threads"]:
        torch.set_num_threads(meta["threads"])  # what the adapter ran with
    device = meta["device"]  # where the adapter's model was: "cpu", "cuda:0", ...
    model = AutoModelForCausalLM.from_pretrained(meta["model"], dtype=getattr(torch, meta["dtype_requested"]))
    model = model.to(device).eval()
    pad = meta["pad_token_id"]

    def run_batch(items):
        first = time.monotonic()
        n, width = len(items), max(len(it["prompt_token_ids"]) for it in items)
        steps = max(it["output_len"] for it in items)
        with torch.inference_mode():
            ids = torch.full((n, width), pad, dtype=torch.long)
            mask = torch.zeros((n, width), dtype=torch.long)
            for i, it in enumerate(items):
                p = it["prompt_token_ids"]
                ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
                mask[i, width - len(p):] = 1
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
            last = out.logits[:, -1, :].argmax(dim=-1).tolist()
            pos = pos[:, -1:] + 1
        tokens, stamp = n, time.monotonic()
        for k in range(1, steps):
            with torch.inference_mode():
                mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=mask.device)], dim=-1)
                x = torch.tensor(last, dtype=torch.long, device=device)[:, None]
                out = model(input_ids=x, attention_mask=mask, position_ids=pos, past_key_values=out.past_key_values,
                            use_cache=True, logits_to_keep=1)
                last = out.logits[:, -1, :].argmax(dim=-1).tolist()
                pos = pos + 1
            tokens += sum(1 for it in items if it["output_len"] > k)
            stamp = time.monotonic()
        return first, stamp, tokens

    for b in warm:
        run_batch(b)
    return throughput([run_batch(b) for b in measured])


def sglang_engine(meta):
    """``sglang.Engine`` as the adapter builds it: its arguments, and on a CPU host the
    project's sgl_kernel stand-in first on the path (the scheduler it spawns inherits
    it), as the run recorded."""
    kernels = meta.get("kernels") or {}
    if kernels.get("stand_in"):
        os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "engines", "cpu_shims")
        root = os.path.normpath(root)
        sys.path.insert(0, root)
        os.environ["PYTHONPATH"] = os.pathsep.join([root] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x])
    offline_env()
    import sglang

    return sglang.Engine(**meta["engine_args"])


def sglang_loop(a, stream):
    """Streaming: B concurrent ``async_generate(stream=True)``, each chunk counted as
    it arrives (what the adapter does); not streaming: one ``async_generate`` of the
    whole batch, its tokens counted at the end (the engine's own batch call)."""
    import asyncio

    meta, warm, measured = read_run(a.loop, a.batch, a.num_requests, a.warmup)
    if a.front_end == "thread":
        engine, loop = sglang_on_thread(meta)

        def run(coro):
            return asyncio.run_coroutine_threadsafe(coro, loop).result()
    else:
        engine = sglang_engine(meta)
        run = engine.loop.run_until_complete

    def params(it):
        return {"max_new_tokens": it["output_len"], "ignore_eos": True, "temperature": 0.0}

    async def one(it, span):
        seen = 0
        gen = await engine.async_generate(input_ids=it["prompt_token_ids"], sampling_params=params(it), stream=True)
        async for chunk in gen:
            n = int(chunk["meta_info"]["completion_tokens"])
            if n > seen:
                span["last"] = time.monotonic()
                span["tokens"] += n - seen
                seen = n

    async def batch(items):
        span = {"first": time.monotonic(), "tokens": 0}
        if stream:
            await asyncio.gather(*(one(it, span) for it in items))
        else:
            outs = await engine.async_generate(input_ids=[it["prompt_token_ids"] for it in items],
                                               sampling_params=[params(it) for it in items])
            span["last"] = time.monotonic()
            span["tokens"] = sum(int(o["meta_info"]["completion_tokens"]) for o in outs)
        return span["first"], span["last"], span["tokens"]

    try:
        for b in warm:
            run(batch(b))
        spans = [run(batch(b)) for b in measured]
    finally:
        engine.shutdown()
    return throughput(spans)


def sglang_on_thread(meta):
    """``sglang.Engine`` built on, and served by, an asyncio loop on a thread of its
    own while the main thread waits: the adapter's layout (it must keep SGLang off the
    harness's main thread). Returns the engine and the loop it is bound to."""
    import asyncio
    import threading

    import sglang.srt.entrypoints.engine  # noqa: F401 - sets uvloop's policy first, as the adapter does

    box, ready = {}, threading.Event()

    def serve():
        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            box["engine"] = sglang_engine(meta)
            box["loop"] = asyncio.get_event_loop_policy().get_event_loop()
        except BaseException as e:  # noqa: BLE001 - re-raised on the main thread
            box["error"] = e
            return
        finally:
            ready.set()
        box["loop"].run_forever()

    threading.Thread(target=serve, name="sglang-loop", daemon=True).start()
    ready.wait()
    if "error" in box:
        raise box["error"]
    return box["engine"], box["loop"]


LOOPS = {
    "vllm": vllm_loop,
    "hf": hf_loop,
    "sglang": lambda a: sglang_loop(a, stream=True),
    "sglang-nostream": lambda a: sglang_loop(a, stream=False),
}
# The harness engine each loop is compared with.
HARNESS_ENGINE = {"vllm": "vllm", "hf": "hf", "sglang": "sglang", "sglang-nostream": "sglang"}
# The venv each loop runs in (HF Transformers runs in the vLLM env).
ENV = {"vllm": "vllm", "hf": "vllm", "sglang": "sglang", "sglang-nostream": "sglang"}


def default_python(env):
    """The venv scripts/setup.sh ENV makes (where the harness looks by default)."""
    cache = os.environ.get("LLM_HARNESS_CACHE") or os.path.expanduser("~/.cache/llm-harness")
    return os.path.join(cache, "venvs", env, "bin", "python")


# ------------------------------------------------------------------------------ main
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=sorted(LOOPS), required=True)
    p.add_argument("--harness", default="target/release/harness")
    p.add_argument("--model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--warmup", type=int, default=32)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--engine-arg", action="append", default=[])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--front-end", choices=("main", "thread"), default="main",
                   help="sglang loops: SGLang's asyncio loop on the main thread (a plain script) or on a "
                        "thread of its own, as the adapter runs it")
    p.add_argument("--python", help="the engine venv's python (default: the venv scripts/setup.sh makes)")
    p.add_argument("--loop", help=argparse.SUPPRESS)  # internal: run the loop on this harness run's files
    a = p.parse_args()
    if a.loop:
        print(json.dumps(LOOPS[a.engine](a)))
        return
    if not a.model:
        p.error("--model is required")
    if a.pairs < 3:
        p.error("--pairs must be at least 3")
    python = a.python or default_python(ENV[a.engine])
    if not os.path.isfile(python):
        sys.exit(f"no python at {python}: run scripts/setup.sh {ENV[a.engine]}, or pass --python")
    tmp = tempfile.mkdtemp(prefix="loop-ratio-")
    rows = []
    first = None
    for i in range(a.pairs):
        order = ("harness", "loop") if i % 2 == 0 else ("loop", "harness")
        got, tokens, cpu = {}, {}, {}
        for side in order:
            before = children_cpu_s()
            if side == "harness":
                out = os.path.join(tmp, f"harness-{i}")
                got[side], tokens[side] = harness_run(a, out)
                first = first or out
            else:
                got[side], tokens[side] = loop_run(a, python, first)
            cpu[side] = children_cpu_s() - before
        if tokens["harness"] != tokens["loop"]:
            # Different work is no comparison: a loop that miscounts is a broken check.
            sys.exit(f"pair {i + 1}: the harness measured {tokens['harness']} output tokens, "
                     f"the loop {tokens['loop']}: they did not run the same requests")
        rows.append((order[0], got["harness"], got["loop"], got["harness"] / got["loop"]))
        print(f"pair {i + 1} ({order[0]} first): harness {got['harness']:.2f} tok/s, loop {got['loop']:.2f} tok/s, "
              f"ratio {rows[-1][3]:.3f}; CPU s (whole process tree, load included) harness {cpu['harness']:.1f}, "
              f"loop {cpu['loop']:.1f}", flush=True)
    ratios = [r[3] for r in rows]
    lo, hi, med = min(ratios), max(ratios), statistics.median(ratios)
    verdict = ("within [0.99, 1.01]" if 0.99 <= med <= 1.01 else
               "1.00 within the pairs' spread" if lo <= 1.0 <= hi else "NOT transparent: 1.00 outside the spread")
    print(f"{a.engine}, batch {a.batch}, {a.input_len} -> {a.output_len}: harness / loop = {med:.3f} "
          f"(median of {len(ratios)} pairs, {lo:.3f}..{hi:.3f}): {verdict}")
    print(f"runs: {tmp}")


if __name__ == "__main__":
    main()
