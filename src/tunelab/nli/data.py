"""NLI data: load a split, normalise its schema, subset it, and turn rows into prompts.

Sources, by the recipe's `dataset` field:
- `starter`: the offline starter set written by `tunelab.nli.starter_data` (cached on disk);
- `starter_mnli`: the same set in MultiNLI's shape (genre column; train, validation,
  validation_matched and validation_mismatched splits, see `starter_data.generate_starter_mnli`);
- a local folder holding `<split>.jsonl` files, or a single `.jsonl` file per split given as
  the folder itself (e.g. SNLI's original `snli_1.0_dev.jsonl`);
- a Hugging Face Hub dataset id (`stanfordnlp/snli`, `nyu-mll/multi_nli`).

Every source is normalised to rows of `premise`, `hypothesis` and `label` (a label name), with
the Hub's integer labels (0 entailment, 1 neutral, 2 contradiction) and SNLI's original
`sentence1`/`sentence2`/`gold_label` schema both understood. Rows without a gold label
(-1 or "-") are dropped, as SNLI and MultiNLI require. Rows are then chosen by SNLI's stride rule
or by MultiNLI's seeded random sample (`load_nli_splits`); a run keeps its evaluation rows in
RUN_DIR/data/<split>.jsonl (`load_run_rows`), in the normalised schema above.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from tunelab.console import say
from tunelab.errors import TunelabError
from tunelab.nli.config import NLI_LABELS, PROMPT_TEMPLATE, NLIRecipe
from tunelab.resources import cache_root
from tunelab.rundir import atomic_write_json, atomic_write_text, read_jsonl
from tunelab.secrets import redact

NO_GOLD_LABELS = (-1, "-", "", None)
COLUMN_ALIASES = {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}


PLACEHOLDER = re.compile(r"\{(premise|hypothesis)\}")


@dataclass(frozen=True)
class Prompt:
    """How a row becomes the text the model reads (the label word follows its end)."""

    template: str = PROMPT_TEMPLATE
    add_special_tokens: bool = True  # False inside a chat template, which places its own special tokens

    def format(self, premise: str, hypothesis: str) -> str:
        # One pass, so a premise that happens to contain "{hypothesis}" stays as it is.
        return PLACEHOLDER.sub(lambda match: {"premise": premise, "hypothesis": hypothesis}[match[1]], self.template)


def recipe_prompt(recipe: NLIRecipe, tokenizer) -> Prompt:
    """The recipe's prompt template, wrapped as a user turn in the model's chat template if it asks for that."""
    if not recipe.use_chat_template:
        return Prompt(recipe.prompt_template)
    if not tokenizer.chat_template:
        raise TunelabError(f"use_chat_template is on but {recipe.model_name_or_path}'s tokenizer has no chat template: "
                           "set --use_chat_template false")
    wrapped = tokenizer.apply_chat_template([{"role": "user", "content": recipe.prompt_template}], tokenize=False,
                                            add_generation_prompt=True)
    return Prompt(wrapped, add_special_tokens=False)


# ---------------------------------------------------------------------------- loading

def load_nli_split(recipe: NLIRecipe, split: str) -> list[dict]:
    """One split of the recipe's dataset, normalised, filtered and subset (see `load_nli_splits`)."""
    return load_nli_splits(recipe, [split])[split]


def load_nli_splits(recipe: NLIRecipe, splits: list[str]) -> dict[str, list[dict]]:
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


def adds_extra_train_rows(recipe: NLIRecipe) -> bool:
    """Whether `extra_train_dataset` adds rows: it is set and is not the recipe's own dataset (a folder or
    file named two ways, `./d` and `d`, is the same dataset)."""
    extra, own = recipe.extra_train_dataset, recipe.dataset
    if extra is None or extra == own:
        return False
    return not (os.path.exists(extra) and os.path.exists(own) and os.path.samefile(extra, own))


def extra_train_rows(recipe: NLIRecipe) -> list[dict]:
    """Every row of the train split of `extra_train_dataset` (none unless `adds_extra_train_rows`)."""
    if not adds_extra_train_rows(recipe):
        return []
    extra = recipe.extra_train_dataset
    return normalise_rows(_read_split(extra, None, "train", "extra_train_dataset"), source=f"{extra}:train")


def say_extra_train_rows(recipe: NLIRecipe, rows: dict[str, list[dict]]) -> None:
    """Where the train rows come from, in one line, when `extra_train_dataset` adds some."""
    if adds_extra_train_rows(recipe) and recipe.train_split in rows:
        extra = len(extra_train_rows(recipe))
        say(f"{recipe.train_split}: {len(rows[recipe.train_split]) - extra} rows of {recipe.dataset} and {extra} "
            f"of {recipe.extra_train_dataset} (extra_train_dataset)")


