"""Repeated runs and grids of settings, ending in one comparative report.

    tunelab sweep RECIPE --seed 42,7,1 --learning_rate 2e-4,5e-4 [--field value ...] [--sweep_dir DIR]
    tunelab sweep RECIPE ... --slurm [--sbatch="--time=02:00:00 --gpus-per-node=1"]
    tunelab sweep-report SWEEP_DIR

A comma-separated value of a scalar setting is swept; list settings (test_splits, lora_target_modules, ...)
and report_to keep their commas. Every combination is one run, in SWEEP_DIR/<name> (its own run
directory with its own report), named after its swept values. SWEEP_DIR (default runs/sweep-<recipe>)
holds sweep.json, the grid; the same command run again reuses the finished runs and resumes the others
from their checkpoints; another grid in the same folder is refused.

Here the runs go one after the other (`tunelab run`, a process each; Ctrl-C lets the current run save a
checkpoint). With --slurm, slurm/sweep.sbatch runs them as a job array, one task per unfinished run
(SWEEP_DIR/tasks/<index>.env gives each task its settings for slurm/single_node.sbatch, so a task
checkpoints, requeues and resumes like any run), and a job that waits for the array writes the report.

The sweep report (SWEEP_DIR/report/report.{md,html,pdf}, sweep.png, sweep_results.json, sweep_results.csv)
has every run's settings, baseline and fine-tuned test metrics with their 95% intervals, validation
figure, training time and peak memory; the mean ± standard deviation over seeds of each setting; the
setting chosen by the mean validation figure (never a test figure); and metric vs setting with error bars.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from tunelab.config import load_recipe
from tunelab.console import say
from tunelab.errors import INTERRUPTED_EXIT_CODE, TrainingInterrupted, TunelabError
from tunelab.metrics import HEADLINE_METRICS, METRIC_NAMES
from tunelab.report.common import pct
from tunelab.report.figures import new_figure
from tunelab.report.render import write_documents
from tunelab.rundir import atomic_write_json, atomic_write_text

NOT_SWEPT = {"report_to"}  # a comma in these is part of one value
RESERVED = ("--output_dir", "--run_name", "--overwrite")
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the grid


def parse_sweep_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="tunelab sweep", description="run every combination of the settings "
                                     "given as comma-separated lists, then write the sweep report")
    parser.add_argument("recipe")
    parser.add_argument("--sweep_dir", help="folder of the sweep's runs (default: runs/sweep-<recipe>)")
    parser.add_argument("--slurm", action="store_true", help="submit the runs as a Slurm job array "
                                                             "(slurm/sweep.sbatch) instead of running them here")
    parser.add_argument("--sbatch", default="", help="sbatch flags for --slurm, one string after '=': "
                                                     "--sbatch=\"--time=02:00:00 --gpus-per-node=1\"")
    return parser.parse_known_args(argv)


def build_grid(recipe_path: str, overrides: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(fixed arguments, field -> swept values) from `--field value` overrides."""
    for argument in overrides:
        if argument.split("=")[0] in RESERVED:
            raise TunelabError(f"{argument.split('=')[0]} is set by the sweep (each run is SWEEP_DIR/<name>): "
                               "use --sweep_dir to choose where the runs go")
    defaults = load_recipe(recipe_path, [])
    list_fields = {name for name, value in vars(defaults).items() if isinstance(value, list)} | NOT_SWEPT
    fixed, grid = [], {}
    pairs = iter(overrides)
    for argument in pairs:
        if not argument.startswith("--"):
            raise TunelabError(f"unexpected argument {argument!r}: give settings as --field value")
        name, _, value = argument[2:].partition("=")
        if not value:
            value = next(pairs, None)
            if value is None:
                raise TunelabError(f"--{name} needs a value")
        if name == "config":
            value = str(Path(value).resolve())  # the runs may start elsewhere (a Slurm node, another folder)
        if "," in value and name not in list_fields:
            grid[name] = [part.strip() for part in value.split(",")]
        else:
            fixed += [f"--{name}", value]
    if not grid:
        raise TunelabError("nothing to sweep: give at least one setting as a comma-separated list, "
                           "e.g. --seed 42,7,1")
    return fixed, grid


def run_name(settings: dict[str, str]) -> str:
    name = "_".join(f"{field}-{value}" for field, value in settings.items())
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def plan_sweep(recipe_path: str, overrides: list[str], sweep_dir: Path) -> dict:
    """The sweep's record (sweep.json), every combination checked as a recipe before anything runs."""
    fixed, grid = build_grid(recipe_path, overrides)
    runs = []
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values))
        name = run_name(settings)
        arguments = [*fixed, *itertools.chain.from_iterable((f"--{k}", v) for k, v in settings.items())]
        load_recipe(recipe_path, [*arguments, "--output_dir", str(sweep_dir), "--run_name", name])  # bad input: now
        runs.append({"name": name, "settings": settings, "arguments": arguments})
    return {"recipe": str(Path(recipe_path).resolve()), "fixed": fixed, "grid": grid, "runs": runs}


def record_sweep(sweep: dict, sweep_dir: Path) -> None:
    """Write sweep.json, or check that the folder holds this same sweep (then it resumes)."""
    path = sweep_dir / "sweep.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != sweep:
            raise TunelabError(f"{sweep_dir} holds another sweep (recipe {saved.get('recipe')}, grid "
                               f"{saved.get('grid')}): give another --sweep_dir, or the same settings to resume it")
        say(f"Resuming the sweep in {sweep_dir}")
        return
    atomic_write_json(path, sweep)


