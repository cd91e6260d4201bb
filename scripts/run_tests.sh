#!/usr/bin/env bash
# The project's test command (README; .ci/run calls exactly this): set up the environment, run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh tests/test_esconv.py -x`.
# Tests that need the real ESConv data read ../shared/data/esconv (or $MAGIC_DATA_DIR) and skip without it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "${VENV:-.venv}/bin/python" -m pytest -q "$@"
