"""The sweep report: every run's figures, the mean ± standard deviation over seeds, the setting chosen
on validation, and metric vs setting with error bars."""

from __future__ import annotations

import csv
import io
import json
import shlex
import statistics
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.metrics import HEADLINE_METRICS, METRIC_NAMES
from tunelab.report.common import pct
from tunelab.report.figures import new_figure
from tunelab.report.render import write_documents
from tunelab.rundir import MODELS, atomic_write_json, atomic_write_text
from tunelab.sweep.grid import finished, run_name


def run_results(sweep_dir: Path, run: dict) -> dict:
    """One run's figures: test metrics (and intervals) per split, validation figure, time, peak memory."""
    folder = sweep_dir / run["name"]
    result = {"name": run["name"], "settings": run["settings"], "finished": finished(sweep_dir, run)}
    if not result["finished"]:
        return result
    info = json.loads((folder / "run_info.json").read_text(encoding="utf-8"))
    result["train_s"] = (info.get("timings_s") or {}).get("train")
    result["total_s"] = (info.get("timings_s") or {}).get("total")
    peak = (info.get("memory") or {}).get("peak_bytes")
    result["peak_gib"] = peak / 2**30 if peak else None
    result["validation"] = validation_figure(folder)
    result["splits"] = {}
    for split_dir in sorted(p for p in (folder / "eval").iterdir() if p.is_dir()):
        models = {}
        for model in MODELS:
            path = split_dir / model / "metrics.json"
            if path.is_file():
                metrics = json.loads(path.read_text(encoding="utf-8"))
                models[model] = {metric: metrics[metric] for metric in HEADLINE_METRICS if metric in metrics}
        statistics_path = split_dir / "statistics.json"
        if statistics_path.is_file():
            intervals = json.loads(statistics_path.read_text(encoding="utf-8"))["intervals"]
            for model, figures in models.items():
                figures["intervals"] = {m: [intervals[m][model]["low"], intervals[m][model]["high"]] for m in figures}
        if models:
            result["splits"][split_dir.name] = models
    return result


def validation_figure(run_dir: Path) -> dict | None:
    """The last validation accuracy the Trainer logged (the final model's), else the last validation loss."""
    path = run_dir / "train_log.json"
    log = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    for key, higher_is_better in (("eval_accuracy", True), ("eval_loss", False)):
        values = [entry[key] for entry in log if key in entry]
        if values:
            return {"name": key.removeprefix("eval_"), "value": values[-1], "higher_is_better": higher_is_better}
    return None


def summarize(results: list[dict], seeds_field: str = "seed") -> list[dict]:
    """Per setting (the swept values other than the seed): mean ± sample standard deviation over its finished runs."""
    groups: dict[str, list[dict]] = {}
    for result in results:
        if result["finished"]:
            key = run_name({k: v for k, v in result["settings"].items() if k != seeds_field}) or "all runs"
            groups.setdefault(key, []).append(result)
    summary = []
    for setting, members in groups.items():
        row = {"setting": setting, "runs": len(members)}
        validation = [m["validation"]["value"] for m in members if m["validation"]]
        row["validation"] = spread(validation)
        row["validation_name"] = next((m["validation"]["name"] for m in members if m["validation"]), None)
        row["higher_is_better"] = next((m["validation"]["higher_is_better"] for m in members if m["validation"]), True)
        row["test"] = {}
        for split in members[0]["splits"]:
            row["test"][split] = {model: {metric: spread([m["splits"][split][model][metric] for m in members
                                                          if split in m["splits"]])
                                          for metric in HEADLINE_METRICS}
                                  for model in members[0]["splits"][split]}
        summary.append(row)
    return summary


def spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def best_setting(summary: list[dict]) -> dict | None:
    """The setting with the best mean validation figure; test figures never take part."""
    scored = [row for row in summary if row["validation"]]
    if not scored:
        return None
    sign = 1 if scored[0]["higher_is_better"] else -1
    return max(scored, key=lambda row: sign * row["validation"]["mean"])


