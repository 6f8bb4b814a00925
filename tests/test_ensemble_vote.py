"""benchmarks/ensemble_vote.py on predictions.csv files the test writes: majority, tie-break, mismatched rows."""

import subprocess
import sys
from pathlib import Path

from nli_helpers import write_predictions

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ensemble_vote.py"
GOLD = ["entailment", "neutral", "contradiction", "entailment"]


def write_run(folder: Path, predictions: list[tuple[str, float]], gold: list[str] = GOLD) -> Path:
    return write_predictions(folder, [(f"Premise {i}.", f"Hypothesis {i}.", label, "neutral", 0.4, pred, prob)
                                      for i, (label, (pred, prob)) in enumerate(zip(gold, predictions))])


def vote(*runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, runs)], capture_output=True, text=True)


def test_the_majority_wins_and_a_three_way_split_goes_to_the_most_confident_run(tmp_path):
    a = write_run(tmp_path / "a", [("entailment", .9), ("neutral", .6), ("entailment", .5), ("neutral", .9)])
    b = write_run(tmp_path / "b", [("entailment", .8), ("contradiction", .5), ("contradiction", .9), ("neutral", .8)])
    c = write_run(tmp_path / "c", [("neutral", .7), ("neutral", .9), ("neutral", .4), ("entailment", .7)])
    # votes: entailment (2 of 3), neutral (2 of 3), contradiction (a 3-way split: b is the most confident),
    # neutral (2 of 3, wrong): 3 of 4 right; each run alone gets 2 of 4 (a), 2 (b) and 2 (c)
    result = vote(a, b, c)
    assert result.returncode == 0, result.stderr
    assert "4 test rows, 3 runs" in result.stdout
    assert "vote: 75.0%" in result.stdout
    assert result.stdout.count(": 50.0% [") == 3


def test_runs_scored_on_other_rows_are_refused(tmp_path):
    a = write_run(tmp_path / "a", [("entailment", .9)] * 4)
    b = write_run(tmp_path / "b", [("entailment", .9)] * 4, gold=GOLD[::-1])
    result = vote(a, b)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "the runs were not evaluated on the same test rows in the same order: use one --dataset"]
