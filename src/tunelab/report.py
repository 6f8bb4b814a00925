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

import base64
import csv
import html
import json
import os
import re
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.image import imread

from tunelab import __version__
from tunelab.errors import TunelabError
from tunelab.metrics import HEADLINE_METRICS, change_categories

NOT_RECORDED = "not recorded"
PRODUCER = "the recipe run (`tunelab run RECIPE` or `accelerate launch ... RECIPE`)"
METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1"}
METRIC_KEYS = ("n", "labels", *HEADLINE_METRICS, "per_class", "confusion_matrix")
CATEGORIES = {
    "corrected": "baseline wrong, fine-tuned right",
    "uncorrected": "both wrong",
    "regressed": "baseline right, fine-tuned wrong",
    "kept": "both right",
}
PREDICTION_COLUMNS = (
    "premise", "hypothesis", "gold", "baseline_pred", "baseline_prob", "finetuned_pred", "finetuned_prob",
)
TIMING_NAMES = {
    "load": "load", "baseline_eval": "baseline eval", "train": "train",
    "finetuned_eval": "fine-tuned eval", "total": "total",
}


@dataclass
class Split:
    name: str
    baseline: dict
    finetuned: dict
    predictions: list[dict] | None  # None when predictions.csv is missing


@dataclass
class Run:
    directory: Path
    info: dict
    config: str | None
    train_log: list
    splits: list[Split]


def write_report(run_dir: str | Path, max_examples: int = 5) -> Path:
    """Write RUN_DIR/report/{report.md, report.html, report.pdf, *.png}; return the report.md path."""
    from tunelab.chat_report import is_chat_run, write_chat_report

    if is_chat_run(run_dir):  # a chat run (tunelab.chat): perplexity and replies instead of accuracy
        return write_chat_report(run_dir)
    run = load_run(Path(run_dir))
    folder = run.directory / "report"
    folder.mkdir(exist_ok=True)
    figures: dict[str, Figure] = {}
    blocks = _report_blocks(run, max_examples, figures)
    for name, figure in figures.items():
        _write_atomic(folder / name, lambda tmp, fig=figure: fig.savefig(tmp, format="png", dpi=150))
    _write_atomic(folder / "report.md", lambda tmp: tmp.write_text(_to_markdown(blocks), encoding="utf-8"))
    _write_atomic(folder / "report.html",
                  lambda tmp: tmp.write_text(_to_html(blocks, folder), encoding="utf-8"))
    _write_atomic(folder / "report.pdf", lambda tmp: _write_pdf(blocks, folder, tmp))
    return folder / "report.md"


# ---------------------------------------------------------------- reading the run directory


def load_run(run_dir: Path, with_splits: bool = True) -> Run:
    """run_info.json, config.yaml, train_log.json and, `with_splits`, the NLI eval/<split>/ results.

    A chat run (tunelab.chat_report) passes with_splits=False: it reads its own eval/chat/ results.
    """
    if not run_dir.is_dir():
        raise TunelabError(f"run directory {run_dir} not found: {PRODUCER} creates it")
    info_path = run_dir / "run_info.json"
    if not info_path.is_file():
        raise TunelabError(f"{info_path} is missing: it is written by {PRODUCER}")
    config_path, log_path = run_dir / "config.yaml", run_dir / "train_log.json"
    return Run(
        directory=run_dir,
        info=_read_json(info_path, dict),
        config=config_path.read_text(encoding="utf-8") if config_path.is_file() else None,
        train_log=_read_json(log_path, list) if log_path.is_file() else [],
        splits=_load_splits(run_dir / "eval") if with_splits else [],
    )


def _load_splits(eval_dir: Path) -> list[Split]:
    splits = []
    for folder in sorted(eval_dir.iterdir()) if eval_dir.is_dir() else []:
        baseline, finetuned = folder / "baseline" / "metrics.json", folder / "finetuned" / "metrics.json"
        if baseline.is_file() and finetuned.is_file():
            splits.append(Split(folder.name, _read_metrics(baseline), _read_metrics(finetuned),
                                _read_predictions(folder / "predictions.csv")))
    if not splits:
        raise TunelabError(
            f"no evaluation results in {eval_dir}: need eval/<split>/baseline/metrics.json and "
            f"eval/<split>/finetuned/metrics.json, written by {PRODUCER}"
        )
    return splits


