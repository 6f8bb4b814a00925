"""Chat SFT with TRL: recipe, conversations, chat format, pipeline and serving."""

from tunelab.config import run_recipe


def run(defaults, argv: list[str] | None = None) -> None:
    """Entry point of a chat recipe file, `run(RECIPE)`: the settings parsed, then tunelab.chat.pipeline.main."""
    run_recipe(defaults, argv, "tunelab.chat.pipeline")
