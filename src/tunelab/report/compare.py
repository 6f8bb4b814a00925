"""Compare two evaluations of the same rows, split by split: a baseline and a fine-tuned model.

`compare(BASELINE, FINETUNED, out)` (the `tunelab compare` command) and `write_run_comparison`
(the report stage of every run, into RUN_DIR/comparison/) write:

    comparison.csv, comparison.md   the side-by-side table: per split (and all splits pooled, when
                                    there are several) and metric, both models' values and the
                                    absolute and relative change
    improvement.json                the same figures as data
    comparison.png                  both models' headline metrics, one panel per split
    baseline_results.json, finetuned_results.json
                                    each model's metrics per split and pooled over all splits
    statistics.json                 per split and pooled: 95% intervals of each metric and of its change
                                    (paired bootstrap), McNemar's exact test, calibration (tunelab.stats);
                                    the intervals and p-values also go into comparison.csv and .md

An evaluation is one model's metrics.json and predictions.csv per split, found in any of:
- a folder holding metrics.json: one split, named after the folder (or after its parent when the
  folder is called baseline or finetuned, as in RUN_DIR/eval/<split>/finetuned);
- a folder of <split>/metrics.json folders: one model on several splits;
- a run directory, its eval/ folder or one eval/<split>/ folder: the baseline model when given
  first, the fine-tuned model when given second (`tunelab compare RUN_DIR RUN_DIR`).
Both sides must cover the same splits and, split by split, the same rows (premise, hypothesis and
gold label, in any order); anything else is refused, since the numbers would not be comparable.
Pooled ("all splits") metrics come from the summed confusion matrices.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tunelab.errors import TunelabError
from tunelab.metrics import HEADLINE_METRICS, METRIC_NAMES, classification_metrics
from tunelab.report.common import MODEL_LABELS, pct, points, read_metrics
from tunelab.report.figures import confusion_axes, metrics_bars, new_figure
from tunelab.report.render import to_markdown
from tunelab.report.statistics import pair_statistics, row_keys, validation_folders, write_run_statistics
from tunelab.rundir import atomic_write, atomic_write_text

COMBINED = "all splits"
CSV_HEADER = ["split", "rows", "metric", "baseline", "finetuned", "absolute_change", "relative_change",
              "change_low", "change_high", "mcnemar_p"]
INTERVAL_HEADER = ["split", "rows", "metric", "baseline", "fine-tuned", "change", "McNemar p"]
MARKDOWN_HEADER = ["split", "rows", "metric", "baseline", "fine-tuned", "change", "relative change"]

Pairs = dict[str, tuple[dict, dict]]  # split -> (baseline metrics, fine-tuned metrics)


# ---------------------------------------------------------------- entry points


def compare(baseline: str | Path, finetuned: str | Path, out: str | Path | None = None) -> Path:
    """Compare two evaluation directories (see the module doc); returns the output folder.

    Without `out`, the comparison goes to FINETUNED/comparison when FINETUNED is a run
    directory, otherwise to ./comparison; a folder already there is never replaced (a run's own
    comparison/ is what its report shows): then pass `out`.
    """
    before, after = find_evaluation(baseline, "baseline"), find_evaluation(finetuned, "finetuned")
    if out is not None:
        return write_comparison(before, after, Path(out))
    out = Path(finetuned) / "comparison" if (Path(finetuned) / "eval").is_dir() else Path("comparison")
    return write_comparison(before, after, out, keep_existing=True)


def write_run_comparison(run_dir: Path, splits: list[str]) -> Path:
    """A run's report stage: each model's confusion.png and eval/<split>/statistics.json per split, then
    RUN_DIR/comparison/."""
    folders = {role: {split: run_dir / "eval" / split / role for split in splits} for role in MODEL_LABELS}
    for role, by_split in folders.items():
        for split, folder in by_split.items():
            write_confusion_png(folder, f"{split}: {MODEL_LABELS[role]}")
    write_run_statistics(run_dir, splits)
    return write_comparison(folders["baseline"], folders["finetuned"], run_dir / "comparison",
                            validation_folders(run_dir))


def write_comparison(baseline: dict[str, Path], finetuned: dict[str, Path], out: Path,
                     validation: dict[str, Path] | None = None, keep_existing: bool = False) -> Path:
    """Check both evaluations hold the same rows, then write the comparison files into `out` (refused when
    `keep_existing` and `out` exists)."""
    pairs: Pairs = {}
    folders = pair_splits(baseline, finetuned)
    for split, (before, after) in folders.items():
        check_same_rows(split, before, after)
        pairs[split] = (read_metrics(before / "metrics.json"), read_metrics(after / "metrics.json"))
    if keep_existing and out.exists():
        raise TunelabError(f"{out} already exists (a run's own comparison, which its report shows, or an earlier "
                           "one): choose where to write this one with --out DIR")
    table = with_combined(pairs)
    statistics = comparison_statistics(folders, validation)
    out.mkdir(parents=True, exist_ok=True)
    for index, (role, folders) in enumerate((("baseline", baseline), ("finetuned", finetuned))):
        results = {"model": role, "source": {split: str(folder) for split, folder in folders.items()},
                   "splits": {split: metrics[index] for split, metrics in pairs.items()}}
        if COMBINED in table:
            results["combined"] = table[COMBINED][index]
        atomic_write_text(out / f"{role}_results.json", json.dumps(results, indent=2) + "\n")
    improvement = {name: changes(*metrics) for name, metrics in table.items()}
    atomic_write_text(out / "improvement.json", json.dumps(improvement, indent=2) + "\n")
    atomic_write_text(out / "comparison.csv", _csv(improvement, statistics))
    header, rows = comparison_table(table)
    blocks = [("table", header, rows)]
    if statistics:
        atomic_write_text(out / "statistics.json", json.dumps(statistics, indent=2) + "\n")
        blocks += interval_blocks(statistics)
    atomic_write_text(out / "comparison.md", "# Baseline vs fine-tuned\n\n" + to_markdown(blocks))
    _write_png(out / "comparison.png", comparison_figure(table))
    return out


# ---------------------------------------------------------------- finding and checking evaluations


def find_evaluation(path: str | Path, role: str) -> dict[str, Path]:
    """split -> folder with metrics.json, for an evaluation directory in any layout of the module doc."""
    path = Path(path)
    if not path.is_dir():
        raise TunelabError(f"evaluation directory {path} not found: give a folder with metrics.json, one with "
                           "<split>/metrics.json, or a run directory")
    if (path / "metrics.json").is_file():
        return {path.parent.name if path.name in MODEL_LABELS else path.name: path}
    if (path / "eval").is_dir():
        path = path / "eval"
    if (path / role / "metrics.json").is_file():
        return {path.name: path / role}
    children = sorted(child for child in path.iterdir() if child.is_dir())
    for folder_of in (lambda child: child / role, lambda child: child):
        found = {child.name: folder_of(child) for child in children if (folder_of(child) / "metrics.json").is_file()}
        if found:
            return found
    raise TunelabError(f"{path} holds no evaluation: expected metrics.json, <split>/metrics.json or "
                       f"<split>/{role}/metrics.json (a run's eval/ folder); give an evaluation directory")


def pair_splits(baseline: dict[str, Path], finetuned: dict[str, Path]) -> dict[str, tuple[Path, Path]]:
    """Baseline and fine-tuned folders by split; two single-split evaluations pair whatever their names."""
    if len(baseline) == len(finetuned) == 1:
        (split, before), after = next(iter(baseline.items())), next(iter(finetuned.values()))
        return {split: (before, after)}
    if set(baseline) != set(finetuned):
        raise TunelabError(f"the evaluations cover different splits (baseline: {', '.join(baseline)}; fine-tuned: "
                           f"{', '.join(finetuned)}): compare evaluations of the same splits")
    return {split: (before, finetuned[split]) for split, before in baseline.items()}


def check_same_rows(split: str, baseline: Path, finetuned: Path) -> None:
    """Refuse unless both models were scored on the same rows (text columns and gold; any order)."""
    before, after = _row_keys(baseline / "predictions.csv"), _row_keys(finetuned / "predictions.csv")
    surplus = Counter(before)
    surplus.subtract(after)
    differ = max(sum(n for n in surplus.values() if n > 0), sum(-n for n in surplus.values() if n < 0))
    if differ:
        raise TunelabError(
            f"refusing to compare split {split}: the baseline has {len(before):,} rows and the fine-tuned model "
            f"{len(after):,}, and {differ:,} of them differ (a text or the gold label): evaluate both "
            "models on the same rows (a run keeps its rows in RUN_DIR/data/<split>.jsonl)")


def _row_keys(path: Path) -> list[tuple[str, ...]]:
    if not path.is_file():
        raise TunelabError(f"{path} is missing: comparing needs each model's predictions.csv to check that both "
                           "were evaluated on the same rows")
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        if "gold" not in (reader.fieldnames or []):
            raise TunelabError(f"{path} lacks the column gold: it must be a model's predictions.csv "
                               "(the text columns, gold, pred)")
        return row_keys(list(reader))


# ---------------------------------------------------------------- statistics


def comparison_statistics(folders: dict[str, tuple[Path, Path]], validation: dict[str, Path] | None = None) -> dict:
    """split (and "all splits", rows pooled, when there are several) -> tunelab.stats figures; {} when a
    predictions.csv lacks the probabilities."""
    statistics = {split: pair_statistics([pair], validation) for split, pair in folders.items()}
    if len(folders) > 1:
        statistics[COMBINED] = pair_statistics(list(folders.values()), validation)
    return statistics if all(statistics.values()) else {}


def interval_blocks(statistics: dict) -> list[tuple]:
    """The intervals table with McNemar's p per split, and one plain sentence per split."""
    first = next(iter(statistics.values()))
    rows = []
    for split, figures in statistics.items():
        for metric, interval in figures["intervals"].items():
            rows.append([split, f"{figures['rows']:,}", METRIC_NAMES.get(metric, metric),
                         *(interval_text(interval[role], role == "change") for role in ("baseline", "finetuned", "change")),
                         f"{figures['mcnemar']['p_value']:.3g}"])
    return [
        ("paragraph", f"{first['confidence_level']:.0%} confidence intervals by a paired bootstrap over the rows "
                      f"({first['bootstrap']['resamples']:,} resamples, seed {first['bootstrap']['seed']}: both "
                      "models scored on the same resampled rows); McNemar's exact test on the rows one model gets "
                      "right and the other wrong."),
        ("table", INTERVAL_HEADER, rows),
        ("list", [f"{split}: {figures['mcnemar']['verdict']}" for split, figures in statistics.items()]),
    ]