def _read_json(path: Path, expected: type):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TunelabError(f"{path} could not be read as JSON ({exc}); rerun {PRODUCER}") from exc
    if not isinstance(data, expected):
        raise TunelabError(f"{path} should hold a JSON {expected.__name__}; rerun {PRODUCER}")
    return data


def _read_metrics(path: Path) -> dict:
    metrics = _read_json(path, dict)
    missing = [key for key in METRIC_KEYS if key not in metrics]
    if missing:
        raise TunelabError(f"{path} lacks {', '.join(missing)}; rerun {PRODUCER}")
    return metrics


def _read_predictions(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        missing = [column for column in PREDICTION_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise TunelabError(f"{path} lacks the columns {', '.join(missing)}; rerun {PRODUCER}")
        return list(reader)


# ---------------------------------------------------------------- the report, as blocks


def _report_blocks(run: Run, max_examples: int, figures: dict[str, Figure]) -> list[tuple]:
    blocks = _title_blocks(run) + _all_splits_blocks(run, figures)
    for split in run.splits:
        blocks += _split_blocks(split, max_examples, figures)
    return [
        *blocks,
        *_training_blocks(run, figures),
        *_parameter_blocks(run.info.get("parameters") or {}),
        *_timing_blocks(run.info.get("timings_s") or {}),
        *_memory_blocks(run.info.get("memory") or {}),
        *_monitoring_blocks(run, figures),
        *_mapping_blocks("Hardware", run.info.get("hardware")),
        *_mapping_blocks("Software", run.info.get("software")),
        ("heading", 2, "Config (config.yaml)"),
        ("code", run.config) if run.config is not None else ("paragraph", f"config.yaml {NOT_RECORDED}."),
    ]


def _title_blocks(run: Run) -> list[tuple]:
    info = run.info
    recipe, model = info.get("recipe", NOT_RECORDED), info.get("model", NOT_RECORDED)
    return [
        ("heading", 1, f"tunelab report: {recipe} ({model})"),
        ("paragraph", f"Pretrained baseline versus the fine-tuned model, on the same evaluation rows. "
                      f"Run {run.directory.name}, started {info.get('started', NOT_RECORDED)}; "
                      f"report by tunelab {__version__}."),
        ("heading", 2, "Headline"),
        ("list", [_headline(split) for split in run.splits]),
    ]


def _all_splits_blocks(run: Run, figures: dict[str, Figure]) -> list[tuple]:
    """With several evaluation splits: every split side by side, and all of them pooled (tunelab.compare)."""
    if len(run.splits) < 2:
        return []
    from tunelab.compare import comparison_figure, comparison_table, with_combined

    pairs = with_combined({split.name: (split.baseline, split.finetuned) for split in run.splits})
    header, rows = comparison_table(pairs)
    figures["comparison.png"] = comparison_figure(pairs)
    return [
        ("heading", 2, "All splits"),
        ("paragraph", "Each metric on each split, and on all splits' rows pooled; the change is in points, "
                      "the relative change as a share of the baseline's value."),
        ("table", header, rows),
        ("image", "comparison.png", "baseline and fine-tuned metrics on every split"),
    ]


def _headline(split: Split) -> str:
    before, after = split.baseline["accuracy"], split.finetuned["accuracy"]
    return f"{split.name}: accuracy {_pct(before)} → {_pct(after)} ({_points(after - before)})"


def _split_blocks(split: Split, max_examples: int, figures: dict[str, Figure]) -> list[tuple]:
    before, after = split.baseline, split.finetuned
    metrics_png, confusion_png = f"metrics_{split.name}.png", f"confusion_{split.name}.png"
    figures[metrics_png] = _metrics_figure(split)
    figures[confusion_png] = _confusion_figure(split)
    return [
        ("heading", 2, f"Split: {split.name} ({before['n']:,} examples)"),
        ("table", ["metric", "baseline", "fine-tuned", "change"],
         [[METRIC_NAMES.get(m, m), _pct(before[m]), _pct(after[m]), _points(after[m] - before[m])]
          for m in HEADLINE_METRICS]),
        ("image", metrics_png, f"{split.name}: baseline and fine-tuned metrics"),
        ("heading", 3, "Per class (baseline → fine-tuned)"),
        ("table", ["class", "support", "precision", "recall", "F1"], _per_class_rows(before, after)),
        ("image", confusion_png, f"{split.name}: confusion matrices, rows = gold, columns = predicted"),
        *_failure_blocks(split, max_examples),
    ]


def _per_class_rows(before: dict, after: dict) -> list[list[str]]:
    rows = []
    for label in before["labels"]:
        old, new = before["per_class"][label], after["per_class"][label]
        changes = [f"{_pct(old[k])} → {_pct(new[k])}" for k in ("precision", "recall", "f1")]
        rows.append([label, f"{old['support']:,}", *changes])
    return rows


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
                   [[name, meaning, f"{counts[name]:,}", _pct(counts[name] / max(len(rows), 1))]
                    for name, meaning in CATEGORIES.items()]))
    if len(rows) != split.baseline["n"]:
        blocks.append(("paragraph", f"Warning: predictions.csv has {len(rows):,} rows but the metrics "
                                    f"were computed on {split.baseline['n']:,}."))
    for name in ("corrected", "uncorrected", "regressed"):
        examples = [row for row, category in zip(rows, categories) if category == name][:max_examples]
        blocks.append(("heading", 4, f"{name.capitalize()} ({CATEGORIES[name]}): "
                                     f"{len(examples)} of {counts[name]:,} shown"))
        if examples:
            blocks.append(("table", ["premise", "hypothesis", "gold", "baseline", "fine-tuned"],
                           [[r["premise"], r["hypothesis"], r["gold"], _prediction(r, "baseline"),
                             _prediction(r, "finetuned")] for r in examples]))
    return blocks


