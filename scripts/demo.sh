#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on generated demo data: CSE vs supervised-only
# training with the same labeled cases, segmentation of the held-out cases and a Dice table.
# Output goes to demo_output/ (or the first argument); extra arguments go to `lightunetr demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-demo_output}
shift || true
exec .venv/bin/lightunetr demo "$out" "$@"
