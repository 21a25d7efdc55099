#!/usr/bin/env bash
# The GPU check as one command, from any folder (docs/gpu_check.md):
#   bash benchmarks/gpu_check.sh --out gpu_check_out
# Runs from the checkout without pip install: the checkout goes on PYTHONPATH, and gpu_check.py unpacks
# the carried wheels (.whl/, made here by `python benchmarks/gpu_check.py --prepare`) that the machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
