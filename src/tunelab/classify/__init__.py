"""Text classification with your own labels and columns: recipe settings (tunelab.classify.config).

The data, trainer and pipeline are NLI's, made general: tunelab.nli.data, tunelab.nli.trainer and
tunelab.nli.pipeline serve every classification recipe, NLI being one configuration of it.
"""

from tunelab.config import run_recipe


def run(defaults, argv: list[str] | None = None) -> None:
    """Entry point of a classification recipe file, `run(RECIPE)`: the settings parsed, then the pipeline's main."""
    run_recipe(defaults, argv, "tunelab.nli.pipeline")
