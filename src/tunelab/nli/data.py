"""Classification data (NLI and any other task): load a split, normalise its schema, subset it, and turn rows
into prompts.

Sources, by the recipe's `dataset` field:
- `starter`: the offline NLI starter set written by `tunelab.nli.starter_data` (cached on disk);
- `starter_mnli`: the same set in MultiNLI's shape (genre column; train, validation,
  validation_matched and validation_mismatched splits, see `starter_data.generate_starter_mnli`);
- `starter_sentiment`: the offline sentiment set of `tunelab.classify.starter_data`;
- a local folder holding `<split>.jsonl`, `<split>.csv` or `<split>.parquet` files;
- a single such file: with `test_fraction` > 0 its rows are split into train and test (and validation,
  see `validation_fraction`), with 0 it serves every split (e.g. SNLI's original `snli_1.0_dev.jsonl`);
- a Hugging Face Hub dataset id (`stanfordnlp/snli`, `nyu-mll/multi_nli`), or a local copy of one (a
  folder in the Hub's layout, with no split files at its top level), both read by `datasets.load_dataset`.

Every source is normalised to rows of the recipe's `text_columns` and `label` (a label name): a string
label is matched by name (any case), an integer label is a position in `labels` (the Hub's ClassLabel
columns: for NLI 0 entailment, 1 neutral, 2 contradiction), and SNLI's original
`sentence1`/`sentence2`/`gold_label` schema is understood. Rows without a gold label
(-1, "-" or empty) are dropped, as SNLI and MultiNLI require. Rows are then chosen by SNLI's stride rule
or by MultiNLI's seeded random sample (`load_nli_splits`); a run keeps its evaluation rows in
RUN_DIR/data/<split>.jsonl (`load_run_rows`), in the normalised schema above.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from tunelab.classify.config import ClassificationRecipe
from tunelab.console import say
from tunelab.errors import TunelabError
from tunelab.nli.config import NLI_LABELS, PROMPT_TEMPLATE
from tunelab.resources import cache_root
from tunelab.rundir import atomic_write_json, open_data_file, read_jsonl, write_jsonl
from tunelab.secrets import redact

NO_GOLD_LABELS = (-1, "-", "", None)
COLUMN_ALIASES = {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}


DATA_SUFFIXES = (".jsonl", ".csv", ".parquet")


@dataclass(frozen=True)
class Prompt:
    """How a row becomes the text the model reads (the label word follows its end)."""

    template: str = PROMPT_TEMPLATE
    add_special_tokens: bool = True  # False inside a chat template, which places its own special tokens
    columns: tuple[str, ...] = ("premise", "hypothesis")  # the text columns, each a {column} slot

    def format(self, row: dict) -> str:
        # One pass, so a premise that happens to contain "{hypothesis}" stays as it is.
        slots = re.compile("|".join(re.escape(f"{{{column}}}") for column in self.columns))
        return slots.sub(lambda match: row[match[0][1:-1]], self.template)


def recipe_prompt(recipe: ClassificationRecipe, tokenizer) -> Prompt:
    """The recipe's prompt template, wrapped as a user turn in the model's chat template if it asks for that."""
    columns = tuple(recipe.text_columns)
    if not recipe.use_chat_template:
        return Prompt(recipe.template(), columns=columns)
    if not tokenizer.chat_template:
        raise TunelabError(f"use_chat_template is on but {recipe.model_name_or_path}'s tokenizer has no chat template: "
                           "set --use_chat_template false")
    wrapped = tokenizer.apply_chat_template([{"role": "user", "content": recipe.template()}], tokenize=False,
                                            add_generation_prompt=True)
    return Prompt(wrapped, add_special_tokens=False, columns=columns)


# ---------------------------------------------------------------------------- loading

def load_nli_split(recipe: ClassificationRecipe, split: str) -> list[dict]:
    """One split of the recipe's dataset, normalised, filtered and subset (see `load_nli_splits`)."""
    return load_nli_splits(recipe, [split])[split]


