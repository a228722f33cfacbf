"""llm-harness's CPU stand-in for ``sgl_kernel``, SGLang's kernel package.

SGLang's CPU path imports ``sgl_kernel`` at module level, but the registry's
``sglang-kernel`` wheel is a CUDA build (it fails to load without libcuda) and its CPU
build is not published. On a CPU without AMX every ``torch.ops.sgl_kernel.*_cpu`` call
for norms, activations, rope and attention is skipped for torch-native code; what the
CPU path really calls from this package is listed in ``IMPLEMENTED``, each written here
in plain torch and checked against a reference on random inputs
(tests/sglang/check_sgl_kernel_shim.py). Every other name resolves, because SGLang binds
several at import time without calling them, to a function that raises
``NotImplementedError`` naming the op the moment it is called: nothing is faked.

The sglang adapter (engines/sglang.py) puts this directory first on ``sys.path`` (which
SGLang's spawned scheduler and detokenizer inherit) only when SGLang runs on CPU and the
real package cannot load, and says so in run.json.
"""

import torch

#: Marks this module as the project's stand-in, not the real package.
HARNESS_CPU_SHIM = True
__version__ = "0+llm-harness-cpu-shim"

#: The ops implemented here (each in plain torch).
IMPLEMENTED = ("assign_req_to_token_pool_cpu",)


def assign_req_to_token_pool_cpu(req_pool_indices, req_to_token, start_offset, end_offset, out_cache_loc, pool_len):
    """For each request i, ``req_to_token[req_pool_indices[i], start[i]:end[i]]`` gets the
    next ``end[i] - start[i]`` entries of ``out_cache_loc`` (packed request after request),
    what SGLang's Triton kernel ``assign_req_to_token_pool`` does on a GPU. ``pool_len``
    is the row length of ``req_to_token`` (the kernel's stride), checked, not needed."""
    if req_to_token.dim() != 2 or req_to_token.shape[1] != pool_len:
        raise ValueError(f"assign_req_to_token_pool_cpu: req_to_token {tuple(req_to_token.shape)} with pool_len {pool_len}")
    rows = req_pool_indices.tolist()
    starts = start_offset.tolist()
    ends = end_offset.tolist()
    lengths = [e - s for s, e in zip(starts, ends)]
    if len(rows) != len(starts) or any(n < 0 for n in lengths) or sum(lengths) > out_cache_loc.numel():
        raise ValueError(
            f"assign_req_to_token_pool_cpu: {len(rows)} rows, spans {list(zip(starts, ends))}, "
            f"{out_cache_loc.numel()} cache locations"
        )
    offset = 0
    for row, start, n in zip(rows, starts, lengths):
        if n:
            req_to_token[row, start:start + n] = out_cache_loc[offset:offset + n].to(req_to_token.dtype)
        offset += n


def _not_implemented(name):
    def op(*args, **kwargs):
        raise NotImplementedError(
            f"sgl_kernel.{name} was called, but llm-harness's CPU stand-in for sgl_kernel implements only "
            f"{', '.join(IMPLEMENTED)} (the real CPU kernel package is not published); this model or these engine "
            "args take a SGLang CPU code path the harness does not support"
        )

    op.__name__ = op.__qualname__ = name
    op.harness_cpu_shim_missing = True
    return op


def __getattr__(name):
    # Dunder and private lookups (importlib, pickling, hasattr probes of module
    # machinery) must fail as for any module; ops resolve to a loud stub.
    if name.startswith("_"):
        raise AttributeError(f"module 'sgl_kernel' (llm-harness CPU stand-in) has no attribute {name!r}")
    op = _not_implemented(name)
    globals()[name] = op
    return op
