#!/usr/bin/env bash
# Every CUDA path of the pipeline at tiny scale (a few minutes on one GPU), each compared with the CPU, as a
# table: path | status | seconds | max difference against the CPU | note (details: scripts/gpu_check.py).
#   main.py fp32/--fp16/--bf16, finetune_llm.py LoRA --fp16/--bf16, export_model.py, infer_strategy.py
#   (static-cache prefix sharing, --no_prefix_sharing, --dtype auto), test_evaluation.py --device cuda,
#   --backend vllm when vllm imports, torchrun 2-process DDP when 2 GPUs are visible.
# Builds its own tiny data and random models; needs no network, runs no pip, and needs none of openai,
# datasets, nltk, pycocoevalcap, trl.
# Variables:
#   PYTHON        interpreter (default .venv/bin/python if present, else python3)
#   DEVICE        cuda (default when a GPU is visible), cuda:1, or cpu (CI form: fp16 rows SKIP)
#   PARTS         subset of generator,llm,ddp,paper_timing (default generator,llm,ddp; none + EPOCH_TIMING=1:
#                 the timing alone; paper_timing: scripts/paper_timing.py, the paper pipeline's time on
#                 Llama-2-7b / bart-base shapes, a few minutes on one GPU, tiny shapes with DEVICE=cpu)
#   OUT           if set, the table goes to $OUT/gpu_check.md (+ .json and the logs)
#   WORK          keep the working files here (default: a temporary folder, removed)
#   EPOCH_TIMING  1: also time one bf16 epoch of the paper generator config (bart-base dims, batch 16,
#                 K=128, lengths 512/64) on $MAGIC_DATA_DIR's train split, else on synthetic samples
#                 (EPOCH_TIMING_SAMPLES=N caps it at N samples: a smoke run of the timing path)
# Exit code: 0 all rows OK/SKIP, 1 some row FAIL, 2 bad setup (e.g. DEVICE=cuda without a GPU).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,/^set -/p' "$0" | sed -e '/^set -/d' -e 's/^# \{0,1\}//'
  exit 0
fi
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# A lent GPU machine has its own packages and cannot install: the package comes from src/ (and metric/ from
# the root), so nothing needs installing.
export PYTHONPATH="$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
args=(--python "$PYTHON")
[ -n "${WORK:-}" ] && args+=(--work "$WORK")
exec "$PYTHON" scripts/gpu_check.py "${args[@]}" "$@"
