# Builds llama.cpp's CPU backend for the x86 SIMD of the machine that builds it.
#
# `--features llamacpp` builds the llama.cpp that llama-cpp-sys-2 vendors with cmake. That
# crate's build script always passes -DGGML_NATIVE=OFF (unless RUSTFLAGS hold
# `-C target-cpu=native`, which would rebuild every crate for this CPU), so ggml's own
# defaults would give x86-64-v3 (SSE4.2, AVX, AVX2, FMA, F16C, BMI2) and nothing newer,
# whatever the CPU. It forwards every CMAKE_* environment variable to cmake, and
# .cargo/config.toml sets CMAKE_PROJECT_ggml_INCLUDE to this file, so cmake runs it at
# ggml's project() call, before ggml declares its options: it sets each x86 switch ggml
# has to ON or OFF by what /proc/cpuinfo says this CPU has (AMX: off, below). An AVX-512 host gets its
# AVX-512 kernels and an older one no instruction it lacks; the compile flags name the
# features (-mavx512f ...), so a reconfigure for other features recompiles ggml-cpu.
#
# It sets nothing, leaving ggml's defaults, when:
# - the build is not for Linux on x86-64 on the machine itself (cross-compiling, no
#   /proc/cpuinfo);
# - GGML_NATIVE is ON (RUSTFLAGS with -C target-cpu=native: ggml uses -march=native),
#   or RUSTFLAGS name another target CPU (llama-cpp-sys-2 then builds with -march=CPU);
# - for one switch, when the environment sets it (`GGML_AVX512=OFF cargo build ...`:
#   llama-cpp-sys-2 forwards GGML_* variables to cmake);
# - at all, with LLM_HARNESS_LLAMACPP_CPU=ggml in the environment (ggml's defaults, the
#   x86-64-v3 build above); `host`, or unset, is this CPU.
#
# llama-cpp-sys-2 configures cmake once per target directory (it builds with cmake-rs's
# always_configure(false)), so a changed GGML_* variable or a target directory moved to
# another CPU keeps the first configuration until `cargo clean -p llama-cpp-sys-2`. The
# harness checks at run time: it refuses a llama.cpp built with features this CPU lacks,
# and warns in engine.log when the CPU has some the build does not use.
#
# The switches and the /proc/cpuinfo flags each needs (every one of them). The harness
# reads the same table (src/engine/llamacpp/cpu.rs, whose test keeps the two equal).
set(_llm_harness_switches
  "SSE42:sse4_2"
  "AVX:avx"
  "AVX2:avx2"
  "FMA:fma"
  "F16C:f16c"
  "BMI2:bmi2"
  "AVX_VNNI:avx_vnni"
  "AVX512:avx512f,avx512cd,avx512vl,avx512dq,avx512bw"
  "AVX512_VBMI:avx512vbmi"
  "AVX512_VNNI:avx512_vnni"
  "AVX512_BF16:avx512_bf16"
  "AMX_TILE:amx_tile"
  "AMX_INT8:amx_int8"
  "AMX_BF16:amx_bf16"
)

if(CMAKE_CROSSCOMPILING OR NOT CMAKE_HOST_SYSTEM_NAME STREQUAL "Linux"
   OR NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$"
   OR NOT EXISTS /proc/cpuinfo)
  message(STATUS "llm-harness: not Linux on x86-64 (${CMAKE_SYSTEM_NAME} ${CMAKE_SYSTEM_PROCESSOR}): ggml's default CPU switches")
  return()
endif()
if("$ENV{LLM_HARNESS_LLAMACPP_CPU}" STREQUAL "ggml")
  message(STATUS "llm-harness: LLM_HARNESS_LLAMACPP_CPU=ggml: ggml's default CPU switches")
  return()