def write_sweep_report(sweep_dir: str | Path) -> Path:
    """SWEEP_DIR/report/ (report.md/html/pdf, sweep.png) and SWEEP_DIR/sweep_results.{json,csv}; returns report.md."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "sweep.json"
    if not path.is_file():
        raise TunelabError(f"{path} not found: give the folder `tunelab sweep` wrote (it holds sweep.json)")
    sweep = json.loads(path.read_text(encoding="utf-8"))
    results = [run_results(sweep_dir, run) for run in sweep["runs"]]
    summary = summarize(results)
    best = best_setting(summary)
    atomic_write_json(sweep_dir / "sweep_results.json", {"recipe": sweep["recipe"], "grid": sweep["grid"],
                                                         "runs": results, "settings": summary,
                                                         "best": best["setting"] if best else None})
    atomic_write_text(sweep_dir / "sweep_results.csv", results_csv(results))
    figures = {"sweep.png": sweep_figure(summary)} if summary else {}
    return write_documents(report_blocks(sweep, results, summary, best, bool(figures)), figures, sweep_dir / "report")


def report_blocks(sweep: dict, results: list[dict], summary: list[dict], best: dict | None, plot: bool) -> list[tuple]:
    done = sum(r["finished"] for r in results)
    grid = "; ".join(f"{field}: {', '.join(values)}" for field, values in sweep["grid"].items())
    blocks: list[tuple] = [
        ("heading", 1, f"tunelab sweep: {Path(sweep['recipe']).name}"),
        ("paragraph", f"Grid {grid} ({len(results)} runs, {done} finished); fixed settings: "
                      f"{shlex.join(sweep['fixed']) or 'none'}. Each run has its own report in its folder."),
        ("heading", 2, "Chosen setting (by validation, never test)"),
        ("paragraph", best_sentence(best)),
        ("heading", 2, "Each setting: mean ± standard deviation over its runs"),
        ("table", *summary_table(summary)),
    ]
    if plot:
        blocks.append(("image", "sweep.png", "validation and test figures per setting, mean ± standard deviation"))
    blocks += [("heading", 2, "Every run"), ("table", *runs_table(results))]
    return blocks


def best_sentence(best: dict | None) -> str:
    if best is None:
        return "No finished run logged a validation figure, so no setting is chosen."
    validation = best["validation"]
    std = f" ± {fraction(validation['std'], best['validation_name'])}" if validation["std"] is not None else ""
    return (f"{best['setting']}: mean validation {best['validation_name']} "
            f"{fraction(validation['mean'], best['validation_name'])}{std} over {validation['n']} run(s). "
            "The test figures below are reported for every setting but played no part in the choice.")


def fraction(value: float | None, name: str) -> str:
    if value is None:
        return "n/a"
    return pct(value) if name != "loss" else f"{value:.4f}"


def mean_std(figures: dict | None, name: str = "accuracy") -> str:
    if not figures:
        return "n/a"
    if figures["std"] is None:
        return f"{fraction(figures['mean'], name)} (1 run)"
    return f"{fraction(figures['mean'], name)} ± {fraction(figures['std'], name)}"


def summary_table(summary: list[dict]) -> tuple[list[str], list[list[str]]]:
    splits = list(dict.fromkeys(split for row in summary for split in row["test"]))
    header = ["setting", "runs", "validation", *(f"{split} {METRIC_NAMES[m]} (fine-tuned)" for split in splits
                                                 for m in HEADLINE_METRICS),
              *(f"{split} accuracy (baseline)" for split in splits)]
    rows = []
    for row in summary:
        cells = [row["setting"], str(row["runs"]), mean_std(row["validation"], row["validation_name"] or "accuracy")]
        cells += [mean_std(row["test"].get(split, {}).get("finetuned", {}).get(m)) for split in splits
                  for m in HEADLINE_METRICS]
        cells += [mean_std(row["test"].get(split, {}).get("baseline", {}).get("accuracy")) for split in splits]
        rows.append(cells)
    return header, rows


def runs_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "validation", "split", "baseline accuracy [95% CI]", "fine-tuned accuracy [95% CI]",
              "fine-tuned macro-F1", "train time", "peak memory"]
    rows = []
    for result in results:
        if not result["finished"]:
            rows.append([result["name"], "not finished", "", "", "", "", "", ""])
            continue
        validation = result["validation"]
        for split, models in result["splits"].items():
            rows.append([result["name"], fraction(validation["value"], validation["name"]) if validation else "n/a",
                         split, with_interval(models.get("baseline")), with_interval(models.get("finetuned")),
                         pct(models["finetuned"]["macro_f1"]) if "finetuned" in models else "n/a",
                         f"{result['train_s']:.1f} s" if result.get("train_s") is not None else "n/a",
                         f"{result['peak_gib']:.2f} GiB" if result.get("peak_gib") else "n/a"])
    return header, rows


def with_interval(figures: dict | None) -> str:
    if not figures:
        return "n/a"
    interval = figures.get("intervals", {}).get("accuracy")
    bounds = f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else ""
    return pct(figures["accuracy"]) + bounds


def results_csv(results: list[dict]) -> str:
    fields = list(dict.fromkeys(field for result in results for field in result["settings"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", *fields, "finished", "validation_metric", "validation", "split", "model", *HEADLINE_METRICS,
                     "accuracy_low", "accuracy_high", "train_s", "peak_gib"])
    for result in results:
        settings = [result["settings"].get(field, "") for field in fields]
        if not result["finished"]:
            writer.writerow([result["name"], *settings, False])
            continue
        validation = result["validation"] or {}
        for split, models in result["splits"].items():
            for model, figures in models.items():
                interval = figures.get("intervals", {}).get("accuracy", ["", ""])
                writer.writerow([result["name"], *settings, True, validation.get("name", ""),
                                 validation.get("value", ""), split, model,
                                 *(figures.get(m, "") for m in HEADLINE_METRICS), *interval,
                                 result.get("train_s", ""), result.get("peak_gib", "")])
    return buffer.getvalue()


def sweep_figure(summary: list[dict]):
    """Per setting: the validation figure and each split's fine-tuned test accuracy, mean ± standard deviation."""
    figure = new_figure((max(6.0, 1.6 * len(summary) + 2), 4.2))
    axes = figure.add_subplot()
    x = list(range(len(summary)))
    series = [("validation " + (summary[0]["validation_name"] or ""), [row["validation"] for row in summary])]
    for split in dict.fromkeys(split for row in summary for split in row["test"]):
        series.append((f"{split} accuracy (fine-tuned)",
                       [row["test"].get(split, {}).get("finetuned", {}).get("accuracy") for row in summary]))
        series.append((f"{split} accuracy (baseline)",
                       [row["test"].get(split, {}).get("baseline", {}).get("accuracy") for row in summary]))
    for number, (label, values) in enumerate(series):
        shown = [(i, v) for i, v in zip(x, values) if v]
        if shown:
            axes.errorbar([i + 0.08 * (number - len(series) / 2) for i, _ in shown], [v["mean"] for _, v in shown],
                          yerr=[v["std"] or 0 for _, v in shown], fmt="o", capsize=4, label=label)
    axes.set_xticks(x, [row["setting"] for row in summary], rotation=15, ha="right")
    axes.set_ylabel("mean ± standard deviation over seeds")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title("Sweep: figures per setting")
    return figure
