#!/usr/bin/env bash
# Launch a recipe with a hardware profile's accelerate config:
#   launch/train.sh recipes/phi2_snli.py --profile a40 [--field value ...]
# --profile defaults to auto (chosen from the detected GPUs); every other argument goes to the recipe.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tunelab=${TUNELAB_VENV:-$root/.venv}/bin/tunelab
[ -x "$tunelab" ] || tunelab=tunelab
exec "$tunelab" launch "$@"
