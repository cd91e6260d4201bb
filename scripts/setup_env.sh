#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the pinned requirements.
#   VENV=.venv (default) PYTHON=python3 bash scripts/setup_env.sh
# Sourced by run_tests.sh and demo.sh; safe to run again (pip skips what is installed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
# torch first and exactly pinned: an unpinned resolve would pull a multi-GB CUDA build on a CPU machine.
pip_install() {  # quiet, minus the machine's notes about absent local package mirrors
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
# uv (from PyPI) installs the same pins in a quarter of pip's time (28 against 98 s on the 2-core project machine,
# benchmarks/README.md); pip does it where uv cannot be had (SETUP_INSTALLER=pip forces pip). uv reads no pip
# configuration: the local wheel folder (PIP_FIND_LINKS, where the CPU build of torch lies) is handed over.
if [ "${SETUP_INSTALLER:-uv}" = uv ] && pip_install uv 2>/dev/null && "$VENV/bin/python" -m uv --version >/dev/null 2>&1; then
  links=()
  for d in ${PIP_FIND_LINKS:-}; do links+=(--find-links "$d"); done
  "$VENV/bin/python" -m uv pip install -q --python "$VENV/bin/python" "${links[@]}" "torch==2.13.0" -r requirements.txt
else
  pip_install "torch==2.13.0"
  pip_install -r requirements.txt
fi
# METEOR (pycocoevalcap) runs a Java program.
if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing a Java runtime for METEOR"
    apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null
  else
    echo "[setup] warning: no java on PATH; METEOR will be unavailable (install a JRE, e.g. apt-get install default-jre-headless)" >&2
  fi
fi
