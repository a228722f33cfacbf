"""Side-by-side: vLLM's own `bench throughput` and the harness's batch mode.

Same venv, same model, same input/output lengths and request count, both with the
engine core in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0), interleaved for
--repeats rounds so machine noise hits both alike. Prints each round's output
throughput and the ratio harness / vLLM with its median, min and max.

  scripts/vllm_bench_compare.py --harness target/release/harness \
      --model ~/.cache/llm-harness/models/gemma-3-270m --input-len 128 --output-len 64 --num-prompts 32

Run it with any python 3; it starts the venv's python for vLLM's side.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

VLLM_SIDE = r'''
import json, os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
if __name__ == "__main__":
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.benchmarks import throughput
    parser = FlexibleArgumentParser()
    throughput.add_cli_args(parser)
    args = parser.parse_args(sys.argv[1:])
    throughput.main(args)
'''


def run(cmd, env=None, log=None):
    t = time.time()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{p.stdout}\n")
    if p.returncode != 0:
        sys.exit(f"vllm_bench_compare: command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}")
    return time.time() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--harness", required=True, help="path of the harness binary")
    ap.add_argument("--model", required=True)
    ap.add_argument("--python-env", default=os.path.join(os.environ.get("LLM_HARNESS_CACHE", os.path.expanduser("~/.cache/llm-harness")), "venvs", "vllm"))
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-model-len", type=int, default=2048)
    a = ap.parse_args()
    if not os.access(a.harness, os.X_OK):
        sys.exit(f"vllm_bench_compare: --harness {a.harness}: not an executable; build it with `cargo build --release`")
    py = os.path.join(a.python_env, "bin", "python")
    if not os.path.exists(py):
        sys.exit(f"vllm_bench_compare: no venv at {a.python_env}; run scripts/setup.sh")
    work = tempfile.mkdtemp(prefix="vllm-compare-")
    side = os.path.join(work, "vllm_side.py")
    with open(side, "w") as f:
        f.write(VLLM_SIDE)
    log = os.path.join(work, "log.txt")
    common_engine = ["--dtype", a.dtype, "--max-model-len", str(a.max_model_len), "--max-num-seqs", str(a.num_prompts)]
    rows = []
    for i in range(a.repeats):
        vj = os.path.join(work, f"vllm-{i}.json")
        run([py, side, "--model", a.model, "--dataset-name", "random", "--random-input-len", str(a.input_len),
             "--random-output-len", str(a.output_len), "--num-prompts", str(a.num_prompts), "--enforce-eager",
             "--seed", "0", "--output-json", vj] + common_engine, log=log)
        with open(vj) as f:
            v = json.load(f)
        # Its JSON has no output count: the random dataset ignores EOS, so every request
        # yields exactly --random-output-len tokens (as its own printed figure assumes).
        vllm_tps = v["num_requests"] * a.output_len / v["elapsed_time"]
        out = os.path.join(work, f"harness-{i}")
        run([a.harness, "run", "--engine", "vllm", "--model", a.model, "--batch", str(a.num_prompts),
             "--num-requests", str(a.num_prompts), "--input-len", str(a.input_len), "--output-len", str(a.output_len),
             "--ignore-eos", "--warmup", "0", "--no-progress", "--python-env", a.python_env, "--out", out,
             "--engine-arg", f"dtype={a.dtype}", "--engine-arg", f"max_model_len={a.max_model_len}",
             "--engine-arg", f"max_num_seqs={a.num_prompts}"], log=log)
        with open(os.path.join(out, "summary.json")) as f:
            h = json.load(f)
        harness_tps = h["output_throughput"]
        rows.append((vllm_tps, harness_tps, harness_tps / vllm_tps))
        print(f"round {i + 1}: vllm bench throughput {vllm_tps:8.2f} output tok/s | harness batch {harness_tps:8.2f} | ratio {harness_tps / vllm_tps:.3f}", flush=True)
    ratios = [r[2] for r in rows]
    print(f"ratio harness/vllm over {len(rows)} interleaved rounds: median {statistics.median(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f} (goal >= 0.99)")
    print(f"setup: {a.num_prompts} prompts x {a.input_len} in / {a.output_len} out tokens, {a.dtype}, enforce-eager, "
          f"engine core in-process for both; vllm output tok/s = num_requests x output_len / elapsed_time; logs in {log}")


if __name__ == "__main__":
    main()
