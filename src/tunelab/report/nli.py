"""The before/after report: what fine-tuning changed, rebuilt purely from files in a run directory.

`write_report(run_dir)` reads what training and evaluation left in the run directory
(run_info.json, config.yaml, train_log.json, eval/<split>/...) and writes RUN_DIR/report/:
report.md, report.html (self-contained), report.pdf and the PNG plots they show.

The report is first assembled as a list of blocks, plain tuples:
    ("heading", level, text)   ("paragraph", text)   ("list", items)
    ("table", header, rows)    ("code", text)        ("image", png_name, alt_text)
Three small renderers turn the same blocks into Markdown, HTML and PDF, so the three
formats always say the same thing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tunelab import __version__
from tunelab.classify.config import CLASSIFIER
from tunelab.errors import TunelabError
from tunelab.metrics import HEADLINE_METRICS, METRIC_NAMES, change_categories
from tunelab.report.common import (
    NOT_RECORDED,
    PRODUCER,
    Run,
    load_run,
    mapping_blocks,
    memory_blocks,
    monitoring_blocks,
    parameter_blocks,
    pct,
    points,
    read_metrics,
    timing_blocks,
    training_blocks,
)
from tunelab.report.figures import confusion_axes, metrics_bars, new_figure, reliability_figure
from tunelab.report.render import write_documents
from tunelab.report.statistics import row_key_columns, split_statistics
from tunelab.rundir import MODELS

CATEGORIES = {
    "corrected": "baseline wrong, fine-tuned right",
    "uncorrected": "both wrong",
    "regressed": "baseline right, fine-tuned wrong",
    "kept": "both right",
}
PREDICTION_COLUMNS = (  # after the text columns (NLI: premise, hypothesis)
    "gold", "baseline_pred", "baseline_prob", "finetuned_pred", "finetuned_prob",
)


@dataclass
class Split:
    name: str
    baseline: dict
    finetuned: dict
    predictions: list[dict] | None  # None when predictions.csv is missing
    statistics: dict | None = None  # tunelab.stats figures; None when the predictions lack probabilities


def write_nli_report(run_dir: str | Path, max_examples: int = 5) -> Path:
    """Write RUN_DIR/report/{report.md, report.html, report.pdf, *.png}; return the report.md path."""
    run = load_run(Path(run_dir))
    run = replace(run, splits=_load_splits(run.directory / "eval"))
    figures: dict[str, Figure] = {}
    blocks = _report_blocks(run, max_examples, figures)
    return write_documents(blocks, figures, run.directory / "report")


# ---------------------------------------------------------------- reading the run directory


def _load_splits(eval_dir: Path) -> list[Split]:
    splits = []
    for folder in sorted(eval_dir.iterdir()) if eval_dir.is_dir() else []:
        baseline, finetuned = folder / "baseline" / "metrics.json", folder / "finetuned" / "metrics.json"
        if baseline.is_file() and finetuned.is_file():
            splits.append(Split(folder.name, read_metrics(baseline), read_metrics(finetuned),
                                read_predictions(folder / "predictions.csv"), split_statistics(folder)))
    if not splits:
        raise TunelabError(
            f"no evaluation results in {eval_dir}: need eval/<split>/baseline/metrics.json and "
            f"eval/<split>/finetuned/metrics.json, written by {PRODUCER}"
        )
    return splits


def read_predictions(path: Path) -> list[dict] | None:
    """The rows of a run's eval/<split>/predictions.csv (text columns, then PREDICTION_COLUMNS), or None when it
    is missing."""
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        missing = [column for column in PREDICTION_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise TunelabError(f"{path} lacks the columns {', '.join(missing)}; rerun {PRODUCER}")
        return list(reader)


def split_predictions(run_dir: Path, split: str) -> list[dict]:
    """RUN_DIR/eval/<split>/predictions.csv's rows; a one-line error when the split was not evaluated."""
    path = Path(run_dir) / "eval" / split / "predictions.csv"
    rows = read_predictions(path)
    if rows is None:
        raise TunelabError(f"{path} is missing: give run folders whose {split} split was evaluated")
    return rows


# ---------------------------------------------------------------- the report, as blocks


def _report_blocks(run: Run, max_examples: int, figures: dict[str, Figure]) -> list[tuple]:
    blocks = _title_blocks(run) + _all_splits_blocks(run, figures)
    for split in run.splits:
        blocks += _split_blocks(split, max_examples, figures)
    return [
        *blocks,
        *training_blocks(run, figures),
        *parameter_blocks(run.info.get("parameters") or {}),
        *timing_blocks(run.info.get("timings_s") or {}),
        *memory_blocks(run.info.get("memory") or {}),
        *monitoring_blocks(run, figures),
        *mapping_blocks("Hardware", run.info.get("hardware")),
        *mapping_blocks("Software", run.info.get("software")),
        ("heading", 2, "Config (config.yaml)"),
        ("code", run.config) if run.config is not None else ("paragraph", f"config.yaml {NOT_RECORDED}."),
    ]


