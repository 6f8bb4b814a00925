"""Faults and bad input never lose work or end in a traceback: locks, half-written checkpoints,
SIGKILL, secrets, pickle weights, and property-based tests of the parser and the loader."""

import json
import os
import signal
import socket
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import tunelab.models
from tunelab.config import parse_recipe
from tunelab.errors import TunelabError
from tunelab.models import quant_storage, resolve_model_path
from tunelab.nli.config import NLIRecipe
from tunelab.nli.data import load_nli_split
from tunelab.rundir import (
    CHECKPOINT_COMPLETE,
    LOCK_FILE,
    acquire_run_lock,
    last_complete_checkpoint,
    read_jsonl,
    release_run_lock,
)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- one run per directory

def test_second_run_on_a_locked_directory_refuses(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid,
                                                       "started": "earlier"}))
        with pytest.raises(TunelabError, match=f"is in use by pid {sleeper.pid}.*delete .*{LOCK_FILE}"):
            acquire_run_lock(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_is_replaced_and_released(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    acquire_run_lock(tmp_path)
    assert "removing stale lock" in capsys.readouterr().err
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    release_run_lock(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()


def test_lock_of_the_same_slurm_job_is_stale(tmp_path, monkeypatch, capsys):
    """A requeued job restarting on another node takes over its own lock; another job's lock is respected."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "another-node", "pid": 1, "slurm_job_id": "4241"}))
    with pytest.raises(TunelabError, match="is in use by pid 1 on another-node"):
        acquire_run_lock(tmp_path)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "another-node", "pid": 1, "slurm_job_id": "4242"}))
    acquire_run_lock(tmp_path)
    assert "removing stale lock" in capsys.readouterr().err
    owner = json.loads((tmp_path / LOCK_FILE).read_text())
    assert owner["pid"] == os.getpid() and owner["slurm_job_id"] == "4242"
    release_run_lock(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()


# ---------------------------------------------------------------------------- checkpoints

def test_half_written_checkpoint_is_skipped(tmp_path, capsys):
    for step in (8, 16, 24):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (8, 16):
        save_file({"lora_A": torch.ones(2, 2)}, str(tmp_path / f"checkpoint-{step}" / "adapter_model.safetensors"))
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (tmp_path / f"checkpoint-{step}" / CHECKPOINT_COMPLETE).write_text("{}")
    (tmp_path / "checkpoint-24" / "trainer_state.json").write_text('{"global_st')
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-16")
    warning = capsys.readouterr().err
    assert "skipping" in warning and "checkpoint-24" in warning and "checkpoint-16" not in warning
    assert last_complete_checkpoint(tmp_path / "missing") is None


def recipe_command(model_dir, data_dir, output_dir, run_name, *extra):
    return [sys.executable, "recipes/phi2_snli.py", "--model_name_or_path", str(model_dir), "--dataset", str(data_dir),
            "--output_dir", str(output_dir), "--run_name", run_name, "--train_stride", "1", "--train_size", "none",
            "--validation_stride", "1", "--validation_size", "none", "--test_stride", "1", "--test_size", "none",
            "--learning_rate", "5e-3", "--num_train_epochs", "4", "--precision", "fp32", "--logging_steps", "1",
            "--load_in_4bit", "false", "--optim", "adamw_torch", "--lora_dropout", "0", *extra]


def run_env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1", **extra}


def test_sigkill_then_rerun_resumes_and_matches(tiny_phi_dir, snli_dir, tmp_path):
    reference = subprocess.run(recipe_command(tiny_phi_dir, snli_dir, tmp_path, "reference"), cwd=ROOT,
                               env=run_env(), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]

    command = recipe_command(tiny_phi_dir, snli_dir, tmp_path, "killed")
    process = subprocess.Popen(command, cwd=ROOT, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    losses_logged = 0
    for line in process.stdout:
        losses_logged += "'loss'" in line
        if losses_logged == 20:  # epoch 3 of 4 (8 steps each): epochs 1 and 2 are checkpointed
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=120)
    run_dir = tmp_path / "killed"
    assert (run_dir / "checkpoints" / "checkpoint-16" / CHECKPOINT_COMPLETE).exists()
    assert (run_dir / LOCK_FILE).exists(), "the killed run could not release its lock"

    resumed = subprocess.run(command, cwd=ROOT, env=run_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removing stale lock" in resumed.stderr
    assert f"Resuming training from {run_dir / 'checkpoints' / 'checkpoint-16'}" in resumed.stdout

    def outcome(folder):
        log = json.loads((folder / "train_log.json").read_text())
        metrics = json.loads((folder / "eval" / "test" / "finetuned" / "metrics.json").read_text())
        return {e["step"]: e["loss"] for e in log if "loss" in e}, metrics

    expected_losses, expected_metrics = outcome(tmp_path / "reference")
    losses, metrics = outcome(run_dir)
    assert sorted(losses) == sorted(expected_losses) == list(range(1, 33)), "every step once, none skipped"
    assert all(losses[s] == pytest.approx(expected_losses[s], abs=1e-5) for s in losses)
    assert metrics["confusion_matrix"] == expected_metrics["confusion_matrix"]


# ---------------------------------------------------------------------------- security

def test_planted_secrets_never_reach_a_file(tiny_phi_dir, snli_dir, tmp_path):
    secrets = {"WANDB_API_KEY": "wandb-secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
               "HF_TOKEN": "hf_plantedTokenAbCdEfGhIjKlMnOpQrStUv",
               "MY_SERVICE_TOKEN": "svc-token-7d6c5b4a39281706f5e4d3c2"}
    result = subprocess.run(recipe_command(tiny_phi_dir, snli_dir, tmp_path, "secrets", "--num_train_epochs", "1",
                                           "--debug"),
                            cwd=ROOT, env=run_env(**secrets), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    written = [p for p in (tmp_path / "secrets").rglob("*") if p.is_file()]
    assert len(written) > 10
    for path in written:
        content = path.read_bytes()
        for value in secrets.values():
            assert value.encode() not in content, f"{value} leaked into {path}"
    for value in secrets.values():
        assert value not in result.stdout + result.stderr


def test_pickle_weights_are_refused_unless_allowed(tmp_path):
    torch.save({"weight": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(TunelabError, match="only pickle weights .* --allow_pickle true"):
        resolve_model_path(str(tmp_path))
    assert resolve_model_path(str(tmp_path), allow_pickle=True) == str(tmp_path)


def test_trust_remote_code_is_off_by_default():
    assert NLIRecipe().trust_remote_code is False


def test_zero3_needs_4bit_storage_in_the_compute_dtype(monkeypatch):
    monkeypatch.setattr(tunelab.models, "is_deepspeed_zero3_enabled", lambda: True)
    assert quant_storage(NLIRecipe(load_in_4bit=True), torch.bfloat16) == torch.bfloat16
    with pytest.raises(TunelabError, match="ZeRO-3 with 4-bit weights needs bnb_4bit_quant_storage equal"):
        quant_storage(NLIRecipe(load_in_4bit=True, bnb_4bit_quant_storage="uint8"), torch.bfloat16)
    monkeypatch.setattr(tunelab.models, "is_deepspeed_zero3_enabled", lambda: False)
    assert quant_storage(NLIRecipe(load_in_4bit=True), torch.bfloat16) == torch.uint8


# ---------------------------------------------------------------------------- property-based

FIELDS = [f for f in NLIRecipe.__dataclass_fields__ if f not in ("profile",)]
keys = st.one_of(st.sampled_from(FIELDS), st.text(string.ascii_letters + "_-", min_size=1, max_size=20))
values = st.one_of(st.text(max_size=12), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.booleans(),
                   st.none(), st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=300, deadline=None)
@given(overrides=st.lists(st.tuples(keys, values), max_size=4))
def test_parser_random_input_ends_in_tunelab_error(overrides):
    argv = []
    for key, value in overrides:
        argv += [f"--{key}", str(value)]
    try:
        parse_recipe(NLIRecipe(), argv)
    except TunelabError as error:
        assert_one_line_per_problem(error)


def assert_one_line_per_problem(error: TunelabError) -> None:
    """One problem: one line. Several (tunelab.config.SettingsError): a header, then one line each."""
    problems = getattr(error, "problems", [str(error)])
    assert all("\n" not in problem for problem in problems)
    assert len(problems) == 1 or str(error).startswith(f"{len(problems)} problems in the settings:\n")


@settings(max_examples=200, deadline=None)
@given(mapping=st.dictionaries(keys, values, max_size=6))
def test_yaml_random_mappings_end_in_tunelab_error(mapping, tmp_path_factory):
    import yaml

    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    path.write_text(yaml.safe_dump(mapping))
    try:
        recipe = parse_recipe(NLIRecipe(), ["--config", str(path)])
    except TunelabError as error:
        assert_one_line_per_problem(error)
    else:
        assert isinstance(recipe, NLIRecipe)
        assert set(mapping) <= set(NLIRecipe.__dataclass_fields__), "an unknown setting was accepted"


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=8)),
                           lambda inner: st.lists(inner, max_size=2), max_leaves=4)
rows = st.dictionaries(st.sampled_from(["premise", "hypothesis", "label", "sentence1", "sentence2", "gold_label",
                                        "genre"]), json_values, max_size=5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(rows.map(json.dumps), st.binary(max_size=20).map(lambda b: b.decode("latin-1"))),
                      max_size=5))
def test_loader_random_files_end_in_tunelab_error(lines, tmp_path):
    (tmp_path / "train.jsonl").write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))
    try:
        rows_loaded = load_nli_split(NLIRecipe(dataset=str(tmp_path)), "train")
        assert all(set(r) >= {"premise", "hypothesis", "label"} for r in rows_loaded)
    except TunelabError as error:
        assert "\n" not in str(error)


def test_loader_reports_bad_bytes(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"premise": "ok", "hypothesis": "ok", "label": 0}\n\xff\xfe\n')
    with pytest.raises(TunelabError, match="not valid UTF-8"):
        read_jsonl(path)
