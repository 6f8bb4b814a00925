"""The classification recipe end to end on a tiny Llama: a 2-label and a 5-label task, with label words and with a
classifier head, and the outputs that must be right for N classes."""

import json
import runpy
from pathlib import Path

import pytest

from tunelab.config import parse_recipe
from tunelab.nli.pipeline import main
from tunelab.rundir import read_csv

ROOT = Path(__file__).resolve().parents[2]
RECIPE = runpy.run_path(str(ROOT / "recipes" / "classify.py"))["RECIPE"]
SUBJECTS = ("The lamp", "My order", "This phone", "The hotel", "Our dinner", "The film", "A ticket", "The bike",
            "Her essay", "The song", "This chair", "The visit")
TASKS = {  # labels: the cue word in each text that gives its label away
    "sentiment": {"negative": "awful", "positive": "lovely"},
    "colours": {"red": "tomato", "green": "grass", "blue": "sky", "black": "coal", "white": "snow"},
}


def write_task(folder: Path, cues: dict[str, str]) -> Path:
    """train/validation/test.csv of `comment` and `kind`; every text is in one split only."""
    labels = list(cues)
    folder.mkdir()
    for offset, (split, size) in enumerate((("train", 80), ("validation", 20), ("test", 40))):
        lines = ["comment,kind"]
        for i in range(size):
            label = labels[i % len(labels)]
            lines.append(f'"{SUBJECTS[(i // len(labels)) % len(SUBJECTS)]} looks like {cues[label]}, item {offset}-{i}.",'
                         f"{label}")
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def run_task(task: str, head: str, model_dir: Path, tmp_path: Path) -> Path:
    labels = list(TASKS[task])
    argv = ["--model_name_or_path", str(model_dir), "--dataset", str(write_task(tmp_path / "data", TASKS[task])),
            "--text_columns", "comment", "--label_column", "kind", "--labels", ",".join(labels), "--head", head,
            "--output_dir", str(tmp_path / "runs"), "--load_in_4bit", "false", "--optim", "adamw_torch",
            "--lora_target_modules", "q_proj,v_proj", "--learning_rate", "5e-3", "--num_train_epochs", "4",
            "--precision", "fp32", "--logging_steps", "5", "--save_strategy", "no"]
    return main(parse_recipe(RECIPE, argv))


@pytest.mark.parametrize("task, head", [("sentiment", "label_words"), ("colours", "classifier"),
                                        ("sentiment", "classifier"), ("colours", "label_words")])
def test_learns_a_task_of_any_number_of_labels(task, head, tiny_llama_dir, tmp_path):
    run_dir = run_task(task, head, tiny_llama_dir, tmp_path)
    labels = list(TASKS[task])
    baseline, finetuned = (json.loads((run_dir / f"eval/test/{m}/metrics.json").read_text())
                           for m in ("baseline", "finetuned"))
    assert finetuned["labels"] == labels and len(finetuned["confusion_matrix"]) == len(labels)
    assert finetuned["accuracy"] >= 0.9 > baseline["accuracy"], (baseline["accuracy"], finetuned["accuracy"])
    rows = read_csv(run_dir / "eval/test/predictions.csv")
    assert list(rows[0]) == ["comment", "gold", "baseline_pred", "baseline_prob", "finetuned_pred", "finetuned_prob"]
    assert list(read_csv(run_dir / "eval/test/finetuned/predictions.csv")[0]) == \
        ["comment", "gold", "pred", *(f"p_{label}" for label in labels)]
    statistics = json.loads((run_dir / "eval/test/statistics.json").read_text())
    assert statistics["labels"] == labels and statistics["rows"] == 40
    report = (run_dir / "report/report.md").read_text()
    assert f"Calibration of the {len(labels)}-way probabilities" in report
    assert all(f"| {label} |" in report for label in labels), "a per-class row for every label"
    assert (run_dir / "report/report.pdf").is_file() and (run_dir / "comparison/statistics.json").is_file()
    if len(labels) == 2:
        positive = finetuned["positive_class"]
        assert positive["label"] == "positive" and positive["roc_auc"] >= 0.9
        assert positive["f1"] == finetuned["per_class"]["positive"]["f1"]
        assert "Positive class 'positive'" in report and "ROC-AUC" in report
    else:
        assert "positive_class" not in finetuned and "ROC-AUC" not in report
