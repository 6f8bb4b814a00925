"""Stop a diverging run before it reports anything: a Trainer callback.

Every optimizer step, before the weights change, the gradients of the trained parameters are
checked; a NaN or infinity (or a non-finite logged loss or gradient norm) stops training at once
with TrainingDiverged (exit status 4): no checkpoint is saved after the last good one, so a rerun
never resumes from broken weights. A loss that rises far above its first logged value is flagged
once on the terminal and in progress.json's "warnings", which the report shows.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import TrainerCallback

from tunelab.console import say
from tunelab.errors import TrainingDiverged
from tunelab.rundir import last_complete_checkpoint

RISE_FACTOR = 10.0  # a logged loss this many times its first value is flagged


class StopOnDivergence(TrainerCallback):
    def __init__(self) -> None:
        self.first_loss: tuple[int, float] | None = None
        self.warning: str | None = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        gradients = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        if gradients and not torch.isfinite(torch.stack([g.detach().float().norm() for g in gradients])).all():
            self.stop(args, state.global_step + 1, "the gradients are not finite (nan or inf)")
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        for name in ("loss", "grad_norm"):
            value = (logs or {}).get(name)
            if value is not None and not math.isfinite(value):
                self.stop(args, state.global_step, f"the {name.replace('_', ' ')} is {value}")
        loss = (logs or {}).get("loss")
        if loss is None:
            return control
        if self.first_loss is None:
            self.first_loss = (state.global_step, loss)
        elif self.warning is None and loss > RISE_FACTOR * self.first_loss[1]:
            step, first = self.first_loss
            self.warning = (f"the training loss rose from {first:.4g} (step {step}) to {loss:.4g} (step "
                            f"{state.global_step}): training is probably diverging; lower --learning_rate "
                            f"(now {args.learning_rate:g})")
            say(f"warning: {self.warning}")
        return control

    def stop(self, args, step: int, what: str) -> None:
        kept = last_complete_checkpoint(Path(args.output_dir))
        raise TrainingDiverged(
            f"training diverged at step {step}: {what}; nothing after the last good checkpoint was saved "
            f"({kept or 'none yet'}) and no result was written: lower --learning_rate (now {args.learning_rate:g}) "
            "or --max_grad_norm, then start again with --overwrite or a new --run_name")
