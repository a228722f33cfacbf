#!/usr/bin/env bash
# The device check: everything GPU in the harness against a known answer, on any
# NVIDIA host, in about a minute, building nothing there. It takes a harness binary
# built beforehand without Python (so no libpython has to match the host's):
#   cargo build --release --no-default-features --bins    # on any x86-64 Linux machine
#   scripts/gpu_check.sh target/release/harness            # on the GPU host
# and runs the calibration engine with device=cuda, whose steps are a spin kernel of
# exactly the schedule's time on its own stream (docs/engines/calibration.md):
#   engines     `harness engines`: the CUDA driver, GPU 0 and NVML are seen
#   linkage     the binary links no libpython (readelf)
#   gpu_ms      batch 1, 8, 64 of 2 ms steps: CUDA-event GPU ms per step = 2 ms
#               (within 2 % or 20 us, whichever is larger), mean and median
#   bracket     host ms per step = GPU ms per step (the events bracket the step)
#   duty        NVML utilisation = the share of the window the events were busy
#               (+-15 points; an open-loop point leaves the GPU idle part of the time)
#   energy      the energy counter moves, and agrees with mean power x time (+-25 %)
#   memory      mem_gib=2: peak device memory >= 2 GiB
#   profile     --profile under nsys (when on PATH): NVTX step ranges in the capture
# One line per check: name, expected, measured, PASS/FAIL/SKIP; exit 1 if any failed.
# Without an NVIDIA GPU it says so and runs nothing (exit 3).
#
# Usage: scripts/gpu_check.sh [HARNESS] [--out DIR]   (HARNESS default target/release/harness)
# Needs: python3 (standard library only) for the summary.
set -euo pipefail
bin="" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option '$1' (use HARNESS, --out DIR)" >&2; exit 2 ;;
    *) bin="$1"; shift ;;
  esac
done
bin="${bin:-target/release/harness}"

if [ ! -d /proc/driver/nvidia/gpus ] || [ -z "$(ls -A /proc/driver/nvidia/gpus 2>/dev/null)" ]; then
  echo "gpu_check.sh: needs an NVIDIA GPU and its driver (no GPU under /proc/driver/nvidia/gpus); nothing was run" >&2
  exit 3
fi
if [ ! -x "$bin" ]; then
  echo "gpu_check.sh: no harness binary at $bin; build one with 'cargo build --release --no-default-features --bins' and pass its path" >&2
  exit 2
fi
command -v python3 >/dev/null || { echo "gpu_check.sh: needs python3 (standard library only) for the summary" >&2; exit 2; }
out="${out:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$out"
echo "gpu_check: results in $out"

"$bin" engines > "$out/engines.txt" 2>&1 || true
readelf -d "$bin" > "$out/needed.txt" 2>&1 || objdump -p "$bin" > "$out/needed.txt" 2>&1 || true

# Every step 2 ms (prefill and decode alike), so every step's known answer is 2 ms.
steps=(--engine calibration --engine-arg device=cuda --engine-arg mem_gib=2
  --engine-arg prefill_ms=2 --engine-arg prefill_ms_per_request=0 --engine-arg prefill_us_per_token=0
  --engine-arg decode_ms=2 --engine-arg decode_ms_per_seq=0
  --input-len 16 --output-len 64 --gpu-sample-ms 50 --no-progress)
# 2 s of submissions per point (rounds of 64 steps, 128 ms), after a warmup round.
timeout 120 "$bin" sweep "${steps[@]}" --batch 1,8,64 --duration 2 \
  --out "$out/sweep" > "$out/sweep.log" 2>&1 || echo "gpu_check: the sweep exited $? (see $out/sweep.log)"
# Open loop, 4 requests/s of 128 ms each (batched as they overlap): the GPU is busy
# about 1 - exp(-4 x 0.128) = 40 % of the time.
timeout 60 "$bin" run "${steps[@]}" --rate 4 --num-requests 12 --warmup 0 \
  --out "$out/rate" > "$out/rate.log" 2>&1 || echo "gpu_check: the open-loop run exited $? (see $out/rate.log)"
