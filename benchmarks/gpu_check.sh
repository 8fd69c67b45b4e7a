#!/usr/bin/env bash
# The prepared device check of the gpu path (benchmarks/gpu_check.py), as one short command:
#   bash benchmarks/gpu_check.sh OUT_DIR             # one H100/H200, at most 8 minutes
#   bash benchmarks/gpu_check.sh OUT_DIR --dry       # CPU, tiny shapes (make test runs this)
# Further options go to gpu_check.py (--sections, --budget-s, --peak-tflops, --run-dir).
# Installs nothing from the network: wheels carried in .whl/ (benchmarks/gpu_wheels.sh) are
# installed offline into a temporary folder first; without them the notebook part is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [--dry] [gpu_check.py options]}"
shift
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null && ! "$PY" -c "import papermill, ipykernel" 2>/dev/null
then
    site=$(mktemp -d /tmp/gpu_check_site.XXXXXX)
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$site" .whl/*.whl; then
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check.sh: the wheels in .whl/ did not install; notebooks will be skipped" >&2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
limit=480  # seconds: the check's promise on a GPU (its own budget is 450 s)
case " $* " in *" --dry "*) limit=240 ;; esac
exec timeout --signal=INT --kill-after=20 "${GPU_CHECK_TIMEOUT:-$limit}" \
    "$PY" benchmarks/gpu_check.py "$out" "$@"
