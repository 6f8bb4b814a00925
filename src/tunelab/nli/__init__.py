"""3-way NLI classification: recipe, data, trainer and pipeline (the classification recipe's NLI configuration)."""
