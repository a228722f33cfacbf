"""STAND-IN for tensorrt_llm.llmapi (tests only)."""

from . import llm_args  # noqa: F401
from .llm_args import KvCacheConfig  # noqa: F401
