"""Every command the README names, run as a user runs it: a subprocess, real arguments, exit status and output.

`tunelab run`, `plan`, `run-dir`, `report`, `launch`, `prepare-embedded`, and `launch/train.sh`
(launch/pipeline.sh: tests/test_launch.py). On the tiny Phi and the small SNLI-schema set of
tests/conftest.py, except prepare-embedded, which uses the session's converted SmolLM2.
"""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.config import parse_recipe

ROOT = Path(__file__).resolve().parents[1]
TUNELAB = str(Path(sys.executable).parent / "tunelab")
RECIPE = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]


def command(*args, **env):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TUNELAB_VENV": sys.prefix, **env}
    return subprocess.run([*args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def tiny(model_dir, data_dir, output_dir, *extra):
    return ["--model_name_or_path", str(model_dir), "--dataset", str(data_dir), "--output_dir", str(output_dir),
            "--train_stride", "1", "--train_size", "none", "--validation_stride", "1", "--validation_size", "none",
            "--test_stride", "1", "--test_size", "none", "--num_train_epochs", "1", "--precision", "fp32", *extra]


def one_error_line(result, message):
    """Exit status 2 and one `tunelab: error:` line (other lines are library warnings), no traceback."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tunelab: error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def succeeded(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def finished_run(tiny_phi_dir, snli_dir, tmp_path_factory):
    """`tunelab run recipes/phi2_snli.py ...`: the README's override form, to the end."""
    output = tmp_path_factory.mktemp("tunelab-run")
    stdout = succeeded(command(TUNELAB, "run", "recipes/phi2_snli.py", *tiny(tiny_phi_dir, snli_dir, output),
                               "--learning_rate", "5e-3", "--run_name", "try2"))
    return output / "try2", stdout


def test_tunelab_run_trains_evaluates_and_reports(finished_run):
    run_dir, stdout = finished_run
    assert f"[tunelab] Starting try2 in {run_dir}" in stdout
    assert f"[tunelab] Report: {run_dir}/report/report.md" in stdout
    assert json.loads((run_dir / "run_info.json").read_text())["train_rows"] == 60
    assert "learning_rate: 0.005" in (run_dir / "config.yaml").read_text().splitlines()
    assert (run_dir / "checkpoints" / "checkpoint-8").is_dir(), "60 rows, batch 8, one epoch"


def test_tunelab_report_rebuilds_the_report_from_the_run_files(finished_run):
    run_dir, _ = finished_run
    before = (run_dir / "report" / "report.md").read_text()
    for path in (run_dir / "report").iterdir():
        path.unlink()
    result = command(TUNELAB, "report", str(run_dir))
    assert succeeded(result).strip().endswith("report.md")
    assert (run_dir / "report" / "report.md").read_text() == before
    for name in ("report.html", "report.pdf", "loss.png", "confusion_test.png"):
        assert (run_dir / "report" / name).stat().st_size > 0, name


def test_tunelab_report_of_a_folder_without_a_run_is_one_error_line(tmp_path):
    one_error_line(command(TUNELAB, "report", str(tmp_path)), "run_info.json is missing")


def test_tunelab_run_dir_prints_where_the_run_goes(tmp_path):
    result = command(TUNELAB, "run-dir", "recipes/phi2_snli.py", "--output_dir", str(tmp_path), "--run_name", "lr1")
    assert succeeded(result) == f"{tmp_path}/lr1\n"
    default = command(TUNELAB, "run-dir", "recipes/gpt2_large_mnli.py")
    assert succeeded(default) == "runs/gpt2_large_mnli\n"
    assert not any(tmp_path.iterdir())


def test_tunelab_plan_prints_the_plan_and_writes_nothing(tiny_phi_dir, snli_dir, tmp_path):
    result = command(TUNELAB, "plan", "recipes/phi2_snli.py", *tiny(tiny_phi_dir, snli_dir, tmp_path),
                     "--num_train_epochs", "2", "--profile", "cpu")
    stdout = succeeded(result)
    assert "effective batch 8 = per-device 8 × accumulation 1 × 1 process(es)" in stdout
    assert "training rows: 60; optimizer steps: 16" in stdout
    assert not any(tmp_path.iterdir())


def test_tunelab_launch_runs_the_profile_command(tiny_phi_dir, snli_dir, tmp_path):
    result = command(TUNELAB, "launch", "recipes/phi2_snli.py", "--profile", "cpu",
                     *tiny(tiny_phi_dir, snli_dir, tmp_path, "--stages", "baseline"))
    stdout = succeeded(result)
    config = ROOT / "accelerate_configs" / "cpu.yaml"
    assert f"[tunelab] ACCELERATE_USE_CPU=true {sys.prefix}/bin/accelerate launch --config_file {config} " \
           "recipes/phi2_snli.py --profile cpu --model_name_or_path" in stdout
    metrics = json.loads((tmp_path / "phi2_snli" / "eval" / "test" / "baseline" / "metrics.json").read_text())
    assert metrics["n"] == 30
    assert "profile: cpu" in (tmp_path / "phi2_snli" / "config.yaml").read_text()


def test_tunelab_launch_refuses_a_gpu_profile_without_a_gpu(tmp_path):
    result = command(TUNELAB, "launch", "recipes/phi2_snli.py", "--profile", "zero3", "--output_dir", str(tmp_path))
    one_error_line(result, "profile zero3 needs a GPU but none is visible")
    assert not any(tmp_path.iterdir())


def test_train_sh_picks_the_profile_and_passes_every_setting(tiny_phi_dir, snli_dir, tmp_path):
    settings = tiny(tiny_phi_dir, snli_dir, tmp_path, "--stages", "baseline", "--run_name", "sh", "--seed", "3",
                    "--learning_rate", "7e-3", "--label_smoothing", "0.1")
    result = command("bash", "launch/train.sh", "recipes/phi2_snli.py", "--profile", "auto", *settings)
    stdout = succeeded(result)
    assert "accelerate launch --config_file" in stdout and "--profile cpu" in stdout, "auto -> cpu: no GPU here"
    run_dir = tmp_path / "sh"
    assert (run_dir / "eval" / "test" / "baseline" / "predictions.csv").is_file()
    assert not (run_dir / "eval" / "test" / "finetuned").exists() and not (run_dir / "adapter").exists(), \
        "--stages baseline: nothing trained"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())  # every setting but run control (stages)
    given = parse_recipe(RECIPE, settings)
    names = [word[2:] for word in settings if word.startswith("--") and word != "--stages"]
    assert {name: saved[name] for name in names} == {name: getattr(given, name) for name in names}
    assert saved["profile"] == "cpu" and given.seed != RECIPE.seed and given.learning_rate != RECIPE.learning_rate


def test_prepare_embedded_prints_the_converted_folder(embedded_model_dir):
    cache = embedded_model_dir.parent.parent
    result = command(TUNELAB, "prepare-embedded", TUNELAB_CACHE=str(cache))
    assert succeeded(result) == f"{embedded_model_dir}\n"
    assert "Converting" not in result.stderr, "already converted: nothing to do"
    unknown = command(TUNELAB, "prepare-embedded", "gpt-5", TUNELAB_CACHE=str(cache))
    one_error_line(unknown, "smollm2-135m")
