"""The phi2_snli recipe end to end on a tiny Phi: outputs, report, reruns, resume, the CLI."""

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nli_helpers import SignalAtStep, tiny_nli_argv
from tunelab.config import parse_recipe
from tunelab.errors import TrainingInterrupted, TunelabError
from tunelab.nli.pipeline import main
from tunelab.rundir import record_start

ROOT = Path(__file__).resolve().parents[2]
RECIPE = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]


def test_recipe_writes_every_output(tiny_phi_dir, snli_dir, tmp_path):
    run_dir = main(parse_recipe(RECIPE, tiny_nli_argv(tiny_phi_dir, snli_dir, tmp_path)))
    assert run_dir == tmp_path / "phi2_snli"
    for name in ("config.yaml", "run_info.json", "train_log.json", "adapter/adapter_model.safetensors",
                 "eval/test/baseline/metrics.json", "eval/test/finetuned/metrics.json",
                 "eval/test/predictions.csv", "eval/test/finetuned/predictions.csv", "eval/test/statistics.json",
                 "report/report.md", "report/report.html", "report/report.pdf"):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-16", "checkpoint-24"]

    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["train_rows"] == 60 and info["eval_rows"] == {"test": 30}, "label -1 rows are dropped"
    assert 0 < info["parameters"]["trainable"] < info["parameters"]["total"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["started"]), "ISO 8601, UTC"
    finetuned = json.loads((run_dir / "eval/test/finetuned/metrics.json").read_text())
    baseline = json.loads((run_dir / "eval/test/baseline/metrics.json").read_text())
    assert finetuned["n"] == 30 and finetuned["accuracy"] > baseline["accuracy"]

    report = (run_dir / "report/report.md").read_text()
    assert f"{info['parameters']['trainable']:,}" in report
    assert f"{100 * finetuned['accuracy']:.1f}%" in report
    assert f"started {info['started']};" in report


def test_a_run_with_compiled_layers_saves_the_adapter_an_uncompiled_run_saves(tiny_phi_dir, snli_dir, tmp_path):
    keys = {}
    for compiled in ("false", "true"):
        argv = tiny_nli_argv(tiny_phi_dir, snli_dir, tmp_path / compiled, "--num_train_epochs", "1",
                             "--torch_compile", compiled)
        run_dir = main(parse_recipe(RECIPE, argv))
        keys[compiled] = sorted(load_file(run_dir / "adapter/adapter_model.safetensors"))
        assert (run_dir / "report/report.md").is_file()
    assert keys["true"] == keys["false"] and keys["true"]


def test_finished_run_is_not_overwritten(tiny_phi_dir, snli_dir, tmp_path):
    argv = tiny_nli_argv(tiny_phi_dir, snli_dir, tmp_path, "--num_train_epochs", "1")
    run_dir = main(parse_recipe(RECIPE, argv))
    before = (run_dir / "run_info.json").read_text()
    with pytest.raises(TunelabError, match="holds a finished run.*--overwrite"):
        main(parse_recipe(RECIPE, argv))
    assert (run_dir / "run_info.json").read_text() == before
    main(parse_recipe(RECIPE, [*argv, "--overwrite"]))
    assert (run_dir / "run_info.json").read_text() != before


def test_interrupted_run_resumes_from_last_checkpoint(tiny_phi_dir, snli_dir, tmp_path, capsys):
    """Stopped mid-run (SIGTERM after step 10 of 24, in the second epoch; the run finishes the step it is in and
    saves it), the same command trains only the steps left."""
    argv = tiny_nli_argv(tiny_phi_dir, snli_dir, tmp_path)
    with pytest.raises(TrainingInterrupted, match="Interrupted by SIGTERM at step 11: checkpoint saved"):
        main(parse_recipe(RECIPE, argv), callbacks=[SignalAtStep(10)])
    run_dir = tmp_path / "phi2_snli"
    assert not (run_dir / "run_info.json").exists(), "not finished"
    started = json.loads((run_dir / "progress.json").read_text())["started"]
    assert json.loads((run_dir / "checkpoints/checkpoint-11/trainer_state.json").read_text())["global_step"] == 11
    capsys.readouterr()

    main(parse_recipe(RECIPE, argv))
    out = capsys.readouterr().out
    assert "Resuming phi2_snli" in out and f"Resuming training from {run_dir}/checkpoints/checkpoint-11" in out
    assert out.count("{'loss'") == 7, "the restart trains steps 12 to 24 only (a loss logged every 2 steps)"
    log = json.loads((run_dir / "train_log.json").read_text())
    assert [entry["step"] for entry in log if "loss" in entry] == list(range(2, 25, 2)), "no step lost or repeated"
    assert json.loads((run_dir / "run_info.json").read_text())["started"] == started, \
        "a resumed run keeps its first start"


