# Source this before building with `--features llamacpp`:
#   . scripts/llamacpp-env.sh && cargo build --release --features llamacpp
#
# Builds llama.cpp for this host's SIMD without touching RUSTFLAGS (which would rebuild
# every crate and change the default build). llama-cpp-sys-2 builds llama.cpp with
# GGML_NATIVE=OFF unless RUSTFLAGS holds `-C target-cpu=native`, and forwards every
# GGML_* environment variable to cmake; ggml's own defaults then enable SSE4.2, AVX,
# AVX2, FMA, F16C and BMI2 (x86-64-v3) and nothing newer. This sets each x86 feature
# ggml has a switch for to ON or OFF by what /proc/cpuinfo says this CPU has, so an
# AVX-512 host gets its AVX-512 kernels and an older one no instruction it lacks.
# The engine records the features llama.cpp reports in run.json, and warns in
# engine.log when the CPU has some the build does not use.
# Elsewhere (not x86-64, no /proc/cpuinfo) it sets nothing: the crate's defaults apply.
# Changing these variables rebuilds llama.cpp (cargo tracks them), so use the same
# ones for every build of the same target directory (scripts/test.sh and .ci/run do).

if [ "$(uname -m 2>/dev/null)" = "x86_64" ] && [ -r /proc/cpuinfo ]; then
  _llm_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  _llm_set() {  # VAR cpuinfo-flag...: ON when the CPU has every flag
    _v=ON
    _var=$1; shift
    for _f in "$@"; do
      case "$_llm_flags" in *" $_f "*) ;; *) _v=OFF ;; esac
    done
    export "$_var=$_v"
  }
  _llm_set GGML_SSE42 sse4_2
  _llm_set GGML_AVX avx
  _llm_set GGML_AVX2 avx2
  _llm_set GGML_FMA fma
  _llm_set GGML_F16C f16c
  _llm_set GGML_BMI2 bmi2
  _llm_set GGML_AVX_VNNI avx_vnni
  _llm_set GGML_AVX512 avx512f avx512cd avx512vl avx512dq avx512bw
  _llm_set GGML_AVX512_VBMI avx512_vbmi
  _llm_set GGML_AVX512_VNNI avx512_vnni
  _llm_set GGML_AVX512_BF16 avx512_bf16
  _llm_set GGML_AMX_TILE amx_tile
  _llm_set GGML_AMX_INT8 amx_int8
  _llm_set GGML_AMX_BF16 amx_bf16
  unset _llm_flags _v _var _f
  unset -f _llm_set
fi
