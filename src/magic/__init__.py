"""MAGIC reproduction, one package per stage (README, "Where things are").

    magic.common     errors, atomic io, validation, artifact names, torchrun helpers
    magic.esconv     dialogues, strategy labels, sample enumeration, the HF converter
    magic.metric     the released nlg-eval scores, the scoring protocol, significance tests
    magic.llm        stage 1: prompts, motivations, LoRA SFT, inference, report (backends in magic.llm.engines)
    magic.generator  stage 2: the memory-enhanced BART generator, its training, decoding and evaluation
    magic.chat       talking to a trained model (terminal and web)
    magic.testing    tiny random models and an OpenAI stub for tests, benchmarks and the demo

Stages import downwards only: chat, study -> llm, generator -> esconv, metric -> common; llm and generator never
import each other. The root's ``metric/`` (not installed) re-exports magic.metric for the released scripts.
"""