def load_nli_splits(recipe: ClassificationRecipe, splits: list[str]) -> dict[str, list[dict]]:
    """Each split's rows after dropping rows without a gold label, chosen by the recipe's rule:
    `<role>_sample` random rows (seeded by sample_seed and the split name), or else every
    `<role>_stride`-th row then at most `<role>_size` rows. With `validation_fraction` > 0 the
    validation rows are that fraction of the chosen train rows, drawn at random, disjoint from the
    train rows that remain (MultiNLI has no separate validation split). The train rows then get every
    train row of `extra_train_dataset` added after them."""
    chosen: dict[str, list[dict]] = {}
    roles = {split: _role(recipe, split) for split in splits}
    fraction = validation_fraction(recipe)
    if fraction > 0 and {"train", "validation"} & set(roles.values()):
        train = _choose_rows(recipe, recipe.train_split, "train")
        chosen[recipe.train_split], chosen[recipe.validation_split] = hold_out(
            train, fraction, f"{recipe.sample_seed}:{recipe.train_split}:validation")
    for split in splits:
        if split not in chosen:
            chosen[split] = _choose_rows(recipe, split, roles[split])
        if not chosen[split]:
            raise TunelabError(f"no rows left in {recipe.dataset}:{split} after dropping rows without a gold label "
                               f"and subsetting: check the data or lower {roles[split]}_stride")
        if split == recipe.train_split:
            chosen[split] = chosen[split] + extra_train_rows(recipe)
    return {split: chosen[split] for split in splits}


def adds_extra_train_rows(recipe: ClassificationRecipe) -> bool:
    """Whether `extra_train_dataset` adds rows: it is set and is not the recipe's own dataset (a folder or
    file named two ways, `./d` and `d`, is the same dataset)."""
    extra, own = recipe.extra_train_dataset, recipe.dataset
    if extra is None or extra == own:
        return False
    return not (os.path.exists(extra) and os.path.exists(own) and os.path.samefile(extra, own))


def extra_train_rows(recipe: ClassificationRecipe) -> list[dict]:
    """Every row of the train split of `extra_train_dataset` (none unless `adds_extra_train_rows`)."""
    if not adds_extra_train_rows(recipe):
        return []
    extra = recipe.extra_train_dataset
    return normalise_rows(recipe, _read_split(extra, None, "train", "extra_train_dataset"), source=f"{extra}:train")


def say_extra_train_rows(recipe: ClassificationRecipe, rows: dict[str, list[dict]]) -> None:
    """Where the train rows come from, in one line, when `extra_train_dataset` adds some."""
    if adds_extra_train_rows(recipe) and recipe.train_split in rows:
        extra = len(extra_train_rows(recipe))
        say(f"{recipe.train_split}: {len(rows[recipe.train_split]) - extra} rows of {recipe.dataset} and {extra} "
            f"of {recipe.extra_train_dataset} (extra_train_dataset)")


MISSING_VALIDATION_FRACTION = 0.1  # held out of train when a data folder has no validation file


def validation_fraction(recipe: ClassificationRecipe) -> float:
    """The share of train rows held out for validation: the recipe's validation_fraction, or
    MISSING_VALIDATION_FRACTION for a folder with train and test files but no validation file (the
    per-epoch validation loss still needs rows)."""
    return MISSING_VALIDATION_FRACTION if missing_validation_file(recipe) else recipe.validation_fraction


def missing_validation_file(recipe: ClassificationRecipe) -> bool:
    """Whether the validation rows must come out of the train rows: a data folder has train and test files but
    no validation file, or a single file is split (test_fraction)."""
    if recipe.validation_fraction > 0 or recipe.dataset in STARTER_SETS:
        return False
    if splits_one_file(recipe):
        return True
    folder = Path(recipe.dataset).expanduser()
    if not folder.is_dir():
        return False
    present = {split: _split_file_or_none(folder, split) is not None
               for split in (recipe.train_split, recipe.validation_split, *recipe.test_splits)}
    return not present.pop(recipe.validation_split) and all(present.values())


