"""tunelab.tracking: the pre-flight check, secret redaction, W&B run naming, and W&B for real in offline
mode: a tiny run writes one offline run whose summary holds the loss and the monitoring and timing
figures, and a two-process run writes exactly one W&B run (rank 0's, with both ranks' figures)."""

import importlib.util
import json
import os
import re
import runpy
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nli_helpers import tiny_nli_argv
from tunelab.config import parse_recipe
from tunelab.errors import TunelabError
from tunelab.nli.config import NLIRecipe
from tunelab.nli.pipeline import main
from tunelab.secrets import REDACTED, redact, secret_values
from tunelab.stats import paired_statistics
from tunelab.tracking import (
    NO_KEY,
    check_tracking,
    report_targets,
    statistics_figures,
    wandb_init_arguments,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]
SECRETS = {"WANDB_API_KEY": "wandb-secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
           "HF_TOKEN": "hf_plantedTokenAbCdEfGhIjKlMnOpQrStUv",
           "MY_SERVICE_SECRET": "svc-secret-7d6c5b4a39281706f5e4d3c2"}
PATH_SECRET = ("DATA_ACCESS_TOKEN", "dataTokenInAPath8c7b6a5")  # ends up in the recipe through a path


def tiny_overrides(model_dir, data_dir, output_dir, *extra):
    return tiny_nli_argv(model_dir, data_dir, output_dir, "--num_train_epochs", "1", "--load_in_4bit", "false", *extra)


def wandb_environment(tmp_path: Path) -> dict[str, str]:
    """Offline W&B whose own folders (settings, cache, artifacts) stay inside the test's directory."""
    folders = {name: tmp_path / "wandb-home" / name.lower() for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR",
                                                                           "WANDB_DATA_DIR", "WANDB_DIR")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true", **{k: str(v) for k, v in folders.items()}}


# ---------------------------------------------------------------------------- reading an offline run

def wandb_records(path: Path):
    """The records of a run-ID.wandb file: W&B's header, then LevelDB-log framed protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    position, pieces = 7, []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a record header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        payload, position = data[position + 7:position + 7 + length], position + 7 + length
        if kind in (1, 2):  # full, first
            pieces = [payload]
        elif kind in (3, 4):  # middle, last
            pieces.append(payload)
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            yield record


def offline_run(run_dir: Path) -> dict:
    """The one offline W&B run under RUN_DIR/wandb: its run record, config, summary and saved files."""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    result = {"folder": runs[0], "run": None, "config": {}, "summary": {}, "files": set()}
    for record in wandb_records(next(runs[0].glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            result["run"] = record.run
            result["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            result["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            for item in record.summary.update:
                result["summary"]["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
        elif kind == "files":
            result["files"].update(file.path for file in record.files.files)
    return result


# ---------------------------------------------------------------------------- pre-flight

def no_credentials(tmp_path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "NETRC": str(tmp_path / "no-netrc"), "WANDB_CONFIG_DIR": str(tmp_path)}


@pytest.mark.parametrize("environment, fails", [
    ({}, True),
    ({"WANDB_MODE": "offline"}, False),
    ({"WANDB_MODE": "disabled"}, False),
    ({"WANDB_API_KEY": "x" * 40}, False),
    ({"WANDB_MODE": "online"}, True),
])
def test_preflight_needs_a_key_unless_offline(environment, fails, tmp_path):
    environ = {**no_credentials(tmp_path), **environment}
    if fails:
        with pytest.raises(TunelabError) as error:
            check_tracking("wandb", environ)
        assert str(error.value) == NO_KEY and "\n" not in NO_KEY and "WANDB_MODE=offline" in NO_KEY
    else:
        check_tracking("wandb", environ)


def test_preflight_reads_the_netrc_and_saved_mode(tmp_path):
    environ = no_credentials(tmp_path)
    netrc = tmp_path / "no-netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    check_tracking("wandb", environ)  # `wandb login` wrote the key
    netrc.unlink()
    (tmp_path / "settings").write_text("[default]\nmode = offline\n")  # `wandb offline`
    check_tracking("wandb", environ)
    with pytest.raises(TunelabError, match="WANDB_MODE='sideways' is not a W&B mode"):
        check_tracking("wandb", {**environ, "WANDB_MODE": "sideways"})


def test_report_to_values():
    assert report_targets("none") == [] and report_targets("wandb,tensorboard") == ["wandb", "tensorboard"]
    with pytest.raises(TunelabError, match="report_to must be none, wandb, tensorboard"):
        NLIRecipe(report_to="mlflow")
    check_tracking("tensorboard", {})  # installed (requirements.txt): accepted
    check_tracking("none", {})


def test_report_to_tensorboard_without_tensorboard_names_the_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args, **kwargs: None if name in (
        "tensorboard", "tensorboardX") else real_find_spec(name, *args, **kwargs))
    with pytest.raises(TunelabError, match="pip install tensorboard"):
        check_tracking("tensorboard", {})


def test_missing_key_fails_before_anything_loads(tmp_path, monkeypatch):
    """No run directory, no data, no model: the model named here does not even exist."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in no_credentials(tmp_path).items():
        monkeypatch.setenv(name, value)
    recipe = parse_recipe(RECIPE, ["--model_name_or_path", "nobody/no-such-model", "--output_dir",
                                   str(tmp_path / "runs"), "--report_to", "wandb"])
    with pytest.raises(TunelabError) as error:
        main(recipe)
    assert str(error.value) == NO_KEY
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- naming and secrets

