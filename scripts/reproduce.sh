#!/usr/bin/env bash
# The results study on real ESConv (docs/RESULTS.md): bash scripts/reproduce.sh PROFILE [flags of reproduce.py]
#   PROFILE: smoke (minutes, CI) | cpu (about 3 hours on 2 cores) | gpu-small (one GPU) | paper (the paper, one GPU)
# Without a profile it prints the help and each profile's size (cells, hours) and starts nothing. Creates .venv
# if needed; every cell is cached, so rerunning continues where it stopped. See scripts/reproduce.py --help for
# the flags (--plan, --report, --only CELL, --commit).
set -euo pipefail
source "$(dirname "$0")/_common.sh"  # --help, the repository root, $PY (creating .venv if needed)
args=()
case "${1:-}" in smoke|cpu|gpu-small|paper) args=(--profile "$1"); shift ;; esac
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "$PY" scripts/reproduce.py "${args[@]}" "$@"
