"""Text classification with your own labels and columns: recipe settings (tunelab.classify.config).

The data, trainer and pipeline are NLI's, made general: tunelab.nli.data, tunelab.nli.trainer and
tunelab.nli.pipeline serve every classification recipe, NLI being one configuration of it.
"""
