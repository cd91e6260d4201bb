# Shared by the numbered scripts (sourced, not run). Every variable below can be set in the environment.
#   PY         python of the project environment (default: .venv/bin/python, created by setup_env.sh)
#   DATA_DIR   dialogue files and the built dataset (default: data)
#   LLM_DIR    motivations, prompt files, strategy files (default: LLM_inference)
# `--help` on any numbered script prints its header (what it reads and writes, and its variables).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STEP_SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"  # absolute: $0 may be relative to the old folder
cd "$ROOT"
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,/^set -/p' "$STEP_SCRIPT" | sed -e '/^set -/d' -e 's/^# \{0,1\}//'
  exit 0
fi
if [ -z "${PY:-}" ]; then
  [ -x .venv/bin/python ] || bash scripts/setup_env.sh
  PY=.venv/bin/python
fi
DATA_DIR="${DATA_DIR:-data}"
LLM_DIR="${LLM_DIR:-LLM_inference}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-0}" TOKENIZERS_PARALLELISM=false
run() { echo "+ $*" >&2; "$@"; }
