#!/usr/bin/env bash
# Step 8: decode every test sample with diverse beam search and score it (BLEU-1..4, METEOR, ROUGE-L,
# CIDEr as nlg-eval computes them, plus Distinct-1/2).
# Reads:  $DATA_DIR/test.json, a checkpoint directory written by main.py
# Writes: $EVAL_DIR/response_lables.txt (references), $EVAL_DIR/<run>/diversity_<d>_length_<l>.txt
#         (one response per line) and .scores.json; prints the metric table
# Variables: MODEL_PATH (default: the best checkpoint of the newest run under $OUTPUT_DIR), OUTPUT_DIR (out_model/),
#   BART (facebook/bart-base; only needed for checkpoints of the released code), EVAL_DIR (eval_result),
#   BEAMS (5), DIVERSITY (1.0), LENGTH (1.0), STRATEGY_SOURCE=inferred|gold
set -euo pipefail
source "$(dirname "$0")/_common.sh"
if [ -z "${MODEL_PATH:-}" ]; then
  MODEL_PATH="$("$PY" -c 'import sys; from magic.common.artifacts import latest_best_checkpoint as best; print(best(sys.argv[1]) or "")' "${OUTPUT_DIR:-out_model/}")"
  [ -n "$MODEL_PATH" ] || { echo "error: no checkpoint under ${OUTPUT_DIR:-out_model/}; set MODEL_PATH" >&2; exit 1; }
fi
args=(--test_data "$DATA_DIR/test.json" --model_path "$MODEL_PATH" --num_beams "${BEAMS:-5}"
  --diversity_penalty "${DIVERSITY:-1.0}" --length_penalty "${LENGTH:-1.0}" --eval_dir "${EVAL_DIR:-eval_result}"
  --strategy_source "${STRATEGY_SOURCE:-inferred}")
[ -n "${BART:-}" ] && args+=(--bart_base_dir "$BART")
run "$PY" test_evaluation.py "${args[@]}" "$@"
