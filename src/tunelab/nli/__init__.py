"""3-way NLI classification: recipe, data, trainer and pipeline."""

from tunelab.config import run_recipe


def run(defaults, argv: list[str] | None = None) -> None:
    """Entry point of an NLI recipe file, `run(RECIPE)`: the settings parsed, then tunelab.nli.pipeline.main."""
    run_recipe(defaults, argv, "tunelab.nli.pipeline")
