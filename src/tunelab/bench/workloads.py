"""What `tunelab bench` measures on: a recipe with its model and rows, and the batches each variant feeds."""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from tunelab.architectures import published_config
from tunelab.bench.variants import Variant
from tunelab.config import load_recipe
from tunelab.console import say
from tunelab.models import load_tokenizer
from tunelab.nli.config import NLI_LABELS, NLIRecipe
from tunelab.nli.data import load_nli_split, recipe_prompt, tokenize_rows
from tunelab.nli.trainer import NLICollator, answer_room, label_token_ids
from tunelab.packing import PackingCollator
from tunelab.resources import cache_root
from tunelab.runtime.precision import compute_dtype
from tunelab.tiny_models import load_gpt2_tokenizer


@dataclass(frozen=True)
class Workload:
    name: str
    recipe_file: str
    overrides: tuple[str, ...]  # command-line settings on top of the recipe file
    published: str | None  # a published architecture built with random weights, or None: the recipe's model


ALL_ROWS = ("--train_stride", "1", "--train_size", "null", "--test_stride", "1", "--test_size", "null")
WORKLOADS = {w.name: w for w in (
    Workload("smollm2_snli", "recipes/phi2_snli.py", ("--config", "recipes/embedded_snli.yaml"), None),
    Workload("phi2_snli", "recipes/phi2_snli.py", ("--dataset", "starter", *ALL_ROWS), "phi-2"),
    Workload("gpt2_large_mnli", "recipes/gpt2_large_mnli.py", ("--dataset", "starter_mnli"), "gpt2-large"),
)}


def workload_recipe(workload: Workload, args: argparse.Namespace) -> NLIRecipe:
    """The workload's recipe with its model replaced by a random-weight build (or --model) and its data by --dataset."""
    argv = list(workload.overrides)
    if args.dataset:
        argv += ["--dataset", args.dataset, *ALL_ROWS]
    recipe = load_recipe(workload.recipe_file, argv)
    model = args.model or (published_model(workload.published, args.layers, recipe) if workload.published else None)
    return replace(recipe, model_name_or_path=str(model)) if model else recipe


def published_model(name: str, layers: int | None, recipe: NLIRecipe) -> Path:
    """A folder with `name`'s published architecture (first `layers` layers), random weights and GPT-2's tokenizer.

    Built once into the tunelab cache; throughput and memory do not depend on the weights' values.
    """
    from transformers import AutoModelForCausalLM

    config = published_config(name)
    config.num_hidden_layers = layers or config.num_hidden_layers
    dtype = compute_dtype(recipe.precision)
    folder = cache_root() / "bench" / f"{name}-{config.num_hidden_layers}layers-{str(dtype).removeprefix('torch.')}"
    if not folder.exists():
        say(f"building {name} with {config.num_hidden_layers} layers and random weights in {folder}", stream=sys.stderr)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        load_gpt2_tokenizer().save_pretrained(staging)
        staging.rename(folder)  # complete or absent: an interrupted build is redone
    return folder


@dataclass
class Inputs:
    """The rows, their token ids for both implementations, and what scoring needs."""

    tokenizer: object
    label_ids: list[list[int]]
    train_rows: list[dict]
    eval_rows: list[dict]
    prompt_ids: dict[int, list[int]] = field(default_factory=dict)  # row index -> prompt ids (tunelab)
    text_ids: dict[int, list[int]] = field(default_factory=dict)  # row index -> prompt + answer ids (reference)


def prepare_inputs(recipe: NLIRecipe, args: argparse.Namespace) -> Inputs:
    tokenizer = load_tokenizer(recipe)
    label_ids = label_token_ids(tokenizer, recipe.label_words, recipe.label_scoring)
    train_rows = load_nli_split(recipe, recipe.train_split)
    eval_rows = load_nli_split(recipe, recipe.test_splits[0])[: args.eval_rows]
    random.Random(recipe.seed).shuffle(train_rows)
    inputs = Inputs(tokenizer, label_ids, train_rows, eval_rows)
    reserve = answer_room(label_ids, recipe.label_scoring)
    prompt = recipe_prompt(recipe, tokenizer)
    tokenized, _ = tokenize_rows(train_rows + eval_rows, tokenizer, recipe.max_length, reserve, prompt=prompt)
    words = dict(zip(NLI_LABELS, recipe.label_words))
    for index, (row, example) in enumerate(zip(train_rows + eval_rows, tokenized)):
        inputs.prompt_ids[index] = example["input_ids"]
        text = prompt.format(row) + " " + words[row["label"]]
        inputs.text_ids[index] = tokenizer(text, truncation=True, max_length=recipe.max_length,
                                           add_special_tokens=prompt.add_special_tokens)["input_ids"]
    return inputs


def train_batches(inputs: Inputs, variant: Variant, batch_size: int, accumulation: int, count: int,
                  seed: int) -> list[list[int]]:
    """`count` batches of row indices; grouped by length with the sampler the Trainer uses when the variant asks
    (which groups by batch size x gradient accumulation steps, as the Trainer does)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    indices = list(range(len(inputs.train_rows)))
    if variant.group_by_length:
        lengths = [len(inputs.prompt_ids[i]) for i in indices]
        generator = torch.Generator().manual_seed(seed)
        indices = list(LengthGroupedSampler(batch_size * accumulation, lengths=lengths, generator=generator))
    needed = batch_size * count
    ordered = (indices * math.ceil(needed / len(indices)))[:needed]
    return [ordered[i:i + batch_size] for i in range(0, needed, batch_size)]


def collate(inputs: Inputs, rows: list[int], variant: Variant, recipe: NLIRecipe, labels: list[int]) -> dict:
    """A batch as the variant feeds it: tunelab's collator (left padding, or packed rows) or the notebooks'
    right padding."""
    pad = inputs.tokenizer.pad_token_id
    if variant.loss == "label_word":
        features = [{"input_ids": inputs.prompt_ids[i], "labels": label} for i, label in zip(rows, labels)]
        if variant.packing:
            return PackingCollator()(features)
        batch = NLICollator(pad, inputs.label_ids, recipe.label_scoring)(features)
        if variant.padding == "max_length":
            batch = left_pad_to(batch, recipe.max_length, pad)
        return batch
    texts = [inputs.text_ids[i] for i in rows]
    width = recipe.max_length if variant.padding == "max_length" else max(map(len, texts))
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in texts])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in texts])
    # DataCollatorForLanguageModeling: labels are the input ids, padding ignored
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100)}


def left_pad_to(batch: dict, width: int, pad: int) -> dict:
    extra = width - batch["input_ids"].shape[1]
    padded = dict(batch)
    for key, value in (("input_ids", pad), ("attention_mask", 0), ("position_ids", 0)):
        padded[key] = F.pad(batch[key], (extra, 0), value=value)
    return padded
