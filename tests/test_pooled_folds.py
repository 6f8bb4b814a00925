"""benchmarks/pooled_folds.py on predictions.csv files the test writes: pooled figures, shared rows refused."""

import subprocess
import sys
from pathlib import Path

from nli_helpers import write_predictions

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pooled_folds.py"


def write_run(folder: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """rows: (premise, gold, baseline prediction, fine-tuned prediction)."""
    return write_predictions(folder, [(premise, "A hypothesis.", gold, baseline, 0.4, finetuned, 0.8)
                                      for premise, gold, baseline, finetuned in rows])


def pool(*runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, runs)], capture_output=True, text=True)


def test_rows_of_every_run_count_once_in_the_pooled_figures(tmp_path):
    # fold a: 4 rows, 3 right after fine-tuning, 1 before; fold b: 4 rows, 1 right after, 1 before
    a = write_run(tmp_path / "a", [("a0", "entailment", "neutral", "entailment"),
                                   ("a1", "neutral", "neutral", "neutral"),
                                   ("a2", "contradiction", "neutral", "contradiction"),
                                   ("a3", "entailment", "neutral", "neutral")])
    b = write_run(tmp_path / "b", [("b0", "entailment", "entailment", "entailment"),
                                   ("b1", "neutral", "entailment", "entailment"),
                                   ("b2", "contradiction", "entailment", "entailment"),
                                   ("b3", "contradiction", "entailment", "entailment")])
    result = pool(a, b)
    assert result.returncode == 0, result.stderr
    assert f"{a}: 4 rows, fine-tuned accuracy 75.0% [" in result.stdout
    assert f"{b}: 4 rows, fine-tuned accuracy 25.0% [" in result.stdout
    assert "pooled: 8 test rows of 2 runs" in result.stdout
    assert "  accuracy: baseline 25.0% [" in result.stdout  # a1 and b0
    assert "fine-tuned 50.0% [" in result.stdout and "change +25.0 points [" in result.stdout


def test_runs_that_share_test_rows_are_refused(tmp_path):
    a = write_run(tmp_path / "a", [("same", "entailment", "neutral", "entailment")])
    b = write_run(tmp_path / "b", [("same", "entailment", "neutral", "neutral")])
    result = pool(a, b)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"{b} and {a} share test rows: pool runs tested on other folds"]
