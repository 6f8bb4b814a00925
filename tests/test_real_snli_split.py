"""benchmarks/real_snli_split.py, on SNLI-shaped rows the test writes: folds, disjoint premises, reversed pairs."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_snli_split.py"
LABELS = ("entailment", "neutral", "contradiction")


def snli_rows(premises: int) -> list[dict]:
    """Three hypotheses per premise, one per label; every 50th row has no gold label ("-")."""
    rows = []
    for p in range(premises):
        for h, label in enumerate(LABELS):
            gold = "-" if (3 * p + h) % 50 == 7 else label
            rows.append({"sentence1": f"Premise {p}.", "sentence2": f"Hypothesis {p}.{h}.", "gold_label": gold,
                         "annotator_labels": [label] * 4 + ["neutral"], "pairID": f"{p}.{h}"})
    return rows


def write_source(folder: Path) -> Path:
    """1,200 rows over 400 premises, 24 of them without a gold label: 1,176 to split."""
    folder.mkdir(exist_ok=True)
    source = folder / "snli.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in snli_rows(400)), encoding="utf-8")
    return source


def split(tmp_path, *options: str) -> dict[str, list[dict]]:
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(SCRIPT), str(write_source(tmp_path)), str(out), *options], check=True,
                   capture_output=True)
    return {name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
            for name in ("train", "validation", "test")}


def premises(rows: list[dict]) -> set[str]:
    return {row["sentence1"] for row in rows}


def test_folds_test_on_disjoint_rows_and_never_share_a_premise(tmp_path):
    fold0, fold1 = split(tmp_path / "0"), split(tmp_path / "1", "--fold", "1")
    for parts in (fold0, fold1):
        assert not premises(parts["train"]) & premises(parts["test"])
        assert not premises(parts["validation"]) & (premises(parts["train"]) | premises(parts["test"]))
        assert 270 <= len(parts["test"]) <= 272 and 100 <= len(parts["validation"]) <= 102
        every_row = [(row["sentence1"], row["sentence2"]) for rows in parts.values() for row in rows]
        assert len(every_row) == len(set(every_row)) == 1200 - 24  # every gold-labelled row, once
        assert all(row["gold_label"] in LABELS for rows in parts.values() for row in rows)
    assert not premises(fold0["test"]) & premises(fold1["test"])


def test_add_reversed_swaps_contradictions_and_entailments_of_the_train_rows_only(tmp_path):
    plain, reversed_ = split(tmp_path / "plain"), split(tmp_path / "reversed", "--add_reversed")
    assert reversed_["validation"] == plain["validation"] and reversed_["test"] == plain["test"]
    assert reversed_["train"][:len(plain["train"])] == plain["train"]
    extra = reversed_["train"][len(plain["train"]):]
    swappable = [row for row in plain["train"] if row["gold_label"] != "neutral"]
    assert len(extra) == len(swappable)
    for row, swapped in zip(swappable, extra):
        expected = {"contradiction": "contradiction", "entailment": "neutral"}[row["gold_label"]]
        assert (swapped["sentence1"], swapped["sentence2"]) == (row["sentence2"], row["sentence1"])
        assert swapped["gold_label"] == expected and swapped["annotator_labels"] == [expected]


def test_a_fold_past_the_last_block_names_the_range(tmp_path):
    command = [sys.executable, str(SCRIPT), str(write_source(tmp_path)), str(tmp_path / "out"), "--fold", "9"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0 and "--fold must be from 0 to 4" in result.stderr
    assert not (tmp_path / "out").exists()


def test_smaller_blocks_leave_more_rows_to_train_on(tmp_path):
    parts = split(tmp_path, "--test_rows", "100", "--validation_rows", "50", "--fold", "3")
    assert 100 <= len(parts["test"]) <= 102 and 50 <= len(parts["validation"]) <= 52
    assert len(parts["train"]) == 1200 - 24 - len(parts["test"]) - len(parts["validation"])
    assert not premises(parts["train"]) & (premises(parts["test"]) | premises(parts["validation"]))
    fold4 = split(tmp_path / "4", "--test_rows", "100", "--validation_rows", "50", "--fold", "4")
    assert not premises(fold4["test"]) & premises(parts["test"])


def test_a_block_of_no_rows_is_refused(tmp_path):
    command = [sys.executable, str(SCRIPT), str(write_source(tmp_path)), str(tmp_path / "out"), "--test_rows", "0"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0 and "--test_rows and --validation_rows must be at least 1" in result.stderr