CLASSIFIER_BASELINE = ("The fine-tuned model answers with a classifier head trained from scratch, which has no "
                       "pretrained meaning: the baseline is the pretrained language model scoring the label words "
                       "zero-shot, as a label-word run's baseline does. ")


def _title_blocks(run: Run) -> list[tuple]:
    info = run.info
    recipe, model = info.get("recipe", NOT_RECORDED), info.get("model", NOT_RECORDED)
    return [
        ("heading", 1, f"tunelab report: {recipe} ({model})"),
        ("paragraph", f"Pretrained baseline versus the fine-tuned model, on the same evaluation rows. "
                      f"{CLASSIFIER_BASELINE if info.get('head') == CLASSIFIER else ''}"
                      f"Run {run.directory.name}, started {info.get('started', NOT_RECORDED)}; "
                      f"report by tunelab {__version__}."),
        ("heading", 2, "Headline"),
        ("list", [_headline(split) for split in run.splits]),
    ]


def _all_splits_blocks(run: Run, figures: dict[str, Figure]) -> list[tuple]:
    """With several evaluation splits: every split side by side, and all of them pooled (tunelab.report.compare)."""
    if len(run.splits) < 2:
        return []
    from tunelab.report.compare import (
        comparison_figure,
        comparison_statistics,
        comparison_table,
        interval_blocks,
        with_combined,
    )

    pairs = with_combined({split.name: (split.baseline, split.finetuned) for split in run.splits})
    header, rows = comparison_table(pairs)
    figures["comparison.png"] = comparison_figure(pairs)
    folders = {split.name: tuple(run.directory / "eval" / split.name / model for model in MODELS)
               for split in run.splits}
    statistics = comparison_statistics(folders)
    return [
        ("heading", 2, "All splits"),
        ("paragraph", "Each metric on each split, and on all splits' rows pooled; the change is in points, "
                      "the relative change as a share of the baseline's value."),
        ("table", header, rows),
        ("image", "comparison.png", "baseline and fine-tuned metrics on every split"),
        *(interval_blocks(statistics) if statistics else []),
    ]


def _headline(split: Split) -> str:
    before, after = split.baseline["accuracy"], split.finetuned["accuracy"]
    line = f"{split.name}: accuracy {pct(before)} → {pct(after)} ({points(after - before)})"
    if split.statistics is None:
        return line
    change = split.statistics["intervals"]["accuracy"]["change"]
    return (f"{line}, {split.statistics['confidence_level']:.0%} interval of the change "
            f"[{100 * change['low']:+.1f}, {100 * change['high']:+.1f}] points; {split.statistics['mcnemar']['verdict']}")


def _split_blocks(split: Split, max_examples: int, figures: dict[str, Figure]) -> list[tuple]:
    before, after = split.baseline, split.finetuned
    metrics_png, confusion_png = f"metrics_{split.name}.png", f"confusion_{split.name}.png"
    figures[metrics_png] = _metrics_figure(split)
    figures[confusion_png] = _confusion_figure(split)
    return [
        ("heading", 2, f"Split: {split.name} ({before['n']:,} examples)"),
        ("table", ["metric", "baseline", "fine-tuned", "change"],
         [[METRIC_NAMES.get(m, m), pct(before[m]), pct(after[m]), points(after[m] - before[m])]
          for m in HEADLINE_METRICS]),
        ("image", metrics_png, f"{split.name}: baseline and fine-tuned metrics"),
        *_statistics_blocks(split, figures),
        ("heading", 3, "Per class (baseline → fine-tuned)"),
        ("table", ["class", "support", "precision", "recall", "F1"], _per_class_rows(before, after)),
        *_positive_class_blocks(before, after),
        ("image", confusion_png, f"{split.name}: confusion matrices, rows = gold, columns = predicted"),
        *_failure_blocks(split, max_examples),
    ]


def _statistics_blocks(split: Split, figures: dict[str, Figure]) -> list[tuple]:
    """Confidence intervals, McNemar's test and calibration, from the models' probabilities over the labels."""
    from tunelab.report.compare import interval_blocks

    blocks: list[tuple] = [("heading", 3, "How sure: intervals, significance, calibration")]
    statistics = split.statistics
    if statistics is None:
        return blocks + [("paragraph", f"eval/{split.name}/{{baseline,finetuned}}/predictions.csv with the "
                                       f"label probabilities {NOT_RECORDED}: no intervals or calibration "
                                       f"(written by {PRODUCER}).")]
    calibration = statistics["calibration"]
    reliability_png = f"reliability_{split.name}.png"
    figures[reliability_png] = reliability_figure(calibration, f"{split.name}: reliability (n = {statistics['rows']:,})")
    return [
        *blocks,
        *interval_blocks({split.name: statistics}),
        ("paragraph", f"Calibration of the {len(statistics['labels'])}-way probabilities: expected calibration error (ECE) over "
                      f"{calibration['binning']}, in points; Brier score summed over the classes (0 best, 2 worst)."),
        ("table", ["model", "ECE", "Brier", *_scaled_header(calibration)],
         [[name, f"{100 * calibration[model]['ece']:.1f}", f"{calibration[model]['brier']:.3f}",
           *_scaled_cells(calibration, model)] for model, name in (("baseline", "baseline"), ("finetuned", "fine-tuned"))]),
        ("image", reliability_png, f"{split.name}: reliability diagram of both models"),
    ]


