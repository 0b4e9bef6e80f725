#!/usr/bin/env bash
# Here, before calling the device machine: download into .whl/ (git-ignored) the wheels its image
# lacks, for its Python 3.12.  Its image has CUDA torch, transformers, accelerate and safetensors but
# no diffusers; transformers comes along too, at the version pyproject.toml pins and tests here, and
# a huggingface_hub new enough for both (they check it on import; the image's may be older).
# Then run bench/gpu_session.sh there with `.whl` carried (docs/PERFORMANCE.md, "GPU figures").
set -euo pipefail
cd "$(dirname "$0")/.."
# torchao and gguf: the quantized recipes (engine/quantize.py, gpu_matrix.py --recipes); peft: LoRA.
pins=$(grep -oE '"(diffusers|transformers|torchao|gguf|peft)==[^"]+"' pyproject.toml | tr -d '"')
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins importlib_metadata "huggingface_hub>=1.32,<2" "PyYAML>=6"  # gguf imports yaml
ls -l .whl
