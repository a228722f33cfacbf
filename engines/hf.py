"""HF Transformers reference adapter: its own decode loop over the KV cache.

Static batching with left padding, and no continuous batching: pending requests
wait until the running batch has finished, then up to ``max_batch`` of them start
together. The first ``step()`` of a batch is its prefill (one token per sequence);
each later ``step()`` is one decode forward for the whole batch and yields one token
for every sequence that has not finished. Finished sequences stay in the batch
(static shapes) until the last one ends; the next batch starts at the next step.
Temperature 0 is greedy argmax; otherwise softmax(logits / T) is sampled with a
per-request generator seeded from the request's seed. With ``return_token_ids`` each
token's top-1 minus top-2 logit is returned too (parity margins). ``prompt_logprobs``
(``harness parity --logprobs``) is one forward over each whole text.

``--model`` is a checkpoint directory, or a GGUF (a file or a directory holding one),
which Transformers dequantizes on load: ``harness parity --engines llamacpp,hf`` then
compares the two on the same weights.

Options (``--engine-arg``): ``dtype`` (float32), ``device`` (cpu; cuda, cuda:N),
``threads`` (torch.set_num_threads), ``max_batch`` (64).
"""

import collections
import importlib.metadata
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import harness_bridge as hb

_OPTIONS = {"dtype": str, "device": str, "threads": int, "max_batch": int, "max_model_len": int}
_DTYPES = ("float32", "bfloat16", "float16")


# Where the step stats come from (SchedulerFacts.step_stats_source).
STEP_STATS_SOURCE = (
    "hf: its own static batch (running = the batch's rows, finished ones included, as the forward computes "
    "them; waiting = requests queued behind the batch; a prefill step's prompt tokens without padding, a "
    "decode step's one token per row; it never preempts; no KV-cache capacity (a growing DynamicCache), no "
    "prefix cache, no speculation, no engine step time)"
)


class _Seq:
    __slots__ = ("rid", "prompt", "output_len", "min_tokens", "ignore_eos", "temperature", "generator",
                 "want_ids", "ids", "tops", "done")

    def __init__(self, rid, prompt, output_len, min_tokens, ignore_eos, temperature, generator, want_ids):
        self.rid, self.prompt, self.output_len = rid, prompt, output_len
        self.min_tokens, self.ignore_eos, self.want_ids = min_tokens, ignore_eos, want_ids
        self.temperature, self.generator = temperature, generator
        self.ids = []
        self.tops = []  # per generated token, its top-2 logits
        self.done = False


