#!/usr/bin/env bash
# Step 6: build the generator's dataset: context, response, strategy, memory and motivation per sample.
# Reads:  $DATA_DIR/{train,valid,test}.txt, $LLM_DIR/strategy_with_motivation{,_valid,_test}.json
# Writes: $DATA_DIR/train.json, valid.json, test.json
# Variables: STRATEGY_SOURCE=inferred|gold when set (default inferred: the LLM's strategies, as in the paper; gold:
#   oracle)
set -euo pipefail
source "$(dirname "$0")/_common.sh"
run "$PY" data/add_memory_motivation.py --train_file "$DATA_DIR/train.txt" --valid_file "$DATA_DIR/valid.txt" \
  --test_file "$DATA_DIR/test.txt" --llm_dir "$LLM_DIR" --output_dir "$DATA_DIR" \
  ${STRATEGY_SOURCE:+--strategy_source "$STRATEGY_SOURCE"} "$@"