def splits_one_file(recipe: ClassificationRecipe) -> bool:
    """Whether the test rows are test_fraction of one data file's rows (and train the rest)."""
    return recipe.test_fraction > 0 and Path(recipe.dataset).expanduser().is_file()


def _role(recipe: ClassificationRecipe, split: str) -> str:
    return "train" if split == recipe.train_split else "validation" if split == recipe.validation_split else "test"


def _choose_rows(recipe: ClassificationRecipe, split: str, role: str) -> list[dict]:
    rows = _split_rows(recipe, split, role)
    sample = getattr(recipe, f"{role}_sample")
    if sample is not None:
        return sample_rows(rows, sample, f"{recipe.sample_seed}:{split}")
    return subset_rows(rows, getattr(recipe, f"{role}_stride"), getattr(recipe, f"{role}_size"))


def _split_rows(recipe: ClassificationRecipe, split: str, role: str) -> list[dict]:
    """A split's normalised rows: its file's, or with `splits_one_file` the held-out test rows or the others."""
    if not splits_one_file(recipe):
        return normalise_rows(recipe, _read_split(recipe.dataset, recipe.dataset_config, split),
                              source=f"{recipe.dataset}:{split}")
    rows = normalise_rows(recipe, read_rows(Path(recipe.dataset).expanduser()), source=recipe.dataset)
    kept, test = hold_out(rows, recipe.test_fraction, f"{recipe.sample_seed}:test", "test_fraction")
    return test if role == "test" else kept


# Rows with a gold label in published train splits, so that a plan applies the recipe's rule without the data.
PUBLISHED_TRAIN_ROWS = {"stanfordnlp/snli": 549_367, "nyu-mll/multi_nli": 392_702}


def planned_train_rows(recipe: ClassificationRecipe) -> int | None:
    """The train rows the recipe asks for, known without the data: its rule applied to the split's published
    size where tunelab knows it, else at most the size asked for (None when only the data can tell)."""
    if adds_extra_train_rows(recipe):
        return None
    count, fraction = recipe.train_sample or recipe.train_size, validation_fraction(recipe)
    published = PUBLISHED_TRAIN_ROWS.get(recipe.dataset) if recipe.train_split == "train" else None
    if published is not None:
        count = (min(recipe.train_sample, published) if recipe.train_sample
                 else len(subset_rows(range(published), recipe.train_stride, recipe.train_size)))
    if count is None or fraction == 0:
        return count
    return count - max(1, round(fraction * count))


def subset_rows(rows: list[dict], stride: int, size: int | None) -> list[dict]:
    """Every `stride`-th row, then at most `size` rows (the SNLI reference rule)."""
    return rows[::stride][:size]


def sample_rows(rows: list[dict], count: int, seed: str) -> list[dict]:
    """`count` rows drawn at random with `random.Random(seed)`, kept in their original order (all rows if fewer)."""
    if count >= len(rows):
        return list(rows)
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), count))]


def hold_out(rows: list[dict], fraction: float, seed: str,
             setting: str = "validation_fraction") -> tuple[list[dict], list[dict]]:
    """(kept, held out): round(fraction * len(rows)) rows, at least one, drawn at random and held out."""
    count = max(1, round(fraction * len(rows)))
    if count >= len(rows):
        raise TunelabError(f"{setting} {fraction} of {len(rows)} train rows leaves no rows to train on: "
                           f"lower {setting} or select more train rows")
    held = set(random.Random(seed).sample(range(len(rows)), count))
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def load_run_rows(recipe: ClassificationRecipe, folder: Path, write: bool) -> dict[str, list[dict]]:
    """The rows of every split a run uses; the test rows are kept in `folder`/<split>.jsonl.

    The first start writes them (when `write`), with the data settings that chose them in
    `folder`/selection.json; later stages and restarts score exactly those rows. Train and
    validation rows are chosen again each time (deterministic, and too large to copy).
    """
    saved = check_saved_rows(recipe, folder)
    tests = list(dict.fromkeys(recipe.test_splits))
    rows = load_nli_splits(recipe, [s for s in (recipe.train_split, recipe.validation_split) if s not in tests]
                           + ([] if saved else tests))
    if saved:
        for split in tests:
            if not (folder / f"{split}.jsonl").is_file():
                raise TunelabError(f"{folder / f'{split}.jsonl'} is missing: delete {folder} to choose the rows again")
            rows[split] = read_jsonl(folder / f"{split}.jsonl")
    elif write:
        for split in tests:
            write_jsonl(folder / f"{split}.jsonl", rows[split])
        atomic_write_json(folder / "selection.json", _selection(recipe))
    return rows