MISSING_VALIDATION_FRACTION = 0.1  # held out of train when a data folder has no validation file


def validation_fraction(recipe: NLIRecipe) -> float:
    """The share of train rows held out for validation: the recipe's validation_fraction, or
    MISSING_VALIDATION_FRACTION for a folder with train and test files but no validation file (the
    per-epoch validation loss still needs rows)."""
    return MISSING_VALIDATION_FRACTION if missing_validation_file(recipe) else recipe.validation_fraction


def missing_validation_file(recipe: NLIRecipe) -> bool:
    folder = Path(recipe.dataset).expanduser()
    if recipe.validation_fraction > 0 or recipe.dataset in STARTER_SETS or not folder.is_dir():
        return False
    present = {split: (folder / f"{split}.jsonl").exists()
               for split in (recipe.train_split, recipe.validation_split, *recipe.test_splits)}
    return not present.pop(recipe.validation_split) and all(present.values())


def _role(recipe: NLIRecipe, split: str) -> str:
    return "train" if split == recipe.train_split else "validation" if split == recipe.validation_split else "test"


def _choose_rows(recipe: NLIRecipe, split: str, role: str) -> list[dict]:
    rows = normalise_rows(_read_split(recipe.dataset, recipe.dataset_config, split), source=f"{recipe.dataset}:{split}")
    sample = getattr(recipe, f"{role}_sample")
    if sample is not None:
        return sample_rows(rows, sample, f"{recipe.sample_seed}:{split}")
    return subset_rows(rows, getattr(recipe, f"{role}_stride"), getattr(recipe, f"{role}_size"))


# Rows with a gold label in published train splits, so that a plan applies the recipe's rule without the data.
PUBLISHED_TRAIN_ROWS = {"stanfordnlp/snli": 549_367, "nyu-mll/multi_nli": 392_702}


def planned_train_rows(recipe: NLIRecipe) -> int | None:
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


def hold_out(rows: list[dict], fraction: float, seed: str) -> tuple[list[dict], list[dict]]:
    """(kept, held out): round(fraction * len(rows)) rows, at least one, drawn at random and held out."""
    count = max(1, round(fraction * len(rows)))
    if count >= len(rows):
        raise TunelabError(f"validation_fraction {fraction} of {len(rows)} train rows leaves no rows to train on: "
                           "lower validation_fraction or select more train rows")
    held = set(random.Random(seed).sample(range(len(rows)), count))
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def load_run_rows(recipe: NLIRecipe, folder: Path, write: bool) -> dict[str, list[dict]]:
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
            text = "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows[split])
            atomic_write_text(folder / f"{split}.jsonl", text)
        atomic_write_json(folder / "selection.json", _selection(recipe))
    return rows


FEW_ROWS = 50  # fewer kept rows than this make a result too noisy to read


def warn_about_small_data(recipe: NLIRecipe, rows: dict[str, list[dict]]) -> None:
    """A warning, before training, for each split with fewer than FEW_ROWS rows or a label it never shows,
    naming the settings that chose its rows."""
    fraction = validation_fraction(recipe)  # looks at the data folder: once, not once a split
    if fraction != recipe.validation_fraction and recipe.validation_split in rows:
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
        missing = [label for label in NLI_LABELS if label not in {row["label"] for row in kept}]
        if len(kept) < FEW_ROWS:
            say(f"warning: {split} keeps only {len(kept)} rows of {recipe.dataset} ({rule})")
        if missing:
            say(f"warning: {split} has no {' or '.join(missing)} rows ({rule}, or check the data)")
    for split in set(recipe.test_splits) & set(rows) - {recipe.train_split}:
        shared = shared_rows(rows[split], rows.get(recipe.train_split, []))
        if shared:
            say(f"warning: {shared} of the {len(rows[split])} {split} rows are also {recipe.train_split} rows: the "
                "scores on them are scores on training rows (check the data's splits)")


def shared_rows(rows: list[dict], others: list[dict]) -> int:
    """How many of `rows` have the same text (every text field but the label) as a row of `others`."""
    def text(row: dict) -> tuple:
        return tuple(sorted((key, value) for key, value in row.items() if isinstance(value, str) and key != "label"))

    seen = {text(row) for row in others}
    return sum(text(row) in seen for row in rows)


def check_saved_rows(recipe: NLIRecipe, folder: Path) -> dict | None:
    """The data settings saved with a run's evaluation rows (None before the first start); refuses other settings."""
    manifest, settings = folder / "selection.json", _selection(recipe)
    saved = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else None
    if saved is not None and saved != settings:
        changed = ", ".join(f"{k} {saved.get(k)!r} -> {settings[k]!r}" for k in settings if saved.get(k) != settings[k])
        raise TunelabError(f"{folder} holds evaluation rows chosen with other data settings ({changed}): rerun with "
                           f"the original settings, or start a new run with another --run_name")
    return saved


