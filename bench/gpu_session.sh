#!/usr/bin/env bash
# On the device machine, in one call: install the wheels bench/gpu_kit.sh fetched, run the gpu-marked
# tests, then the matrix with the time that is left; every result lands in $OUT.
#
#   device run: command "bash bench/gpu_session.sh [gpu_matrix.py options]", carry [".whl"], timeout_s 600
#
# SKIP_TESTS=1 leaves the tests out (a second call, for the other half of the matrix).
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
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}  # as engine/device.py sets it
nvidia-smi 2>&1 | tee "$OUT/device.txt"
# Everything the engine and the tests import, checked once: a missing one ends the call here, cheaply.
"$PYTHON" -c "
import accelerate, diffusers, gguf, peft, PIL, psutil, pytest, pytest_timeout, requests, torch, torchao, transformers
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__,
      'transformers', transformers.__version__, 'accelerate', accelerate.__version__)
from engine.device import probe_device
print(probe_device())  # what the planner will be told, read as in production
" 2>&1 | tee -a "$OUT/device.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
if [ -z "${SKIP_TESTS:-}" ]; then
    timeout 200 "$PYTHON" -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -q -rs 2>&1 | tee "$OUT/gpu_tests.log"
fi
left=$(( ${SESSION_SECONDS:-540} - SECONDS ))
[ "$left" -ge 1 ] || left=1
"$PYTHON" bench/gpu_matrix.py --markdown "$OUT/gpu_matrix.md" --deadline "$left" "$@" 2>&1 | tee "$OUT/gpu_matrix.log"
