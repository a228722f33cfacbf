"""STAND-IN for tensorrt_llm.llmapi.llm_args (tests only): args classes with the
pydantic-style ``model_fields`` the adapter reads, and one config object."""

from typing import Optional


class _Field:
    def __init__(self, annotation):
        self.annotation = annotation


class KvCacheConfig:
    model_fields = {"free_gpu_memory_fraction": _Field(Optional[float]), "enable_block_reuse": _Field(bool)}

    def __init__(self, **kw):
        unknown = set(kw) - set(self.model_fields)
        if unknown:
            raise ValueError(f"KvCacheConfig: unknown fields {sorted(unknown)}")
        self.__dict__.update(kw)
        # TensorRT-LLM's default: KV-cache block reuse (prefix caching) on.
        self.__dict__.setdefault("enable_block_reuse", True)

    def __repr__(self):
        return f"KvCacheConfig({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


class TorchLlmArgs:
    model_fields = {
        "model": _Field(str),
        "tokenizer": _Field(Optional[str]),
        "dtype": _Field(str),
        "max_batch_size": _Field(Optional[int]),
        "max_num_tokens": _Field(Optional[int]),
        "enable_chunked_prefill": _Field(bool),
        "tensor_parallel_size": _Field(int),
        "kv_cache_config": _Field(Optional[KvCacheConfig]),
        "enable_iter_perf_stats": _Field(bool),
        # Stand-in knobs (not TensorRT-LLM's):
        "standin_tokens_per_update": _Field(int),
        "standin_step_ms": _Field(float),
        "standin_fail_request": _Field(Optional[int]),
        "standin_margin": _Field(float),
    }


class TrtLlmArgs(TorchLlmArgs):
    pass


class ResolvedArgs:
    """What ``LLM.args`` holds in TensorRT-LLM: the args with its defaults filled in
    (max_batch_size 2048, chunked prefill off, a default KvCacheConfig)."""

    DEFAULTS = {"max_batch_size": 2048, "max_num_tokens": 8192, "enable_chunked_prefill": False,
                "enable_iter_perf_stats": False}

    def __init__(self, model, **kw):
        self.model = model
        self.__dict__.update(self.DEFAULTS)
        self.__dict__.update(kw)
        if getattr(self, "kv_cache_config", None) is None:
            self.kv_cache_config = KvCacheConfig()