FEW_ROWS = 50  # fewer kept rows than this make a result too noisy to read


def warn_about_small_data(recipe: ClassificationRecipe, rows: dict[str, list[dict]]) -> None:
    """A warning, before training, for each split with fewer than FEW_ROWS rows or a label it never shows,
    naming the settings that chose its rows."""
    fraction = validation_fraction(recipe)  # looks at the data folder: once, not once a split
    if splits_one_file(recipe) and recipe.validation_split in rows:
        say(f"{recipe.dataset}: {len(rows[recipe.validation_split])} rows held out of {recipe.train_split} for "
            f"validation ({fraction:.0%}; --validation_fraction), the test rows are {recipe.test_fraction:.0%} of "
            "the file (--test_fraction)")
    elif fraction != recipe.validation_fraction and recipe.validation_split in rows:
        say(f"warning: {recipe.dataset} has no {recipe.validation_split}.jsonl: validating on "
            f"{len(rows[recipe.validation_split])} rows held out of {recipe.train_split} "
            f"({fraction:.0%}; --validation_fraction sets the share)")
    for split, kept in rows.items():
        role = _role(recipe, split)
        sample, stride, size = (getattr(recipe, f"{role}_{name}") for name in ("sample", "stride", "size"))
        if sample is not None:
            rule = f"{role}_sample {sample}: raise it"
        elif fraction > 0 and role == "validation":
            rule = f"validation_fraction {fraction}: raise it"
        elif stride > 1 or size is not None:
            fixes = [f"lower --{role}_stride (now {stride})"] * (stride > 1) + [f"raise --{role}_size (now {size})"] * (
                size is not None)
            rule = " or ".join(fixes)
        else:
            rule = "every row of the data is used: add rows"
        missing = [label for label in recipe.labels if label not in {row["label"] for row in kept}]
        if len(kept) < FEW_ROWS:
            say(f"warning: {split} keeps only {len(kept)} rows of {recipe.dataset} ({rule})")
        if missing:
            say(f"warning: {split} has no {' or '.join(missing)} rows ({rule}, or check the data)")
    for split in set(recipe.test_splits) & set(rows) - {recipe.train_split}:
        shared = shared_rows(rows[split], rows.get(recipe.train_split, []))
        if shared:
            also = f"is also a {recipe.train_split} row: its score is a score on a training row" if shared == 1 \
                else f"are also {recipe.train_split} rows: the scores on them are scores on training rows"
            say(f"warning: {shared} of the {len(rows[split])} {split} rows {also} (check the data's splits)")


def shared_rows(rows: list[dict], others: list[dict]) -> int:
    """How many of `rows` have the same text (every text field but the label) as a row of `others`."""
    def text(row: dict) -> tuple:
        return tuple(sorted((key, value) for key, value in row.items() if isinstance(value, str) and key != "label"))

    seen = {text(row) for row in others}
    return sum(text(row) in seen for row in rows)


def check_saved_rows(recipe: ClassificationRecipe, folder: Path) -> dict | None:
    """The data settings saved with a run's evaluation rows (None before the first start); refuses other settings."""
    manifest, settings = folder / "selection.json", _selection(recipe)
    saved = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else None
    # Settings added since a run was started are compared only when its selection.json holds them.
    changed = ", ".join(f"{k} {saved[k]!r} -> {settings[k]!r}" for k in settings
                        if saved is not None and k in saved and saved[k] != settings[k])
    if changed:
        raise TunelabError(f"{folder} holds evaluation rows chosen with other data settings ({changed}): rerun with "
                           f"the original settings, or start a new run with another --run_name")
    return saved


