#!/usr/bin/env bash
# Step 4: merge the LoRA adapter into the base model and export it (safetensors shards).
# Reads:  BASE_MODEL, ADAPTER (an adapter folder: ADAPTER_DIR itself or one of its checkpoint-<step>)
# Writes: $EXPORT_DIR (default $LLM_DIR/fine_tuned_llama2, the released name)
# Variables: BASE_MODEL (meta-llama/Llama-2-7b-hf), ADAPTER_DIR ($LLM_DIR/saves/llama2-7b-lora),
#   ADAPTER (default: $ADAPTER_DIR/checkpoint-200 when it exists, as the released README exported (step 200
#   of 800 = 1.25 of the 5 epochs), else $ADAPTER_DIR, the final adapter), EXPORT_DIR
#   ($LLM_DIR/fine_tuned_llama2), EXPORT_SIZE (shard size in GB, 2)
set -euo pipefail
source "$(dirname "$0")/_common.sh"
ADAPTER_DIR="${ADAPTER_DIR:-$LLM_DIR/saves/llama2-7b-lora}"
if [ -z "${ADAPTER:-}" ]; then
  ADAPTER="$ADAPTER_DIR"
  [ -d "$ADAPTER_DIR/checkpoint-200" ] && ADAPTER="$ADAPTER_DIR/checkpoint-200"
fi
echo "exporting the adapter in $ADAPTER (set ADAPTER=... for another checkpoint)" >&2
run "$PY" LLM_inference/export_model.py --model_name_or_path "${BASE_MODEL:-meta-llama/Llama-2-7b-hf}" \
  --adapter_name_or_path "$ADAPTER" --template default \
  --finetuning_type lora --export_dir "${EXPORT_DIR:-$LLM_DIR/fine_tuned_llama2}" \
  --export_size "${EXPORT_SIZE:-2}" "$@"