def interval_text(interval: dict, change: bool = False) -> str:
    value = points(interval["value"]) if change else pct(interval["value"])
    return f"{value} [{100 * interval['low']:.1f}, {100 * interval['high']:.1f}]"


# ---------------------------------------------------------------- figures and tables


def with_combined(pairs: Pairs) -> Pairs:
    """`pairs` plus an "all splits" entry (pooled over the splits) when there are several."""
    if len(pairs) < 2:
        return dict(pairs)
    return {**pairs, COMBINED: tuple(pooled_metrics([metrics[i] for metrics in pairs.values()]) for i in (0, 1))}


def pooled_metrics(per_split: list[dict]) -> dict:
    """The metrics of all splits' rows together, from their summed confusion matrices."""
    labels = per_split[0]["labels"]
    if any(metrics["labels"] != labels for metrics in per_split):
        raise TunelabError("the splits' metrics.json files use different label lists: they cannot be pooled")
    gold, predicted = [], []
    for (row, column), count in np.ndenumerate(np.sum([m["confusion_matrix"] for m in per_split], axis=0)):
        gold += [labels[row]] * int(count)
        predicted += [labels[column]] * int(count)
    return classification_metrics(gold, predicted, labels)


def changes(baseline: dict, finetuned: dict) -> dict:
    """Rows, then per metric: both values, the absolute change and the relative change (None from 0)."""
    values = {metric: (baseline[metric], finetuned[metric]) for metric in HEADLINE_METRICS}
    for label in baseline["labels"]:
        values[f"f1_{label}"] = (baseline["per_class"][label]["f1"], finetuned["per_class"][label]["f1"])
    auc = tuple((metrics.get("positive_class") or {}).get("roc_auc") for metrics in (baseline, finetuned))
    if None not in auc:  # a binary task scored with probabilities (pooled splits have none)
        values["roc_auc"] = auc
    return {"rows": baseline["n"], **{
        metric: {"baseline": before, "finetuned": after, "absolute": after - before,
                 "relative": (after - before) / before if before else None}
        for metric, (before, after) in values.items()}}


