#!/usr/bin/env bash
# Step 7: train the MAGIC generator (BART-base, strategy encoder, memory bank 8 x 128, lambda 0.2,
# batch 16, lr 5e-5, 20 epochs, early stop on validation perplexity after 5 epochs without improvement).
# Reads:  $DATA_DIR/train.json, valid.json, BART (hub id or local folder)
# Writes: $OUTPUT_DIR/bs_<B>_epochs_<E>_<YYYYmmdd_HHMMSS>/epoch_<e>_val_ppl_<p>/ (dialogue_model.pth,
#         memory_bank.pth, tokenizer, config.json, generator_config.json, args.json), experiments.log,
#         training curves PNG
# Variables: BART (facebook/bart-base), OUTPUT_DIR (out_model/), BATCH (16), EPOCHS (20), LR (5e-5),
#   L_STRATEGY (0.2), PRECISION (fp32|fp16|bf16)
# Extra arguments go to main.py: ablations --no_memory, --l_strategy 0, --use_motivation; --resume DIR;
#   --keep_best_only (keep only the best checkpoint folder of the run).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
prec=()
case "${PRECISION:-fp32}" in fp16) prec=(--fp16) ;; bf16) prec=(--bf16) ;; fp32) ;; esac
run "$PY" main.py --train_data "$DATA_DIR/train.json" --valid_data "$DATA_DIR/valid.json" \
  --output_dir "${OUTPUT_DIR:-out_model/}" --bart_base_dir "${BART:-facebook/bart-base}" \
  --batch_size "${BATCH:-16}" --num_epochs "${EPOCHS:-20}" --learning_rate "${LR:-5e-5}" \
  --l_strategy "${L_STRATEGY:-0.2}" "${prec[@]}" "$@"
