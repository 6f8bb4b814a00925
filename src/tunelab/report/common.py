"""What every report reads and shows: the run directory's files, and the blocks on training,
parameters, time, memory, hardware and software, with their formatters."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from tunelab import rundir
from tunelab.errors import TunelabError
from tunelab.methods import METHOD_DESCRIPTIONS
from tunelab.metrics import HEADLINE_METRICS
from tunelab.report.figures import loss_figure, memory_figure
from tunelab.rundir import replaced_run_notice

MODEL_LABELS = {"baseline": "baseline", "finetuned": "fine-tuned"}  # tunelab.rundir.MODELS as a report names them
NOT_RECORDED = "not recorded"
PRODUCER = "the recipe run (`tunelab run RECIPE` or `accelerate launch ... RECIPE`)"
METRIC_KEYS = ("n", "labels", *HEADLINE_METRICS, "per_class", "confusion_matrix")
TIMING_NAMES = {
    "load": "load", "baseline_eval": "baseline eval", "train": "train",
    "finetuned_eval": "fine-tuned eval", "total": "total",
}


@dataclass
class Run:
    directory: Path
    info: dict
    config: str | None
    train_log: list
    splits: list = field(default_factory=list)  # NLI: one report.nli.Split per evaluation split


def load_run(run_dir: Path) -> Run:
    """run_info.json, config.yaml and train_log.json; each kind of report reads its own eval/ results."""
    if not run_dir.is_dir():
        raise TunelabError(f"run directory {run_dir} not found: {PRODUCER} creates it")
    info_path = run_dir / "run_info.json"
    if replaced_run_notice(run_dir):
        raise TunelabError(replaced_run_notice(run_dir))
    if not info_path.is_file():
        raise TunelabError(f"{info_path} is missing: it is written by {PRODUCER}")
    config_path, log_path = run_dir / "config.yaml", run_dir / "train_log.json"
    return Run(
        directory=run_dir,
        info=read_json(info_path, dict),
        config=config_path.read_text(encoding="utf-8") if config_path.is_file() else None,
        train_log=read_json(log_path, list) if log_path.is_file() else [],
    )


def read_json(path: Path, expected: type):
    return rundir.read_json(path, expected, f"rerun {PRODUCER}")


def read_metrics(path: Path) -> dict:
    metrics = read_json(path, dict)
    missing = [key for key in METRIC_KEYS if key not in metrics]
    if missing:
        raise TunelabError(f"{path} lacks {', '.join(missing)}; rerun {PRODUCER}")
    return metrics


def training_blocks(run: Run, figures: dict[str, Figure]) -> list[tuple]:
    info = run.info
    train, validation = _loss_points(run.train_log, "loss"), _loss_points(run.train_log, "eval_loss")
    facts = [f"method: {METHOD_DESCRIPTIONS.get(info.get('method', 'lora'), info.get('method'))}",
             f"training rows: {format_value(info.get('train_rows'))}",
             f"evaluation rows: {format_value(info.get('eval_rows'))}",
             _final_loss("training loss", train), _final_loss("validation loss", validation)]
    if info.get("best_checkpoint"):  # metric_for_best_model
        best = info["best_checkpoint"]
        facts.append(f"adapter from step {best['step']:,}, the checkpoint with the best {best['metric']} "
                     f"({best['value']:.4f}), not the last")
    facts += [f"WARNING: {warning}" for warning in info.get("warnings", [])]  # tunelab.divergence
    blocks: list[tuple] = [("heading", 2, "Training"), ("list", facts)]
    if not train and not validation:
        return blocks + [("paragraph", "No training or validation loss in train_log.json "
                                       "(missing or empty), so there is no loss plot.")]
    figures["loss.png"] = loss_figure(train, validation)
    return blocks + [("image", "loss.png", "training and validation loss by step")]


def _final_loss(what: str, points: list[tuple]) -> str:
    if not points:
        return f"{what}: {NOT_RECORDED}"
    step, value = points[-1]
    return f"final {what}: {value:.4f} at step {step:,}"


def parameter_blocks(parameters: dict) -> list[tuple]:
    trainable, total = parameters.get("trainable"), parameters.get("total")
    if trainable is None or total is None:
        counts = f"Parameter counts {NOT_RECORDED}."
    else:
        percent = parameters.get("percent", 100 * trainable / total if total else 0.0)
        counts = f"Trainable parameters: {trainable:,} of {total:,} ({percent:.3g}%)."
    counting = parameters.get("counting", f"How they were counted: {NOT_RECORDED}.")
    return [("heading", 2, "Parameters"), ("paragraph", counts), ("paragraph", counting)]


def timing_blocks(timings: dict) -> list[tuple]:
    names = {**TIMING_NAMES, **{key: key.replace("_", " ") for key in timings if key not in TIMING_NAMES}}
    rows = [[label, duration(timings.get(key))] for key, label in names.items()]
    return [("heading", 2, "Timings"), ("table", ["phase", "time"], rows)]


def memory_blocks(memory: dict) -> list[tuple]:
    if memory.get("peak_bytes") is None:
        text = f"Peak memory: {NOT_RECORDED}."
    else:
        text = (f"Peak memory: {format_bytes(memory['peak_bytes'])} (device: {memory.get('device', NOT_RECORDED)}; "
                f"measured as: {memory.get('how', NOT_RECORDED)}).")
    return [("heading", 2, "Memory"), ("paragraph", text)]


MONITORED = {
    "torch_alloc_gib": "allocated by PyTorch, GiB", "torch_reserved_gib": "reserved by PyTorch, GiB",
    "torch_peak_alloc_gib": "peak allocated by PyTorch, GiB", "mem_used_gib": "used on the device, GiB",
    "mem_total_gib": "device total, GiB", "util_pct": "utilisation, %", "rss_gib": "resident memory, GiB",
    "peak_rss_gib": "peak resident memory, GiB",
}


def monitoring_blocks(run: Run, figures: dict[str, Figure]) -> list[tuple]:
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
    figures["memory.png"] = memory_figure(samples)
    return blocks + [("image", "memory.png", "memory by training step, per device")]


def _monitoring_samples(path: Path) -> list[dict]:
    try:
        samples = json.loads(path.read_text(encoding="utf-8"))["samples"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return []
    return [s for s in samples if isinstance(s, dict) and "step" in s and isinstance(s.get("devices"), dict)]


def mapping_blocks(title: str, mapping: dict | None) -> list[tuple]:
    if not mapping:
        return [("heading", 2, title), ("paragraph", f"{title}: {NOT_RECORDED}.")]
    return [("heading", 2, title),
            ("table", ["item", "value"], [[str(key), format_value(item)] for key, item in mapping.items()])]


def _loss_points(log: list, key: str) -> list[tuple]:
    return [(entry["step"], entry[key]) for entry in log
            if isinstance(entry, dict) and entry.get(key) is not None and "step" in entry]


def pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def points(difference: float) -> str:
    return f"{100 * difference:+.1f} points"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_RECORDED
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


def format_value(value) -> str:
    if value is None:
        return NOT_RECORDED
    if isinstance(value, list):
        return ", ".join(format_value(item) for item in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{key} {format_value(item)}" for key, item in value.items()) or "none"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
