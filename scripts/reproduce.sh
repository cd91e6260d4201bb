#!/usr/bin/env bash
# The results study on real ESConv (docs/RESULTS.md): bash scripts/reproduce.sh [PROFILE] [flags of reproduce.py]
#   PROFILE: smoke (minutes, CI) | cpu (default; about 3 hours on 2 cores) | gpu-small (one GPU) | paper
# Creates .venv if needed; every cell is cached, so rerunning continues where it stopped. See
# scripts/reproduce.py --help for the flags (--plan, --report, --only CELL, --commit).
set -euo pipefail
source "$(dirname "$0")/_common.sh"  # --help, the repository root, $PY (creating .venv if needed)
PROFILE=cpu
case "${1:-}" in smoke|cpu|gpu-small|paper) PROFILE="$1"; shift ;; esac
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "$PY" scripts/reproduce.py --profile "$PROFILE" "$@"
