"""HF Transformers reference adapter: a plain decode loop over the KV cache.

Static batching with left padding, and no continuous batching: pending requests
wait until the running batch has finished, then up to ``max_batch`` of them start
together. The first ``step()`` of a batch is its prefill (one token per sequence);
each later ``step()`` is one decode forward for the whole batch and yields one token
for every sequence that has not finished. Finished sequences stay in the batch
(static shapes) until the last one ends. Greedy at temperature 0.

Options: ``dtype`` (float32), ``device`` (cpu, cuda, cuda:N), ``threads``
(torch.set_num_threads), ``max_batch`` (64).
"""

import collections
import importlib.metadata
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import harness_bridge as hb

_OPTIONS = {"dtype": str, "device": str, "threads": int, "max_batch": int}


class _Seq:
    __slots__ = ("rid", "prompt", "max_tokens", "min_tokens", "ignore_eos", "want_ids", "ids", "done")

    def __init__(self, rid, prompt, max_tokens, min_tokens, ignore_eos, want_ids):
        self.rid, self.prompt, self.max_tokens = rid, prompt, max_tokens
        self.min_tokens, self.ignore_eos, self.want_ids = min_tokens, ignore_eos, want_ids
        self.ids = []
        self.done = False


class HfAdapter:
    def __init__(self, model, options):
        o = hb.parse_options("hf", options, _OPTIONS)
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        dtype_name = o.get("dtype", "float32")
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise hb.UsageError(f"--engine-arg dtype={dtype_name}: expected float32, bfloat16 or float16")
        self.device = o.get("device", "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise hb.UsageError(f"--engine-arg device={self.device}: no CUDA device here; use device=cpu")
        if "threads" in o:
            torch.set_num_threads(o["threads"])
        self.max_batch = o.get("max_batch", 64)
        if self.max_batch < 1:
            raise hb.UsageError("--engine-arg max_batch must be at least 1")
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device).eval()
        gc = self.model.generation_config
        eos = gc.eos_token_id if gc.eos_token_id is not None else self.model.config.eos_token_id
        self.eos = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
        pad = gc.pad_token_id if gc.pad_token_id is not None else getattr(self.model.config, "pad_token_id", None)
        self.pad = pad if pad is not None else (min(self.eos) if self.eos else 0)
        self.model_path, self.dtype_name = model, dtype_name
        self.pending = collections.deque()
        self.batch = None  # list of _Seq
        self.state = None  # (past_key_values, attention_mask, next_positions, last_tokens)
        self.generator = None

    def info(self):
        cfg = self.model.config
        return {
            "name": "hf",
            "version": importlib.metadata.version("transformers"),
            "model": self.model_path,
            "dtype": self.dtype_name,
            "device": self.device,
            "kind": "step",
            "metadata": {
                "batching": "static batching (left padding), no continuous batching",
                "max_batch": self.max_batch,
                "torch": self.torch.__version__,
                "threads": self.torch.get_num_threads(),
                "architectures": getattr(cfg, "architectures", None),
                "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
                "hidden_size": getattr(cfg, "hidden_size", None),
                "vocab_size": getattr(cfg, "vocab_size", None),
            },
        }

    def submit(self, rid, prompt_token_ids, max_tokens, min_tokens, ignore_eos, temperature, seed, return_token_ids):
        if temperature > 0 and self.generator is None:
            self.generator = self.torch.Generator(device=self.device)
            self.generator.manual_seed(seed or 0)
        self.temperature = temperature
        self.pending.append(_Seq(rid, list(prompt_token_ids), max_tokens, min_tokens, ignore_eos, return_token_ids))

    def _sample(self, logits):
        torch = self.torch
        if getattr(self, "temperature", 0) <= 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)

    def _prefill(self):
        torch = self.torch
        n = min(self.max_batch, len(self.pending))
        self.batch = [self.pending.popleft() for _ in range(n)]
        width = max(len(s.prompt) for s in self.batch)
        ids = torch.full((n, width), self.pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, s in enumerate(self.batch):
            ids[i, width - len(s.prompt):] = torch.tensor(s.prompt, dtype=torch.long)
            mask[i, width - len(s.prompt):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        tokens = self._sample(out.logits[:, -1, :])
        self.state = (out.past_key_values, mask, positions[:, -1:] + 1, tokens)

    def _decode(self):
        torch = self.torch
        past, mask, pos, last = self.state
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=mask.device)], dim=-1)
        out = self.model(input_ids=last[:, None], attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
        tokens = self._sample(out.logits[:, -1, :])
        self.state = (out.past_key_values, mask, pos + 1, tokens)

    def step(self, timeout_s):
        if self.batch is None:
            if not self.pending:
                time.sleep(timeout_s)  # idle: wait without holding the GIL
                return hb.EMPTY
            with self.torch.inference_mode():
                self._prefill()
        else:
            with self.torch.inference_mode():
                self._decode()
        tokens = self.state[3].tolist()
        buf = hb.EventBuffer()
        for s, t in zip(self.batch, tokens):
            if s.done:
                continue
            s.ids.append(t)
            n = len(s.ids)
            if n >= s.max_tokens:
                code = hb.LENGTH
            elif not s.ignore_eos and n >= s.min_tokens and t in self.eos:
                code = hb.STOP
            else:
                buf.add(s.rid, 1)
                continue
            s.done = True
            buf.add(s.rid, 1, code)
            if s.want_ids:
                buf.finish_info(s.rid, token_ids=s.ids)
        if all(s.done for s in self.batch):
            self.batch, self.state = None, None  # frees the KV cache
        return buf.take()

    def in_flight(self):
        running = sum(not s.done for s in self.batch) if self.batch else 0
        return len(self.pending) + running

    def abort(self, rid):
        self.pending = collections.deque(s for s in self.pending if s.rid != rid)
        for s in self.batch or ():
            if s.rid == rid:
                s.done = True
        if self.batch and all(s.done for s in self.batch):
            self.batch, self.state = None, None

    def shutdown(self):
        self.batch = self.state = None
        self.pending.clear()
        self.model = None


def create(model, options):
    return HfAdapter(model, options)
