#!/usr/bin/env bash
# The paper on one GPU: an alias of `bash scripts/reproduce.sh paper` (README, "The paper on one GPU"), the one
# route: the released ChatGPT motivations (no API key), Llama-2-7b LoRA, bart-base generators with the released
# flags and early stopping, every ablation and seed, then docs/RESULTS.md. Flags go to scripts/reproduce.py
# (--plan, --only CELL, --llm_path, --bart_path). The numbered scripts 0-8 run single steps by hand (docs/STEPS.md).
exec bash "$(dirname "$0")/reproduce.sh" paper "$@"