def _selection(recipe: ClassificationRecipe) -> dict:
    """As selection.json holds it: secrets in a path redacted."""
    return redact({name: getattr(recipe, name) for name in SELECTION_FIELDS})


SELECTION_FIELDS = ("dataset", "dataset_config", "test_splits", "test_stride", "test_size", "test_sample",
                    "sample_seed", "test_fraction", "text_columns", "label_column", "labels")
STARTER_SETS = {"starter": "starter_nli", "starter_mnli": "starter_mnli", "starter_sentiment": "starter_sentiment"}


def _read_split(dataset: str, config: str | None, split: str, setting: str = "dataset") -> list[dict] | Dataset:
    if dataset in STARTER_SETS:
        return read_jsonl(_split_file(starter_data_dir(dataset), split))
    path = Path(dataset).expanduser()
    if path.is_dir() and (not any(path.iterdir()) or any(next(path.glob(f"*{s}"), None) for s in DATA_SUFFIXES)):
        return read_rows(_split_file(path, split))  # an empty folder is named for the files it lacks
    if path.is_dir():  # a local copy of a Hub dataset: its files in the Hub's layout (data/train-*.parquet, ...)
        return _load_from_hub(str(path), config, split)
    if path.suffix in DATA_SUFFIXES or dataset.startswith((".", "/", "~")):
        if not os.path.lexists(path):
            raise TunelabError(f"{setting} path {dataset} does not exist: check the --{setting} path")
        return read_rows(path)
    return _load_from_hub(dataset, config, split)


def _split_file(folder: Path, split: str) -> Path:
    candidate = _split_file_or_none(folder, split)
    if candidate is None:
        found = ", ".join(sorted(p.name for suffix in DATA_SUFFIXES for p in folder.glob(f"*{suffix}"))) or "none"
        raise TunelabError(f"{folder} has no {split}.jsonl, {split}.csv or {split}.parquet (found: {found}): name "
                           f"the file {split}.jsonl (or .csv, .parquet) or set the split name in the recipe")
    return candidate


def _split_file_or_none(folder: Path, split: str) -> Path | None:
    return next((folder / f"{split}{suffix}" for suffix in DATA_SUFFIXES  # a looping link is the reader's to name
                 if os.path.lexists(folder / f"{split}{suffix}")), None)


def read_rows(path: Path) -> list[dict]:
    """The rows of a .jsonl, .csv or .parquet file (any other name is read as JSON lines)."""
    if path.suffix == ".csv":
        return read_csv_rows(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet

        open_data_file(path).close()  # a folder or a looping link: one line, not pyarrow's error
        return pyarrow.parquet.read_table(path).to_pylist()
    return read_jsonl(path)


def read_csv_rows(path: Path) -> list[dict]:
    """A CSV file's rows (its first line names the columns); a row with a field too many or too few, or an
    unclosed quote, is an error naming the file and line."""
    with open_data_file(path, newline="") as handle:
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader, [])
            rows = []
            for fields in reader:
                if fields and len(fields) != len(header):
                    raise TunelabError(f"{path}, line {reader.line_num}: {len(fields)} fields where the header "
                                       f"names {len(header)} ({', '.join(header)}): quote fields that hold commas")
                rows += [dict(zip(header, fields))] if fields else []
        except csv.Error as error:
            raise TunelabError(f"{path}, line {reader.line_num}: {error}: fix the quoting") from None
    return rows


