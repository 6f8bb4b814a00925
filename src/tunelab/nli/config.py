"""The NLI recipe: 3-way classification settings (SNLI, MultiNLI or the offline starter set)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.config import Recipe, require

NLI_LABELS = ("entailment", "neutral", "contradiction")
HEADS = ("label_words", "classifier")


@dataclass
class NLIRecipe(Recipe):
    """A 3-way NLI classification recipe (SNLI, MultiNLI or the offline starter set)."""

    dataset: str = "starter"
    dataset_config: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    test_splits: list[str] = field(default_factory=lambda: ["test"])
    # Every `stride`-th row after dropping rows without a gold label, then at most `size` rows.
    train_stride: int = 1
    train_size: int | None = None
    validation_stride: int = 1
    validation_size: int | None = None
    test_stride: int = 1
    test_size: int | None = None
    # Or `<split>_sample` random rows per split (seeded by sample_seed and the split name; all rows
    # when the split has fewer), and `validation_fraction` of the train rows held out as the
    # internal validation set instead of reading validation_split (the MultiNLI rule).
    train_sample: int | None = None
    validation_sample: int | None = None
    test_sample: int | None = None
    validation_fraction: float = 0.0
    sample_seed: int = 42
    label_words: list[str] = field(default_factory=lambda: list(NLI_LABELS))
    label_scoring: str = "first_token"
    # label_words: the LM scores the label words after the prompt; classifier: a new 3-way linear head on the
    # last token (AutoModelForSequenceClassification), trained in full and saved with the adapter
    head: str = "label_words"
    max_length: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.label_words) == len(NLI_LABELS),
                 f"label_words needs {len(NLI_LABELS)} words, one for each of {', '.join(NLI_LABELS)}")
        require(len(set(self.label_words)) == len(self.label_words), "label_words must all differ")
        require(self.label_scoring in ("first_token", "sequence"),
                 f"label_scoring must be 'first_token' or 'sequence', not {self.label_scoring!r}")
        require(self.head in HEADS, f"head must be one of {', '.join(HEADS)}, not {self.head!r}")
        require(self.max_length >= 16, f"max_length must be at least 16, not {self.max_length}")
        for split in ("train", "validation", "test"):
            stride, size = getattr(self, f"{split}_stride"), getattr(self, f"{split}_size")
            require(stride >= 1, f"{split}_stride must be at least 1, not {stride}")
            require(size is None or size >= 1, f"{split}_size must be at least 1 (or none for all rows), not {size}")
            sample = getattr(self, f"{split}_sample")
            require(sample is None or sample >= 1, f"{split}_sample must be at least 1 (or none), not {sample}")
            require(sample is None or (stride == 1 and size is None),
                     f"{split}_sample (random rows) cannot be combined with {split}_stride/{split}_size (every "
                     f"k-th row): set {split}_sample none, or {split}_stride 1 and {split}_size none")
        require(0 <= self.validation_fraction < 1,
                 f"validation_fraction must be in [0, 1), not {self.validation_fraction}")
        require(self.validation_fraction == 0 or (self.validation_sample is None and self.validation_stride == 1
                                                   and self.validation_size is None),
                 "validation_fraction holds validation rows out of the train rows, so validation_sample/"
                 "validation_stride/validation_size do not apply: reset them, or set validation_fraction 0")
