"""The sweep's grid: every combination of the comma-separated settings, checked before anything runs,
recorded in SWEEP_DIR/sweep.json."""

from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path

from tunelab.config import load_recipe, recipe_file
from tunelab.console import say
from tunelab.errors import TunelabError
from tunelab.rundir import atomic_write_json, is_finished_run, read_json
from tunelab.secrets import redact

NOT_SWEPT = {"report_to"}  # a comma in these is part of one value


RESERVED = ("--output_dir", "--run_name", "--overwrite")


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
            grid[name] = distinct_values(name, [part.strip() for part in value.split(",")])
        else:
            fixed += [f"--{name}", value]
    if not grid:
        raise TunelabError("nothing to sweep: give at least one setting as a comma-separated list, "
                           "e.g. --seed 42,7,1")
    return fixed, grid


def distinct_values(name: str, values: list[str]) -> list[str]:
    """A swept setting's values, each given once: a repeated one would be one run counted twice."""
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise TunelabError(f"--{name} lists {', '.join(repeated)} more than once: give each value once")
    return values


def run_name(settings: dict[str, str]) -> str:
    name = "_".join(f"{field}-{value}" for field, value in settings.items())
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def plan_sweep(recipe_path: str, overrides: list[str], sweep_dir: Path) -> dict:
    """The sweep's record (sweep.json), every combination checked as a recipe before anything runs."""
    fixed, grid = build_grid(recipe_path, overrides)
    runs, named = [], {}
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values))
        name = run_name(settings)
        if name in named:
            raise TunelabError(f"the settings {named[name]} and {settings} would share the run folder {name}: "
                               "give values that differ in letters, digits, '.', '_' or '-'")
        named[name] = settings
        arguments = [*fixed, *itertools.chain.from_iterable((f"--{k}", v) for k, v in settings.items())]
        load_recipe(recipe_path, [*arguments, "--output_dir", str(sweep_dir), "--run_name", name])  # bad input: now
        runs.append({"name": name, "settings": settings, "arguments": arguments})
    return {"recipe": str(recipe_file(recipe_path).resolve()), "fixed": fixed, "grid": grid, "runs": runs}


def record_sweep(sweep: dict, sweep_dir: Path) -> bool:
    """Write sweep.json, or check that the folder holds this same sweep (then it resumes). A sweep none of whose
    runs finished takes the new command's settings: returns True then, and its runs start again (--overwrite)."""
    path = sweep_dir / "sweep.json"
    if not path.is_file():
        atomic_write_json(path, sweep)
        return False
    saved = read_sweep(path)
    if saved == redact(sweep):  # sweep.json holds secrets in its arguments redacted
        say(f"Resuming the sweep in {sweep_dir}")
        return False
    same_grid = [saved.get("recipe"), saved.get("grid")] == redact([sweep["recipe"], sweep["grid"]])
    if not same_grid or any(finished(sweep_dir, run) for run in saved.get("runs", [])):
        raise TunelabError(f"{sweep_dir} holds another sweep (recipe {saved.get('recipe')}, grid "
                           f"{saved.get('grid')}{', finished runs' if same_grid else ''}): give another "
                           "--sweep_dir, or the same settings to resume it")
    say(f"No run of the sweep in {sweep_dir} finished: starting it again with this command's fixed settings")
    atomic_write_json(path, sweep)
    return True


def read_sweep(path: Path) -> dict:
    return read_json(path, dict, "restore it, or give another --sweep_dir")


def finished(sweep_dir: Path, run: dict) -> bool:
    return is_finished_run(sweep_dir / run["name"])
