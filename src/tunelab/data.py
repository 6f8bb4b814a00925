"""NLI data: load a split, normalise its schema, subset it, and turn rows into prompts.

Sources, by the recipe's `dataset` field:
- `starter`: the offline starter set written by `tunelab.starter_data` (cached on disk);
- a local folder holding `<split>.jsonl` files, or a single `.jsonl` file per split given as
  the folder itself (e.g. SNLI's original `snli_1.0_dev.jsonl`);
- a Hugging Face Hub dataset id (`stanfordnlp/snli`, `nyu-mll/multi_nli`).

Every source is normalised to rows of `premise`, `hypothesis` and `label` (a label name), with
the Hub's integer labels (0 entailment, 1 neutral, 2 contradiction) and SNLI's original
`sentence1`/`sentence2`/`gold_label` schema both understood. Rows without a gold label
(-1 or "-") are dropped, as SNLI and MultiNLI require.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path

from datasets import Dataset

from tunelab.config import NLI_LABELS, NLIRecipe
from tunelab.errors import TunelabError

PROMPT_TEMPLATE = "Premise: {premise}\nHypothesis: {hypothesis}\nRelationship:"
NO_GOLD_LABELS = (-1, "-", "", None)
COLUMN_ALIASES = {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}


def format_prompt(premise: str, hypothesis: str) -> str:
    return PROMPT_TEMPLATE.format(premise=premise, hypothesis=hypothesis)


# ---------------------------------------------------------------------------- loading

def load_nli_split(recipe: NLIRecipe, split: str) -> list[dict]:
    """One split of the recipe's dataset, normalised, filtered and subset by stride and size."""
    role = "train" if split == recipe.train_split else "validation" if split == recipe.validation_split else "test"
    rows = normalise_rows(_read_split(recipe.dataset, recipe.dataset_config, split), source=f"{recipe.dataset}:{split}")
    subset = subset_rows(rows, getattr(recipe, f"{role}_stride"), getattr(recipe, f"{role}_size"))
    if not subset:
        raise TunelabError(f"no rows left in {recipe.dataset}:{split} after dropping rows without a gold label "
                           f"and subsetting: check the data or lower {role}_stride")
    return subset


def subset_rows(rows: list[dict], stride: int, size: int | None) -> list[dict]:
    """Every `stride`-th row, then at most `size` rows (the SNLI reference rule)."""
    return rows[::stride][:size]


def _read_split(dataset: str, config: str | None, split: str) -> Iterable[dict]:
    if dataset == "starter":
        return read_jsonl(starter_data_dir() / f"{split}.jsonl")
    path = Path(dataset).expanduser()
    if path.is_dir():
        return read_jsonl(_split_file(path, split))
    if path.suffix == ".jsonl" or dataset.startswith((".", "/", "~")):
        if not path.exists():
            raise TunelabError(f"dataset path {dataset} does not exist: check the --dataset path")
        return read_jsonl(path)
    return _load_from_hub(dataset, config, split)


def _split_file(folder: Path, split: str) -> Path:
    candidate = folder / f"{split}.jsonl"
    if not candidate.exists():
        found = ", ".join(sorted(p.name for p in folder.glob("*.jsonl"))) or "no .jsonl files"
        raise TunelabError(f"{folder} has no {split}.jsonl (found: {found}): name the file {split}.jsonl "
                           "or set the split name in the recipe")
    return candidate


def starter_data_dir() -> Path:
    """The offline starter set, written once into the tunelab cache."""
    from tunelab.starter_data import write_starter_nli

    folder = Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab")) / "data" / "starter_nli"
    if not (folder / "test.jsonl").exists():
        write_starter_nli(folder)
    return folder


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a malformed line is reported with its file and line number."""
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise TunelabError(f"{path}:{number}: not valid JSON ({error.msg}): fix or remove that line") from None
                if not isinstance(row, dict):
                    raise TunelabError(f"{path}:{number}: expected a JSON object per line")
                rows.append(row)
    except UnicodeDecodeError as error:
        raise TunelabError(f"{path} is not valid UTF-8 (byte {error.start}): re-encode the file as UTF-8") from None
    return rows


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


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
            "your network, or pass a local folder of .jsonl files with --dataset"
        ) from None


# ---------------------------------------------------------------------------- schema

def normalise_rows(rows: Iterable[dict], source: str) -> list[dict]:
    """Rows as {premise, hypothesis, label name, ...extra columns}; rows without a gold label dropped."""
    normalised = []
    for index, row in enumerate(rows):
        premise, hypothesis, label = (_column(row, name, source, index) for name in ("premise", "hypothesis", "label"))
        if label in NO_GOLD_LABELS:
            continue
        extra = {k: v for k, v in row.items() if k not in (*COLUMN_ALIASES, *COLUMN_ALIASES.values())}
        normalised.append({**extra, "premise": _text(premise, "premise", source, index),
                           "hypothesis": _text(hypothesis, "hypothesis", source, index),
                           "label": label_name(label, source, index)})
    return normalised


def _column(row: dict, name: str, source: str, index: int) -> object:
    if name in row:
        return row[name]
    if COLUMN_ALIASES[name] in row:
        return row[COLUMN_ALIASES[name]]
    raise TunelabError(f"{source}: row {index + 1} has no {name!r} column (columns: {', '.join(sorted(row))}); "
                       f"NLI data needs premise, hypothesis and label (or SNLI's sentence1, sentence2, gold_label)")


def _text(value: object, name: str, source: str, index: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TunelabError(f"{source}: row {index + 1} has an empty or non-text {name}: fix or remove that row")
    return value.strip()


def label_name(label: object, source: str = "data", index: int = 0) -> str:
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(NLI_LABELS):
        return NLI_LABELS[label]
    if isinstance(label, str) and label.strip().lower() in NLI_LABELS:
        return label.strip().lower()
    raise TunelabError(f"{source}: row {index + 1} has label {label!r}, which is not one of "
                       f"{', '.join(NLI_LABELS)} (or 0, 1, 2; -1 or '-' for no gold label)")


# ---------------------------------------------------------------------------- tokenisation

def tokenize_rows(rows: list[dict], tokenizer, max_length: int, reserve: int) -> tuple[Dataset, int]:
    """Prompt token ids and class index per row; premises are shortened to fit `max_length - reserve`.

    `reserve` keeps room for the label word, so truncation never removes the answer position.
    Returns the dataset and how many premises had to be truncated.
    """
    budget = max_length - reserve
    examples, truncated = [], 0
    for row in rows:
        ids, was_truncated = _prompt_ids(tokenizer, row["premise"], row["hypothesis"], budget)
        truncated += was_truncated
        examples.append({"input_ids": ids, "labels": NLI_LABELS.index(row["label"])})
    return Dataset.from_list(examples), truncated


def _prompt_ids(tokenizer, premise: str, hypothesis: str, budget: int) -> tuple[list[int], bool]:
    ids = tokenizer(format_prompt(premise, hypothesis))["input_ids"]
    if len(ids) <= budget:
        return ids, False
    premise_ids = tokenizer(premise, add_special_tokens=False)["input_ids"]
    while len(ids) > budget and premise_ids:
        premise_ids = premise_ids[: max(0, len(premise_ids) - (len(ids) - budget))]
        ids = tokenizer(format_prompt(tokenizer.decode(premise_ids).strip() + " …", hypothesis))["input_ids"]
    if len(ids) > budget:
        raise TunelabError(f"a hypothesis alone is longer than max_length ({budget} tokens for the prompt): "
                           "raise --max_length")
    return ids, True
