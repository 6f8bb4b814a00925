"""3-way NLI classification: recipe, data, trainer and pipeline."""
