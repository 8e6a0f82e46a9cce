#!/usr/bin/env bash
# Run HERE (the machine with package registries) before a GPU session: the wheels that the device image lacks
# for bench/xtts_gpu.py (its image has torch and no coqui-tts; see shared/DESIGN.md "On a lent GPU"), about
# 27 MB into bench/gpu/wheels (git-ignored). Then carry that folder: bench/gpu/run.sh there.
set -euo pipefail
cd "$(dirname "$0")"
PIP="${PIP:-../../.venv/bin/pip}"
mkdir -p wheels
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d wheels \
  coqui-tts==0.28.0 coqui-tts-trainer coqpit-config anyascii Django==5.2.19 asgiref sqlparse ko-speech-tools \
  librosa num2words soundfile cffi pycparser soxr audioread decorator pooch platformdirs inflect more-itertools \
  typeguard pysbd monotonic-alignment-search transformers==5.23.0
"$PIP" wheel -q --no-deps -w wheels docopt==0.6.2  # an sdist only
du -sh wheels
