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

    def __repr__(self):
        return f"KvCacheConfig({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


class TorchLlmArgs:
    model_fields = {
        "model": _Field(str),
        "tokenizer": _Field(Optional[str]),
        "dtype": _Field(str),
        "max_batch_size": _Field(Optional[int]),
        "max_num_tokens": _Field(Optional[int]),
        "tensor_parallel_size": _Field(int),
        "kv_cache_config": _Field(Optional[KvCacheConfig]),
        # Stand-in knobs (not TensorRT-LLM's):
        "standin_tokens_per_update": _Field(int),
        "standin_step_ms": _Field(float),
        "standin_fail_request": _Field(Optional[int]),
        "standin_margin": _Field(float),
    }


class TrtLlmArgs(TorchLlmArgs):
    pass
