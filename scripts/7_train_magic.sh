#!/usr/bin/env bash
# Step 7: train the MAGIC generator (BART-base, strategy encoder, memory bank 8 x 128, lambda 0.2,
# batch 16, lr 5e-5, 20 epochs, early stop on validation perplexity after 5 epochs without improvement).
# Reads:  $DATA_DIR/train.json, valid.json, BART (hub id or local folder)
# Writes: $OUTPUT_DIR/bs_<B>_epochs_<E>_<YYYYmmdd_HHMMSS>/epoch_<e>_val_ppl_<p>/ (dialogue_model.pth,
#         memory_bank.pth, tokenizer, config.json, generator_config.json, args.json), experiments.log,
#         training curves PNG
# Variables: BART (facebook/bart-base), PRECISION (fp32|fp16|bf16); OUTPUT_DIR, BATCH, EPOCHS, LR, L_STRATEGY
#   when set (main.py's defaults otherwise: python main.py --help)
# Extra arguments go to main.py: ablations --no_memory, --l_strategy 0, --use_motivation; --resume DIR;
#   --keep_best_only (keep only the best checkpoint folder of the run).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
prec=()
case "${PRECISION:-fp32}" in fp16) prec=(--fp16) ;; bf16) prec=(--bf16) ;; fp32) ;; esac
set_flags=()  # each variable that is set becomes its flag; main.py holds the defaults
for pair in OUTPUT_DIR:output_dir BATCH:batch_size EPOCHS:num_epochs LR:learning_rate L_STRATEGY:l_strategy; do
  var=${pair%%:*}
  if [ -n "${!var:-}" ]; then set_flags+=("--${pair#*:}" "${!var}"); fi
done
run "$PY" main.py --train_data "$DATA_DIR/train.json" --valid_data "$DATA_DIR/valid.json" \
  --bart_base_dir "${BART:-facebook/bart-base}" "${set_flags[@]}" "${prec[@]}" "$@"
