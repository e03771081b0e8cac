#!/usr/bin/env bash
# Set up a fresh machine for LightUNETR: a virtual environment in .venv with torch, lightunetr_core
# (editable) and the test tools. Safe to run again: it only installs what is missing.
#   LIGHTUNETR_TORCH   torch requirement to install (default torch==2.13.0, the CPU build; on a GPU
#                      machine install the CUDA build you want first, or set this variable)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
VENV_PY=.venv/bin/python
"$VENV_PY" -m pip install --quiet --upgrade "pip>=23" >/dev/null
if ! "$VENV_PY" -c "import torch" >/dev/null 2>&1; then
    "$VENV_PY" -m pip install --quiet "${LIGHTUNETR_TORCH:-torch==2.13.0}"
fi
"$VENV_PY" -m pip install --quiet -e ".[test]"
"$VENV_PY" -c "import torch, monai, SimpleITK, lightunetr_core; print('lightunetr_core', lightunetr_core.__version__, '| torch', torch.__version__, '| monai', monai.__version__)"
