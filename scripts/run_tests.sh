#!/usr/bin/env bash
# The project's test command (README; .ci/run calls exactly this): set up the environment (setup_env.sh: the
# run-time requirements; then requirements-test.txt), run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh tests/esconv/test_esconv.py -x`.
# Tests that need the real ESConv data read ../shared/data/esconv (or $MAGIC_DATA_DIR) and skip without it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
# The web chat's browser test drives Debian's Chromium through selenium (nothing downloads a browser build).
# MAGIC_NO_BROWSER=1 skips this; without a browser that test skips and says why.
have_browser() {
  { command -v chromium || command -v chromium-browser; } >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}
if [ -z "${MAGIC_NO_BROWSER:-}" ] && ! have_browser; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Chromium and chromedriver for the web chat's browser test"
    { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
      || echo "[setup] warning: could not install chromium; the browser test will skip" >&2
  else
    echo "[setup] note: no chromium + chromedriver; the web chat's browser test will skip" \
         "(apt-get install chromium chromium-driver)" >&2
  fi
fi
"${VENV:-.venv}/bin/python" -m pip install -q --disable-pip-version-check -r requirements-test.txt \
  2> >(grep -v "is ignored: it is neither" >&2)  # as in setup_env.sh: minus notes about absent mirrors
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "${VENV:-.venv}/bin/python" -m pytest -q --durations=25 "$@"  # and the 25 slowest tests