def _selection(recipe: NLIRecipe) -> dict:
    """As selection.json holds it: secrets in a path redacted."""
    return redact({name: getattr(recipe, name) for name in SELECTION_FIELDS})


SELECTION_FIELDS = ("dataset", "dataset_config", "test_splits", "test_stride", "test_size", "test_sample",
                    "sample_seed")
STARTER_SETS = {"starter": "starter_nli", "starter_mnli": "starter_mnli"}


def _read_split(dataset: str, config: str | None, split: str, setting: str = "dataset") -> Iterable[dict]:
    if dataset in STARTER_SETS:
        return read_jsonl(_split_file(starter_data_dir(dataset), split))
    path = Path(dataset).expanduser()
    if path.is_dir():
        return read_jsonl(_split_file(path, split))
    if path.suffix == ".jsonl" or dataset.startswith((".", "/", "~")):
        if not os.path.lexists(path):
            raise TunelabError(f"{setting} path {dataset} does not exist: check the --{setting} path")
        return read_jsonl(path)
    return _load_from_hub(dataset, config, split)


def _split_file(folder: Path, split: str) -> Path:
    candidate = folder / f"{split}.jsonl"
    if not os.path.lexists(candidate):  # a link that loops is the reader's to name
        found = ", ".join(sorted(p.name for p in folder.glob("*.jsonl"))) or "no .jsonl files"
        raise TunelabError(f"{folder} has no {split}.jsonl (found: {found}): name the file {split}.jsonl "
                           "or set the split name in the recipe")
    return candidate


def starter_data_dir(name: str = "starter") -> Path:
    """An offline starter set (`starter`, or `starter_mnli` in MultiNLI's shape), written once into the tunelab cache."""
    from tunelab.nli.starter_data import (
        generate_starter_mnli,
        generate_starter_nli,
        write_starter_nli,
    )

    folder = cache_root() / "data" / STARTER_SETS[name]
    generate, last_file = {"starter": (generate_starter_nli, "test.jsonl"),
                           "starter_mnli": (generate_starter_mnli, "validation_mismatched.jsonl")}[name]
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

def tokenize_rows(rows: list[dict], tokenizer, max_length: int, reserve: int, progress: str | None = None,
                  prompt: Prompt = Prompt(), annotator_labels: bool = False) -> tuple[Dataset, int]:
    """Prompt token ids and class index per row; premises are shortened to fit `max_length - reserve`.

    `reserve` keeps room for the label word, so truncation never removes the answer position.
    `progress` is the progress bar's label (None: no bar). With `annotator_labels` each example also
    holds `label_distribution`, the training target (`annotator_distribution`). Returns the dataset and
    how many premises had to be truncated.
    """
    from tqdm.auto import tqdm

    budget = max_length - reserve
    examples, truncated = [], 0
    for row in tqdm(rows, desc=progress, unit="rows", disable=progress is None):
        ids, was_truncated = _prompt_ids(tokenizer, prompt, row["premise"], row["hypothesis"], budget)
        truncated += was_truncated
        examples.append({"input_ids": ids, "labels": NLI_LABELS.index(row["label"])}
                        | ({"label_distribution": annotator_distribution(row)} if annotator_labels else {}))
    return Dataset.from_list(examples), truncated


def annotator_distribution(row: dict) -> list[float]:
    """The share of the row's annotators who chose each label (SNLI and MultiNLI keep every annotator's label in
    `annotator_labels`); one-hot on the gold label when the row has none."""
    votes = [label for label in row.get("annotator_labels") or [] if label in NLI_LABELS]
    if not votes:
        return [float(label == row["label"]) for label in NLI_LABELS]
    return [votes.count(label) / len(votes) for label in NLI_LABELS]


def _prompt_ids(tokenizer, prompt: Prompt, premise: str, hypothesis: str, budget: int) -> tuple[list[int], bool]:
    encode = lambda text: tokenizer(text, add_special_tokens=prompt.add_special_tokens)["input_ids"]  # noqa: E731
    ids = encode(prompt.format(premise, hypothesis))
    if len(ids) <= budget:
        return ids, False
    premise_ids = tokenizer(premise, add_special_tokens=False)["input_ids"]
    while len(ids) > budget and premise_ids:
        premise_ids = premise_ids[: max(0, len(premise_ids) - (len(ids) - budget))]
        ids = encode(prompt.format(tokenizer.decode(premise_ids).strip() + " …", hypothesis))
    if len(ids) > budget:
        raise TunelabError(f"a hypothesis alone is longer than max_length ({budget} tokens for the prompt): "
                           "raise --max_length")
    return ids, True
