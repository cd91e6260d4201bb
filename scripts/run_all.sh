#!/usr/bin/env bash
# The paper configuration end to end, on one GPU: steps 0-8 with the defaults of each numbered script
# (gpt-3.5-turbo-0125 motivations, Llama-2-7b LoRA, BART-base generator, 5-beam diverse decoding).
# Reads:  the internet (data, hub models, the OpenAI API: OPENAI_API_KEY must be set)
# Writes: data/*.txt|json, LLM_inference/*, out_model/, eval_result/
# Variables: every variable of the numbered scripts (SOURCE, BASE_MODEL, BART, ...); START (first step, 0)
#   and STOP (last step, 8) to run a part. Each step resumes or is cheap to redo.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
START="${START:-0}"
STOP="${STOP:-8}"
steps=(0_prepare_data 1_collect_motivations 2_create_prompts 3_finetune_llm 4_export_llm 5_infer_strategy
  6_build_dataset 7_train_magic 8_evaluate)
for i in "${!steps[@]}"; do
  if [ "$i" -ge "$START" ] && [ "$i" -le "$STOP" ]; then
    echo "=== step $i: ${steps[$i]}" >&2
    bash "scripts/${steps[$i]}.sh"
  fi
done
