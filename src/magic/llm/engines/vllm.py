"""Strategy inference with vLLM's offline engine (``infer_strategy.py --backend vllm``; optional, CUDA only).

A thin layer: the prompts are templated and tokenised exactly as the local backend does them
(``magic.llm.local_model.format_prompt`` + ``tokenize_prompts``, so vLLM sees the training token ids, BOS included
once), handed to ``vllm.LLM.generate`` as token-id prompts with automatic prefix caching on (the shared
instruction and a dialogue's earlier turns are computed once), and every answer goes into the same
JSONL cache as the other backends, chunk by chunk, so a killed run resumes. ``--tensor_parallel_size``
splits the model over GPUs. Greedy by default (temperature 0), like the local backend.

vLLM is not a requirement of this project (it pins its own torch); install it beside a CUDA torch
(``pip install vllm``). Covered by scripts/gpu_check.sh where vllm imports; it cannot run on the CPU CI.
"""
from __future__ import annotations

from magic.llm.engines.base import Engine, Generation
from magic.llm.engines.cache import ChatRunResult, local_model_id, prompt_key
from magic.llm.local_model import RULE_ATTR, EncodingRule, format_prompt, prepare_tokenizer, tokenize_prompts

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


class VLLMEngine(Engine):
    """``vllm.LLM`` in process (prefix caching, tensor parallelism); built on the first uncached prompt and
    reused for every later call. ``dtype``: vLLM's (None = "auto", the checkpoint's)."""

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
        from transformers import AutoTokenizer

        g = self.generation
        keys = {i: self.key(p) for i, p in items}
        answers = {i: a for i, _ in items if cache is not None and (a := cache.get(i, keys[i])) is not None}
        result = ChatRunResult(answers=answers, failed={}, from_cache=len(answers))
        todo = [(i, p) for i, p in items if i not in answers]
        if not todo:
            return result
        vllm = import_vllm()
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(self.model_path))
        # tokenise as the model was fine-tuned (its magic_encoding.json; released rule: no BOS), as the local engine
        setattr(tokenizer, RULE_ATTR, EncodingRule.load(self.model_path))
        if self.llm is None:
            self.llm = vllm.LLM(model=self.model_path, tokenizer=self.model_path, dtype=self.dtype or "auto",
                                tensor_parallel_size=self.tensor_parallel_size, enable_prefix_caching=True, seed=0)
        params = vllm.SamplingParams(
            max_tokens=g.max_new_tokens, skip_special_tokens=True,
            temperature=(g.temperature if g.temperature is not None else 1.0) if g.do_sample else 0.0,
            top_k=(g.top_k or -1) if g.do_sample else -1)
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start:start + CHUNK]
            ids = tokenize_prompts(tokenizer, [format_prompt(tokenizer, p, g.template) for _, p in chunk])
            outs = self.llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=progress is not False)
            for (i, _), out in zip(chunk, outs):
                answers[i] = out.outputs[0].text.strip()
                if cache is not None:
                    cache.put(i, keys[i], answers[i])
        result.requested = len(todo)
        return result