def starter_data_dir(name: str = "starter") -> Path:
    """An offline starter set (`starter`, `starter_mnli` in MultiNLI's shape, or `starter_sentiment`), written
    once into the tunelab cache."""
    from tunelab.classify.starter_data import generate_starter_sentiment
    from tunelab.nli.starter_data import (
        generate_starter_mnli,
        generate_starter_nli,
        write_starter_nli,
    )

    folder = cache_root() / "data" / STARTER_SETS[name]
    generate, last_file = {"starter": (generate_starter_nli, "test.jsonl"),
                           "starter_mnli": (generate_starter_mnli, "validation_mismatched.jsonl"),
                           "starter_sentiment": (generate_starter_sentiment, "test.jsonl")}[name]
    if not (folder / last_file).exists():
        write_starter_nli(folder, generate=generate)
    return folder


def _load_from_hub(dataset: str, config: str | None, split: str) -> Dataset:
    from datasets import load_dataset

    try:
        return load_dataset(dataset, config, split=split)
    except ValueError as error:
        if "split" in str(error).lower():
            raise TunelabError(f"dataset {dataset} has no split {split!r}: set the recipe's split names") from None
        raise TunelabError(f"cannot load dataset {dataset}: {str(error).splitlines()[0]}") from None
    except Exception as error:  # the Hub client raises many types for 'no network' and 'no such repo'
        raise TunelabError(
            f"cannot load dataset {dataset!r} from the Hugging Face Hub ({type(error).__name__}): check the id and "
            "your network, or pass a local folder of .jsonl, .csv or .parquet files with --dataset"
        ) from None


# ---------------------------------------------------------------------------- schema

def normalise_rows(recipe: ClassificationRecipe, rows: list[dict] | Dataset, source: str) -> list[dict]:
    """Rows as {text columns, label name, ...extra columns}; rows without a gold label dropped. `rows` is read
    once, and again only to name the labels it holds when one is not in `labels`."""
    columns = [*recipe.text_columns, recipe.label_column]
    aliases = [COLUMN_ALIASES.get(column) for column in columns]
    normalised, kinds = [], {}
    for index, row in enumerate(rows):
        *texts, label = (_column(row, name, source, index) for name in columns)
        if label in NO_GOLD_LABELS:
            continue
        kinds.setdefault(_label_kind(label, recipe.labels), (index, label))
        extra = {k: v for k, v in row.items() if k not in (*columns, *aliases)}
        try:
            gold = label_name(label, recipe.labels, source, index)
        except TunelabError as error:
            raise TunelabError(f"{error} ({labels_found(rows, recipe.label_column)})") from None
        normalised.append({**extra, **{name: _text(text, name, source, index)
                                       for name, text in zip(recipe.text_columns, texts)}, "label": gold})
    _check_one_label_kind(kinds, source)
    return normalised


MAX_LISTED_LABELS = 30  # more distinct values than this are more likely a wrong column than classes


def labels_found(rows: list[dict] | Dataset, column: str) -> str:
    """What the rows' label column holds, phrased as the --labels that would read it."""
    found = (row.get(column, row.get(COLUMN_ALIASES.get(column))) for row in rows)
    values = {value for value in found if isinstance(value, str | int | float)} - set(NO_GOLD_LABELS)
    if len(values) > MAX_LISTED_LABELS:
        return f"the {column} column holds {len(values)} different values: is --label_column right?"
    if values and all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        return f"the {column} column holds positions up to {max(values)}: name each class, in order, with --labels"
    return f"the {column} column holds: --labels {','.join(sorted(str(value) for value in values))}"


def _column(row: dict, name: str, source: str, index: int) -> object:
    if name in row:
        return row[name]
    if COLUMN_ALIASES.get(name) in row:
        return row[COLUMN_ALIASES[name]]
    raise TunelabError(f"{source}: row {index + 1} has no {name!r} column (columns: {', '.join(sorted(row))}): "
                       "name the file's columns with --text_columns and --label_column")


