"""Issue 15: runs that never report a wrong result and never lose a finished one.

Divergence (exit 4, last good checkpoint kept, no result), --overwrite that puts the old run back
when the new one fails to start, resumes refused on changed settings, damaged checkpoints set
aside, a full disk or read-only folder on one line, and one-line failures for common mistakes.
"""

import json
import math
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainerCallback

from nli_helpers import tiny_nli_argv
from tunelab.config import parse_recipe
from tunelab.divergence import StopOnDivergence
from tunelab.errors import DIVERGED_EXIT_CODE, INTERRUPTED_EXIT_CODE, TrainingDiverged, TunelabError
from tunelab.nli.config import NLIRecipe
from tunelab.nli.data import load_nli_splits, warn_about_small_data
from tunelab.nli.pipeline import NLIRun, main
from tunelab.pipeline import PipelineRun
from tunelab.rundir import (
    CHECKPOINT_COMPLETE,
    LOCK_FILE,
    REPLACED,
    RUN_MARKER,
    acquire_run_lock,
    explain_write_failure,
    last_complete_checkpoint,
    prepare_run_dir,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]


def tiny_argv(model_dir, data_dir, output_dir, *extra):
    """Two epochs, unquantized, with plain AdamW and a log line every step."""
    return tiny_nli_argv(model_dir, data_dir, output_dir, "--num_train_epochs", "2", "--load_in_4bit", "false",
                         "--optim", "adamw_torch", "--logging_steps", "1", *extra)


def run_recipe_file(*argv, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "recipes/phi2_snli.py", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "tunelab: error:" in line]


# ---------------------------------------------------------------------------- 1. divergence

class PoisonWeightsAt(TrainerCallback):
    """Plants a NaN in one LoRA weight when optimizer step `step` begins: its loss and gradients are NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            weight = next(p for p in model.parameters() if p.requires_grad)
            with torch.no_grad():
                weight.view(-1)[0] = math.nan
        return control


def test_a_nan_stops_training_keeps_the_last_good_checkpoint_and_writes_no_result(tiny_phi_dir, snli_dir, tmp_path):
    recipe = parse_recipe(RECIPE, tiny_argv(tiny_phi_dir, snli_dir, tmp_path, "--run_name", "nan"))
    with pytest.raises(TrainingDiverged, match=r"diverged at step 10: the gradients are not finite.*checkpoint-8.*"
                                               r"lower --learning_rate"):
        main(recipe, callbacks=[PoisonWeightsAt(10)])  # 8 steps per epoch: epoch 1 is checkpointed
    run_dir = tmp_path / "nan"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-8"], "nothing is saved after the NaN"
    assert (run_dir / "checkpoints" / "checkpoint-8" / CHECKPOINT_COMPLETE).exists()
    assert last_complete_checkpoint(run_dir / "checkpoints") == str(run_dir / "checkpoints" / "checkpoint-8")
    for result in ("adapter", "run_info.json", "report", "eval/test/finetuned", "comparison"):
        assert not (run_dir / result).exists(), result
    assert not (run_dir / LOCK_FILE).exists()


def test_a_huge_learning_rate_exits_4_on_one_line_with_no_report(tiny_phi_dir, snli_dir, tmp_path):
    result = run_recipe_file(*tiny_argv(tiny_phi_dir, snli_dir, tmp_path, "--learning_rate", "1e30",
                                        "--num_train_epochs", "1"))
    assert result.returncode == DIVERGED_EXIT_CODE, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert "training diverged at step" in line and "learning_rate (now 1e+30)" in line
    assert "accuracy" not in result.stdout and not (tmp_path / "phi2_snli" / "report").exists()


class InflateLogitsAt(TrainerCallback):
    """Scales the output layer's weights 1,000-fold when optimizer step `step` begins: the loss jumps, finite."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            with torch.no_grad():
                model.get_output_embeddings().weight.mul_(1000)
        return control


