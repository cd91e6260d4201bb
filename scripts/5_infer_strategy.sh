#!/usr/bin/env bash
# Step 5: the fine-tuned LLM infers strategy + motivation for every train/valid/test sample, then reports
# strategy accuracy / macro-F1 / weighted-F1 against the gold labels with a confusion-matrix PNG.
# Reads:  $EXPORT_DIR, $LLM_DIR/prompts_4_LLaMA{,_valid,_test}.json (+ .ids.json), $DATA_DIR/*.txt (gold)
# Writes: $LLM_DIR/strategy_with_motivation.json, _valid.json, _test.json, the report JSON/PNG, a cache
# Variables: EXPORT_DIR ($LLM_DIR/fine_tuned_llama2), BATCH (16), MAX_NEW_TOKENS (128),
#   DTYPE (auto = the checkpoint's dtype when a CUDA GPU is visible, else float32; or float16/bfloat16/float32),
#   BACKEND=local|openai (local), BASE_URL + MODEL (openai backend: e.g. a vLLM server of EXPORT_DIR)
# Extra arguments go to infer_strategy.py (e.g. --max_samples 50, --do_sample --top_k 10 as released).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
args=(--model_path "${EXPORT_DIR:-$LLM_DIR/fine_tuned_llama2}" --prompt_path "$LLM_DIR/prompts_4_LLaMA.json"
  --prompt_path_valid "$LLM_DIR/prompts_4_LLaMA_valid.json" --prompt_path_test "$LLM_DIR/prompts_4_LLaMA_test.json"
  --output_dir "$LLM_DIR" --batch_size "${BATCH:-16}" --max_new_tokens "${MAX_NEW_TOKENS:-128}"
  --train_file "$DATA_DIR/train.txt" --valid_file "$DATA_DIR/valid.txt" --test_file "$DATA_DIR/test.txt"
  --backend "${BACKEND:-local}")
if [ -z "${DTYPE:-}" ]; then  # fp32 on a GPU would need ~28 GB for the 7B model; its checkpoint dtype, half
  DTYPE=float32
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && DTYPE=auto
fi
args+=(--dtype "$DTYPE")
[ -n "${BASE_URL:-}" ] && args+=(--base_url "$BASE_URL")
[ -n "${MODEL:-}" ] && args+=(--model "$MODEL")
run "$PY" LLM_inference/infer_strategy.py "${args[@]}" "$@"