elseif(NOT "$ENV{LLM_HARNESS_LLAMACPP_CPU}" STREQUAL "" AND NOT "$ENV{LLM_HARNESS_LLAMACPP_CPU}" STREQUAL "host")
  message(FATAL_ERROR "llm-harness: LLM_HARNESS_LLAMACPP_CPU is '$ENV{LLM_HARNESS_LLAMACPP_CPU}'; use host (this CPU, the default) or ggml (ggml's defaults)")
endif()
if(GGML_NATIVE)
  message(STATUS "llm-harness: GGML_NATIVE is ON: ggml builds with -march=native")
  return()
endif()
# The cc crate passes -march=x86-64 (the target's baseline) unless RUSTFLAGS name a CPU.
string(REGEX MATCHALL "-march=[^ ]+" _llm_harness_march "${CMAKE_C_FLAGS}")
list(REMOVE_ITEM _llm_harness_march "-march=x86-64")
if(_llm_harness_march)
  message(STATUS "llm-harness: RUSTFLAGS name a target CPU (${_llm_harness_march}): ggml builds for it")
  unset(_llm_harness_march)
  return()
endif()
unset(_llm_harness_march)

file(STRINGS /proc/cpuinfo _llm_harness_flags REGEX "^flags[ \t]*:" LIMIT_COUNT 1)
string(REGEX REPLACE "^flags[ \t]*:" "" _llm_harness_flags "${_llm_harness_flags}")
string(REGEX REPLACE "[ \t]+" ";" _llm_harness_flags "${_llm_harness_flags}")

set(_llm_harness_on "")
set(_llm_harness_from_env "")
foreach(_llm_harness_entry IN LISTS _llm_harness_switches)
  string(REPLACE ":" ";" _llm_harness_entry "${_llm_harness_entry}")
  list(GET _llm_harness_entry 0 _llm_harness_switch)
  list(GET _llm_harness_entry 1 _llm_harness_needs)
  string(REPLACE "," ";" _llm_harness_needs "${_llm_harness_needs}")
  if(DEFINED ENV{GGML_${_llm_harness_switch}})
    list(APPEND _llm_harness_from_env "GGML_${_llm_harness_switch}=$ENV{GGML_${_llm_harness_switch}}")
    continue()
  endif()
  set(_llm_harness_value ON)
  # AMX stays off unless the environment turns it on (GGML_AMX_TILE=ON ...): on a
  # Sapphire Rapids VM that lists AMX and grants it (arch_prctl), ggml's AMX kernel
  # died with SIGILL (tileloadd in tinygemm_kernel_amx) at the first decode
  # (2026-12-02), while AVX-512 without it ran.
  if(_llm_harness_switch MATCHES "^AMX_")
    set(_llm_harness_value OFF)
  endif()
  foreach(_llm_harness_flag IN LISTS _llm_harness_needs)
    if(NOT _llm_harness_flag IN_LIST _llm_harness_flags)
      set(_llm_harness_value OFF)
    endif()
  endforeach()
  set(GGML_${_llm_harness_switch} ${_llm_harness_value} CACHE BOOL "set for this CPU by llm-harness (ffi/llamacpp/host-cpu.cmake)" FORCE)
  if(_llm_harness_value)
    list(APPEND _llm_harness_on ${_llm_harness_switch})
  endif()
endforeach()
string(REPLACE ";" " " _llm_harness_on "${_llm_harness_on}")
message(STATUS "llm-harness: ggml CPU switches for this CPU: ${_llm_harness_on}")
if(_llm_harness_from_env)
  string(REPLACE ";" " " _llm_harness_from_env "${_llm_harness_from_env}")
  message(STATUS "llm-harness: from the environment: ${_llm_harness_from_env}")
endif()
unset(_llm_harness_flags)
unset(_llm_harness_on)
unset(_llm_harness_from_env)
unset(_llm_harness_switches)
unset(_llm_harness_entry)
unset(_llm_harness_switch)
unset(_llm_harness_needs)
unset(_llm_harness_value)
