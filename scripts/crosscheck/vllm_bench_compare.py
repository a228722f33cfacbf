#!/usr/bin/env python3
"""Side by side: vLLM's own throughput benchmark and the harness's batch mode.

Same venv, same model, same engine settings (dtype, eager, max_model_len,
max_num_seqs, seed), same input/output lengths and request count, both with the
engine core in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0). The two run interleaved
for --repeats rounds, alternating which goes first, so machine noise hits both
alike. Prints each round's output throughput and the ratio harness / vLLM with its
median, min and max. Each side is a fresh process (engine load is not timed by
either: vLLM times its generate() call, the harness its measured requests).

  scripts/crosscheck/vllm_bench_compare.py --harness target/release/harness \\
      --model ~/.cache/llm-harness/models/gemma-3-270m --input-len 128 --output-len 64 --num-prompts 32

vLLM's benchmark samples at temperature 1.0 (top_p 1) and detokenizes unless told
not to. --sampling random (default) leaves it as it is and runs the harness at
--temperature 1.0; --sampling greedy makes both greedy (vLLM's benchmark gets its
SamplingParams patched to temperature 0). Detokenization is off on vLLM's side
(--disable-detokenize; the harness never detokenizes) unless --vllm-detokenize.

Run with any python 3; vLLM's side runs on the venv's python (--python-env).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# vLLM's benchmark, run as a script: its engine core may start with the spawn method,
# hence the __main__ guard.
VLLM_SIDE = r'''
import os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if __name__ == "__main__":
    greedy = os.environ.pop("COMPARE_GREEDY", "0") == "1"
    if greedy:
        import vllm
        _SP = vllm.SamplingParams
        def _greedy(*a, **k):
            k["temperature"] = 0.0
            return _SP(*a, **k)
        vllm.SamplingParams = _greedy  # benchmarks/throughput.py imports it from vllm at call time
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.benchmarks import throughput
    parser = FlexibleArgumentParser()
    throughput.add_cli_args(parser)
    args = parser.parse_args(sys.argv[1:])
    throughput.main(args)
'''


def fail(msg):
    sys.exit(f"vllm_bench_compare: {msg}")


def run(cmd, log, env=None, what=""):
    t = time.monotonic()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        f.write(p.stdout)
    if p.returncode != 0:
        fail(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n--- last output ---\n{p.stdout[-3000:]}\n(full log: {log})")
    return p.stdout, time.monotonic() - t


def vllm_round(a, py, side, work, i, log):
    vj = os.path.join(work, f"vllm-{i}.json")
    cmd = [py, side, "--model", a.model, "--dataset-name", "random", "--random-input-len", str(a.input_len),
           "--random-output-len", str(a.output_len), "--num-prompts", str(a.num_prompts),
           "--dtype", a.dtype, "--max-model-len", str(a.max_model_len), "--max-num-seqs", str(a.max_num_seqs),
           "--enforce-eager", "--seed", "0", "--output-json", vj]
    if not a.vllm_detokenize:
        cmd.append("--disable-detokenize")
    env = dict(os.environ, COMPARE_GREEDY="1" if a.sampling == "greedy" else "0")
    out, wall = run(cmd, log, env, "vLLM's throughput benchmark")
    with open(vj) as f:
        v = json.load(f)
    # Its JSON has no output count; it prints one ("Total num output tokens:  N").
    m = re.search(r"Total num output tokens:\s+(\d+)", out)
    tokens = int(m.group(1)) if m else v["num_requests"] * a.output_len
    return {"output_throughput": tokens / v["elapsed_time"], "output_tokens": tokens,
            "elapsed_s": v["elapsed_time"], "wall_s": wall}


def harness_round(a, work, i, log):
    out = os.path.join(work, f"harness-{i}")
    cmd = [a.harness, "run", "--engine", "vllm", "--model", a.model, "--batch", str(a.num_prompts),
           "--num-requests", str(a.num_prompts), "--input-len", str(a.input_len), "--output-len", str(a.output_len),
           "--ignore-eos", "--warmup", "0", "--seed", "0", "--no-progress", "--python-env", a.python_env,
           "--temperature", "1.0" if a.sampling == "random" else "0",
           "--out", out,
           "--engine-arg", f"dtype={a.dtype}", "--engine-arg", f"max_model_len={a.max_model_len}",
           "--engine-arg", f"max_num_seqs={a.max_num_seqs}", "--engine-arg", "enforce_eager=true"]
    _, wall = run(cmd, log, None, "the harness")
    p = os.path.join(out, "summary.json")
    try:
        with open(p) as f:
            h = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"the harness ran but {p} is unreadable ({e})")
    if "output_throughput" not in h:
        fail(f"{p} has no output_throughput key (keys: {', '.join(sorted(h))[:300]})")
    return {"output_throughput": float(h["output_throughput"]), "wall_s": wall,
            "output_tokens": h.get("total_output_tokens")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    cache = os.environ.get("LLM_HARNESS_CACHE", os.path.expanduser("~/.cache/llm-harness"))
    ap.add_argument("--harness", required=True, help="path of the harness binary (cargo build --release)")
    ap.add_argument("--model", default=os.path.join(cache, "models", "gemma-3-270m"))
    ap.add_argument("--python-env", default=os.path.join(cache, "venvs", "vllm"))
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--max-num-seqs", type=int, help="default: --num-prompts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--sampling", choices=("random", "greedy"), default="random")
    ap.add_argument("--vllm-detokenize", action="store_true")
    ap.add_argument("--vllm-only", action="store_true", help="run only vLLM's side (checks this script without the harness)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, JSON)")
    a = ap.parse_args()
    a.max_num_seqs = a.max_num_seqs or a.num_prompts
    a.model = os.path.abspath(os.path.expanduser(a.model))
    if not a.vllm_only:
        h = shutil.which(a.harness) if os.sep not in a.harness else a.harness
        if not h or not os.path.isfile(h) or not os.access(h, os.X_OK):
            fail(f"--harness {a.harness}: no such executable; build it with `cargo build --release` "
                 "(then pass target/release/harness), or use --vllm-only")
        a.harness = os.path.abspath(h)
    py = os.path.join(a.python_env, "bin", "python")
    if not os.access(py, os.X_OK):
        fail(f"no venv at {a.python_env}; run scripts/setup.sh (or pass --python-env)")
    if not os.path.isfile(os.path.join(a.model, "config.json")):
        fail(f"--model {a.model}: no config.json; run scripts/setup.sh")
    work = tempfile.mkdtemp(prefix="vllm-compare-")
    side = os.path.join(work, "vllm_side.py")
    with open(side, "w") as f:
        f.write(VLLM_SIDE)
    log = os.path.join(work, "log.txt")
    print(f"{a.num_prompts} prompts x {a.input_len} in / {a.output_len} out tokens, {a.dtype}, eager, max_num_seqs "
          f"{a.max_num_seqs}, sampling {a.sampling}, engine core in-process for both; log {log}", flush=True)
    rows = []
    for i in range(a.repeats):
        order = ("vllm", "harness") if i % 2 == 0 or a.vllm_only else ("harness", "vllm")
        r = {}
        for side_name in order:
            if side_name == "vllm":
                r["vllm"] = vllm_round(a, py, side, work, i, log)
            elif not a.vllm_only:
                r["harness"] = harness_round(a, work, i, log)
        v = r["vllm"]["output_throughput"]
        if a.vllm_only:
            print(f"round {i + 1}: vllm bench throughput {v:8.2f} output tok/s "
                  f"({r['vllm']['output_tokens']} tokens in {r['vllm']['elapsed_s']:.2f} s; process {r['vllm']['wall_s']:.0f} s)", flush=True)
            rows.append((v, None, None))
            continue
        hv = r["harness"]["output_throughput"]
        rows.append((v, hv, hv / v))
        print(f"round {i + 1} ({order[0]} first): vllm bench {v:8.2f} output tok/s | harness {hv:8.2f} | "
              f"ratio {hv / v:.3f}", flush=True)
    vs = [x[0] for x in rows]
    print(f"vllm bench output tok/s: median {statistics.median(vs):.2f}, min {min(vs):.2f}, max {max(vs):.2f}")
    if not a.vllm_only:
        hs = [x[1] for x in rows]
        ratios = [x[2] for x in rows]
        print(f"harness output tok/s:    median {statistics.median(hs):.2f}, min {min(hs):.2f}, max {max(hs):.2f}")
        print(f"ratio harness/vllm over {len(rows)} interleaved rounds: median {statistics.median(ratios):.3f}, "
              f"min {min(ratios):.3f}, max {max(ratios):.3f}")
    if a.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
