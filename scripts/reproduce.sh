#!/usr/bin/env bash
# The results study on real ESConv (docs/RESULTS.md): bash scripts/reproduce.sh [PROFILE] [flags of reproduce.py]
#   PROFILE: smoke (minutes, CI) | cpu (default; about 3 hours on 2 cores) | gpu-small (one GPU) | paper
# Creates .venv if needed; every cell is cached, so rerunning continues where it stopped. See
# scripts/reproduce.py --help for the flags (--plan, --report, --only CELL, --commit).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,/^set -/p' "$0" | sed -e '/^set -/d' -e 's/^# \{0,1\}//'
  exit 0
fi
PROFILE=cpu
case "${1:-}" in smoke|cpu|gpu-small|paper) PROFILE="$1"; shift ;; esac
[ -x "${VENV:-.venv}/bin/python" ] || bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "${VENV:-.venv}/bin/python" scripts/reproduce.py --profile "$PROFILE" "$@"