def test_run_name_group_and_redacted_config(tmp_path):
    token_name, token = PATH_SECRET
    environ = {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4240", token_name: token, "SHORT_KEY": "1"}
    recipe = NLIRecipe(run_name="phi2_snli", profile="a40", dataset=f"/data/{token}/snli")
    arguments = wandb_init_arguments(recipe, tmp_path, 2, environ)
    assert arguments["project"] == "tunelab"
    assert arguments["name"] == "phi2_snli-a40-slurm4242" and arguments["group"] == "slurm-array4240"
    config = arguments["config"]
    assert config["recipe"]["dataset"] == f"/data/{REDACTED}/snli"
    assert token not in json.dumps(config)
    assert config["profile"]["name"] == "a40" and config["profile"]["precision"] == "bf16"
    assert re.fullmatch(r"[0-9a-f]{40}", config["git"]["commit"])
    assert config["software"]["wandb"] != "not installed" and config["hardware"]["num_processes"] == 2
    assert config["slurm"]["job_id"] == "4242"
    overridden = wandb_init_arguments(recipe, tmp_path, 1, {"WANDB_PROJECT": "p", "WANDB_NAME": "n",
                                                            "WANDB_RUN_GROUP": "g"})
    assert (overridden["project"], overridden["name"], overridden["group"]) == ("p", "n", "g")
    plain = wandb_init_arguments(NLIRecipe(run_name="r"), tmp_path, 1, {})
    assert (plain["name"], plain["group"], plain["config"]["slurm"]) == ("r", "r", None)


def test_secret_values_and_redaction():
    environ = {"WANDB_API_KEY": "abcdefgh", "HF_TOKEN": "hf_123456", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
               "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin", "GITHUB_TOKEN": "1"}
    assert set(secret_values(environ)) == {"abcdefgh", "hf_123456", "s3cr3t-value"}
    data = {"a": ["x hf_123456 y", ("abcdefgh",)], "hf_123456": 3, "n": 1.5}
    assert redact(data, secret_values(environ)) == {"a": [f"x {REDACTED} y", [REDACTED]], REDACTED: 3, "n": 1.5}


def test_statistics_become_flat_summary_keys(tmp_path):
    gold = np.array([0, 1, 2] * 10)
    predicted = {"baseline": np.zeros(30, dtype=int), "finetuned": gold.copy()}
    probabilities = {model: np.eye(3)[labels] * 0.7 + 0.1 for model, labels in predicted.items()}
    statistics = paired_statistics(gold, predicted, probabilities, {"finetuned": (gold, probabilities["finetuned"])},
                                   n_resamples=200)
    (tmp_path / "eval" / "test").mkdir(parents=True)
    (tmp_path / "eval" / "test" / "statistics.json").write_text(json.dumps(statistics))
    figures = statistics_figures(tmp_path)
    assert figures["statistics/test/accuracy_change_low"] == statistics["intervals"]["accuracy"]["change"]["low"]
    assert figures["statistics/test/macro_f1_finetuned_high"] == statistics["intervals"]["macro_f1"]["finetuned"]["high"]
    assert figures["statistics/test/mcnemar_p"] == statistics["mcnemar"]["p_value"]
    assert figures["statistics/test/baseline_brier"] == statistics["calibration"]["baseline"]["brier"]
    assert figures["statistics/test/finetuned_scaled_temperature"] > 0
    assert "statistics/test/baseline_scaled_ece" not in figures  # no validation predictions for the baseline
    assert statistics_figures(tmp_path / "nothing") == {}


# ---------------------------------------------------------------------------- W&B for real, offline

def test_offline_wandb_run_holds_loss_memory_and_timings(tiny_phi_dir, snli_dir, tmp_path, monkeypatch, capsys):
    token_name, token = PATH_SECRET
    data_dir = tmp_path / f"data-{token}"
    shutil.copytree(snli_dir, data_dir)
    for name, value in {**wandb_environment(tmp_path), **SECRETS, token_name: token}.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_PROJECT", "WANDB_NAME", "WANDB_RUN_GROUP", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    run_dir = main(parse_recipe(RECIPE, tiny_overrides(tiny_phi_dir, data_dir, tmp_path / "runs", "--report_to", "wandb",
                                                       "--profile", "cpu", "--temperature_scaling", "true")))
    out = capsys.readouterr().out

    run = offline_run(run_dir)
    assert run["run"].project == "tunelab" and run["run"].display_name == "phi2_snli-cpu"
    assert run["run"].run_group == "phi2_snli"
    config = run["config"]
    assert config["recipe"]["learning_rate"] == 5e-3 and config["profile"]["name"] == "cpu"
    assert {"git", "software", "hardware"} <= set(config) and config["hardware"]["device"] == "cpu"
    assert config["recipe"]["dataset"] == str(tmp_path / f"data-{REDACTED}")
    assert "learning_rate" in config and "peft_config" in config, "WandbCallback added TrainingArguments too"

    summary = run["summary"]
    assert isinstance(summary["train/loss"], float)
    for key in ("train/cpu_rss_gib", "train/step_time_s", "train/samples_per_s", "train/tokens_per_s",
                "timings/load_s", "timings/train_s", "timings/evaluate_s", "timings/total_s",
                "monitoring/tokens_per_s", "monitoring/peak/cpu_peak_rss_gib", "test/test_baseline_accuracy",
                "test/test_finetuned_accuracy"):
        assert key in summary, key
    assert summary["train/tokens_per_s"] > 0 and summary["monitoring/peak/cpu_peak_rss_gib"] > 0
    # the report's statistics (eval/test/statistics.json) with the temperature fitted on the validation rows
    statistics = json.loads((run_dir / "eval" / "test" / "statistics.json").read_text())
    assert summary["statistics/test/accuracy_change_low"] == statistics["intervals"]["accuracy"]["change"]["low"]
    assert summary["statistics/test/mcnemar_p"] == statistics["mcnemar"]["p_value"]
    assert summary["statistics/test/finetuned_ece"] == statistics["calibration"]["finetuned"]["ece"]
    for model in ("baseline", "finetuned"):
        assert len((run_dir / "calibration" / model / "predictions.csv").read_text().splitlines()) == 1 + 15
        assert summary[f"statistics/test/{model}_scaled_temperature"] > 0
    assert "temperature (fitted on validation)" in (run_dir / "report" / "report.md").read_text()
    assert {"report/report.md", "report/report.html", "report/report.pdf", "report/memory.png",
            "eval/test/predictions.csv", "run_info.json", "monitoring.json"} <= run["files"]

    for path in [p for p in run_dir.rglob("*") if p.is_file()] + [p for p in (tmp_path / "wandb-home").rglob("*")
                                                                  if p.is_file()]:
        content = path.read_bytes()
        for value in [*SECRETS.values(), token]:  # the token in the data path too: config.yaml, data/, report
            assert value.encode() not in content, f"{value} leaked into {path}"
    assert not any(value in out for value in [*SECRETS.values(), token])

    # The same figures reach the run directory, the report and the terminal.
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["monitoring"]["tokens_per_s"] > 0 and "cpu" in info["monitoring"]["peak_devices"]
    assert any("cpu_rss_gib" in entry for entry in json.loads((run_dir / "train_log.json").read_text()))
    assert "## Resources during training" in (run_dir / "report" / "report.md").read_text()
    assert re.search(r"\[tunelab\] Wall time .*: load .*, train .*, evaluate ", out)
    assert "[tunelab] Peak memory: cpu " in out and "[tunelab] Throughput: " in out
    assert "[tunelab] MFU assumes a peak of" in out and "training-shaped matmul peak of this CPU" in out

    # A stage run later (here: the report again, the run made unfinished) continues the same W&B run, as a
    # requeued job or launch/pipeline.sh's next stage does.
    run_id = (run_dir / "wandb" / "tunelab-run-id").read_text().strip()
    (run_dir / "run_info.json").unlink()
    main(parse_recipe(RECIPE, tiny_overrides(tiny_phi_dir, data_dir, tmp_path / "runs", "--report_to", "wandb",
                                             "--profile", "cpu", "--stages", "report")))
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(folder.name.endswith(run_id) for folder in runs)


