#!/usr/bin/env bash
# Step 4: merge the LoRA adapter into the base model and export it (safetensors shards).
# Reads:  BASE_MODEL, ADAPTER_DIR
# Writes: $EXPORT_DIR (default $LLM_DIR/fine_tuned_llama2, the released name)
# Variables: BASE_MODEL (meta-llama/Llama-2-7b-hf), ADAPTER_DIR ($LLM_DIR/saves/llama2-7b-lora),
#   EXPORT_DIR ($LLM_DIR/fine_tuned_llama2), EXPORT_SIZE (shard size in GB, 2)
set -euo pipefail
source "$(dirname "$0")/_common.sh"
run "$PY" LLM_inference/export_model.py --model_name_or_path "${BASE_MODEL:-meta-llama/Llama-2-7b-hf}" \
  --adapter_name_or_path "${ADAPTER_DIR:-$LLM_DIR/saves/llama2-7b-lora}" --template default \
  --finetuning_type lora --export_dir "${EXPORT_DIR:-$LLM_DIR/fine_tuned_llama2}" \
  --export_size "${EXPORT_SIZE:-2}" "$@"
