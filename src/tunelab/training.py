"""What the NLI trainer and the chat SFTTrainer share: the recipe-to-arguments mapping and a
length-grouped sampler that a resumed run reproduces."""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from tunelab.config import Recipe
from tunelab.runtime.precision import compute_dtype


class EpochSeededSampler(Sampler):
    """A sampler whose order is drawn from (seed, epoch) rather than from the global random state.

    transformers' LengthGroupedSampler shuffles with the global generator, whose state when a resumed
    epoch starts differs from an uninterrupted run's: the resumed run would skip the wrong batches.
    The epoch comes from the trainer's state when the epoch's batches are drawn: accelerate's `set_epoch`
    does not reach a sampler under a multi-process resume (SkipBatchSampler over BatchSamplerShard has no
    `sampler` to forward to), so every process of a fresh or resumed run draws the same order from it.
    """

    def __init__(self, sampler: LengthGroupedSampler, seed: int, current_epoch: Callable[[], int]):
        self.sampler, self.seed, self.current_epoch = sampler, seed, current_epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        self.sampler.generator = torch.Generator().manual_seed(self.seed + self.current_epoch())
        return iter(self.sampler)


class ResumableLengthGrouping:
    """Trainer mixin: with train_sampling_strategy="group_by_length", an order a resumed run reproduces."""

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if not isinstance(sampler, LengthGroupedSampler):
            return sampler
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        # state.epoch is e + (steps done)/(steps per epoch): e exactly when epoch e starts, e + x mid-epoch
        return EpochSeededSampler(sampler, seed, lambda: math.floor(self.state.epoch or 0))


class LoraPlusOptimizer:
    """Trainer mixin: LoRA+ (PEFT's create_loraplus_optimizer) when `loraplus_lr_ratio` is set: the LoRA B
    matrices learn at that many times the learning rate of the A matrices, with the recipe's optimizer."""

    def __init__(self, *args, loraplus_lr_ratio: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loraplus_lr_ratio = loraplus_lr_ratio

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.loraplus_lr_ratio is not None:
            from peft.optimizers import create_loraplus_optimizer

            model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = create_loraplus_optimizer(model, optimizer_cls, loraplus_lr_ratio=self.loraplus_lr_ratio,
                                                       loraplus_weight_decay=self.args.weight_decay,
                                                       **optimizer_kwargs)
        return super().create_optimizer(model)


def autocast_dtype(recipe: Recipe) -> torch.dtype | None:
    """The dtype the trainers autocast the forward pass to (mixed precision), or None when they train in fp32."""
    dtype = compute_dtype(recipe.precision)
    return None if dtype == torch.float32 else dtype


def training_kwargs(recipe: Recipe, output_dir: str, on_cpu: bool) -> dict:
    """The recipe's optimisation settings that TrainingArguments and TRL's SFTConfig share, by keyword.

    Precision is always set explicitly (SFTConfig would otherwise default to bf16, which fails on CPUs
    and older GPUs).
    """
    autocast = autocast_dtype(recipe)
    return dict(
        output_dir=output_dir,
        run_name=recipe.run_name,
        seed=recipe.seed,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        per_device_eval_batch_size=recipe.per_device_eval_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.num_train_epochs,
        max_steps=recipe.max_steps,
        warmup_steps=recipe.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type=recipe.lr_scheduler_type,
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        neftune_noise_alpha=recipe.neftune_noise_alpha,
        optim=recipe.optim,
        train_sampling_strategy="group_by_length" if recipe.group_by_length else "random",
        bf16=autocast == torch.bfloat16,
        fp16=autocast == torch.float16,
        logging_steps=recipe.logging_steps,
        save_strategy=recipe.save_strategy,
        save_total_limit=recipe.save_total_limit,
        report_to=[name.strip() for name in recipe.report_to.split(",")],  # "wandb,tensorboard" names both
        use_cpu=on_cpu,
        ddp_backend="gloo" if on_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        disable_tqdm=False,
    )


class AdaptersInAutocast:
    """Trainer mixin: while training under autocast (bf16 or fp16 mixed precision), LoRA adapters compute in
    the autocast dtype from their fp32 weights, like every other matmul. PEFT would otherwise cast each
    adapter's input up to its fp32 weights, and autocast would cast it straight back: a CPU spent about 8% of
    a step on those casts (docs/performance.md). The weights, their gradients and the optimizer stay fp32."""

    def train(self, *args, **kwargs):
        from peft.helpers import disable_input_dtype_casting

        with disable_input_dtype_casting(self.model, active=self.accelerator.native_amp):
            return super().train(*args, **kwargs)