class HfAdapter(hb.EngineAdapter):
    def __init__(self, model, options):
        o = hb.parse_options("hf", options, _OPTIONS, common=tuple(_OPTIONS))
        model_dir, self.gguf_file = hb.require_model_dir("hf", model, allow_gguf=True)
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        self.torch = torch
        self.dtype_name = o.get("dtype", "float32")
        if self.dtype_name not in _DTYPES:
            raise hb.UsageError(f"--engine-arg dtype={self.dtype_name}: expected one of {', '.join(_DTYPES)}")
        self.device = o.get("device", "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise hb.UsageError(f"--engine-arg device={self.device}: no CUDA device here; use device=cpu")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise hb.UsageError(f"--engine-arg device={self.device}: expected cpu, cuda or cuda:N")
        if "threads" in o:
            if o["threads"] < 1:
                raise hb.UsageError("--engine-arg threads must be at least 1")
            torch.set_num_threads(o["threads"])
        self.max_batch = o.get("max_batch", 64)
        if self.max_batch < 1:
            raise hb.UsageError("--engine-arg max_batch must be at least 1")
        t0 = time.monotonic()
        extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, self.dtype_name), **extra)
        self.model = self.model.to(self.device).eval()
        self.load_s = time.monotonic() - t0
        try:
            gen = GenerationConfig.from_pretrained(model_dir)
        except Exception:
            gen = self.model.generation_config
        cfg = self.model.config
        eos = gen.eos_token_id if gen.eos_token_id is not None else getattr(cfg, "eos_token_id", None)
        self.eos = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
        pad = gen.pad_token_id if gen.pad_token_id is not None else getattr(cfg, "pad_token_id", None)
        self.pad = pad if pad is not None else (min(self.eos) if self.eos else 0)
        # A request whose prompt plus output does not fit fails alone at submit, as in
        # vLLM: the model's own position limit unless --engine-arg max_model_len is less.
        limit = getattr(cfg, "max_position_embeddings", None)
        self.max_model_len = o.get("max_model_len", limit)
        if self.max_model_len is not None and self.max_model_len < 1:
            raise hb.UsageError("--engine-arg max_model_len must be at least 1")
        self.refused = hb.Refusals()  # too long for max_model_len: failed by the next step()
        self.model_path = model
        self.pending = collections.deque()
        self.batch = None  # list of _Seq while a batch runs
        self.state = None  # (past_key_values, attention_mask, next_positions, last_tokens)

    def info(self):
        cfg = self.model.config
        # What the loaded model holds, not what was asked for.
        dtype = str(self.model.dtype).replace("torch.", "")
        return hb.engine_info(
            "hf", importlib.metadata.version("transformers"), self.model_path, dtype, str(self.model.device), "step",
            {
                "batching": "static batching (left padding), no continuous batching",
                "decode_loop": "own loop over the KV cache (prefill, then one forward per step), not generate()",
                "max_batch": self.max_batch,
                "max_model_len": self.max_model_len,
                "transformers": importlib.metadata.version("transformers"),
                "torch": self.torch.__version__,
                "dtype": dtype,
                "dtype_requested": self.dtype_name,
                "weights": (f"GGUF {self.gguf_file}, dequantized to {dtype} by Transformers on load"
                            if self.gguf_file else "checkpoint"),
                "eos_token_ids": sorted(self.eos),
                "pad_token_id": self.pad,
                "architectures": getattr(cfg, "architectures", None),
                "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
                "hidden_size": getattr(cfg, "hidden_size", None),
                "vocab_size": getattr(cfg, "vocab_size", None),
                "load_s": round(self.load_s, 3),
            },
            cuda=hb.cuda_placement(self.torch) if self.device.startswith("cuda") else None,
            # On the calling thread, the one that runs step().
            compute={"threads": self.torch.get_num_threads()},
            # A static batch: at most max_batch sequences at once.
            scheduler={"max_running": self.max_batch, "step_stats_source": STEP_STATS_SOURCE},
        )

    def submit(self, rid, prompt_token_ids, output_len, min_tokens, ignore_eos, temperature, seed, return_token_ids):
        generator = None
        if temperature > 0:
            generator = self.torch.Generator(device=self.device)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
        need = len(prompt_token_ids) + output_len
        if self.max_model_len is not None and need > self.max_model_len:
            self.refused.add(rid, f"prompt ({len(prompt_token_ids)} tokens) + output ({output_len}) = {need} "
                                  f"tokens exceeds max_model_len {self.max_model_len}")
            return
        self.pending.append(_Seq(rid, list(prompt_token_ids), output_len, min_tokens, ignore_eos,
                                 float(temperature), generator, return_token_ids))

    def _sample(self, logits):
        """One token per row of ``logits`` [n, vocab] (list of ints)."""
        torch = self.torch
        greedy = logits.argmax(dim=-1).tolist()
        if any(s.want_ids for s in self.batch):
            tops = logits.float().topk(2, dim=-1).values.tolist()
            for s, t in zip(self.batch, tops):
                if s.want_ids and not s.done:
                    s.tops.append(t)
        for i, s in enumerate(self.batch):
            if s.temperature > 0 and not s.done:
                probs = torch.softmax(logits[i].float() / s.temperature, dim=-1)
                greedy[i] = int(torch.multinomial(probs, 1, generator=s.generator).item())
        return greedy

    def _prefill(self):
        torch = self.torch
        n = min(self.max_batch, len(self.pending))
        self.batch = [self.pending.popleft() for _ in range(n)]
        width = max(len(s.prompt) for s in self.batch)
        ids = torch.full((n, width), self.pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, s in enumerate(self.batch):
            if s.prompt:
                ids[i, width - len(s.prompt):] = torch.tensor(s.prompt, dtype=torch.long)
                mask[i, width - len(s.prompt):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        # logits_to_keep=1: only the last position's logits (262k vocab x width otherwise).
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        tokens = self._sample(out.logits[:, -1, :])
        self.state = (out.past_key_values, mask, positions[:, -1:] + 1, tokens)

    def _decode(self):
        torch = self.torch
        past, mask, pos, last = self.state
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=mask.device)], dim=-1)
        x = torch.tensor(last, dtype=torch.long, device=self.device)[:, None]
        out = self.model(input_ids=x, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True,
                         logits_to_keep=1)
        tokens = self._sample(out.logits[:, -1, :])
        self.state = (out.past_key_values, mask, pos + 1, tokens)

    def step(self, timeout_s):
        if self.refused:
            return self.refused.take()
        if self.batch is None:
            if not self.pending:
                if timeout_s > 0:
                    time.sleep(timeout_s)  # idle: wait for the next arrival, GIL released
                return hb.EMPTY
            with self.torch.inference_mode():
                self._prefill()
            n = len(self.batch)
            stats = {"prefill_requests": n, "prefill_tokens": sum(len(s.prompt) for s in self.batch),
                     "decode_requests": 0, "decode_tokens": 0}
        else:
            with self.torch.inference_mode():
                self._decode()
            # Every row of the static batch is computed, finished ones included.
            n = len(self.batch)
            stats = {"prefill_requests": 0, "prefill_tokens": 0, "decode_requests": n, "decode_tokens": n}
        stats.update(engine_steps=1, running=n, waiting=len(self.pending), preempted=0)
        tokens = self.state[3]
        buf = hb.EventBuffer()
        for s, t in zip(self.batch, tokens):
            if s.done:
                continue
            s.ids.append(t)
            n = len(s.ids)
            if n >= s.output_len:
                code = hb.LENGTH
            elif not s.ignore_eos and n >= s.min_tokens and t in self.eos:
                code = hb.STOP
            else:
                buf.add(s.rid, 1)
                continue
            s.done = True
            buf.add(s.rid, 1, code)
            if s.want_ids:
                buf.finish_info(s.rid, token_ids=s.ids, top2_margins=hb.top2_margins(s.tops, len(s.ids)))
        if all(s.done for s in self.batch):
            self.batch, self.state = None, None  # frees the KV cache
        return (*buf.take(), stats)

    def prompt_logprobs(self, texts):
        """One forward per text over all its tokens (no cache, no padding): the
        log-softmax of each position's logits, in float32, at the next token, and the
        argmax there."""
        torch = self.torch
        out = []
        with torch.inference_mode():
            for ids in texts:
                if len(ids) < 2:
                    out.append(([], []))
                    continue
                x = torch.tensor([ids], dtype=torch.long, device=self.device)
                logits = self.model(input_ids=x, use_cache=False).logits[0, :-1].float()
                lp = torch.log_softmax(logits, dim=-1)
                nxt = x[0, 1:]
                out.append((lp.gather(1, nxt[:, None])[:, 0].tolist(), lp.argmax(dim=-1).tolist()))
                del logits, lp
        return out

    def in_flight(self):
        running = sum(not s.done for s in self.batch) if self.batch else 0
        return len(self.pending) + running + len(self.refused)

    def abort(self, rid):
        self.refused.drop(rid)
        self.pending = collections.deque(s for s in self.pending if s.rid != rid)
        for s in self.batch or ():
            if s.rid == rid:
                s.done = True
        if self.batch and all(s.done for s in self.batch):
            self.batch, self.state = None, None

    def shutdown(self):
        self.batch = self.state = None
        self.pending.clear()
        model, self.model = self.model, None
        del model
        import gc

        gc.collect()
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()


def create(model, options):
    return HfAdapter(model, options)
