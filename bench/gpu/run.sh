#!/usr/bin/env bash
# Run ON the lent GPU machine, from the repository root, with bench/gpu/wheels carried (bench/gpu/prepare.sh):
#   bench/gpu/run.sh [bench/xtts_gpu.py options]
# Installs the carried wheels, satisfies coqui-tts's torchcodec check with an empty package (the benchmark
# reads no audio files), and writes the output to $OUT/xtts_gpu.txt as well.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m pip install -q --no-deps --no-index bench/gpu/wheels/*.whl
shim="$(mktemp -d)"
mkdir -p "$shim/torchcodec" && touch "$shim/torchcodec/__init__.py"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH="$shim:." python bench/xtts_gpu.py "$@" 2>&1 | grep -v '^\[transformers\]' | tee "${OUT:-/tmp}/xtts_gpu.txt"
