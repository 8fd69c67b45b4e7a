#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu_check.py's notebook part needs on the lent GPU machine
# (no network there) into .whl/ (git-ignored), for CPython 3.12 on x86_64 Linux. Run here, on a
# machine with the package registry; then carry .whl with the device call:
#   bash benchmarks/gpu_wheels.sh                       # here
#   run: bash benchmarks/gpu_check.sh $OUT  (carry: [".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
grep -v '^#' benchmarks/gpu_wheels.txt | grep . > .whl/requirements.txt
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl -r .whl/requirements.txt
echo "$(ls .whl/*.whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
