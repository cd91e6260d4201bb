"""Strategy inference with vLLM's offline engine (``infer_strategy.py --backend vllm``; optional, CUDA only).

A thin layer: the prompts are templated and tokenised exactly as the local backend does them
(``local_llm.format_prompt`` + ``tokenize_prompts``, so vLLM sees the training token ids, BOS included
once), handed to ``vllm.LLM.generate`` as token-id prompts with automatic prefix caching on (the shared
instruction and a dialogue's earlier turns are computed once), and every answer goes into the same
JSONL cache as the other backends, chunk by chunk, so a killed run resumes. ``--tensor_parallel_size``
splits the model over GPUs. Greedy by default (temperature 0), like the local backend.

vLLM is not a requirement of this project (it pins its own torch); install it beside a CUDA torch
(``pip install vllm``). Covered by scripts/gpu_check.sh where vllm imports; it cannot run on the CPU CI.
"""
from __future__ import annotations

from typing import Sequence

from magic.llm.engines.base import Engine, Generation
from magic.llm.engines.cache import ChatRunResult, JsonlCache, local_model_id, prompt_key

CHUNK = 512  # prompts per generate call: answers reach the cache at least this often


def vllm_prompt_key(prompt: str, model_path: str, template: str, max_new_tokens: int, do_sample: bool = False,
                    top_k: int | None = None, temperature: float | None = None) -> str:
    """The cache key of one prompt (vLLM's kernels differ from transformers': its own key, engine "vllm")."""
    return prompt_key(prompt, local_model_id(model_path), engine="vllm", template=template,
                      max_new_tokens=max_new_tokens, do_sample=do_sample or None,
                      top_k=top_k if do_sample else None, temperature=temperature if do_sample else None)


def import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise RuntimeError("--backend vllm needs the vllm package, which is not installed (pip install vllm, on "
                           f"a machine with a CUDA GPU); or use --backend local or openai ({e})") from None
    return vllm


def run_vllm_requests(items: Sequence[tuple[str, str]], *, model_path: str, template: str = "default",
                      max_new_tokens: int = 128, do_sample: bool = False, top_k: int | None = None,
                      temperature: float | None = None, dtype: str | None = None, tensor_parallel_size: int = 1,
                      cache: JsonlCache | None = None, desc: str = "vllm", progress: bool | None = None,
                      engine=None) -> ChatRunResult:
    """Answer ``items`` = [(id, instruction)] with ``vllm.LLM``; cached answers are not generated again.

    ``engine``: an existing ``vllm.LLM`` (reused across splits); default: one is built on first need and
    returned as ``result.engine``.
    ``dtype``: vLLM's (None = "auto", the checkpoint's).
    """
    from transformers import AutoTokenizer

    from magic.llm.encoding import EncodingRule
    from magic.llm.engines.hf import RULE_ATTR, format_prompt, prepare_tokenizer, tokenize_prompts

    keys = {i: vllm_prompt_key(p, model_path, template, max_new_tokens, do_sample, top_k, temperature)
            for i, p in items}
    answers = {i: a for i, _ in items if cache is not None and (a := cache.get(i, keys[i])) is not None}
    result = ChatRunResult(answers=answers, failed={}, from_cache=len(answers))
    result.engine = engine  # handed back so the next split reuses it
    todo = [(i, p) for i, p in items if i not in answers]
    if not todo:
        return result
    vllm = import_vllm()
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(model_path))
    # tokenise as the model was fine-tuned (its magic_encoding.json; released rule: no BOS), as the local backend
    setattr(tokenizer, RULE_ATTR, EncodingRule.load(model_path))
    if engine is None:
        engine = vllm.LLM(model=model_path, tokenizer=model_path, dtype=dtype or "auto",
                          tensor_parallel_size=tensor_parallel_size, enable_prefix_caching=True, seed=0)
        result.engine = engine
    params = vllm.SamplingParams(
        max_tokens=max_new_tokens, temperature=(temperature if temperature is not None else 1.0) if do_sample else 0.0,
        top_k=(top_k or -1) if do_sample else -1, skip_special_tokens=True)
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        ids = tokenize_prompts(tokenizer, [format_prompt(tokenizer, p, template) for _, p in chunk])
        outs = engine.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=progress is not False)
        for (i, _), out in zip(chunk, outs):
            answers[i] = out.outputs[0].text.strip()
            if cache is not None:
                cache.put(i, keys[i], answers[i])
    result.requested = len(todo)
    return result


class VLLMEngine(Engine):
    """``vllm.LLM`` in process (prefix caching, tensor parallelism); built on the first uncached prompt and
    reused for every later call."""

    name = "vllm"

    def __init__(self, model_path: str, generation: Generation, dtype: str | None = None,
                 tensor_parallel_size: int = 1):
        super().__init__(model_path, generation)
        self.dtype, self.tensor_parallel_size = dtype, tensor_parallel_size
        self.llm = None

    def key(self, prompt: str) -> str:
        g = self.generation
        return vllm_prompt_key(prompt, self.model_path, g.template, g.max_new_tokens, g.do_sample, g.top_k,
                               g.temperature)

    def answer(self, items, *, cache=None, desc="", progress=None, stats=None) -> ChatRunResult:
        g = self.generation
        run = run_vllm_requests(items, model_path=self.model_path, template=g.template, max_new_tokens=g.max_new_tokens,
                                do_sample=g.do_sample, top_k=g.top_k, temperature=g.temperature, dtype=self.dtype,
                                tensor_parallel_size=self.tensor_parallel_size, cache=cache, desc=desc or "vllm",
                                progress=progress, engine=self.llm)
        self.llm = getattr(run, "engine", None) or self.llm
        return run
