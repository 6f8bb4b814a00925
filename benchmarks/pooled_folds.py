"""Accuracy over several folds' test rows pooled into one set: runs of the same settings, each tested on
other rows (the folds of benchmarks/real_snli_split.py), scored as one larger test set.

    python benchmarks/pooled_folds.py RUN_F9 RUN_F10 RUN_F11 [--split test]   # one run: its own figures

Reads RUN/eval/<split>/predictions.csv of each run; a row (premise, hypothesis) in two runs' test sets is
refused, since pooled rows must be distinct. Prints each run's accuracy and the pooled accuracy, balanced
accuracy and macro-F1, before and after fine-tuning, with 95% intervals (paired bootstrap, tunelab.stats).
Each model sees only its own fold's rows, so the pooled figure is the accuracy of the recipe (its settings
trained on such data), not of one model. A measurement, not a mode of tunelab: it trains nothing.
"""

import argparse
from pathlib import Path

import numpy as np

from tunelab.errors import TunelabError
from tunelab.metrics import HEADLINE_METRICS, METRIC_NAMES
from tunelab.nli.config import NLI_LABELS
from tunelab.report.compare import interval_text
from tunelab.report.nli import split_predictions
from tunelab.stats import paired_intervals


def codes(rows: list[dict], column: str) -> np.ndarray:
    code = {label: i for i, label in enumerate(NLI_LABELS)}
    return np.array([code[row[column]] for row in rows])


def scores(rows: list[dict]) -> dict:
    return paired_intervals(codes(rows, "gold"), codes(rows, "baseline_pred"), codes(rows, "finetuned_pred"),
                            len(NLI_LABELS))


def main(runs: list[str], split: str) -> None:
    folds = {run: split_predictions(Path(run), split) for run in runs}
    seen: dict[tuple[str, str], str] = {}
    for run, rows in folds.items():
        for row in rows:
            key = (row["premise"], row["hypothesis"])
            if key in seen:
                raise SystemExit(f"{run} and {seen[key]} share {split} rows: pool runs tested on other folds")
            seen[key] = run
    for run, rows in folds.items():
        print(f"{run}: {len(rows)} rows, fine-tuned accuracy {interval_text(scores(rows)['accuracy']['finetuned'])}")
    pooled = [row for rows in folds.values() for row in rows]
    result = scores(pooled)
    print(f"pooled: {len(pooled)} {split} rows of {len(runs)} run{'s' if len(runs) > 1 else ''}")
    for metric in HEADLINE_METRICS:
        print(f"  {METRIC_NAMES[metric]}: baseline {interval_text(result[metric]['baseline'])}, fine-tuned "
              f"{interval_text(result[metric]['finetuned'])}, change "
              f"{interval_text(result[metric]['change'], change=True)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders of the same settings, each tested on other rows")
    parser.add_argument("--split", default="test", help="the evaluated split to pool")
    args = parser.parse_args()
    try:
        main(args.runs, args.split)
    except TunelabError as error:
        raise SystemExit(str(error)) from None