def _training_blocks(run: Run, figures: dict[str, Figure]) -> list[tuple]:
    info = run.info
    train, validation = _loss_points(run.train_log, "loss"), _loss_points(run.train_log, "eval_loss")
    facts = [f"training rows: {_format_value(info.get('train_rows'))}",
             f"evaluation rows: {_format_value(info.get('eval_rows'))}",
             _final_loss("training loss", train), _final_loss("validation loss", validation)]
    blocks: list[tuple] = [("heading", 2, "Training"), ("list", facts)]
    if not train and not validation:
        return blocks + [("paragraph", "No training or validation loss in train_log.json "
                                       "(missing or empty), so there is no loss plot.")]
    figures["loss.png"] = _loss_figure(train, validation)
    return blocks + [("image", "loss.png", "training and validation loss by step")]


def _final_loss(what: str, points: list[tuple]) -> str:
    if not points:
        return f"{what}: {NOT_RECORDED}"
    step, value = points[-1]
    return f"final {what}: {value:.4f} at step {step:,}"


def _parameter_blocks(parameters: dict) -> list[tuple]:
    trainable, total = parameters.get("trainable"), parameters.get("total")
    if trainable is None or total is None:
        counts = f"Parameter counts {NOT_RECORDED}."
    else:
        percent = parameters.get("percent", 100 * trainable / total if total else 0.0)
        counts = f"Trainable parameters: {trainable:,} of {total:,} ({percent:.3g}%)."
    counting = parameters.get("counting", f"How they were counted: {NOT_RECORDED}.")
    return [("heading", 2, "Parameters"), ("paragraph", counts), ("paragraph", counting)]


def _timing_blocks(timings: dict) -> list[tuple]:
    names = {**TIMING_NAMES, **{key: key.replace("_", " ") for key in timings if key not in TIMING_NAMES}}
    rows = [[label, _duration(timings.get(key))] for key, label in names.items()]
    return [("heading", 2, "Timings"), ("table", ["phase", "time"], rows)]


def _memory_blocks(memory: dict) -> list[tuple]:
    if memory.get("peak_bytes") is None:
        text = f"Peak memory: {NOT_RECORDED}."
    else:
        text = (f"Peak memory: {_bytes(memory['peak_bytes'])} (device: {memory.get('device', NOT_RECORDED)}; "
                f"measured as: {memory.get('how', NOT_RECORDED)}).")
    return [("heading", 2, "Memory"), ("paragraph", text)]


MONITORED = {
    "torch_alloc_gib": "allocated by PyTorch, GiB", "torch_reserved_gib": "reserved by PyTorch, GiB",
    "torch_peak_alloc_gib": "peak allocated by PyTorch, GiB", "mem_used_gib": "used on the device, GiB",
    "mem_total_gib": "device total, GiB", "util_pct": "utilisation, %", "rss_gib": "resident memory, GiB",
    "peak_rss_gib": "peak resident memory, GiB",
}


def _monitoring_blocks(run: Run, figures: dict[str, Figure]) -> list[tuple]:
    """Memory and throughput during training (tunelab.monitoring): peaks per device, rates, memory plot.
    Left out for runs from before tunelab measured them."""
    monitoring = run.info.get("monitoring")
    if not isinstance(monitoring, dict):
        return []
    blocks: list[tuple] = [("heading", 2, "Resources during training")]
    rates = [(f"{monitoring[key]:,.{digits}f} {unit}" if monitoring.get(key) is not None else f"{unit}: {NOT_RECORDED}")
             for key, unit, digits in (("step_time_s", "s per optimizer step", 3), ("samples_per_s", "samples/s", 1),
                                       ("tokens_per_s", "real tokens/s (padding excluded)", 0))]
    if monitoring.get("mfu_pct") is not None:
        rates.append(f"model FLOPs utilisation {monitoring['mfu_pct']:.2f}%; "
                     f"{monitoring.get('peak_assumed', '').removeprefix('MFU ')}")
    elif monitoring.get("peak_assumed"):
        rates.append(monitoring["peak_assumed"])
    if monitoring.get("flops_counting"):
        rates.append(monitoring["flops_counting"])
    blocks.append(("list", rates))
    peaks = monitoring.get("peak_devices") or {}
    rows = [[label, MONITORED.get(key, key), f"{value:,.2f}"] for label, values in peaks.items()
            for key, value in values.items()]
    if rows:
        blocks.append(("table", ["device", "figure", "peak during training"], rows))
    if monitoring.get("notes"):
        blocks.append(("list", [f"Note: {note}" for note in monitoring["notes"]]))
    samples = _monitoring_samples(run.directory / "monitoring.json")
    if not samples:
        return blocks + [("paragraph", f"monitoring.json {NOT_RECORDED}: no memory plot.")]
    figures["memory.png"] = _memory_figure(samples)
    return blocks + [("image", "memory.png", "memory by training step, per device")]


def _monitoring_samples(path: Path) -> list[dict]:
    try:
        samples = json.loads(path.read_text(encoding="utf-8"))["samples"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return []
    return [s for s in samples if isinstance(s, dict) and "step" in s and isinstance(s.get("devices"), dict)]


def _mapping_blocks(title: str, mapping: dict | None) -> list[tuple]:
    if not mapping:
        return [("heading", 2, title), ("paragraph", f"{title}: {NOT_RECORDED}.")]
    return [("heading", 2, title),
            ("table", ["item", "value"], [[str(key), _format_value(item)] for key, item in mapping.items()])]


def _loss_points(log: list, key: str) -> list[tuple]:
    return [(entry["step"], entry[key]) for entry in log
            if isinstance(entry, dict) and entry.get(key) is not None and "step" in entry]


# ---------------------------------------------------------------- formatting


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def _points(difference: float) -> str:
    return f"{100 * difference:+.1f} points"


def _prediction(row: dict, model: str) -> str:
    label, probability = row[f"{model}_pred"], row[f"{model}_prob"]
    try:
        return f"{label} ({float(probability):.2f})"
    except (TypeError, ValueError):
        return label


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_RECORDED
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


def _format_value(value) -> str:
    if value is None:
        return NOT_RECORDED
    if isinstance(value, list):
        return ", ".join(_format_value(item) for item in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_format_value(item)}" for key, item in value.items()) or "none"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# ---------------------------------------------------------------- plots


def _figure(size: tuple[float, float]) -> Figure:
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _metrics_figure(split: Split) -> Figure:
    figure = _figure((7, 3.6))
    metrics_bars(figure.add_subplot(), split.baseline, split.finetuned,
                 f"{split.name}: baseline vs fine-tuned (n = {split.baseline['n']:,})")
    return figure


def metrics_bars(axes, baseline: dict, finetuned: dict, title: str) -> None:
    """The headline metrics of both models as grouped bars, in percent."""
    x = np.arange(len(HEADLINE_METRICS))
    for offset, label, metrics, color in ((-0.2, "baseline", baseline, "#9e9e9e"),
                                          (0.2, "fine-tuned", finetuned, "#1f77b4")):
        values = [100 * metrics[m] for m in HEADLINE_METRICS]
        bars = axes.bar(x + offset, values, 0.4, label=label, color=color)
        axes.bar_label(bars, fmt="{:.1f}%", fontsize=8)
    axes.set_xticks(x, [METRIC_NAMES.get(m, m) for m in HEADLINE_METRICS])
    axes.set_ylim(0, 120)
    axes.set_yticks(range(0, 101, 20))
    axes.set_ylabel("%")
    axes.legend(loc="upper center", ncols=2, frameon=False)
    axes.set_title(title)


def _confusion_figure(split: Split) -> Figure:
    figure = _figure((9, 4.2))
    matrices = [np.array(split.baseline["confusion_matrix"]), np.array(split.finetuned["confusion_matrix"])]
    top = max(matrix.max(initial=0) for matrix in matrices) or 1
    for axes, title, metrics, matrix in zip(figure.subplots(1, 2), ("baseline", "fine-tuned"),
                                            (split.baseline, split.finetuned), matrices):
        confusion_axes(axes, matrix, metrics["labels"], title, top)
    figure.suptitle(f"{split.name}: confusion matrices (rows = gold, columns = predicted)")
    return figure


def confusion_axes(axes, matrix: np.ndarray, labels: list[str], title: str, top: int) -> None:
    """One confusion matrix (rows = gold, columns = predicted), shaded on a 0..`top` scale."""
    axes.imshow(matrix, cmap="Blues", vmin=0, vmax=top)
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, f"{count:,}", ha="center", va="center",
                  color="white" if count > top / 2 else "black")
    ticks = range(len(labels))
    axes.set_xticks(ticks, labels, rotation=20, ha="right")
    axes.set_yticks(ticks, labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(title)


def _memory_figure(samples: list[dict]) -> Figure:
    figure = _figure((7, 3.6))
    axes = figure.add_subplot()
    labels = dict.fromkeys(label for sample in samples for label in sample["devices"])
    styles = (("torch_alloc_gib", "-", "allocated (PyTorch)"), ("torch_reserved_gib", "--", "reserved (PyTorch)"),
              ("mem_used_gib", ":", "used (device)"), ("rss_gib", "-", "resident"),
              ("peak_rss_gib", "--", "peak resident"))
    top = 0.0
    for number, label in enumerate(labels):
        for key, style, name in styles:
            points = [(s["step"], s["devices"][label][key]) for s in samples if key in s["devices"].get(label, {})]
            if points:
                axes.plot(*zip(*points), style, color=f"C{number}", marker=".", label=f"{label} {name}")
                top = max(top, *(value for _, value in points))
    axes.set_xlabel("step")
    axes.set_ylabel("GiB")
    axes.set_ylim(0, 1.15 * top or 1)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    axes.set_title("Memory by training step")
    return figure


def _loss_figure(train: list[tuple], validation: list[tuple]) -> Figure:
    figure = _figure((7, 3.6))
    axes = figure.add_subplot()
    if train:
        axes.plot(*zip(*train), label="training loss")
    if validation:
        axes.plot(*zip(*validation), marker="o", label="validation loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title("Loss by training step")
    return figure


# ---------------------------------------------------------------- Markdown


def _to_markdown(blocks: list[tuple]) -> str:
    parts = []
    for block in blocks:
        match block:
            case ("heading", level, text):
                parts.append(f"{'#' * level} {text}")
            case ("paragraph", text):
                parts.append(text)
            case ("list", items):
                parts.append("\n".join(f"- {item}" for item in items))
            case ("table", header, rows):
                lines = [header, ["---"] * len(header), *rows]
                parts.append("\n".join("| " + " | ".join(map(_markdown_cell, line)) + " |" for line in lines))
            case ("code", text):
                fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`+", text))])
                parts.append(f"{fence}yaml\n{text.rstrip()}\n{fence}")
            case ("image", name, alt):
                parts.append(f"![{alt}]({name})")
    return "\n\n".join(parts) + "\n"


def _markdown_cell(text) -> str:
    """One line, pipes escaped, and '<' as an entity so viewers cannot take user text for HTML."""
    return _one_line(text).replace("|", "\\|").replace("<", "&lt;")


def _one_line(text) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


# ---------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; }
img { max-width: 100%; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
"""


def _to_html(blocks: list[tuple], folder: Path) -> str:
    escape = html.escape
    body = []
    for block in blocks:
        match block:
            case ("heading", level, text):
                body.append(f"<h{level}>{escape(text)}</h{level}>")
            case ("paragraph", text):
                body.append(f"<p>{escape(text)}</p>")
            case ("list", items):
                body.append("<ul>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>")
            case ("table", header, rows):
                head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
                cells = ("".join(f"<td>{escape(str(cell))}</td>" for cell in row) for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>"
                            + "".join(f"<tr>{row}</tr>" for row in cells) + "</tbody></table>")
            case ("code", text):
                body.append(f"<pre><code>{escape(text)}</code></pre>")
            case ("image", name, alt):
                data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></figure>')
    title = escape(blocks[0][2])
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


# ---------------------------------------------------------------- PDF

PAGE = (8.27, 11.69)  # A4 portrait, inches
MARGIN = 0.6
FONT_SIZE = 8
WIDTH = 100  # characters per line of 8 pt monospace inside the margins
HEADING_SIZES = {1: 14, 2: 11, 3: 9}


def _write_pdf(blocks: list[tuple], folder: Path, path: Path) -> None:
    metadata = {"Title": blocks[0][2], "Creator": f"tunelab {__version__}"}
    with PdfPages(path, metadata=metadata) as pdf:
        layout = _PdfLayout(pdf)
        for block in blocks:
            match block:
                case ("image", name, _):
                    layout.image(folder / name)
                case ("heading", level, text):
                    size = HEADING_SIZES.get(level, FONT_SIZE)
                    layout.lines(textwrap.wrap(text, WIDTH) + [""], size, "bold",
                                 keep_with_next=6 * _line_height(FONT_SIZE))
                case _:
                    layout.lines(_plain_lines(block) + [""])
        layout.finish()


def _plain_lines(block: tuple) -> list[str]:
    match block:
        case ("paragraph", text):
            return textwrap.wrap(text, WIDTH)
        case ("list", items):
            return [line for item in items
                    for line in textwrap.wrap(item, WIDTH, initial_indent="- ", subsequent_indent="  ")]
        case ("table", header, rows):
            return _plain_table(header, rows)
        case ("code", text):
            return [line[i:i + WIDTH] for line in text.expandtabs(4).splitlines()
                    for i in range(0, max(len(line), 1), WIDTH)]
    return []


def _plain_table(header: list[str], rows: list[list]) -> list[str]:
    """Aligned columns when they fit on the page, otherwise one record per row, a line per column."""
    cells = [[_one_line(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    if sum(widths) + 2 * (len(widths) - 1) <= WIDTH:
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
        return [lines[0], "  ".join("-" * width for width in widths), *lines[1:]]
    indent = max(len(name) for name in header) + 2
    lines = []
    for number, row in enumerate(cells[1:], start=1):
        lines.append(f"[{number}]")
        for name, cell in zip(header, row):
            lines += textwrap.wrap(cell, WIDTH, initial_indent=name.ljust(indent),
                                   subsequent_indent=" " * indent) or [name]
    return lines


def _line_height(size: float) -> float:
    return size * 1.35 / 72


class _PdfLayout:
    """Places monospace lines and images top to bottom on A4 pages, starting a new page when one is full."""

    def __init__(self, pdf: PdfPages):
        self.pdf = pdf
        self.page: Figure | None = None
        self.top = 0.0  # inches from the bottom of the page to the next free spot

    def lines(self, lines: list[str], size: float = FONT_SIZE, weight: str = "normal",
              keep_with_next: float = 0.0) -> None:
        """A block shorter than a third of a page stays on one page, with `keep_with_next` inches below it."""
        height = _line_height(size)
        whole = len(lines) * height
        self._make_room(whole + keep_with_next if whole < (PAGE[1] - 2 * MARGIN) / 3 else height)
        for line in lines:
            self._make_room(height)
            if line or self.top < PAGE[1] - MARGIN:
                self.page.text(MARGIN / PAGE[0], self.top / PAGE[1], line, family="monospace", size=size,
                               weight=weight, va="top", parse_math=False)
                self.top -= height

    def image(self, png: Path) -> None:
        pixels = imread(png)
        width = PAGE[0] - 2 * MARGIN
        height = min(width * pixels.shape[0] / pixels.shape[1], PAGE[1] - 2 * MARGIN)
        self._make_room(height)
        bottom = self.top - height
        axes = self.page.add_axes((MARGIN / PAGE[0], bottom / PAGE[1], width / PAGE[0], height / PAGE[1]))
        axes.imshow(pixels, interpolation="none")
        axes.set_axis_off()
        self.top -= height + 0.15

    def finish(self) -> None:
        if self.page is not None:
            self.pdf.savefig(self.page)
            self.page = None

    def _make_room(self, height: float) -> None:
        if self.page is None or self.top - height < MARGIN:
            self.finish()
            self.page = Figure(figsize=PAGE)
            self.top = PAGE[1] - MARGIN


# ---------------------------------------------------------------- files


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write through `write(temporary_path)` in the same folder, then move into place in one step."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        write(temporary)
        temporary.chmod(0o644)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
