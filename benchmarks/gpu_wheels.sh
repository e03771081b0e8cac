#!/usr/bin/env bash
# Wheels for benchmarks/gpu_suite.sh on a GPU machine without network (Python 3.12, Linux x86-64, with torch,
# numpy, scipy, safetensors, matplotlib and onnxruntime already there): monai, SimpleITK, pooch and what pooch
# needs, into .whl/ (about 55 MB).   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "${1:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "monai>=1.4" "SimpleITK>=2.3" "pooch>=1.7" "platformdirs>=2.5"
ls -la .whl
