#!/usr/bin/env bash
# Step 1: ask an LLM why the supporter chose the strategy of every training turn (paper: gpt-3.5-turbo-0125),
# or (SOURCE=released) take the authors' released ChatGPT motivations: free, instant, the most faithful.
# Reads:  $DATA_DIR/train.txt; OPENAI_API_KEY from the environment (never pass it on the command line);
#         SOURCE=released: $RELEASED (default $MAGIC_DATA_DIR/magic/motivations_4_LLaMA.json, MAGIC_DATA_DIR
#         defaulting to data/esconv, the folder `python data/fetch_data.py` builds)
# Writes: $LLM_DIR/motivations_4_LLaMA.json (+ .ids.json), $LLM_DIR/motivations_4_LLaMA.json.cache.jsonl
# Variables: SOURCE=model|released (model), BACKEND=openai|local (openai), MODEL (gpt-3.5-turbo-0125), BASE_URL
#   (any OpenAI-compatible server: vLLM, llama.cpp, Ollama), LOCAL_MODEL (BACKEND=local: a HF model folder),
#   CONCURRENCY (8), RELEASED.
# Extra arguments go to collect_motivations_ChatGPT.py, e.g. `--dry_run --price_per_1k_input 0.0005`.
# Resumable: rerun after an interruption; finished answers come from the cache.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
BACKEND="${BACKEND:-openai}"
args=(--train_file "$DATA_DIR/train.txt" --output_file "$LLM_DIR/motivations_4_LLaMA.json")
if [ "${SOURCE:-model}" = released ]; then
  args+=(--source released --released_file "${RELEASED:-${MAGIC_DATA_DIR:-data/esconv}/magic/motivations_4_LLaMA.json}")
elif [ "$BACKEND" = local ]; then
  args+=(--backend local --model_name_or_path "${LOCAL_MODEL:?set LOCAL_MODEL to a HF model folder}")
else
  args+=(--backend "$BACKEND" --model "${MODEL:-gpt-3.5-turbo-0125}" --concurrency "${CONCURRENCY:-8}")
  [ -n "${BASE_URL:-}" ] && args+=(--base_url "$BASE_URL")
fi
run "$PY" LLM_inference/collect_motivations_ChatGPT.py "${args[@]}" "$@"
