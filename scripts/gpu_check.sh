#!/usr/bin/env bash
# The GPU check in one command (README "On a GPU").
#
#   bash scripts/gpu_check.sh prepare   # here: wheels for a bare py3.12 GPU machine, and the
#                                       # world's validated plays, splits and WMF factors
#   bash scripts/gpu_check.sh [OUT]     # there: install the wheels, run the check -> OUT/gpu.md
#
# Everything travels in .gpucheck/ (ignored by git; about 30 MB): whl/ and prepared/.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpucheck

if [ "${1:-}" = prepare ]; then
  set -e
  # The packages the GPU machine lacks (its PyTorch image has numpy, scipy, torch, numba...):
  # audio I/O and features, implicit with rmm for its CUDA ALS, and pandas as verified here.
  mkdir -p "$CARRY/whl"
  platforms=""
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
    manylinux_2_17_x86_64 manylinux2014_x86_64; do platforms="$platforms --platform $p"; done
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $platforms -d "$CARRY/whl" \
    librosa==0.11.0 soundfile==0.14.0 implicit==0.7.3 pandas==3.1.1 audioread decorator \
    pooch platformdirs soxr cffi pycparser rmm-cu13==26.4.0 librmm-cu13==26.4.0 \
    rapids-logger==0.2.3
  # The carried data: `dvc repro wmf` first, so data/ holds the default world up to WMF.
  .venv/bin/python benchmarks/gpu_check.py prepare --to "$CARRY/prepared" "${@:2}"
  exit 0
fi

out="${1:-reports}"
if ls "$CARRY"/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target /tmp/musicrec-site "$CARRY"/whl/*.whl || exit 1
  export PYTHONPATH="/tmp/musicrec-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:$PYTHONPATH" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
export NUMBA_CACHE_DIR=/tmp/musicrec-numba MPLCONFIGDIR=/tmp/musicrec-mpl
# The issue's limit is 8 minutes: parts that would start after 400 s are skipped, saying so.
exec timeout 470 python3 benchmarks/gpu_check.py --prepared "$CARRY/prepared" --pytest \
  --budget 400 --work /tmp/musicrec-gpu-check --out "$out/gpu.md" "${@:2}"