if command -v nsys >/dev/null; then
  timeout 120 nsys profile --capture-range=cudaProfilerApi --trace=cuda,nvtx --force-overwrite=true \
    -o "$out/profile" "$bin" run "${steps[@]}" --batch 8 --num-requests 32 --warmup 1 --profile \
    --profile-steps 20 --out "$out/profiled" > "$out/profile.log" 2>&1 || true
  nsys stats --report nvtx_sum --format csv "$out/profile.nsys-rep" > "$out/nvtx.csv" 2>>"$out/profile.log" || true
fi

python3 - "$out" <<'EOF'
import json, os, sys

out = sys.argv[1]
failed = 0

def line(name, expected, measured, ok):
    global failed
    verdict = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
    failed += ok is False
    print(f"{name:<22} expected {expected:<34} measured {measured:<34} {verdict}")

def read(path):
    try:
        with open(os.path.join(out, path)) as f:
            return f.read()
    except OSError:
        return ""

def points(run):
    try:
        with open(os.path.join(out, run, "summary.json")) as f:
            return json.load(f)["points"]
    except (OSError, ValueError, KeyError):
        return []

def fmt(x, unit=""):
    return "absent" if x is None else f"{x:.3f}{unit}"

engines = read("engines.txt")
seen = [w for w in ("CUDA driver", "GPU 0:", "telemetry on") if w in engines and "CUDA driver: none" not in engines]
line("engines", "CUDA driver, GPU 0, NVML", ", ".join(seen) or "none (engines.txt)", len(seen) == 3)
needed = read("needed.txt")
line("linkage", "no libpython", "libpython linked" if "libpython" in needed else "none", "libpython" not in needed if needed else None)

sweep = points("sweep")
if not sweep:
    line("sweep", "3 points", "no summary.json (sweep.log)", False)
for p in sweep:
    tol = max(0.02 * 2.0, 0.020)
    for key in ("gpu_ms_per_step", "p50_gpu_ms_per_step"):
        v = p.get(key)
        line(f"gpu_ms {p['label']} {key[:3]}", f"2.000 ms +-{tol:.3f}", fmt(v, " ms"), v is not None and abs(v - 2.0) <= tol)
    g, h = p.get("gpu_ms_per_step"), p.get("host_ms_per_step")
    line(f"bracket {p['label']}", f"host = gpu +-{tol:.3f} ms", f"host {fmt(h)} gpu {fmt(g)}", None not in (g, h) and abs(h - g) <= tol)
    print(f"{'':<22} p99 GPU ms {fmt(p.get('p99_gpu_ms_per_step'))}, steps timed {p.get('gpu_steps_timed')}, "
          f"harness {fmt(p.get('harness_us_per_step'))} us/step, util {fmt(p.get('gpu_utilization_pct'))} %, "
          f"power {fmt(p.get('gpu_power_w'))} W, energy {fmt(p.get('energy_j'))} J")

def duty(p):
    g, n, d = p.get("gpu_ms_per_step"), p.get("gpu_steps_timed"), p.get("duration")
    return None if None in (g, n, d) or not d else 100.0 * g * n / (d * 1000.0)

for p in sweep[-1:] + points("rate"):
    want, util = duty(p), p.get("gpu_utilization_pct")
    line(f"duty {p['label']}", f"NVML util {fmt(want, ' %')} +-15", fmt(util, " %"), None not in (want, util) and abs(util - want) <= 15)

for p in sweep[-1:]:
    e, w, d = p.get("energy_j"), p.get("gpu_power_w"), p.get("duration")
    ok = None not in (e, w, d) and e > 0 and abs(e - w * d) <= 0.25 * e
    line(f"energy {p['label']}", f"> 0, = {fmt(w)} W x {fmt(d)} s +-25 %", fmt(e, " J"), ok)
    m = p.get("peak_gpu_memory_gib")
    line(f"memory {p['label']}", ">= 2 GiB (mem_gib=2)", fmt(m, " GiB"), m is not None and m >= 2.0)

nvtx = read("nvtx.csv")
if not os.path.exists(os.path.join(out, "profile.log")):
    line("profile", "NVTX step ranges under nsys", "nsys not on PATH", None)
else:
    steps = sum(1 for l in nvtx.splitlines() if " step " in l)
    line("profile", "NVTX step ranges under nsys", f"{steps} range names with 'step'", steps > 0)
sys.exit(1 if failed else 0)
EOF
