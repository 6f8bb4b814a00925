"""The NLI recipe: 3-way classification settings (SNLI, MultiNLI or the offline starter set), one
configuration of the classification recipe (tunelab.classify.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.classify.config import CLASSIFIER, HEADS, ClassificationRecipe

__all__ = ["CLASSIFIER", "HEADS", "NLI_LABELS", "NLIRecipe", "PROMPT_TEMPLATE"]

NLI_LABELS = ("entailment", "neutral", "contradiction")
PROMPT_TEMPLATE = "Premise: {premise}\nHypothesis: {hypothesis}\nRelationship:"


@dataclass
class NLIRecipe(ClassificationRecipe):
    """A 3-way NLI classification recipe (SNLI, MultiNLI or the offline starter set)."""

    dataset: str = field(default="starter", metadata={
        "group": "data", "help": "starter (the offline set), a folder of train/validation/test files (.jsonl, .csv "
                                 "or .parquet), one such file, or a Hub id"})
    labels: list[str] = field(default_factory=lambda: list(NLI_LABELS), metadata={
        "group": "data", "help": "the class names in order; a label in the data may also be its position "
                                 "(the Hub's 0 entailment, 1 neutral, 2 contradiction)"})
    text_columns: list[str] = field(default_factory=lambda: ["premise", "hypothesis"], metadata={
        "group": "data", "help": "the columns the model reads (SNLI's sentence1/sentence2 are read as "
                                 "premise/hypothesis)"})
    label_words: list[str] | None = field(default_factory=lambda: list(NLI_LABELS), metadata={
        "group": "data", "help": f"the answer word for each of {', '.join(NLI_LABELS)}"})
    prompt_template: str | None = field(default=PROMPT_TEMPLATE, metadata={
        "group": "data", "help": "the text the model reads, with {premise} and {hypothesis} in it; the label word "
                                 "follows its end"})
