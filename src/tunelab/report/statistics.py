"""The statistics of a baseline/fine-tuned pair of evaluations (tunelab.stats), read from and written to files.

Each model's predictions.csv (the text columns, e.g. premise and hypothesis, then gold, pred and p_<label> per
label) holds what they
need. A run's report stage writes them to RUN_DIR/eval/<split>/statistics.json; `tunelab compare`
writes them, per split and pooled, to its statistics.json. When RUN_DIR/calibration/<model>/predictions.csv
holds the validation split's predictions (the recipe's `temperature_scaling`), a temperature fitted
there is reported beside the raw calibration figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tunelab.rundir import MODELS, atomic_write_json, read_csv
from tunelab.stats import paired_statistics

CALIBRATION_DIR = "calibration"


def model_rows(folder: Path) -> list[dict] | None:
    """folder/predictions.csv when it has every column the statistics need (older runs may lack the probabilities)."""
    path = folder / "predictions.csv"
    if not path.is_file():
        return None
    rows = read_csv(path)
    labels = probability_labels(rows)
    if not rows or not labels or not all(column in rows[0] for column in ("gold", "pred")):
        return None
    return rows


def row_key_columns(row: dict) -> list[str]:
    """The columns that identify a predictions.csv row: the text columns before `gold`, and `gold`."""
    columns = list(row)
    return columns[:columns.index("gold") + 1] if "gold" in columns else []


def row_keys(rows: list[dict]) -> list[tuple[str, ...]]:
    columns = row_key_columns(rows[0]) if rows else []
    return [tuple(row[column] for column in columns) for row in rows]


def probability_labels(rows: list[dict]) -> list[str]:
    return [column.removeprefix("p_") for column in (rows[0] if rows else {}) if column.startswith("p_")]


def as_arrays(rows: list[dict], labels: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gold codes, predicted codes and the (rows, labels) probabilities (renormalized: saved rounded)."""
    code = {label: i for i, label in enumerate(labels)}
    gold = np.array([code[row["gold"]] for row in rows])
    predicted = np.array([code[row["pred"]] for row in rows])
    probabilities = np.array([[float(row[f"p_{label}"]) for label in labels] for row in rows])
    return gold, predicted, probabilities / probabilities.sum(axis=1, keepdims=True)


def pair_statistics(pairs: list[tuple[Path, Path]], validation: dict[str, Path] | None = None) -> dict | None:
    """Statistics over the rows of one or more (baseline folder, fine-tuned folder) pairs pooled; None when a
    predictions.csv is missing or lacks the probabilities. Rows are paired by their text columns and gold."""
    baseline, finetuned = [], []
    for before, after in pairs:
        rows = model_rows(before), model_rows(after)
        if rows[0] is None or rows[1] is None:
            return None
        if row_keys(rows[0]) != row_keys(rows[1]):
            rows = tuple(sorted(side, key=lambda r: tuple(r[k] for k in row_key_columns(r))) for side in rows)
        baseline += rows[0]
        finetuned += rows[1]
    labels = probability_labels(baseline)
    (gold, before, p_before), (_, after, p_after) = as_arrays(baseline, labels), as_arrays(finetuned, labels)
    calibration = {}
    for model, folder in (validation or {}).items():
        rows = model_rows(folder)
        if rows is not None:
            calibration[model] = as_arrays(rows, labels)[0::2]
    return {"labels": labels, **paired_statistics(gold, {"baseline": before, "finetuned": after},
                                                  {"baseline": p_before, "finetuned": p_after}, calibration)}


def validation_folders(run_dir: Path) -> dict[str, Path]:
    return {model: run_dir / CALIBRATION_DIR / model for model in MODELS
            if (run_dir / CALIBRATION_DIR / model / "predictions.csv").is_file()}


def split_statistics(split_dir: Path) -> dict | None:
    """Computed from the split's predictions (so never older than them), else RUN_DIR/eval/<split>/statistics.json."""
    computed = pair_statistics([(split_dir / "baseline", split_dir / "finetuned")],
                               validation_folders(split_dir.parent.parent))
    path = split_dir / "statistics.json"
    if computed is None and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return computed


def write_run_statistics(run_dir: Path, splits: list[str]) -> None:
    """RUN_DIR/eval/<split>/statistics.json for every split whose predictions carry probabilities."""
    for split in splits:
        folder = run_dir / "eval" / split
        statistics = pair_statistics([(folder / "baseline", folder / "finetuned")], validation_folders(run_dir))
        if statistics is not None:
            atomic_write_json(folder / "statistics.json", statistics)
