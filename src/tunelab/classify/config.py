"""The classification recipe: any labels, any text columns, a prompt with a slot for each (NLI is one setting of it)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tunelab.config import Recipe, failed, unfilled_slots

CLASSIFIER = "classifier"
HEADS = ("label_words", CLASSIFIER)
SLOT = re.compile(r"\{(\w+)\}")


@dataclass
class ClassificationRecipe(Recipe):
    """A text-classification recipe: rows of text columns and a label, one of `labels`."""

    dataset: str = field(default="starter_sentiment", metadata={
        "group": "data", "help": "a starter set (starter_sentiment; NLI: starter, starter_mnli), a folder of "
                                 "train/validation/test files (.jsonl, .csv or .parquet), one such file (test_fraction "
                                 "of it held out), a Hub id, or a local copy of a Hub dataset"})
    dataset_config: str | None = field(default=None, metadata={
        "group": "data", "help": "the Hub dataset's configuration name, if it has several"})
    train_split: str = field(default="train", metadata={"group": "data", "help": "the split to train on"})
    extra_train_dataset: str | None = field(default=None, metadata={
        "group": "data", "help": "a second dataset (as --dataset names one) whose whole train split is added to the "
                                 "train rows chosen below, e.g. starter: the offline set's 480 rows beside your own; "
                                 "ignored when it is --dataset itself"})
    validation_split: str = field(default="validation", metadata={
        "group": "data", "help": "the split evaluated during training"})
    test_splits: list[str] = field(default_factory=lambda: ["test"], metadata={
        "group": "data", "help": "the splits scored before and after fine-tuning"})
    train_stride: int = field(default=1, metadata={
        "group": "data", "help": "every this-many-th train row, after dropping rows without a gold label"})
    train_size: int | None = field(default=None, metadata={
        "group": "data", "help": "then at most this many train rows (none: all)"})
    validation_stride: int = field(default=1, metadata={
        "group": "data", "help": "every this-many-th validation row, after dropping rows without a gold label"})
    validation_size: int | None = field(default=None, metadata={
        "group": "data", "help": "then at most this many validation rows (none: all)"})
    test_stride: int = field(default=1, metadata={
        "group": "data", "help": "every this-many-th test row, after dropping rows without a gold label"})
    test_size: int | None = field(default=None, metadata={
        "group": "data", "help": "then at most this many test rows (none: all)"})
    train_sample: int | None = field(default=None, metadata={
        "group": "data", "help": "or this many random train rows (seeded by sample_seed and the split name; "
                                 "all rows when the split has fewer)"})
    validation_sample: int | None = field(default=None, metadata={
        "group": "data", "help": "or this many random validation rows"})
    test_sample: int | None = field(default=None, metadata={"group": "data", "help": "or this many random test rows"})
    test_fraction: float = field(default=0.2, metadata={
        "group": "data", "help": "when dataset is a single file: hold this fraction of its rows out as the test "
                                 "split (seeded by sample_seed); 0 reads the whole file for every split"})
    validation_fraction: float = field(default=0.0, metadata={
        "group": "data", "help": "hold this fraction of the train rows out as the validation set instead of "
                                 "reading validation_split (the MultiNLI rule; 0.1 for a data folder with no "
                                 "validation file, or a single file split by test_fraction)"})
    sample_seed: int = field(default=42, metadata={"group": "data", "help": "seed of the random rows (*_sample)"})
    labels: list[str] = field(default_factory=lambda: ["negative", "positive"], metadata={
        "group": "data", "help": "the class names, two or more, in order: a string label is matched by name (any "
                                 "case), an integer label is a position in this list (as the Hub's ClassLabel "
                                 "columns store them); with two, the second is the positive class"})
    text_columns: list[str] = field(default_factory=lambda: ["text"], metadata={
        "group": "data", "help": "the columns the model reads, one or more; prompt_template has a {column} slot "
                                 "for each"})
    label_column: str = field(default="label", metadata={"group": "data", "help": "the column of the label"})
    label_words: list[str] | None = field(default=None, metadata={
        "group": "data", "help": "the answer word for each label, in the order of labels (none: the label names)"})
    prompt_template: str | None = field(default=None, metadata={
        "group": "data", "help": "the text the model reads, with a {column} slot for each text column; the label "
                                 "word follows its end (none: a 'Column: {column}' line for each, then "
                                 "'Label_column:')"})
    use_chat_template: bool = field(default=False, metadata={
        "group": "data", "help": "wrap the prompt as a user turn in the model's chat template; the label word "
                                 "then opens the assistant's answer"})
    label_scoring: str = field(default="first_token", metadata={
        "group": "data", "help": "score a label by its first token or its whole sequence: first_token or sequence"})
    head: str = field(default="label_words", metadata={
        "group": "model", "help": "label_words: the language model scores the label words after the prompt; "
                                  "classifier: a new linear head with one output a label on the last token "
                                  "(AutoModelForSequenceClassification), trained in full beside LoRA and saved with "
                                  "the adapter; its baseline is the label words' zero-shot score"})
    annotator_labels: bool = field(default=False, metadata={
        "group": "optimisation", "help": "train towards the share of annotators who chose each label, for rows that "
                                         "carry SNLI/MultiNLI's annotator_labels (others: their gold label); "
                                         "evaluation always scores the gold label"})
    label_smoothing: float = field(default=0.0, metadata={
        "group": "optimisation", "help": "training targets give this much probability mass, spread evenly, to every "
                                         "label (0: one-hot); evaluation losses are never smoothed"})
    metric_for_best_model: str | None = field(default=None, metadata={
        "group": "optimisation", "help": "adapter and evaluation from the checkpoint with the best validation loss "
                                         "or accuracy ('loss' or 'accuracy'), not the last; needs save_strategy "
                                         "epoch or steps"})
    max_length: int = field(default=256, metadata={
        "group": "data", "help": "tokens per prompt; longer prompts are cut"})
    temperature_scaling: bool = field(default=False, metadata={
        "group": "run", "help": "also score the validation split with both models (RUN_DIR/calibration/) and report, "
                                 "beside the raw calibration figures, those after a temperature fitted there (test "
                                 "figures are never changed)"})

    def words(self) -> list[str]:
        """The answer word of each label: label_words, or the label names."""
        return list(self.label_words) if self.label_words is not None else list(self.labels)

    def template(self) -> str:
        """prompt_template, or a 'Column: {column}' line for each text column and then 'Label_column:'."""
        if self.prompt_template is not None:
            return self.prompt_template
        lines = [f"{_title(column)}: {{{column}}}" for column in self.text_columns]
        return "\n".join([*lines, f"{_title(self.label_column)}:"])

    def problems(self) -> list[str]:
        checks = [
            *self.label_checks(),
            *self.column_checks(),
            (self.label_scoring in ("first_token", "sequence"),
             f"label_scoring must be 'first_token' or 'sequence', not {self.label_scoring!r}"),
            (self.head in HEADS, f"head must be one of {', '.join(HEADS)}, not {self.head!r}"),
            (self.head != CLASSIFIER or self.method != "lora" or "lm_head" not in self.lora_target_modules,
             "lora_target_modules names lm_head, which --head classifier replaces by a new head: remove lm_head"),
            (not self.padding_free or (self.label_scoring, self.head) == ("first_token", "label_words"),
             "padding_free packs rows for label_scoring first_token with head label_words only: "
             "set --padding_free false"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), not {self.label_smoothing}"),
            (self.metric_for_best_model in (None, "loss", "accuracy"),
             f"metric_for_best_model must be loss or accuracy, not {self.metric_for_best_model!r}"),
            (self.metric_for_best_model is None or self.save_strategy != "no",
             "metric_for_best_model picks among saved checkpoints: set --save_strategy epoch (or steps)"),
            (self.max_length >= 16, f"max_length must be at least 16, not {self.max_length}"),
            *(check for split in ("train", "validation", "test") for check in self.split_checks(split)),
            (0 <= self.test_fraction < 1, f"test_fraction must be in [0, 1), not {self.test_fraction}"),
            (0 <= self.validation_fraction < 1,
             f"validation_fraction must be in [0, 1), not {self.validation_fraction}"),
            (self.validation_fraction == 0 or (self.validation_sample is None and self.validation_stride == 1
                                               and self.validation_size is None),
             "validation_fraction holds validation rows out of the train rows, so validation_sample/"
             "validation_stride/validation_size do not apply: reset them, or set validation_fraction 0"),
        ]
        return super().problems() + failed(checks)

    def label_checks(self) -> list[tuple[bool, str]]:
        repeated = sorted({label for label in self.labels if self.labels.count(label) > 1})
        words = self.words()
        return [
            (len(self.labels) >= 2, f"labels needs at least two names, in order (e.g. --labels negative,positive), "
                                    f"not {self.labels}"),
            (not repeated, f"labels must all differ, but {', '.join(repeated)} appears more than once"),
            (len(words) == len(self.labels), f"label_words needs {len(self.labels)} words, one for each of "
                                             f"{', '.join(self.labels)}, not {len(words)}"),
            (len(set(words)) == len(words), "label_words must all differ"),
        ]

    def column_checks(self) -> list[tuple[bool, str]]:
        template, columns = self.template(), self.text_columns
        slots = SLOT.findall(template)
        unknown = list(dict.fromkeys(unfilled_slots(template, tuple(columns))))
        return [
            (len(columns) >= 1, "text_columns is empty: name the column(s) the model reads"),
            (len(set(columns)) == len(columns), f"text_columns must all differ, not {columns}"),
            (self.label_column not in columns, f"label_column {self.label_column!r} is also a text column"),
            (not unknown, f"prompt_template has {', '.join(f'{{{s}}}' for s in unknown)}, which no column fills "
                          f"(text_columns: {','.join(columns)}): add the column(s) to --text_columns or fix the "
                          "template (write a literal brace as {{ or }})"),
            *((slots.count(column) == 1, f"prompt_template must hold {{{column}}} exactly once, not {template!r}")
              for column in columns),
        ]

    def split_checks(self, split: str) -> list[tuple[bool, str]]:
        stride, size = getattr(self, f"{split}_stride"), getattr(self, f"{split}_size")
        sample = getattr(self, f"{split}_sample")
        return [
            (stride >= 1, f"{split}_stride must be at least 1, not {stride}"),
            (size is None or size >= 1, f"{split}_size must be at least 1 (or none for all rows), not {size}"),
            (sample is None or sample >= 1, f"{split}_sample must be at least 1 (or none), not {sample}"),
            (sample is None or (stride == 1 and size is None),
             f"{split}_sample (random rows) cannot be combined with {split}_stride/{split}_size (every "
             f"k-th row): set {split}_sample none, or {split}_stride 1 and {split}_size none"),
        ]


def _title(column: str) -> str:
    return column.replace("_", " ").capitalize()