def test_a_loss_rise_is_warned_about_in_progress_json_and_the_report(tiny_phi_dir, snli_dir, tmp_path, capsys):
    recipe = parse_recipe(RECIPE, tiny_argv(tiny_phi_dir, snli_dir, tmp_path, "--run_name", "rise"))
    run_dir = main(recipe, callbacks=[InflateLogitsAt(3)])
    [warning] = json.loads((run_dir / "progress.json").read_text())["warnings"]
    assert warning.startswith("the training loss rose from ") and "(step 1) to " in warning
    assert warning.endswith(": training is probably diverging; lower --learning_rate (now 0.005)")
    assert f"[tunelab] warning: {warning}" in capsys.readouterr().out
    assert json.loads((run_dir / "run_info.json").read_text())["warnings"] == [warning]
    assert f"- WARNING: {warning}" in (run_dir / "report" / "report.md").read_text().split("\n## Training\n")[1]


def test_non_finite_probabilities_are_refused_before_anything_is_written(tmp_path):
    with NLIRun(NLIRecipe(output_dir=str(tmp_path), run_name="nli"), []) as run:
        run.rows = {"test": [{"premise": "A.", "hypothesis": "B.", "label": "neutral"}] * 2}
        with pytest.raises(TrainingDiverged, match="probabilities on test are not finite"):
            run.save_predictions("test", "finetuned", np.array([[math.nan] * 3, [0.2, 0.3, 0.5]]))
    assert not (run.eval_dir("test") / "finetuned").exists()


def test_a_loss_rising_far_above_its_start_is_flagged(capsys):
    callback = StopOnDivergence()
    args, control = SimpleNamespace(learning_rate=1e6, output_dir="unused"), SimpleNamespace()
    for step, loss in ((1, 1.1), (2, 3.0), (3, 9.5)):
        callback.on_log(args, SimpleNamespace(global_step=step), control, logs={"loss": loss})
    assert callback.warning is None
    callback.on_log(args, SimpleNamespace(global_step=4), control, logs={"loss": 1.2e7})
    assert "rose from 1.1 (step 1) to 1.2e+07 (step 4)" in callback.warning and "--learning_rate" in callback.warning
    assert callback.warning in capsys.readouterr().out
    with pytest.raises(TrainingDiverged, match="at step 5: the grad norm is nan"):
        callback.on_log(args, SimpleNamespace(global_step=5), control, logs={"loss": 0.0, "grad_norm": math.nan})


# ---------------------------------------------------------------------------- 2. --overwrite and compare

def fake_finished_run(run_dir: Path, settings: dict) -> dict[str, bytes]:
    """A finished run's files (as a run writes them) and their contents."""
    files = {RUN_MARKER: b"{}", "config.yaml": json.dumps(settings).encode(), "run_info.json": b"{}",
             "adapter/adapter_model.safetensors":
             b"weights", "eval/test/finetuned/metrics.json": b"{}", "report/report.md": b"# report"}
    for name, content in files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(content)
    return files


