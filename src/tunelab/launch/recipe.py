"""Running a recipe: the one path that `tunelab run`, `tunelab plan` and a recipe file's `__main__` take.

A recipe file ends with `run(RECIPE)`; `tunelab run FILE` reads the file's RECIPE (tunelab.config.read_recipe,
which `run-dir`, `sweep` and `bench` use as well) and calls the same `run`. The settings are parsed and checked
first, and only then is the pipeline imported, so a mistake or --help answers at once, not after the seconds
torch and transformers take to load.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tunelab.chat.config import ChatRecipe
from tunelab.classify.config import ClassificationRecipe
from tunelab.config import Recipe, parse_recipe, read_recipe
from tunelab.console import quiet_third_party, say
from tunelab.errors import TunelabError, exit_on_error


def run(defaults: Recipe, argv: list[str] | None = None, prog: str | None = None) -> Path | None:
    """Parse the settings over `defaults`, then print the plan (--dry_run) or run the recipe's pipeline;
    returns the run directory (None for a plan). Errors end on one line."""
    command = typed_command(argv, prog)
    argv = sys.argv[1:] if argv is None else argv
    quiet_third_party(debug="--debug" in argv)
    with exit_on_error(debug="--debug" in argv):
        recipe = parse_recipe(defaults, argv, prog)
        pipeline = pipeline_for(recipe)
        if recipe.dry_run:
            print_plan(recipe, pipeline, command)
            return None
        check_run_fits(recipe)
        return pipeline.main(recipe)


def check_run_fits(recipe: Recipe) -> None:
    """A full or freeze run on a GPU profile that cannot fit its GPUs stops here, before the model loads."""
    if recipe.method != "lora":
        from tunelab.launch.plan import check_run_fits_profile

        check_run_fits_profile(recipe, int(os.environ.get("WORLD_SIZE", "1")))


def typed_command(argv: list[str] | None, prog: str | None) -> list[str]:
    """The recipe file and its settings as typed, for the launch lines a plan prints; empty from Python."""
    if argv is None:
        return list(sys.argv)
    return [prog, *argv] if prog else []


def run_file(path: str, argv: list[str]) -> Path | None:
    """`tunelab run FILE [--setting value ...]`: the file's RECIPE, run as its own `__main__` would."""
    return run(read_recipe(path), argv, prog=path)


def pipeline_for(recipe: Recipe):
    """The pipeline module that runs `recipe`: its `main(recipe)` runs the stages, its `plan_train_rows(recipe)`
    and `plan_eval_rows(recipe)` count the rows a plan's estimates need."""
    if isinstance(recipe, ChatRecipe):
        from tunelab.chat import pipeline
    elif isinstance(recipe, ClassificationRecipe):  # NLI included: the classification pipeline is NLI's, made general
        from tunelab.nli import pipeline
    else:
        raise TunelabError(f"{type(recipe).__name__} is no ClassificationRecipe (NLIRecipe) or ChatRecipe: build "
                           "RECIPE from one of them")
    return pipeline


def print_plan(recipe: Recipe, pipeline, command: list[str]) -> None:
    """The resolved run plan (tunelab.launch.plan), for as many processes as this launch has; `command`, the
    recipe file and its settings as given (empty from Python), makes the launch lines it prints."""
    from tunelab.launch.plan import build_plan, format_plan
    from tunelab.pipeline import process_state

    plan = build_plan(recipe, world_size=process_state().num_processes, train_rows=pipeline.plan_train_rows(recipe),
                      eval_rows=pipeline.plan_eval_rows(recipe), argv=command)
    say(format_plan(plan))
