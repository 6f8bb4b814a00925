"""Padding-free batches: a batch's rows packed into one sequence, with no pad token anywhere.

transformers' `DataCollatorWithFlattening` concatenates the rows into a (1, total tokens) sequence
whose position ids restart at 0 with each row. Given no attention mask, transformers reads the row
boundaries from those position ids and confines attention to each row: a block-diagonal causal mask
for SDPA and eager attention, variable-length kernels for flash attention. A row's answer position is
then its last token, at `row_ends`.

Used by the NLI trainer (`padding_free: true`) and by `tunelab bench` (variant padding_free); the chat
trainer's SFTTrainer has its own (`SFTConfig.padding_free`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DataCollatorWithFlattening

ROW_ENDS = "row_ends"  # the batch key of the packed rows' last positions; its presence marks a packed batch


@dataclass
class PackingCollator:
    """Packs the features' `input_ids`; the `per_row` fields present (class labels, label distributions)
    stay one entry per row."""

    per_row: tuple[str, ...] = ("labels", "label_distribution")

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = [list(feature["input_ids"]) for feature in features]
        flat = DataCollatorWithFlattening(return_position_ids=True)([{"input_ids": row} for row in rows])
        batch = {"input_ids": flat["input_ids"], "position_ids": flat["position_ids"],
                 ROW_ENDS: torch.tensor([len(row) for row in rows]).cumsum(0) - 1}
        for key in self.per_row:
            if key in features[0]:
                batch[key] = torch.tensor([feature[key] for feature in features])
        return batch


def is_packed(batch: dict) -> bool:
    return ROW_ENDS in batch


def model_inputs(batch: dict) -> dict:
    """What the model reads from a batch, padded or packed, and no cache: nothing is generated. A packed batch
    has no attention mask (the position ids mark the rows), and a cache would turn transformers' packed-row
    detection off; with `torch_compile`, a cache would make each layer's index a new graph to compile."""
    keys = ("input_ids", "position_ids") if is_packed(batch) else ("input_ids", "attention_mask", "position_ids")
    return {**{key: batch[key] for key in keys}, "use_cache": False}


def last_positions(batch: dict, count: int) -> torch.Tensor:
    """The indices of each row's last `count` positions, row after row, for `logits_to_keep`: the same
    indices for every row of a left-padded batch, each row's own in a packed one.

    An index tensor, not the integer `count`: transformers then gathers those hidden states into a
    contiguous tensor, where an integer slices a strided view that torch's matmul multiplies with one copy
    of the whole vocabulary matrix per row (28 ms a batch on CPU; about 8x that under bf16 autocast).
    """
    if is_packed(batch):
        offsets = torch.arange(count - 1, -1, -1, device=batch[ROW_ENDS].device)
        return (batch[ROW_ENDS][:, None] - offsets).reshape(-1)
    width = batch["input_ids"].shape[-1]
    return torch.arange(width - count, width, device=batch["input_ids"].device)


def tokens_seen(padding_free: bool) -> str:
    """The Trainer's `include_num_input_tokens_seen` that counts real tokens (tunelab.monitoring): the
    attention mask's ones, or every token of a packed batch (which has no attention mask)."""
    return "all" if padding_free else "non_padding"


def real_tokens(batch: dict) -> int:
    """The batch's tokens that are not padding: all of a packed batch's."""
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