def _scaled_header(calibration: dict) -> list[str]:
    if "temperature_scaled" not in calibration:
        return []
    return ["temperature (fitted on validation)", "ECE after scaling", "Brier after scaling"]


def _scaled_cells(calibration: dict, model: str) -> list[str]:
    if "temperature_scaled" not in calibration:
        return []
    scaled = calibration["temperature_scaled"].get(model)
    if scaled is None:
        return [NOT_RECORDED] * 3
    return [f"{scaled['temperature']:.2f}", f"{100 * scaled['ece']:.1f}", f"{scaled['brier']:.3f}"]


def _per_class_rows(before: dict, after: dict) -> list[list[str]]:
    rows = []
    for label in before["labels"]:
        old, new = before["per_class"][label], after["per_class"][label]
        changes = [f"{pct(old[k])} → {pct(new[k])}" for k in ("precision", "recall", "f1")]
        rows.append([label, f"{old['support']:,}", *changes])
    return rows


def _positive_class_blocks(before: dict, after: dict) -> list[tuple]:
    """A binary task's positive class: precision, recall, F1 and ROC-AUC (from the probabilities)."""
    if "positive_class" not in before or "positive_class" not in after:
        return []
    old, new = before["positive_class"], after["positive_class"]
    cells = [f"{pct(old[k])} → {pct(new[k])}" for k in ("precision", "recall", "f1")]
    auc = (f"{old['roc_auc']:.3f} → {new['roc_auc']:.3f}" if None not in (old["roc_auc"], new["roc_auc"])
           else f"{NOT_RECORDED} (one gold class only)")
    return [("paragraph", f"Positive class {old['label']!r} (baseline → fine-tuned); ROC-AUC from the "
                          "probabilities of that class."),
            ("table", ["class", "precision", "recall", "F1", "ROC-AUC"], [[old["label"], *cells, auc]])]


def _failure_blocks(split: Split, max_examples: int) -> list[tuple]:
    blocks: list[tuple] = [("heading", 3, "What changed, example by example")]
    rows = split.predictions
    if rows is None:
        return blocks + [("paragraph", f"eval/{split.name}/predictions.csv {NOT_RECORDED}: "
                                       f"no per-example comparison (written by {PRODUCER}).")]
    categories = change_categories([r["gold"] for r in rows], [r["baseline_pred"] for r in rows],
                                   [r["finetuned_pred"] for r in rows])
    counts = {name: categories.count(name) for name in CATEGORIES}
    blocks.append(("table", ["category", "meaning", "examples", "share"],
                   [[name, meaning, f"{counts[name]:,}", pct(counts[name] / max(len(rows), 1))]
                    for name, meaning in CATEGORIES.items()]))
    if len(rows) != split.baseline["n"]:
        blocks.append(("paragraph", f"Warning: predictions.csv has {len(rows):,} rows but the metrics "
                                    f"were computed on {split.baseline['n']:,}."))
    for name in ("corrected", "uncorrected", "regressed"):
        examples = [row for row, category in zip(rows, categories) if category == name][:max_examples]
        blocks.append(("heading", 4, f"{name.capitalize()} ({CATEGORIES[name]}): "
                                     f"{len(examples)} of {counts[name]:,} shown"))
        if examples:
            columns = row_key_columns(examples[0])
            blocks.append(("table", [*columns, "baseline", "fine-tuned"],
                           [[*(r[c] for c in columns), _prediction(r, "baseline"), _prediction(r, "finetuned")]
                            for r in examples]))
    return blocks


# ---------------------------------------------------------------- formatting


def _prediction(row: dict, model: str) -> str:
    label, probability = row[f"{model}_pred"], row[f"{model}_prob"]
    try:
        return f"{label} ({float(probability):.2f})"
    except (TypeError, ValueError):
        return label


# ---------------------------------------------------------------- plots


def _metrics_figure(split: Split) -> Figure:
    figure = new_figure((7, 3.6))
    metrics_bars(figure.add_subplot(), split.baseline, split.finetuned,
                 f"{split.name}: baseline vs fine-tuned (n = {split.baseline['n']:,})")
    return figure


def _confusion_figure(split: Split) -> Figure:
    figure = new_figure((9, 4.2))
    matrices = [np.array(split.baseline["confusion_matrix"]), np.array(split.finetuned["confusion_matrix"])]
    top = max(matrix.max(initial=0) for matrix in matrices) or 1
    for axes, title, metrics, matrix in zip(figure.subplots(1, 2), ("baseline", "fine-tuned"),
                                            (split.baseline, split.finetuned), matrices):
        confusion_axes(axes, matrix, metrics["labels"], title, top)
    figure.suptitle(f"{split.name}: confusion matrices (rows = gold, columns = predicted)")
    return figure


# ---------------------------------------------------------------- Markdown


# ---------------------------------------------------------------- HTML


# ---------------------------------------------------------------- PDF


# ---------------------------------------------------------------- files
