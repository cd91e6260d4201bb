#!/usr/bin/env bash
# Step 2: instruction/output pairs for fine-tuning the strategy LLM, and prompts for valid/test.
# Reads:  $DATA_DIR/{train,valid,test}.txt, $LLM_DIR/motivations_4_LLaMA.json
# Writes: $LLM_DIR/prompts_4_LLaMA.json, prompts_4_LLaMA_valid.json, prompts_4_LLaMA_test.json,
#         their .ids.json sidecars and dataset_info.json (for LLaMA-Factory users)
# Variables: DATA_DIR (data), LLM_DIR (LLM_inference), MOTIVATIONS ($LLM_DIR/motivations_4_LLaMA.json)
set -euo pipefail
source "$(dirname "$0")/_common.sh"
run "$PY" LLM_inference/create_prompts_4_LLaMA.py --train_file "$DATA_DIR/train.txt" \
  --valid_file "$DATA_DIR/valid.txt" --test_file "$DATA_DIR/test.txt" \
  --motivations_file "${MOTIVATIONS:-$LLM_DIR/motivations_4_LLaMA.json}" --output_dir "$LLM_DIR" "$@"
