#!/usr/bin/env bash
# The project's test command (README; .ci/run calls exactly this): set up the environment (setup_env.sh: the
# run-time requirements; then requirements-test.txt), run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh tests/test_esconv.py -x`.
# Tests that need the real ESConv data read ../shared/data/esconv (or $MAGIC_DATA_DIR) and skip without it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
"${VENV:-.venv}/bin/python" -m pip install -q --disable-pip-version-check -r requirements-test.txt \
  2> >(grep -v "is ignored: it is neither" >&2)  # as in setup_env.sh: minus notes about absent mirrors
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "${VENV:-.venv}/bin/python" -m pytest -q "$@"