def test_record_start_keeps_the_first_start(tmp_path):
    path = tmp_path / "progress.json"
    record_start(path)
    first = json.loads(path.read_text())
    assert first["timings_s"] == {} and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["started"])
    path.write_text(json.dumps({"timings_s": {"train": 1.0}, "started": "2000-01-01T00:00:00Z"}))
    record_start(path)
    assert json.loads(path.read_text()) == {"timings_s": {"train": 1.0}, "started": "2000-01-01T00:00:00Z"}


def run_cli(*args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env_extra or {})}
    return subprocess.run([*args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_recipe_under_accelerate_launch(tiny_phi_dir, snli_dir, tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    result = run_cli(str(accelerate), "launch", "--config_file", "accelerate_configs/cpu.yaml",
                     "recipes/phi2_snli.py", *tiny_nli_argv(tiny_phi_dir, snli_dir, tmp_path, "--num_train_epochs", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[tunelab] Report: " in result.stdout
    assert (tmp_path / "phi2_snli" / "report" / "report.html").is_file()


@pytest.mark.parametrize("args, message", [
    (["--learning_rat", "1e-4"], "unknown setting 'learning_rat' in the command line: did you mean 'learning_rate'?"),
    (["--model_name_or_path", "nobody/no-such-model", "--dataset", "DATA"], "cannot load 'nobody/no-such-model'"),
    (["--dataset", "/no/such/folder.jsonl"], "dataset path /no/such/folder.jsonl does not exist"),
])
def test_errors_are_one_line_without_traceback(args, message, snli_dir, tmp_path):
    args = [str(snli_dir) if a == "DATA" else a for a in args]
    result = run_cli(sys.executable, "recipes/phi2_snli.py", "--output_dir", str(tmp_path), *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"tunelab: error: {message}" in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("tunelab: error")]
    assert len(error_lines) == 1


@pytest.mark.parametrize("metric", ["loss", "accuracy"])
def test_metric_for_best_model_trains_on_then_keeps_the_best_checkpoint(metric, tiny_phi_dir, snli_dir, tmp_path,
                                                                        capsys):
    argv = tiny_nli_argv(tiny_phi_dir, snli_dir, tmp_path, "--load_in_4bit", "false", "--metric_for_best_model",
                         metric)
    run_dir = main(parse_recipe(RECIPE, argv))
    history = [entry for entry in json.loads((run_dir / "train_log.json").read_text()) if f"eval_{metric}" in entry]
    pick = min if metric == "loss" else max
    best = next(entry for entry in history if entry[f"eval_{metric}"] == pick(e[f"eval_{metric}"] for e in history))
    best_dir = run_dir / "checkpoints" / f"checkpoint-{best['step']}"
    assert f"Best checkpoint by validation {metric} ({best[f'eval_{metric}']:.4f}): {best_dir}" in capsys.readouterr().out
    saved = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    at_best = load_file(str(best_dir / "adapter_model.safetensors"))
    assert saved.keys() == at_best.keys() and all(torch.equal(saved[k], at_best[k]) for k in saved)
    assert (f"adapter from step {best['step']:,}, the checkpoint with the best validation {metric} "
            f"({best[f'eval_{metric}']:.4f}), not the last") in (run_dir / "report" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--metric_for_best_model", "f1"], "metric_for_best_model must be loss or accuracy, not 'f1'"),
    (["--metric_for_best_model", "loss", "--save_strategy", "no"], "set --save_strategy epoch (or steps)"),
])
def test_metric_for_best_model_settings_are_checked(args, message):
    with pytest.raises(TunelabError, match=re.escape(message)):
        parse_recipe(RECIPE, args)


def test_stages_run_separately(tiny_phi_dir, snli_dir, tmp_path):
    argv = tiny_nli_argv(tiny_phi_dir, snli_dir, tmp_path, "--num_train_epochs", "1", "--load_in_4bit", "false")
    with pytest.raises(TunelabError, match="run the train stage first"):
        main(parse_recipe(RECIPE, [*argv, "--stages", "evaluate"]))
    for stages in ("baseline", "train", "evaluate,report"):
        run_dir = main(parse_recipe(RECIPE, [*argv, "--stages", stages]))
        if stages == "baseline":
            started = json.loads((run_dir / "progress.json").read_text())["started"]
    progress = json.loads((run_dir / "run_info.json").read_text())
    assert {"load", "baseline_eval", "train", "finetuned_eval", "total"} <= set(progress["timings_s"])
    assert progress["parameters"]["trainable"] > 0 and progress["train_rows"] == 60
    assert progress["started"] == started, "the first stage's start"
    assert (run_dir / "report" / "report.md").exists()


def test_classifier_head_run_scores_a_zero_shot_baseline_and_its_saved_head(tiny_phi_dir, snli_dir, tmp_path):
    """--head classifier through the whole recipe: the baseline is the label words' zero-shot score (the same as
    a label-word run's), and the adapter folder holds the trained head, which reloads to the run's predictions."""
    import csv

    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tunelab.models import load_tokenizer
    from tunelab.nli.data import tokenize_rows
    from tunelab.nli.trainer import NLICollator, label_scores

    argv = tiny_nli_argv(tiny_phi_dir, snli_dir, tmp_path, "--num_train_epochs", "2", "--load_in_4bit", "false",
                          "--lora_target_modules", "q_proj,k_proj,v_proj,dense")
    words_dir = main(parse_recipe(RECIPE, [*argv, "--run_name", "words", "--stages", "baseline"]))
    run_dir = main(parse_recipe(RECIPE, [*argv, "--run_name", "head", "--head", "classifier"]))
    baseline = (run_dir / "eval/test/baseline/predictions.csv").read_text()
    assert baseline == (words_dir / "eval/test/baseline/predictions.csv").read_text()
    assert "zero-shot" in (run_dir / "report/report.md").read_text()
    assert json.loads((run_dir / "run_info.json").read_text())["head"] == "classifier"

    with open(run_dir / "eval/test/finetuned/predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    recipe = parse_recipe(RECIPE, argv)
    tokenizer = load_tokenizer(recipe)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_phi_dir, num_labels=3)
    base.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    features, _ = tokenize_rows([{**r, "label": r["gold"]} for r in rows], tokenizer, recipe.max_length, 1)
    with torch.no_grad():
        logits = label_scores(model, NLICollator(tokenizer.pad_token_id, [], "classifier")(list(features)), [],
                              "classifier")
    saved = np.array([[float(r[f"p_{name}"]) for name in ("entailment", "neutral", "contradiction")] for r in rows])
    np.testing.assert_allclose(logits.softmax(-1).numpy(), saved, atol=2e-4)


def test_shipped_embedded_config_adds_the_starter_rows_to_other_data_and_says_so(tiny_llama_dir, snli_dir, tmp_path,
                                                                                 capsys):
    """recipes/embedded_snli.yaml's `extra_train_dataset: starter`: with another --dataset, training gets that
    dataset's 60 train rows and the starter set's 480, and the run says where they came from."""
    argv = ["--config", str(ROOT / "recipes" / "embedded_snli.yaml"), "--model_name_or_path", str(tiny_llama_dir),
            "--dataset", str(snli_dir), "--output_dir", str(tmp_path), "--stages", "train", "--max_steps", "1",
            "--precision", "fp32"]
    recipe = parse_recipe(RECIPE, argv)
    assert recipe.extra_train_dataset == "starter"
    run_dir = main(recipe)
    assert f"[tunelab] train: 60 rows of {snli_dir} and 480 of starter (extra_train_dataset)\n" in \
        capsys.readouterr().out
    assert json.loads((run_dir / "progress.json").read_text())["train_rows"] == 60 + 480
