"""The embedded NLI main job (recipes/phi2_snli.py with recipes/embedded_snli.yaml, on the starter set) gives
the rows, predictions and files it gave before classification became general, on a tiny Llama in a short run.

pinned_main_job.json holds what the job wrote when the NLI trainer knew only NLI; regenerate it only on
purpose: `PYTHONPATH=src python tests/nli/test_main_job_pinned.py OUT.json` (then review the change).
"""

import json
import runpy
import sys
from pathlib import Path

import pytest

from tunelab.config import parse_recipe
from tunelab.rundir import read_csv

ROOT = Path(__file__).resolve().parents[2]
PINNED = Path(__file__).with_name("pinned_main_job.json")
SHORT = ["--train_size", "24", "--validation_size", "6", "--test_size", "12", "--per_device_train_batch_size", "4",
         "--max_steps", "3", "--logging_steps", "1", "--precision", "fp32", "--learning_rate", "5e-3"]
FILES = ("eval/test/baseline/predictions.csv", "eval/test/finetuned/predictions.csv", "eval/test/predictions.csv",
         "eval/test/baseline/metrics.json", "eval/test/finetuned/metrics.json", "eval/test/statistics.json",
         "data/test.jsonl")


def main_job_outputs(model_dir, output_dir) -> dict:
    """The files of a short main job: their names, the evaluation rows, metrics, statistics and predictions."""
    from tunelab.nli.pipeline import main

    recipe = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]
    argv = ["--config", str(ROOT / "recipes" / "embedded_snli.yaml"), "--model_name_or_path", str(model_dir),
            "--output_dir", str(output_dir), *SHORT]
    run_dir = main(parse_recipe(recipe, argv))
    outputs = {"files": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                               if p.is_file() and "checkpoints" not in p.parts)}
    for name in FILES:
        path = run_dir / name
        if path.suffix == ".csv":
            outputs[name] = read_csv(path)
        elif path.suffix == ".json":
            outputs[name] = json.loads(path.read_text(encoding="utf-8"))
        else:
            outputs[name] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return outputs


def assert_close(actual, expected, where=""):
    """Equal, except that numbers (and numbers written as text in a CSV) may differ in their last rounded digit."""
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), where
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{where}[{i}]")
    elif isinstance(expected, (int, float)) and not isinstance(expected, bool):
        assert actual == pytest.approx(expected, abs=2e-4), where
    elif isinstance(expected, str) and _number(expected) is not None and _number(actual) is not None:
        assert _number(actual) == pytest.approx(_number(expected), abs=2e-4), where
    else:
        assert actual == expected, where


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def test_main_job_gives_the_pinned_rows_predictions_and_files(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    outputs = main_job_outputs(tiny_llama_dir, tmp_path / "runs")
    assert_close(outputs, json.loads(PINNED.read_text(encoding="utf-8")))


if __name__ == "__main__":
    import tempfile

    from tunelab.tiny_models import build_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        import os

        os.environ["TUNELAB_CACHE"] = str(Path(folder) / "cache")
        model = build_tiny_model("llama", Path(folder) / "tiny-llama")
        Path(sys.argv[1]).write_text(json.dumps(main_job_outputs(model, Path(folder) / "runs"), indent=1) + "\n",
                                     encoding="utf-8")
