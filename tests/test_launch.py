"""The accelerate command `tunelab launch` builds from a hardware profile (built, not run: tests/test_entry_points.py
runs `tunelab launch` and launch/train.sh), and launch/pipeline.sh run for real, stage by stage."""

import os
import subprocess
from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.launch.accelerate import launch_command
from tunelab.profiles import Gpu

ROOT = Path(__file__).resolve().parents[1]
A40 = Gpu("NVIDIA A40", 48, True)


def test_single_gpu_profile_uses_its_config():
    command, env = launch_command("recipes/phi2_snli.py", ["--profile", "a40", "--learning_rate", "1e-4"], gpus=[A40])
    assert command[1:4] == ["launch", "--config_file", str(ROOT / "accelerate_configs" / "a40.yaml")]
    assert command[4:] == ["recipes/phi2_snli.py", "--profile", "a40", "--learning_rate", "1e-4"]
    assert env == {}


def test_multi_gpu_profile_uses_every_gpu():
    command, _ = launch_command("recipes/phi2_snli.py", ["--profile=multi_gpu"], gpus=[A40] * 4)
    assert "--num_processes" in command and command[command.index("--num_processes") + 1] == "4"


def test_auto_without_gpu_launches_on_cpu():
    command, env = launch_command("recipes/phi2_snli.py", [], gpus=[])
    assert command[3].endswith("cpu.yaml") and command[-2:] == ["--profile", "cpu"]
    assert env == {"ACCELERATE_USE_CPU": "true"}


def test_gpu_profile_without_gpu_is_refused():
    with pytest.raises(TunelabError, match="needs a GPU but none is visible"):
        launch_command("recipes/phi2_snli.py", ["--profile", "zero3"], gpus=[])


def pipeline(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(["bash", "launch/pipeline.sh", "recipes/phi2_snli.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def tiny(model_dir, data_dir, output_dir):
    return ["--profile", "cpu", "--model_name_or_path", str(model_dir), "--dataset", str(data_dir),
            "--output_dir", str(output_dir), "--train_stride", "1", "--train_size", "none", "--validation_stride", "1",
            "--validation_size", "none", "--test_stride", "1", "--test_size", "none", "--num_train_epochs", "1"]


def test_pipeline_runs_each_stage_with_its_log(tiny_phi_dir, snli_dir, tmp_path):
    result = pipeline(*tiny(tiny_phi_dir, snli_dir, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    run_dir = tmp_path / "phi2_snli"
    for stage in ("baseline", "train", "evaluate", "report"):
        assert (run_dir / "logs" / f"{stage}.log").stat().st_size > 0
    assert (run_dir / "report" / "report.md").exists()
    assert f"[pipeline] done: {run_dir}/report/report.md" in result.stdout


def test_pipeline_stops_at_the_first_failure(tiny_phi_dir, tmp_path):
    (tmp_path / "data").mkdir()
    result = pipeline(*tiny(tiny_phi_dir, tmp_path / "data", tmp_path))
    assert result.returncode == 2
    assert "stage baseline failed (exit 2)" in result.stderr
    assert "has no train.jsonl" in result.stderr
    assert not (tmp_path / "phi2_snli" / "logs" / "train.log").exists()


def test_a_deepspeed_profile_names_the_json_it_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no accelerate_configs/ here: the packaged configs, whose YAML names its JSON
    command, _ = launch_command("recipes/phi2_snli.py", ["--profile", "zero2"], gpus=[A40] * 2)
    config = Path(command[command.index("--config_file") + 1])
    json_file = Path(command[command.index("--deepspeed_config_file") + 1])
    assert config == (ROOT / "accelerate_configs" / "zero2.yaml").resolve()
    assert json_file == (ROOT / "accelerate_configs" / "deepspeed" / "zero2.json").resolve()
    assert Path(command[command.index("--profile") - 1]) == (ROOT / "recipes" / "phi2_snli.py").resolve()
