#!/usr/bin/env bash
# The GPU suite on a bare GPU machine that has Python and a CUDA build of torch (kept as it is):
#   bash benchmarks/gpu_suite.sh [gpu_suite.py options, e.g. --out gpu-results --write-catalog]
# lightunetr_core runs from this checkout (PYTHONPATH); the packages of pyproject.toml's dependencies
# (and the onnx extra) that are missing are installed with pip, from the wheels in $LIGHTUNETR_WHEELS
# (default .whl/, filled by benchmarks/gpu_wheels.sh) when that folder exists: a machine without network.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${LIGHTUNETR_WHEELS:-.whl}
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch ' + torch.__version__)"
missing=$("$PY" - <<'PYEOF'
import importlib.metadata as md
import tomllib
from packaging.requirements import Requirement

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["onnx"]]
def ok(req):
    try:
        return req.name.lower() == "torch" or req.specifier.contains(md.version(req.name), prereleases=True)
    except md.PackageNotFoundError:
        return False
print(" ".join(str(r) for r in wanted if not ok(r)))
PYEOF
)
if [ -n "$missing" ]; then
    echo "[gpu-suite] installing: $missing" >&2
    if [ -d "$WHEELS" ]; then
        # shellcheck disable=SC2086
        "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" $missing
    else
        # shellcheck disable=SC2086
        "$PY" -m pip install --quiet $missing
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_suite.py "$@"
