#!/usr/bin/env bash
# On the device machine, in one call: install the wheels bench/gpu_kit.sh fetched, run the gpu-marked
# tests, then the matrix with the time that is left; every result lands in $OUT.
#
#   device run: command "bash bench/gpu_session.sh [gpu_matrix.py options]", carry [".whl"], timeout_s 600
#
# The matrix gets a deadline (SESSION_SECONDS, default 540, minus the time already spent) so the
# call ends inside the device's 10-minute limit with every finished row written.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
    nvidia-smi || true
    "$PYTHON" -c "import torch, diffusers, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
} 2>&1 | tee "$OUT/device.txt"
timeout 200 "$PYTHON" -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -q -rs 2>&1 | tee "$OUT/gpu_tests.log"
left=$(( ${SESSION_SECONDS:-540} - SECONDS ))
"$PYTHON" bench/gpu_matrix.py --markdown "$OUT/gpu_matrix.md" --deadline "$left" "$@" 2>&1 | tee "$OUT/gpu_matrix.log"
