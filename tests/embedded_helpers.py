"""The README's main-job command line, run as a user runs it, on the embedded model the tests converted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).parent / "accelerate")


def readme_launch(recipe, config, output_dir, cache, *extra, timeout=1200) -> str:
    """`accelerate launch --config_file accelerate_configs/cpu.yaml RECIPE --config CONFIG`, with the tests'
    embedded-model cache (TUNELAB_CACHE) and `--output_dir`; returns what it printed, after checking it exited 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TUNELAB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [ACCELERATE, "launch", "--config_file", "accelerate_configs/cpu.yaml", recipe, "--config", config,
               "--output_dir", str(output_dir), *extra]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout
