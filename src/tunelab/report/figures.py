"""The report's plots, as matplotlib Figures (no pyplot state)."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tunelab.metrics import HEADLINE_METRICS, METRIC_NAMES


def new_figure(size: tuple[float, float]) -> Figure:
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
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


def memory_figure(samples: list[dict]) -> Figure:
    figure = new_figure((7, 3.6))
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


def loss_figure(train: list[tuple], validation: list[tuple]) -> Figure:
    figure = new_figure((7, 3.6))
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


def reliability_figure(calibration: dict, title: str) -> Figure:
    """Reliability diagram: accuracy vs mean confidence per confidence bin, both models, with the diagonal."""
    figure = new_figure((5.2, 4.6))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], ":", color="black", label="perfectly calibrated")
    for model, name, color in (("baseline", "baseline", "#9e9e9e"), ("finetuned", "fine-tuned", "#1f77b4")):
        filled = [b for b in calibration[model]["reliability"] if b["count"]]
        axes.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o-", color=color,
                  label=f"{name} (ECE {100 * calibration[model]['ece']:.1f} points)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("mean confidence of the predicted label, per bin")
    axes.set_ylabel("accuracy in the bin")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
    axes.set_title(title)
    return figure
