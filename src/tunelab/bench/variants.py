"""The ways `tunelab bench` trains and evaluates: the notebooks' approach, the recipe as shipped, and one
variant per optimization; which of them run a phase identically (and are measured once)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from tunelab.errors import TunelabError
from tunelab.nli.config import NLIRecipe
from tunelab.training import autocast_dtype


@dataclass(frozen=True)
class Variant:
    """One way to train and evaluate; every field is one optimization that can be switched alone."""

    name: str
    changes: str
    loss: str = "label_word"  # or "full_lm": causal-LM loss over the whole formatted text and vocabulary
    padding: str = "longest"  # or "max_length"
    group_by_length: bool | None = None  # None: as the recipe says; batches of similar lengths (LengthGroupedSampler)
    attention: str | None = None  # None: the model's default (SDPA); or "eager"
    autocast_bf16: bool | None = None  # None: as the trainer, on when the recipe computes in bf16
    compile: bool = False  # torch.compile each decoder layer in place (the recipes' torch_compile)
    batch_scale: int = 1  # train batch = the recipe's per_device_train_batch_size x batch_scale
    gradient_checkpointing: bool | None = None  # None: as the recipe says
    evaluation: str = "score"  # or "generate"
    eval_longest_first: bool = True  # score the rows sorted by length (nli.predict); the notebooks do not
    eval_batch_size: int | None = None  # None: the recipe's per_device_eval_batch_size
    merge_lora: bool = True  # evaluate with the LoRA weights merged into the base weights (models.adapter_merged)
    packing: bool = False  # each batch's rows packed into one sequence, no padding (tunelab.packing)


REFERENCE = Variant("reference", "the notebooks' approach", loss="full_lm", padding="max_length",
                    group_by_length=False, evaluation="generate", eval_longest_first=False, eval_batch_size=1,
                    merge_lora=False)
TUNELAB = Variant("tunelab", "the recipe as shipped")
VARIANTS = {variant.name: variant for variant in (
    REFERENCE,
    TUNELAB,
    replace(TUNELAB, name="pad_to_max_length", changes="tunelab, batches padded to max_length", padding="max_length"),
    replace(TUNELAB, name="full_lm_loss", changes="tunelab, LM loss over the full vocabulary and text",
            loss="full_lm"),
    replace(TUNELAB, name="group_by_length", changes="tunelab, batches grouped by length", group_by_length=True),
    replace(TUNELAB, name="random_order", changes="tunelab, batches in random order (not grouped by length)",
            group_by_length=False),
    replace(TUNELAB, name="eval_in_order", changes="tunelab, evaluation rows in their order (not longest first)",
            eval_longest_first=False),
    replace(TUNELAB, name="lora_unmerged", changes="tunelab, evaluation with the LoRA layers unmerged",
            merge_lora=False),
    replace(TUNELAB, name="score_one_row", changes="tunelab, evaluation one row at a time", eval_batch_size=1),
    replace(TUNELAB, name="eager_attention", changes="tunelab, eager attention instead of SDPA", attention="eager"),
    replace(TUNELAB, name="sdpa_attention", changes="tunelab, SDPA attention (PyTorch's fused kernels)",
            attention="sdpa"),
    replace(TUNELAB, name="no_autocast", changes="tunelab, no bf16 autocast: the adapters compute in fp32",
            autocast_bf16=False),
    replace(TUNELAB, name="torch_compile", changes="tunelab, each decoder layer compiled (torch_compile)",
            compile=True),
    replace(TUNELAB, name="batch_x2", changes="tunelab, twice the batch size", batch_scale=2),
    replace(TUNELAB, name="padding_free", changes="tunelab, each batch packed into one sequence without padding",
            packing=True),
    replace(TUNELAB, name="padding_free_batch_x2", changes="padding_free, twice the batch size", packing=True,
            batch_scale=2),
    replace(TUNELAB, name="no_checkpointing", changes="tunelab, gradient checkpointing off",
            gradient_checkpointing=False),
    replace(TUNELAB, name="checkpointing", changes="tunelab, gradient checkpointing on", gradient_checkpointing=True),
    replace(REFERENCE, name="generate_batched", changes="reference, generation batched (eval batch size)",
            eval_batch_size=None),
)}
DEFAULT_VARIANTS = ("reference", "tunelab")

TRAIN_FIELDS = ("loss", "padding", "group_by_length", "attention", "autocast_bf16", "compile", "batch_scale",
                "gradient_checkpointing", "packing")
EVAL_FIELDS = ("evaluation", "eval_longest_first", "padding", "attention", "autocast_bf16", "compile", "eval_batch_size",
               "merge_lora", "packing")


def resolved(variant: Variant, recipe: NLIRecipe, mergeable: bool) -> Variant:
    """The variant with the recipe's values where it keeps them (None)."""
    if variant.packing and recipe.label_scoring != "first_token":
        raise TunelabError(f"variant {variant.name} packs rows for label_scoring first_token only, and this "
                           f"workload scores by {recipe.label_scoring}: leave {variant.name} out of --variants")
    checkpointing = recipe.gradient_checkpointing if variant.gradient_checkpointing is None \
        else variant.gradient_checkpointing
    grouped = recipe.group_by_length if variant.group_by_length is None else variant.group_by_length
    autocast = autocast_dtype(recipe) == torch.bfloat16 if variant.autocast_bf16 is None \
        else variant.autocast_bf16
    return replace(variant, gradient_checkpointing=checkpointing, group_by_length=grouped, autocast_bf16=autocast,
                   eval_batch_size=variant.eval_batch_size or recipe.per_device_eval_batch_size,
                   merge_lora=variant.merge_lora and mergeable)


def same_runs(variants: list[Variant], fields: tuple[str, ...]) -> dict[str, str]:
    """Each variant's name -> the first variant that runs this phase identically (itself if none): measured once."""
    first: dict[tuple, str] = {}
    return {v.name: first.setdefault(tuple(getattr(v, f) for f in fields), v.name) for v in variants}


def rotated(variants: list[Variant], repeat: int) -> list[Variant]:
    """A different variant first in each repetition, so that no variant always follows the same one."""
    shift = repeat % len(variants)
    return variants[shift:] + variants[:shift]
