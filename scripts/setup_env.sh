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
pip_install "torch==2.13.0"
pip_install -r requirements.txt
# METEOR (pycocoevalcap) runs a Java program.
if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing a Java runtime for METEOR"
    apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null
  else
    echo "[setup] warning: no java on PATH; METEOR will be unavailable (install a JRE, e.g. apt-get install default-jre-headless)" >&2
  fi
fi
