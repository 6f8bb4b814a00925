#!/usr/bin/env bash
# Full fine-tuning and freeze against the shipped LoRA, on real SNLI rows never tested before: the embedded
# default (recipes/embedded_snli.yaml) on folds 9-12 of 100-row test blocks (about 1,120 real training rows
# each, the starter set's 480 beside them), seeds 42 and 7, each run alone, one after another. The LoRA runs
# repeat README "On real data" (its 80.4%) on the same machine, so that time and memory compare.
#
#     bash benchmarks/methods_on_real_snli.sh ../shared/data/snli_1.0_dev_subset.jsonl /tmp/methods
#
# Settings by environment variable (defaults below): METHODS, FOLDS, SEEDS, FULL_LR (full fine-tuning of a
# 135M model moves at a far smaller learning rate than LoRA's 5e-4), FREEZE_LR, FREEZE_LAYERS (of SmolLM2's
# 30 layers; its output head is tied to the input embeddings, so freeze trains those too), EXTRA (settings
# added to every run: FOLDS="9 10" SEEDS=42 EXTRA="--max_steps 2 --test_size 10" checks this script in minutes,
# measuring nothing; with one fold the "pooled" figures are that fold's).
# Writes folds to OUT/fold-K and runs to OUT/runs/<method>-f<K>-s<seed>; a run already finished is skipped,
# an interrupted one resumes. Ends with, per method and seed, the pooled accuracy over the folds' 364 test
# rows with 95% intervals (benchmarks/pooled_folds.py), then each run's training time, throughput and peak memory.
set -euo pipefail

SOURCE=${1:?usage: methods_on_real_snli.sh SNLI_ROWS.jsonl OUT}
OUT=${2:?usage: methods_on_real_snli.sh SNLI_ROWS.jsonl OUT}
METHODS=${METHODS:-"lora full freeze"}
FOLDS=${FOLDS:-"9 10 11 12"}
SEEDS=${SEEDS:-"42 7"}
FULL_LR=${FULL_LR:-2e-5}
FREEZE_LR=${FREEZE_LR:-1e-4}
FREEZE_LAYERS=${FREEZE_LAYERS:-2}
EXTRA=${EXTRA:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
TUNELAB=${TUNELAB:-$ROOT/.venv/bin/tunelab}

method_settings() {
  case $1 in
    lora) echo "" ;;  # the shipped settings, unchanged
    full) echo "--method full --learning_rate $FULL_LR" ;;
    freeze) echo "--method freeze --freeze_trainable_layers $FREEZE_LAYERS --learning_rate $FREEZE_LR" ;;
    *) echo "unknown method $1" >&2; exit 2 ;;
  esac
}

for fold in $FOLDS; do
  [ -d "$OUT/fold-$fold" ] || "$PYTHON" "$ROOT/benchmarks/real_snli_split.py" "$SOURCE" "$OUT/fold-$fold" \
    --test_rows 100 --validation_rows 50 --fold "$fold"
done

for method in $METHODS; do
  for seed in $SEEDS; do
    for fold in $FOLDS; do
      name="$method-f$fold-s$seed"
      [ -f "$OUT/runs/$name/run_info.json" ] && continue
      # shellcheck disable=SC2046,SC2086  # the settings are separate words
      "$TUNELAB" run "$ROOT/recipes/phi2_snli.py" --config "$ROOT/recipes/embedded_snli.yaml" \
        --dataset "$OUT/fold-$fold" --seed "$seed" --output_dir "$OUT/runs" --run_name "$name" \
        $(method_settings "$method") $EXTRA
    done
  done
done

for method in $METHODS; do
  for seed in $SEEDS; do
    echo "== $method, seed $seed: folds $FOLDS pooled"
    runs=()
    for fold in $FOLDS; do runs+=("$OUT/runs/$method-f$fold-s$seed"); done
    "$PYTHON" "$ROOT/benchmarks/pooled_folds.py" "${runs[@]}"
  done
done

echo "== training time, throughput and peak memory per run"
"$PYTHON" - "$OUT/runs" <<'EOF'
import json
import sys
from pathlib import Path

print("| run | trained parameters | training time | samples/s | peak memory (GiB) |")
print("| --- | --- | --- | --- | --- |")
for info_path in sorted(Path(sys.argv[1]).glob("*/run_info.json")):
    info = json.loads(info_path.read_text())
    seconds = info["timings_s"].get("train", 0.0)
    samples = info.get("monitoring", {}).get("samples_per_s")
    peak = info.get("memory", {}).get("peak_bytes", 0) / 2**30
    print(f"| {info_path.parent.name} | {info['parameters']['trainable']:,} | {seconds // 60:.0f} min "
          f"{seconds % 60:.0f} s | {samples if samples is not None else 'n/a'} | {peak:.2f} |")
EOF