def _text(value: object, name: str, source: str, index: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TunelabError(f"{source}: row {index + 1} has an empty or non-text {name}: fix or remove that row")
    return value.strip()


def label_name(label: object, labels=NLI_LABELS, source: str = "data", index: int = 0) -> str:
    """The label name a data value stands for: a name (any case) or a position in `labels`."""
    position = _position(label, labels)
    if position is not None and 0 <= position < len(labels):
        return labels[position]
    named = {name.lower(): name for name in labels}
    if isinstance(label, str) and label.strip().lower() in named:
        return named[label.strip().lower()]
    raise TunelabError(f"{source}: row {index + 1} has label {label!r}, which is not one of {', '.join(labels)} "
                       f"(or 0 to {len(labels) - 1}; -1, '-' or empty for no gold label): fix the row or --labels")


def _position(label: object, labels) -> int | None:
    """The position an integer label holds (a CSV's digits too, unless they are a label's name)."""
    if isinstance(label, int) and not isinstance(label, bool):
        return label
    if isinstance(label, str) and label.strip().isdigit() and label.strip() not in labels:
        return int(label)
    return None


def _label_kind(label: object, labels) -> str:
    return "position" if _position(label, labels) is not None else "name"


def _check_one_label_kind(kinds: dict[str, tuple[int, object]], source: str) -> None:
    if len(kinds) > 1:
        (name_row, name), (position_row, position) = kinds["name"], kinds["position"]
        raise TunelabError(f"{source}: mixed label types: row {name_row + 1} has the name {name!r}, row "
                           f"{position_row + 1} the position {position!r}: write every label as a name, or every "
                           "one as a position in --labels")


# ---------------------------------------------------------------------------- tokenisation

def tokenize_rows(rows: list[dict], tokenizer, max_length: int, reserve: int, progress: str | None = None,
                  prompt: Prompt = Prompt(), annotator_labels: bool = False,
                  labels: Sequence[str] = NLI_LABELS) -> tuple[Dataset, int]:
    """Prompt token ids and class index (in `labels`) per row; the first text column is shortened to fit
    `max_length - reserve`.

    `reserve` keeps room for the label word, so truncation never removes the answer position.
    `progress` is the progress bar's label (None: no bar). With `annotator_labels` each example also
    holds `label_distribution`, the training target (`annotator_distribution`). Returns the dataset and
    how many first columns (NLI: premises) had to be truncated.
    """
    from tqdm.auto import tqdm

    budget = max_length - reserve
    examples, truncated = [], 0
    for row in tqdm(rows, desc=progress, unit="rows", disable=progress is None):
        ids, was_truncated = _prompt_ids(tokenizer, prompt, row, budget)
        truncated += was_truncated
        examples.append({"input_ids": ids, "labels": list(labels).index(row["label"])}
                        | ({"label_distribution": annotator_distribution(row, labels)} if annotator_labels else {}))
    return Dataset.from_list(examples), truncated


def annotator_distribution(row: dict, labels: Sequence[str] = NLI_LABELS) -> list[float]:
    """The share of the row's annotators who chose each label (SNLI and MultiNLI keep every annotator's label in
    `annotator_labels`); one-hot on the gold label when the row has none."""
    votes = [label for label in row.get("annotator_labels") or [] if label in labels]
    if not votes:
        return [float(label == row["label"]) for label in labels]
    return [votes.count(label) / len(votes) for label in labels]


def _prompt_ids(tokenizer, prompt: Prompt, row: dict, budget: int) -> tuple[list[int], bool]:
    encode = lambda text: tokenizer(text, add_special_tokens=prompt.add_special_tokens)["input_ids"]  # noqa: E731
    ids = encode(prompt.format(row))
    if len(ids) <= budget:
        return ids, False
    first = prompt.columns[0]
    first_ids = tokenizer(row[first], add_special_tokens=False)["input_ids"]
    while len(ids) > budget and first_ids:
        first_ids = first_ids[: max(0, len(first_ids) - (len(ids) - budget))]
        ids = encode(prompt.format({**row, first: tokenizer.decode(first_ids).strip() + " …"}))
    if len(ids) > budget:
        raise TunelabError(f"a prompt without its {first} is longer than max_length ({budget} tokens for the "
                           "prompt): raise --max_length")
    return ids, True
