"""The one place where a backend name becomes an engine (steps 1 and 5 and the chat call it); the engines
(hf.py, openai.py, vllm.py) do not know each other, and each is imported only when it is chosen."""
from __future__ import annotations

from magic.llm.engines.base import Engine, Generation

BACKENDS = ("local", "openai", "vllm")


def make_engine(backend: str, *, model_path: str, generation: Generation | None = None, **options) -> Engine:
    """The engine of ``backend`` ("local", "openai" or "vllm"); ``options`` are that engine's own settings
    (see each class)."""
    generation = generation or Generation()
    if backend == "local":
        from magic.llm.engines.hf import HFEngine as cls
    elif backend == "openai":
        from magic.llm.engines.openai import OpenAIEngine as cls
    elif backend == "vllm":
        from magic.llm.engines.vllm import VLLMEngine as cls
    else:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return cls(model_path, generation, **options)