def tensorboard_scalars(run_dir: Path) -> dict[str, list[int]]:
    """Every scalar tag in the run's TensorBoard event files, with the steps it was logged at."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list(run_dir.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {run_dir}"
    scalars: dict[str, list[int]] = {}
    for path in files:
        events = EventAccumulator(str(path))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(event.step for event in events.Scalars(tag))
    return scalars


@pytest.mark.parametrize("report_to", ["tensorboard", "wandb,tensorboard"])
def test_report_to_tensorboard_alone_or_with_wandb(report_to, tiny_phi_dir, snli_dir, tmp_path, monkeypatch):
    for name, value in wandb_environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    run_dir = main(parse_recipe(RECIPE, tiny_overrides(tiny_phi_dir, snli_dir, tmp_path / "runs", "--report_to",
                                                       report_to, "--stages", "train")))
    scalars = tensorboard_scalars(run_dir)
    assert scalars["train/loss"] == [2, 4, 6, 8], "60 rows, batch 8: 8 steps, a loss every 2"
    assert "train/tokens_per_s" in scalars, "tunelab's monitoring figures reach TensorBoard too"
    if report_to == "tensorboard":
        assert not (run_dir / "wandb").exists()
    else:
        assert offline_run(run_dir)["summary"]["train/loss"] > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_make_one_wandb_run(tiny_phi_dir, snli_dir, tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu_ddp.yaml"),
               "--num_processes", "2", "--main_process_port", str(free_port()), str(ROOT / "recipes" / "phi2_snli.py"),
               *tiny_overrides(tiny_phi_dir, snli_dir, tmp_path / "runs", "--report_to", "wandb",
                               "--per_device_train_batch_size", "4", "--logging_steps", "1")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": "", **wandb_environment(tmp_path)}
    for name in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_NAME", "WANDB_RUN_GROUP", "WANDB_RUN_ID"):
        env.pop(name, None)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    errors = [line for line in result.stderr.splitlines() if "tunelab: error" in line or "Error" in line]
    assert result.returncode == 0, "\n".join([*dict.fromkeys(errors), result.stderr[-2000:]])

    run_dir = tmp_path / "runs" / "phi2_snli"
    assert [p.parent.parent for p in tmp_path.rglob("offline-run-*/run-*.wandb")] == [run_dir / "wandb"], \
        "one W&B run, rank 0's, in the run directory (a run started by rank 1 would be in WANDB_DIR or here)"
    run = offline_run(run_dir)
    assert run["config"]["hardware"]["num_processes"] == 2
    assert {"train/rank0_cpu_rss_gib", "train/rank1_cpu_rss_gib", "train/loss"} <= set(run["summary"])
    assert result.stdout.count("[tunelab] Wall time") == 1
    samples = json.loads((run_dir / "monitoring.json").read_text())["samples"]
    assert samples and all(set(sample["devices"]) == {"rank0_cpu", "rank1_cpu"} for sample in samples)
