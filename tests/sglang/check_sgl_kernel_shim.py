"""The project's sgl_kernel CPU stand-in (engines/cpu_shims/sgl_kernel) against a
reference, on random inputs. Run by tests/python_engines.rs with the sglang env's
python (it needs only torch): exits non-zero on the first mismatch.

The reference is a scalar transcription of SGLang's own Triton kernel
``assign_req_to_token_pool`` (sglang/srt/mem_cache/allocation.py), which the CPU op
replaces: program ``i`` reads its span ``[start[i], end[i])``, its offset into
``out_cache_loc`` is the sum of the spans of the programs before it, and it copies that
many entries into row ``req_pool_indices[i]`` of ``req_to_token``.
"""

import os
import random
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "engines", "cpu_shims"))
import sgl_kernel  # noqa: E402

assert getattr(sgl_kernel, "HARNESS_CPU_SHIM", False), f"imported {sgl_kernel.__file__}, not the project's stand-in"


def reference(req_pool_indices, req_to_token, start_offset, end_offset, out_cache_loc, pool_len):
    flat = req_to_token.view(-1)
    for pid in range(req_pool_indices.numel()):
        kv_start, kv_end = int(start_offset[pid]), int(end_offset[pid])
        row = int(req_pool_indices[pid]) * pool_len
        out_offset = sum(int(end_offset[j]) - int(start_offset[j]) for j in range(pid))
        for k in range(kv_end - kv_start):
            flat[row + kv_start + k] = out_cache_loc[out_offset + k]


def case(rng, n_rows, pool_len, batch, loc_dtype):
    rows = torch.tensor(rng.sample(range(n_rows), batch), dtype=torch.int64)
    starts, ends = [], []
    for _ in range(batch):
        s = rng.randrange(0, pool_len)
        e = rng.randrange(s, pool_len + 1)  # empty spans too
        starts.append(s)
        ends.append(e)
    start = torch.tensor(starts, dtype=torch.int64)
    end = torch.tensor(ends, dtype=torch.int64)
    total = int((end - start).sum())
    locs = torch.randint(1, 1 << 20, (total + rng.randrange(0, 4),), dtype=loc_dtype)  # spare entries stay unread
    table = torch.randint(-5, 0, (n_rows, pool_len), dtype=torch.int32)  # untouched cells keep these
    return rows, table, start, end, locs


def main():
    rng = random.Random(0)
    torch.manual_seed(0)
    checked = 0
    for trial in range(300):
        n_rows = rng.randrange(1, 12)
        pool_len = rng.randrange(1, 70)
        batch = rng.randrange(1, n_rows + 1)
        loc_dtype = rng.choice([torch.int64, torch.int32])
        rows, table, start, end, locs = case(rng, n_rows, pool_len, batch, loc_dtype)
        want = table.clone()
        reference(rows, want, start, end, locs, pool_len)
        got = table.clone()
        sgl_kernel.assign_req_to_token_pool_cpu(rows, got, start, end, locs, pool_len)
        if not torch.equal(got, want):
            bad = (got != want).nonzero().tolist()[:5]
            sys.exit(f"trial {trial}: mismatch at {bad} (rows {rows.tolist()}, spans {list(zip(start.tolist(), end.tolist()))})")
        checked += int((end - start).sum())
    # Some trial must have written something, or the comparison proved nothing.
    assert checked > 1000, checked

    # A wrong row length is refused, not written past.
    rows, table, start, end, locs = case(rng, 3, 8, 2, torch.int64)
    try:
        sgl_kernel.assign_req_to_token_pool_cpu(rows, table, start, end, locs, 9)
        sys.exit("pool_len disagreeing with req_to_token was accepted")
    except ValueError:
        pass

    # Every other op: importable by name (SGLang binds several at import), and a
    # NotImplementedError naming the op when called.
    from sgl_kernel import copy_all_layer_kv_cache_cpu  # noqa: F401  (bound at import by SGLang's kvcache ops)

    try:
        copy_all_layer_kv_cache_cpu(torch.zeros(1))
        sys.exit("an op the stand-in does not implement ran")
    except NotImplementedError as e:
        assert "sgl_kernel.copy_all_layer_kv_cache_cpu" in str(e) and "assign_req_to_token_pool_cpu" in str(e), e
    assert not hasattr(sgl_kernel, "_private"), "a private name resolved to a stub"
    print(f"sgl_kernel stand-in: assign_req_to_token_pool_cpu matches the reference on 300 random cases "
          f"({checked} cells written); other ops raise NotImplementedError naming the op")


if __name__ == "__main__":
    main()