def comparison_table(pairs: Pairs) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table for Markdown, HTML and PDF: percentages and changes in points."""
    rows = []
    for split, metrics in pairs.items():
        change = changes(*metrics)
        for metric, figures in change.items():
            if metric != "rows":
                relative = "n/a" if figures["relative"] is None else f"{100 * figures['relative']:+.1f}%"
                rows.append([split, f"{change['rows']:,}", _metric_name(metric), pct(figures["baseline"]),
                             pct(figures["finetuned"]), points(figures["absolute"]), relative])
    return MARKDOWN_HEADER, rows


def comparison_figure(pairs: Pairs) -> Figure:
    """Both models' headline metrics as grouped bars, one panel per split."""
    figure = new_figure((5.5 * len(pairs), 3.6))
    for axes, (split, (before, after)) in zip(figure.subplots(1, len(pairs), squeeze=False)[0], pairs.items()):
        metrics_bars(axes, before, after, f"{split} (n = {before['n']:,})")
    return figure


def write_confusion_png(folder: Path, title: str) -> None:
    """folder/confusion.png: the confusion matrix in folder/metrics.json (rows = gold, columns = predicted)."""
    metrics = read_metrics(folder / "metrics.json")
    matrix = np.array(metrics["confusion_matrix"])
    figure = new_figure((4.8, 4.2))
    confusion_axes(figure.add_subplot(), matrix, metrics["labels"], f"{title} (n = {metrics['n']:,})",
                   matrix.max(initial=0) or 1)
    _write_png(folder / "confusion.png", figure)


def _metric_name(metric: str) -> str:
    return f"F1 {metric.removeprefix('f1_')}" if metric.startswith("f1_") else METRIC_NAMES.get(metric, metric)


def _csv(improvement: dict, statistics: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for split, change in improvement.items():
        for metric, figures in change.items():
            if metric != "rows":
                interval = statistics.get(split, {}).get("intervals", {}).get(metric, {}).get("change", {})
                p_value = statistics[split]["mcnemar"]["p_value"] if split in statistics else None
                writer.writerow([split, change["rows"], metric, *(
                    "" if value is None else round(value, 6)
                    for value in (*(figures[key] for key in ("baseline", "finetuned", "absolute", "relative")),
                                  interval.get("low"), interval.get("high"), p_value))])
    return buffer.getvalue()


def _write_png(path: Path, figure: Figure) -> None:
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=150))
