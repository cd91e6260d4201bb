#!/usr/bin/env bash
# Step 8: decode every test sample with diverse beam search and score it (BLEU-1..4, METEOR, ROUGE-L,
# CIDEr as nlg-eval computes them, plus Distinct-1/2).
# Reads:  $DATA_DIR/test.json, a checkpoint directory written by main.py
# Writes: $EVAL_DIR/response_lables.txt (references), $EVAL_DIR/<run>/diversity_<d>_length_<l>.txt
#         (one response per line) and .scores.json; prints the metric table
# Variables: MODEL_PATH (default: the best checkpoint of the newest run under $OUTPUT_DIR), OUTPUT_DIR (out_model/);
#   each of these, when set, gives its test_evaluation.py flag (unset: that flag's default, see its --help):
#   BART (--bart_base_dir; only for checkpoints of the released code), EVAL_DIR (--eval_dir), BEAMS (--num_beams),
#   DIVERSITY (--diversity_penalty), LENGTH (--length_penalty), STRATEGY_SOURCE (--strategy_source inferred|gold)
set -euo pipefail
source "$(dirname "$0")/_common.sh"
if [ -z "${MODEL_PATH:-}" ]; then
  MODEL_PATH="$("$PY" -c 'import sys; from magic.common.artifacts import latest_best_checkpoint as best; print(best(sys.argv[1]) or "")' "${OUTPUT_DIR:-out_model/}")"
  [ -n "$MODEL_PATH" ] || { echo "error: no checkpoint under ${OUTPUT_DIR:-out_model/}; set MODEL_PATH" >&2; exit 1; }
fi
args=(--model_path "$MODEL_PATH" --test_data "$DATA_DIR/test.json")
for pair in BART:bart_base_dir EVAL_DIR:eval_dir BEAMS:num_beams DIVERSITY:diversity_penalty LENGTH:length_penalty \
    STRATEGY_SOURCE:strategy_source; do
  var="${pair%%:*}"
  if [ -n "${!var:-}" ]; then args+=("--${pair#*:}" "${!var}"); fi
done
run "$PY" test_evaluation.py "${args[@]}" "$@"
