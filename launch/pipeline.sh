#!/usr/bin/env bash
# Run a recipe's stages as separate launches, in order: baseline evaluation, training,
# evaluation of the fine-tuned adapter, report. Stops at the first failing stage and shows
# the end of its log. Logs: RUN_DIR/logs/<stage>.log
#   launch/pipeline.sh recipes/phi2_snli.py --profile a40 [--field value ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tunelab=${TUNELAB_VENV:-$root/.venv}/bin/tunelab
[ -x "$tunelab" ] || tunelab=tunelab
[ $# -ge 1 ] || { echo "usage: $0 RECIPE [--profile NAME] [--field value ...]" >&2; exit 2; }

run_dir=$("$tunelab" run-dir "$@")
mkdir -p "$run_dir/logs"
for stage in baseline train evaluate report; do
  log="$run_dir/logs/$stage.log"
  echo "[pipeline] $stage -> $log"
  "$root/launch/train.sh" "$@" --stages "$stage" >"$log" 2>&1 || {
    status=$?
    echo "[pipeline] stage $stage failed (exit $status); the end of $log:" >&2
    tail -n 40 "$log" >&2
    exit "$status"
  }
done
echo "[pipeline] done: $run_dir/report/report.md"
