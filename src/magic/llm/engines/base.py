"""One interface for every LLM backend of stage 1 and the chat (``magic.llm.engines.factory.make_engine``
turns a backend name into one of them; this module knows none of its implementations).

    engine = make_engine("local", model_path="LLM_inference/fine_tuned_llama2", batch_size=16,
                         generation=Generation(template="default", max_new_tokens=128))
    run = engine.answer([(sample_id, instruction), ...], cache=cache, desc="strategy test")
    run.answers[sample_id]                       # the raw answer text

Implementations: ``HFEngine`` (transformers in process, magic.llm.engines.hf), ``OpenAIEngine`` (any
OpenAI-compatible server, chat or completions endpoint, magic.llm.engines.openai), ``VLLMEngine`` (vllm.LLM
in process, magic.llm.engines.vllm). Every engine files its answers in the shared JsonlCache under its own
``key(prompt)``, so a killed run resumes and a shard merge finds the answers of any backend.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

from magic.llm.engines.cache import ChatRunResult, JsonlCache


@dataclass(frozen=True)
class Generation:
    """How answers are generated (the parts of an answer's cache key that every backend shares)."""
    template: str = "default"
    max_new_tokens: int | None = 128  # None: not sent (a server's own default; the local engine needs a number)
    do_sample: bool = False
    top_k: int | None = None
    temperature: float | None = None


class Engine(ABC):
    """A strategy-LLM backend: answers ``(id, instruction)`` items, through a cache."""

    name = "engine"

    def __init__(self, model_path: str, generation: Generation):
        self.model_path, self.generation = model_path, generation

    @abstractmethod
    def key(self, prompt: str) -> str:
        """The cache key of the answer to ``prompt`` (model, prompt as sent, generation settings)."""

    @abstractmethod
    def answer(self, items: Sequence[tuple[str, str]], *, cache: JsonlCache | None = None, desc: str = "",
               progress: bool | None = None, stats: dict | None = None) -> ChatRunResult:
        """Answers of ``items`` (cached ones are not generated again); ``stats`` collects backend figures."""

    def answer_one(self, sample_id: str, prompt: str) -> str:
        """One answer (the chat's turn); a failure raises with the backend's message."""
        run = self.answer([(sample_id, prompt)], progress=False)
        if sample_id not in run.answers:
            raise RuntimeError(run.failed.get(sample_id, "no answer"))
        return run.answers[sample_id]
