"""Command lines that run the real phi2_snli recipe on a tiny local model and data, sized for a test, and
the files a run writes, for tests of what reads them, and a callback that interrupts a run mid-training."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

from transformers import TrainerCallback

from tunelab.report.nli import PREDICTION_COLUMNS


def tiny_nli_argv(model_dir, data_dir, output_dir, *extra) -> list[str]:
    """The recipe as shipped (4-bit, LoRA on phi's modules, paged AdamW 8-bit) on every row of the tiny
    data, with a learning rate that moves a tiny model, in fp32 (the same numbers on any CPU)."""
    return ["--model_name_or_path", str(model_dir), "--dataset", str(data_dir), "--output_dir", str(output_dir),
            "--train_stride", "1", "--train_size", "none", "--validation_stride", "1", "--validation_size", "none",
            "--test_stride", "1", "--test_size", "none", "--learning_rate", "5e-3", "--num_train_epochs", "3",
            "--precision", "fp32", "--logging_steps", "2", *extra]


def write_predictions(run_dir: Path, rows: list[tuple], split: str = "test") -> Path:
    """RUN_DIR/eval/<split>/predictions.csv as a run writes it, one tuple a row in PREDICTION_COLUMNS' order
    (premise, hypothesis, gold, baseline_pred, baseline_prob, finetuned_pred, finetuned_prob); returns RUN_DIR."""
    folder = run_dir / "eval" / split
    folder.mkdir(parents=True)
    with (folder / "predictions.csv").open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(("premise", "hypothesis", *PREDICTION_COLUMNS))
        writer.writerows(rows)
    return run_dir


class SignalAtStep(TrainerCallback):
    """Sends this process SIGTERM at the end of one optimizer step, as `kill` would mid-run."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
