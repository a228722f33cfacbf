#!/usr/bin/env python3
"""Cross-check: the harness's `--engine openai` against vLLM's own `bench serve`, on the
same running server and the same workload shape.

Starts one vLLM OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server`,
the harness's CPU defaults: float32, max_model_len 2048, eager, seed 0,
VLLM_CPU_KVCACHE_SPACE=1) on 127.0.0.1 and a free port, then runs, --reps times and
interleaved (alternating which goes first), vLLM's serving benchmark (its Python entry
point `vllm.benchmarks.serve`, since the `vllm` command does not start with the
vllm-cpu build) and `harness run --engine openai` against it: closed loop at
--concurrency, --num-prompts requests of --input-len random tokens and exactly
--output-len output tokens (ignore_eos), greedy, each side with --concurrency warmup
requests first. It prints p50 TTFT, p50 TPOT and output throughput for every
repetition, each pair's ratio harness / vLLM, and the ratios' mean and min..max, and
says whether the mean ratio is within --tolerance (default 10 %). The server is
stopped at the end (SIGTERM to its process group, then SIGKILL).

The two clients differ in what they send: vLLM's random dataset sends text prompts
(decoded from random ids, re-tokenized by the server), the harness sends token ids;
the prompt lengths are the same. Both stamp chunks as they arrive and compute
TTFT = first chunk - send, TPOT = (last - first) / (tokens - 1), throughput = output
tokens / benchmark duration.

  ~/.cache/llm-harness/venvs/vllm/bin/python scripts/crosscheck/vllm_serve_compare.py \\
      --harness target/release/harness --model ~/.cache/llm-harness/models/gemma-3-270m
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

# vLLM's serving benchmark, run as a script (vllm's own entry point is broken with
# vllm-cpu: it looks its version up under the distribution name "vllm").
BENCH = r'''
import sys
if __name__ == "__main__":
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.benchmarks import serve
    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    serve.main(parser.parse_args(sys.argv[1:]))
'''

METRICS = (("p50 TTFT (ms)", "median_ttft_ms"), ("p50 TPOT (ms)", "median_tpot_ms"),
           ("output tok/s", "output_throughput"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, proc, timeout):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}) before it was ready; see its log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t
        except OSError:
            pass
        time.sleep(1)
    sys.exit(f"the server did not answer /health within {timeout} s")


def run_bench(a, port, out, rep):
    name = f"bench-{rep}.json"
    cmd = [sys.executable, "-c", BENCH, "--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}",
           "--endpoint", "/v1/completions", "--model", a.model, "--tokenizer", a.model,
           "--dataset-name", "random", "--random-input-len", str(a.input_len),
           "--random-output-len", str(a.output_len), "--random-range-ratio", "0",
           "--num-prompts", str(a.num_prompts), "--max-concurrency", str(a.concurrency),
           "--request-rate", "inf", "--ignore-eos", "--temperature", "0", "--seed", str(rep),
           "--num-warmups", str(a.concurrency), "--disable-tqdm",
           "--save-result", "--result-dir", out, "--result-filename", name]
    with open(os.path.join(out, f"bench-{rep}.log"), "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=out)
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def run_harness(a, port, out, rep):
    d = os.path.join(out, f"harness-{rep}")
    cmd = [a.harness, "run", "--engine", "openai", "--engine-arg", f"base_url=http://127.0.0.1:{port}",
           "--engine-arg", f"model={a.model}", "--tokenizer", os.path.join(a.model, "tokenizer.json"),
           "--concurrency", str(a.concurrency), "--num-requests", str(a.num_prompts),
           "--input-len", str(a.input_len), "--output-len", str(a.output_len), "--ignore-eos",
           "--temperature", "0", "--seed", str(rep), "--warmup", str(a.concurrency),
           "--no-progress", "--out", d]
    with open(os.path.join(out, f"harness-{rep}.log"), "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    with open(os.path.join(d, "summary.json")) as f:
        return json.load(f)["points"][0]


def main():
    cache = os.environ.get("LLM_HARNESS_CACHE", os.path.expanduser("~/.cache/llm-harness"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--harness", default="target/release/harness")
    p.add_argument("--model", default=os.path.join(cache, "models", "gemma-3-270m"))
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--tolerance", type=float, default=0.10, help="largest |mean ratio - 1| that counts as agreement")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    a.harness = os.path.abspath(a.harness)
    out = os.path.abspath(a.out or tempfile.mkdtemp(prefix="vllm-serve-compare-"))
    os.makedirs(out, exist_ok=True)
    port = free_port()
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    server_cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", a.model,
                  "--host", "127.0.0.1", "--port", str(port), "--seed", "0", "--dtype", "float32",
                  "--max-model-len", "2048", "--enforce-eager"]
    print("server:", " ".join(server_cmd), flush=True)
    log = open(os.path.join(out, "server.log"), "w")
    server = subprocess.Popen(server_cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out,
                              start_new_session=True)
    rows = []
    try:
        print(f"server ready after {wait_healthy(port, server, 900):.0f} s", flush=True)
        for rep in range(a.reps):
            order = ("bench", "harness") if rep % 2 == 0 else ("harness", "bench")
            got = {}
            for side in order:
                t = time.monotonic()
                got[side] = run_bench(a, port, out, rep) if side == "bench" else run_harness(a, port, out, rep)
                print(f"rep {rep + 1}: {side} done in {time.monotonic() - t:.0f} s", flush=True)
            rows.append(got)
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait()
    print(f"\nSame server, closed loop at concurrency {a.concurrency}, {a.num_prompts} requests, "
          f"{a.input_len} in / {a.output_len} out tokens, greedy, interleaved x{a.reps} (results: {out})")
    print(f"{'figure':<16}" + "".join(f"{'rep ' + str(i + 1) + ' harness/vllm':>30}" for i in range(a.reps))
          + f"{'ratio mean [min..max]':>26}  within ±{a.tolerance:.0%}")
    verdict = True
    summary = {}
    for label, key in METRICS:
        cells, ratios = [], []
        for r in rows:
            h, b = r["harness"][key], r["bench"][key]
            ratios.append(h / b)
            cells.append(f"{h:9.2f} / {b:9.2f} = {h / b:5.3f}")
        m = statistics.mean(ratios)
        ok = abs(m - 1) <= a.tolerance
        verdict &= ok
        summary[key] = {"ratios": ratios, "mean": m, "min": min(ratios), "max": max(ratios), "within": ok}
        print(f"{label:<16}" + "".join(f"{c:>30}" for c in cells)
              + f"{f'{m:.3f} [{min(ratios):.3f}..{max(ratios):.3f}]':>26}  {'yes' if ok else 'NO'}")
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump({"rows": rows, "summary": summary, "tolerance": a.tolerance}, f, indent=1)
    sys.exit(0 if verdict else 1)


if __name__ == "__main__":
    main()
