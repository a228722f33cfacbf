"""STAND-IN for tensorrt_llm._tensorrt_engine (tests only): the engine-dir LLM."""

from . import LLM  # noqa: F401