def contents(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_overwrite_that_fails_to_start_puts_the_finished_run_back(tiny_phi_dir, snli_dir, tmp_path):
    bad_data = tmp_path / "bad"
    bad_data.mkdir()
    for split in ("train", "validation", "test"):
        (bad_data / f"{split}.jsonl").write_text((snli_dir / f"{split}.jsonl").read_text() + '{"premise": \n')
    run_dir = tmp_path / "ow"
    before = fake_finished_run(run_dir, {"learning_rate": 1.0})
    recipe = parse_recipe(RECIPE, tiny_argv(tiny_phi_dir, bad_data, tmp_path, "--run_name", "ow", "--overwrite"))
    with pytest.raises(TunelabError, match="not valid JSON"):
        main(recipe)
    assert contents(run_dir) == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["adapter", "config.yaml", "eval", "report", "run_info.json",
                                                          RUN_MARKER]


def test_a_start_killed_while_replacing_a_run_gives_it_back(tmp_path):
    before = fake_finished_run(tmp_path, {"learning_rate": 1.0})
    prepare_run_dir(tmp_path, overwrite=True, settings={"learning_rate": 2.0})
    assert (tmp_path / REPLACED).is_dir() and not (tmp_path / "run_info.json").exists()
    (tmp_path / "config.yaml").write_text("the new run's, then SIGKILL")
    with pytest.raises(TunelabError, match="holds a finished run"):
        prepare_run_dir(tmp_path, overwrite=False, settings={"learning_rate": 2.0})
    assert contents(tmp_path) == before


def test_compare_never_replaces_a_runs_own_comparison(tmp_path):
    from report.test_report_compare import make_run
    from tunelab.report.compare import compare

    run = make_run(tmp_path / "run")
    own = compare(run, run)
    written = contents(own)
    with pytest.raises(TunelabError, match="already exists.*--out"):
        compare(run, run)
    assert contents(own) == written
    assert (compare(run, run, tmp_path / "elsewhere") / "improvement.json").is_file()


# ---------------------------------------------------------------------------- 3. changed settings on resume

def test_a_resume_with_changed_training_settings_is_refused_before_config_is_rewritten(tmp_path):
    first = NLIRecipe(output_dir=str(tmp_path), run_name="nli", learning_rate=5e-3)
    with PipelineRun(first, []):
        pass
    config = (first.run_dir / "config.yaml").read_text()
    changed = NLIRecipe(output_dir=str(tmp_path), run_name="nli", learning_rate=1e-4, lora_r=8, logging_steps=3)
    with pytest.raises(TunelabError, match=r"other settings \(lora_r: 16 -> 8, learning_rate: 0.005 -> 0.0001\).*"
                                           r"--overwrite.*--run_name"):
        PipelineRun(changed, [])
    assert (first.run_dir / "config.yaml").read_text() == config
    assert not (first.run_dir / LOCK_FILE).exists()
    harmless = NLIRecipe(output_dir=str(tmp_path), run_name="nli", learning_rate=5e-3, logging_steps=3,
                         report_to="tensorboard", stages=["train"])
    with PipelineRun(harmless, []):
        pass
    with PipelineRun(NLIRecipe(output_dir=str(tmp_path), run_name="nli", learning_rate=1e-4, overwrite=True), []):
        pass  # --overwrite starts again with the new settings
    assert "learning_rate: 0.0001" in (first.run_dir / "config.yaml").read_text()


# ---------------------------------------------------------------------------- 4. damaged checkpoints, disk

def checkpoint(folder: Path, step: int) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"lora_A": torch.ones(64, 64)}, str(path / "adapter_model.safetensors"))
    torch.save({"state": torch.ones(64, 64)}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (path / CHECKPOINT_COMPLETE).write_text("{}")
    return path


@pytest.mark.parametrize("damage", ["adapter_model.safetensors", "optimizer.pt", "trainer_state.json"])
def test_a_damaged_checkpoint_is_set_aside_and_the_previous_one_used(damage, tmp_path, capsys):
    checkpoint(tmp_path, 8)
    latest = checkpoint(tmp_path, 16)
    with open(latest / damage, "r+b") as handle:
        handle.truncate(os.path.getsize(latest / damage) // 2)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    [warning] = capsys.readouterr().err.splitlines()
    assert "checkpoint-16 is damaged" in warning and damage in warning and "checkpoint-16.damaged" in warning
    assert (tmp_path / "checkpoint-16.damaged" / damage).exists()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs: a real full disk (needs the right to mount, as root in a container). Where it cannot be
    mounted the tests skip, unless TUNELAB_REQUIRE_MOUNT=1 (CI, which runs as root) makes that a failure."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode:
        reason = f"cannot mount a tmpfs here: {result.stderr.strip()}"
        if os.environ.get("TUNELAB_REQUIRE_MOUNT") == "1":
            pytest.fail(f"TUNELAB_REQUIRE_MOUNT=1 but {reason}")
        pytest.skip(reason)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_while_saving_is_one_line_with_the_space_needed(small_disk):
    for save in (lambda: torch.save(torch.ones(1024, 1024), small_disk / "optimizer.pt"),
                 lambda: save_file({"w": torch.ones(1024, 1024)}, str(small_disk / "adapter_model.safetensors"))):
        with pytest.raises(Exception) as raised:
            save()
        with pytest.raises(TunelabError, match=rf"the disk holding {small_disk} is full \(.* MB free; a checkpoint "
                                               r"needs about 4.0 MB\): free space there"):
            explain_write_failure(raised.value, small_disk, 4 * 2**20)


def test_a_read_only_output_dir_is_one_line(small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(TunelabError, match=rf"cannot write to {small_disk / 'run'} \(Read-only file system\): "
                                           "choose a writable --output_dir"):
        acquire_run_lock(small_disk / "run")


def test_too_little_space_for_a_checkpoint_stops_before_training(tiny_phi_dir, snli_dir, small_disk):
    result = run_recipe_file(*tiny_argv(tiny_phi_dir, snli_dir, small_disk))
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert f"not enough disk space in {small_disk}/phi2_snli/checkpoints" in line and "MB" in line
    assert "Traceback" not in result.stderr and "'loss'" not in result.stdout


# ---------------------------------------------------------------------------- 5. one line, and no silent mistakes

def test_common_mistakes_end_on_one_line(tiny_phi_dir, snli_dir, tmp_path):
    truncated = tmp_path / "truncated-model"
    truncated.mkdir()
    for file in tiny_phi_dir.iterdir():
        (truncated / file.name).write_bytes(file.read_bytes())
    with open(truncated / "model.safetensors", "r+b") as handle:
        handle.truncate(10_000)
    cases = {
        ("--optim", "adamw_foo"): "optim 'adamw_foo' is not one transformers knows: did you mean 'adamw_torch'?",
        ("--stages", "report"): "eval/test/baseline/metrics.json does not exist: run the baseline stage first",
        ("--model_name_or_path", str(truncated)): "the model's weights file is truncated",
    }
    for extra, message in cases.items():
        result = run_recipe_file(*tiny_argv(tiny_phi_dir, snli_dir, tmp_path, "--run_name", extra[0][2:], *extra))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert [message in line for line in error_lines(result.stderr)] == [True], (message, result.stderr[-1000:])
    missing = subprocess.run([sys.executable, "-m", "tunelab.cli", "run", "recipes/no_such.py"], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True)
    assert missing.returncode == 2 and error_lines(missing.stderr) == [
        "tunelab: error: recipe file recipes/no_such.py does not exist: see recipes/ for the recipes"]


def test_sigterm_outside_training_unlocks_and_says_so(tiny_phi_dir, snli_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "recipes/phi2_snli.py",
                                *tiny_argv(tiny_phi_dir, snli_dir, tmp_path, "--stages", "baseline")],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if "Trainable parameters" in line:  # the model has loaded; the baseline evaluation starts
            process.send_signal(signal.SIGTERM)
            break
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == INTERRUPTED_EXIT_CODE, stderr[-2000:]
    assert "Interrupted by SIGTERM outside training" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "phi2_snli" / LOCK_FILE).exists()


HALF_BUILT_BY_A_SIGNAL = """
import os, signal
from tunelab.errors import exit_on_error
from tunelab.interrupts import interruptible

class ProgressBar:  # like tqdm: its destructor needs what the rest of __init__ would have set
    def __init__(self):
        os.kill(os.getpid(), signal.SIG{signal})
        self.position = 0

    def __del__(self):
        abs(self.position)

with exit_on_error(), interruptible():
    ProgressBar()
"""


@pytest.mark.parametrize("name, exit_code, message", [("TERM", INTERRUPTED_EXIT_CODE, "Interrupted by SIGTERM outside training"),
                                                     ("INT", 130, "tunelab: interrupted")])
def test_an_object_the_signal_left_half_built_fails_on_one_line_not_a_traceback(name, exit_code, message):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", HALF_BUILT_BY_A_SIGNAL.replace("{signal}", name)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == exit_code, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "ignored after the interrupt: AttributeError in ProgressBar.__del__" in done.stderr


def test_small_or_one_sided_training_data_is_warned_about(snli_dir, tmp_path, capsys):
    recipe = NLIRecipe(dataset=str(snli_dir), train_stride=550, train_size=1000)
    rows = load_nli_splits(recipe, ["train", "validation", "test"])
    warn_about_small_data(recipe, rows)
    out = capsys.readouterr().out
    assert "warning: train keeps only 1 rows" in out and "lower --train_stride (now 550)" in out
    assert "raise --train_size (now 1000)" in out and "train has no neutral or contradiction rows" in out
    warn_about_small_data(recipe, {"train": rows["train"] * 60})
    out = capsys.readouterr().out
    assert "keeps only" not in out and "train has no neutral or contradiction rows" in out


# ---------------------------------------------------------------------------- load order

def test_load_steps_run_in_order_once_each(tmp_path):
    loaded = []

    class RecordingRun(PipelineRun):
        def load_data(self):
            loaded.append("data")

        def load_tokenizer(self):
            loaded.append("tokenizer")

        def load_model(self):
            loaded.append("model")

        def load_trainer(self):
            loaded.append("trainer")

    with RecordingRun(NLIRecipe(output_dir=str(tmp_path), run_name="nli"), []) as run:
        run.load("model")
        assert loaded == ["data", "tokenizer", "model"] and run.loaded("model") and not run.loaded("trainer")
        run.load("trainer")
        run.load("data")
    assert loaded == ["data", "tokenizer", "model", "trainer"]


# ---------------------------------------------------------------------------- no network, detected once

def test_an_unreachable_hub_switches_the_run_offline_at_once(monkeypatch, capsys):
    """One connection attempt with the probe's short timeout decides; none is retried."""
    import socket

    import huggingface_hub.constants

    from tunelab.network import PROBE_TIMEOUT_S, go_offline_unless_hub_reachable

    attempts, connect = [], socket.create_connection
    monkeypatch.setattr(socket, "create_connection",
                        lambda address, timeout: attempts.append((address, timeout)) or connect(address, timeout))
    listening = socket.create_server(("127.0.0.1", 0))
    hub = ("127.0.0.1", listening.getsockname()[1])
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://{hub[0]}:{hub[1]}")
    go_offline_unless_hub_reachable(["org/model"])
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False, "a Hub that answers keeps the run online"
    listening.close()  # nothing listens there now: the connection is refused
    go_offline_unless_hub_reachable(["org/model"])
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert attempts == [(hub, PROBE_TIMEOUT_S)] * 2 and PROBE_TIMEOUT_S <= 5
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert "no network: the Hugging Face Hub does not answer, so org/model" in capsys.readouterr().out


def test_a_sharded_fsdp2_checkpoint_is_checked_by_its_metadata_and_shards(tmp_path):
    """FSDP2 saves the model as torch.distributed.checkpoint folders (pytorch_model_fsdp_0/), not safetensors."""
    import torch.distributed.checkpoint as dcp

    from tunelab.rundir import checkpoint_damage

    checkpoint = tmp_path / "checkpoint-3"
    dcp.save({"w": torch.ones(4, 4)}, checkpoint_id=str(checkpoint / "pytorch_model_fsdp_0"), no_dist=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    assert checkpoint_damage(checkpoint) is None
    shard = next((checkpoint / "pytorch_model_fsdp_0").glob("*.distcp"))
    shard.unlink()
    assert checkpoint_damage(checkpoint) == f"pytorch_model_fsdp_0 lacks {shard.name}"
    (checkpoint / "pytorch_model_fsdp_0" / ".metadata").write_bytes(b"\x80")
    assert "pytorch_model_fsdp_0/.metadata unreadable" in checkpoint_damage(checkpoint)
