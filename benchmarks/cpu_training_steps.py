"""Seconds for a few training steps of the embedded NLI job on a CPU, in fp32 and bf16, with and without LoRA dropout.

    python benchmarks/cpu_training_steps.py                     # the starter set
    python benchmarks/cpu_training_steps.py --dataset /tmp/real # real SNLI rows (benchmarks/real_snli_split.py)

Each setting trains a fresh model of `recipes/embedded_snli.yaml` for `--steps` steps (batches grouped by length,
as shipped) after one untimed step, in this process, one after another: run it alone, other work on the
same cores slows it. bf16 is fast only on CPUs with AVX512-BF16 or AMX (`precision: auto` picks it there).
"""

import argparse
import runpy
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from tunelab.config import parse_recipe
from tunelab.nli.pipeline import NLIRun

ROOT = Path(__file__).resolve().parents[1]


def embedded_recipe(dataset: str, output_dir: str):
    """The embedded default, read as `--config recipes/embedded_snli.yaml` reads it, on `dataset`."""
    recipe = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]
    return parse_recipe(recipe, ["--config", str(ROOT / "recipes" / "embedded_snli.yaml"), "--dataset", dataset,
                                 "--output_dir", output_dir, "--save_strategy", "no", "--logging_steps", "1000"])


def seconds_for_steps(recipe, steps: int) -> float:
    with NLIRun(replace(recipe, max_steps=1), []) as run:
        run.load("trainer")
        run.trainer.train()  # untimed: first-step allocations and kernel choices
        run.trainer.args.max_steps = steps
        start = time.perf_counter()
        run.trainer.train()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="starter", help="starter, or a folder of train/validation/test.jsonl")
    parser.add_argument("--steps", type=int, default=16, help="timed training steps per setting")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print("| precision | lora_dropout | seconds for", args.steps, "steps | samples/s |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as output_dir:
        base = embedded_recipe(args.dataset, output_dir)
        for precision in ("fp32", "bf16"):
            for dropout in (0.05, 0.0):
                recipe = replace(base, precision=precision, lora_dropout=dropout, overwrite=True,
                                 run_name=f"{precision}-{dropout}")
                seconds = seconds_for_steps(recipe, args.steps)
                rate = args.steps * recipe.per_device_train_batch_size / seconds
                print(f"| {precision} | {dropout} | {seconds:.1f} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
