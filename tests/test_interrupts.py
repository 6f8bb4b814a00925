"""Signals during training: checkpoint, exit 3, and a rerun that ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def recipe_command(model_dir, data_dir, output_dir, run_name):
    return [sys.executable, "recipes/phi2_snli.py", "--model_name_or_path", str(model_dir),
            "--dataset", str(data_dir), "--output_dir", str(output_dir), "--run_name", run_name,
            "--train_stride", "1", "--train_size", "none", "--validation_stride", "1", "--validation_size", "none",
            "--test_stride", "1", "--test_size", "none", "--learning_rate", "5e-3", "--num_train_epochs", "6",
            "--precision", "fp32", "--logging_steps", "1", "--load_in_4bit", "false", "--optim", "adamw_torch",
            # Without dropout a resumed run must match an uninterrupted one exactly: data position, optimizer
            # and scheduler state are restored. (With dropout, Trainer reseeds after the first resumed batch is
            # fetched, so later dropout masks differ and losses agree only statistically.)
            "--lora_dropout", "0"]


def start(command):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished_state(run_dir):
    info = json.loads((run_dir / "run_info.json").read_text())
    log = json.loads((run_dir / "train_log.json").read_text())
    finetuned = json.loads((run_dir / "eval/test/finetuned/metrics.json").read_text())
    losses = {entry["step"]: entry["loss"] for entry in log if "loss" in entry}
    return info, losses, finetuned


@pytest.fixture(scope="module")
def reference_run(tiny_phi_dir, snli_dir, tmp_path_factory):
    """The same run, never interrupted."""
    output_dir = tmp_path_factory.mktemp("reference")
    reference = subprocess.run(recipe_command(tiny_phi_dir, snli_dir, output_dir, "reference"), cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stdout[-2000:] + reference.stderr[-2000:]
    return finished_state(output_dir / "reference")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_checkpoint_and_rerun_matches_uninterrupted(stop_signal, reference_run, tiny_phi_dir, snli_dir,
                                                                  tmp_path):

    command = recipe_command(tiny_phi_dir, snli_dir, tmp_path, "interrupted")
    process = start(command)
    output, losses_logged = [], 0
    for line in process.stdout:
        output.append(line)
        losses_logged += "'loss'" in line
        if losses_logged == 12:  # one loss per step, 8 steps per epoch: mid-way through the second epoch
            process.send_signal(stop_signal)
            break
    output.append(process.stdout.read())
    assert process.wait(timeout=300) == 3, "".join(output)[-3000:]
    text = "".join(output)
    assert f"Interrupted by {signal.Signals(stop_signal).name} at step" in text
    assert "run the same command again to resume" in text and "Traceback" not in text
    step = int(text.split(" at step ")[1].split(":")[0])
    run_dir = tmp_path / "interrupted"
    assert (run_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").exists()
    assert step % 8 != 0, "the checkpoint is mid-epoch, not an epoch boundary"
    assert not (run_dir / "run_info.json").exists()

    resumed = start(command)
    resumed_output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, resumed_output[-3000:]
    assert "Resuming interrupted" in resumed_output

    _, expected_losses, expected_metrics = reference_run
    _, losses, metrics = finished_state(run_dir)
    assert sorted(losses) == sorted(expected_losses), "no step skipped or trained twice"
    for step_number, loss in expected_losses.items():
        assert losses[step_number] == pytest.approx(loss, abs=1e-5), f"step {step_number}"
    assert metrics["accuracy"] == expected_metrics["accuracy"]
    assert metrics["confusion_matrix"] == expected_metrics["confusion_matrix"]
