"""Majority vote of several NLI runs' fine-tuned predictions on the same rows, against each run alone.

    python benchmarks/ensemble_vote.py RUN_A RUN_B RUN_C [--split test]

Reads RUN/eval/<split>/predictions.csv of each run (the rows must be the same, in the same order: the
same --dataset). Each row gets the label most runs predicted; when every run predicts another label, the
most confident run's. Prints accuracy and balanced accuracy with 95% intervals (paired bootstrap,
tunelab.stats) for the vote and each run, and McNemar's test of the vote against each run. A measurement
of what an ensemble would gain, not a mode of tunelab: it trains nothing.
"""

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from tunelab.errors import TunelabError
from tunelab.nli.config import NLI_LABELS
from tunelab.report.compare import interval_text
from tunelab.report.nli import split_predictions
from tunelab.stats import mcnemar, paired_intervals

ROW = ("premise", "hypothesis", "gold")


def vote(rows: list[dict]) -> str:
    """One row's label from the runs' (pred, prob) rows: the majority, else the most confident run's."""
    counts = Counter(row["finetuned_pred"] for row in rows).most_common()
    if len(counts) == 1 or counts[0][1] > counts[1][1]:
        return counts[0][0]
    return max(rows, key=lambda row: float(row["finetuned_prob"]))["finetuned_pred"]


def main(runs: list[str], split: str) -> None:
    if len(runs) < 2:
        raise SystemExit("give at least two run folders to vote")
    predictions = [split_predictions(Path(run), split) for run in runs]
    keys = [[tuple(row[c] for c in ROW) for row in rows] for rows in predictions]
    if any(k != keys[0] for k in keys[1:]):
        raise SystemExit(f"the runs were not evaluated on the same {split} rows in the same order: use one --dataset")
    code = {label: i for i, label in enumerate(NLI_LABELS)}
    gold = np.array([code[row["gold"]] for row in predictions[0]])
    voted = np.array([code[vote(list(rows))] for rows in zip(*predictions)])
    print(f"{len(gold)} {split} rows, {len(runs)} runs")
    for run, rows in zip(runs, predictions):
        alone = np.array([code[row["finetuned_pred"]] for row in rows])
        intervals = paired_intervals(gold, alone, voted, len(NLI_LABELS))
        test = mcnemar(int(((voted == gold) & (alone != gold)).sum()), int(((voted != gold) & (alone == gold)).sum()))
        print(f"{run}: {interval_text(intervals['accuracy']['baseline'])} accuracy, balanced "
              f"{interval_text(intervals['balanced_accuracy']['baseline'])}; vote - run: "
              f"{interval_text(intervals['accuracy']['change'], change=True)} (McNemar p = {test['p_value']:.2f}, "
              f"{test['corrected']} corrected, {test['regressed']} regressed)")
    # the vote's own figures are the same in every pairing (the same resampled rows): take the last one's
    print(f"vote: {interval_text(intervals['accuracy']['finetuned'])} accuracy, balanced "
          f"{interval_text(intervals['balanced_accuracy']['finetuned'])}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders evaluated on the same rows")
    parser.add_argument("--split", default="test", help="the evaluated split to vote on")
    args = parser.parse_args()
    try:
        main(args.runs, args.split)
    except TunelabError as error:
        raise SystemExit(str(error)) from None