def finished(sweep_dir: Path, run: dict) -> bool:
    return (sweep_dir / run["name"] / "run_info.json").is_file()


# ---------------------------------------------------------------- running it


def sweep_command(argv: list[str]) -> Path:
    """`tunelab sweep`: plan, run (here or on Slurm) and report; returns the sweep directory."""
    args, overrides = parse_sweep_args(argv)
    sweep_dir = Path(args.sweep_dir or Path("runs") / f"sweep-{Path(args.recipe).stem}")
    sweep = plan_sweep(args.recipe, overrides, sweep_dir)
    record_sweep(sweep, sweep_dir)
    if args.slurm:
        submit_to_slurm(sweep, sweep_dir, shlex.split(args.sbatch))
        return sweep_dir
    for index, run in enumerate(sweep["runs"], 1):
        if finished(sweep_dir, run):
            say(f"Run {index} of {len(sweep['runs'])}, {run['name']}: finished before, reusing it")
            continue
        say(f"Run {index} of {len(sweep['runs'])}: {run['name']}")
        run_here(sweep, sweep_dir, run)
    report = write_sweep_report(sweep_dir)
    say(f"Sweep report: {report}")
    return sweep_dir


def run_here(sweep: dict, sweep_dir: Path, run: dict) -> None:
    """`tunelab run` in a process of its own; on Ctrl-C it saves a checkpoint, and the sweep stops after it."""
    command = [sys.executable, "-m", "tunelab.cli", "run", sweep["recipe"], *run["arguments"],
               "--output_dir", str(sweep_dir), "--run_name", run["name"]]
    process = subprocess.Popen(command)
    interrupted = False
    while True:
        try:
            status = process.wait()
            break
        except KeyboardInterrupt:  # the run got the same Ctrl-C: let it save its checkpoint
            interrupted = True
    if interrupted or status in (INTERRUPTED_EXIT_CODE, 130, -2):
        raise TrainingInterrupted(f"sweep stopped during {run['name']}: run the same command again to resume "
                                  "(finished runs are reused, this one resumes from its checkpoint)")
    if status != 0:
        raise TunelabError(f"run {run['name']} failed (exit status {status}, see above): fix the cause and run "
                           "the same command again; finished runs are reused")


def write_task_files(sweep: dict, sweep_dir: Path) -> list[int]:
    """SWEEP_DIR/tasks/<index>.env for each unfinished run: the settings slurm/single_node.sbatch reads."""
    pending = []
    for index, run in enumerate(sweep["runs"]):
        if finished(sweep_dir, run):
            continue
        settings = {"RECIPE": sweep["recipe"], "RECIPE_ARGS": shlex.join(run["arguments"]),
                    "OUTPUT_DIR": str(sweep_dir.resolve()), "RUN_NAME": run["name"]}
        atomic_write_text(sweep_dir / "tasks" / f"{index}.env",
                          "".join(f"{key}={shlex.quote(value)}\n" for key, value in settings.items()))
        pending.append(index)
    return pending


def submit_to_slurm(sweep: dict, sweep_dir: Path, sbatch_flags: list[str]) -> None:
    """One array task per unfinished run, then a job that writes the report once the array has ended."""
    pending = write_task_files(sweep, sweep_dir)
    source = str(REPO / "src")
    environment = {**os.environ, "SWEEP_DIR": str(sweep_dir.resolve()), "REPO_DIR": str(REPO),
                   "PYTHONPATH": os.pathsep.join(filter(None, (source, os.environ.get("PYTHONPATH"))))}
    if sys.prefix != sys.base_prefix:
        environment.setdefault("VENV", sys.prefix)
    dependency = []
    if pending:
        array = sbatch(["--array=" + ",".join(map(str, pending)), *sbatch_flags, str(REPO / "slurm" / "sweep.sbatch")],
                       environment)
        say(f"Submitted job array {array}: {len(pending)} run(s) of {len(sweep['runs'])} in {sweep_dir}")
        dependency = [f"--dependency=afterany:{array}"]
    report_command = shlex.join([sys.executable, "-m", "tunelab.cli", "sweep-report", str(sweep_dir.resolve())])
    report_flags = [flag for flag in sbatch_flags if flag.split("=")[0] in ("--time", "--partition")]
    job = sbatch([*dependency, "--job-name=tunelab-sweep-report", "--ntasks=1", "--cpus-per-task=1",
                  "--gpus-per-node=0", *report_flags, f"--output={sweep_dir.resolve()}/slurm-sweep-report-%j.out",
                  f"--wrap={report_command}"], environment)
    say(f"Submitted job {job}: the sweep report, once the runs have ended ({sweep_dir / 'report' / 'report.md'})")


def sbatch(arguments: list[str], environment: dict[str, str]) -> str:
    try:
        result = subprocess.run(["sbatch", "--parsable", *arguments], env=environment, cwd=REPO,
                                capture_output=True, text=True, timeout=120)
    except FileNotFoundError as error:
        raise TunelabError("sbatch not found: --slurm needs Slurm's commands on this machine") from error
    if result.returncode != 0:
        raise TunelabError(f"sbatch refused the sweep: {result.stderr.strip()}")
    return result.stdout.strip().split(";")[0]


# ---------------------------------------------------------------- the sweep report


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
        for model in ("baseline", "finetuned"):
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
