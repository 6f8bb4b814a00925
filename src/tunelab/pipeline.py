"""What both recipe pipelines share (tunelab.nli and tunelab.chat).

`PipelineRun` is one run directory, locked while in use: config.yaml, progress.json,
monitoring.json, the final adapter (saved atomically) and run_info.json. A pipeline subclasses
it with what is its own (tokenizer, data, `model` and `trainer`, each loaded on first use) and
defines its stage functions; the `train` stage is the same for both and lives here.

A pipeline's `main` hands its run class and stages to `run_stages`, which adds W&B around them
and prints the summary at the end; its `run` (what a recipe file calls) is `run_recipe(main, ...)`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path

import torch
import yaml
from accelerate import PartialState
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import TrainerCallback, set_seed

from tunelab.config import Recipe, parse_recipe, recipe_to_dict
from tunelab.console import quiet_third_party, say
from tunelab.errors import TrainingInterrupted, TunelabError, exit_on_error
from tunelab.interrupts import StopOnSignal
from tunelab.launch.fsdp import check_fsdp_settings, save_trained_adapter
from tunelab.models import parameter_counts
from tunelab.monitoring import ResourceMonitor
from tunelab.rundir import (
    MarkCheckpointComplete,
    acquire_run_lock,
    atomic_write_json,
    atomic_write_text,
    last_complete_checkpoint,
    prepare_run_dir,
    record_start,
    release_run_lock,
)
from tunelab.summary import Stopwatch, format_summary, hardware_info, peak_memory, software_versions
from tunelab.tracking import check_tracking, finish_wandb, start_wandb

MODELS = ("baseline", "finetuned")


def run_recipe(main: Callable[[Recipe], Path], defaults: Recipe, argv: list[str] | None) -> None:
    """A recipe file's entry point: parse the overrides, run `main`, print errors on one line."""
    argv = sys.argv[1:] if argv is None else argv
    quiet_third_party(debug="--debug" in argv)
    with exit_on_error(debug="--debug" in argv):
        main(parse_recipe(defaults, argv))


def run_stages(run_class: type[PipelineRun], recipe: Recipe, callbacks: Sequence[TrainerCallback],
               stages: Mapping[str, Callable[[PipelineRun], None]]) -> Path:
    """Run, in the order given, the stages the recipe names, then print the summary; returns the run directory."""
    check_tracking(recipe.report_to)  # a missing W&B key fails here, before anything loads
    check_fsdp_settings(recipe)
    set_seed(recipe.seed)
    with run_class(recipe, callbacks) as run:
        wandb_run = start_wandb(recipe, run.dir, run.state)
        for name, stage in stages.items():
            if name in recipe.stages:
                stage(run)
        progress = run.save_progress()
        for line in format_summary(progress):
            say(line)
        finish_wandb(wandb_run, run.dir, progress)
        run.state.wait_for_everyone()
    return run.dir


def train(run: PipelineRun) -> None:
    """LoRA fine-tuning, resuming from the last checkpoint; stops with a checkpoint on a signal."""
    checkpoint = last_complete_checkpoint(run.dir / "checkpoints")
    if checkpoint:
        say(f"Resuming training from {checkpoint}")
    with run.watch.phase("train"):
        try:
            run.trainer.train(resume_from_checkpoint=checkpoint)
        finally:
            run.stop_on_signal.restore()
        if run.stop_on_signal.stopped_at_step is not None:
            stop_after_signal(run)
        run.save_adapter()
    run.adapter_ready = True
    if run.state.is_main_process:
        atomic_write_json(run.dir / "train_log.json", run.trainer.state.log_history)
    run.save_progress()


def stop_after_signal(run: PipelineRun) -> None:
    """Record the progress, then raise TrainingInterrupted naming the checkpoint the next run resumes from."""
    run.save_progress()
    run.state.wait_for_everyone()  # no rank exits (and gets its peers killed) before rank 0 has written
    step = run.stop_on_signal.stopped_at_step
    raise TrainingInterrupted(
        f"Interrupted by {run.stop_on_signal.signal_name} at step {step}: checkpoint saved in "
        f"{run.dir / 'checkpoints' / f'checkpoint-{step}'}; run the same command again to resume")


class PipelineRun:
    """One run directory, locked while in use, plus what its stages share, each loaded on first use.

    A subclass provides the cached properties `model` and `trainer` (built with `trainer_callbacks()`,
    then passed to `add_monitor`), and may override the hooks `check_before_config`,
    `progress_fields`, `identity` and `add_to_adapter`.
    """

    def __init__(self, recipe: Recipe, callbacks: Sequence[TrainerCallback]):
        self.recipe = recipe
        self.callbacks = list(callbacks)
        self.state = process_state()
        self.dir = recipe.run_dir
        self.watch = Stopwatch()
        self.adapter_ready = False
        if self.state.is_main_process:
            self.open_run_dir()
        self.state.wait_for_everyone()
        self.monitor = ResourceMonitor(self.dir if self.state.is_main_process else None)

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.state.is_main_process:
            release_run_lock(self.dir)

    def open_run_dir(self) -> None:
        """Lock the run directory, refuse a finished run, then write config.yaml and the start time."""
        acquire_run_lock(self.dir)
        try:
            resuming = prepare_run_dir(self.dir, self.recipe.overwrite)
            self.check_before_config()
        except TunelabError:
            release_run_lock(self.dir)
            raise
        atomic_write_text(self.dir / "config.yaml", yaml.safe_dump(recipe_to_dict(self.recipe), sort_keys=False))
        record_start(self.dir / "progress.json")
        say(f"{'Resuming' if resuming else 'Starting'} {self.recipe.run_name} in {self.dir}")

    def check_before_config(self) -> None:
        """Hook: refuse what an earlier session left in the run directory, before config.yaml is rewritten."""

    def loaded(self, name: str) -> bool:
        """Whether the cached property `name` has been loaded in this process."""
        return name in self.__dict__

    @cached_property
    def stop_on_signal(self) -> StopOnSignal:
        return StopOnSignal()

    def trainer_callbacks(self) -> list[TrainerCallback]:
        """What every pipeline's trainer gets: stop on a signal, mark complete checkpoints, then the caller's."""
        return [self.stop_on_signal, MarkCheckpointComplete(), *self.callbacks]

    def add_monitor(self, trainer):
        """`trainer` with the resource monitor first in its callbacks, so the log and trackers get its figures."""
        trainer.callback_handler.callbacks.insert(0, self.monitor)
        return trainer

    def load_saved_adapter(self) -> None:
        """Put the saved adapter's weights into the model, unless this process just trained them."""
        if self.adapter_ready:
            return
        weights = self.dir / "adapter" / "adapter_model.safetensors"
        if not weights.exists():
            raise TunelabError(f"{weights} does not exist: run the train stage first (--stages train)")
        set_peft_model_state_dict(self.model, load_file(str(weights)))
        self.adapter_ready = True

    def save_adapter(self) -> None:
        """Save the final adapter into a temporary folder, then rename it into place: it appears complete at once."""
        final, staging = self.dir / "adapter", self.dir / ".adapter.partial"
        save_trained_adapter(self.trainer, str(staging))  # gathered from the shards under FSDP2
        if self.state.is_main_process:
            self.add_to_adapter(staging)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        self.state.wait_for_everyone()

    def add_to_adapter(self, folder: Path) -> None:
        """Hook: files the pipeline keeps beside the adapter's weights (main process, before the rename)."""

    def save_progress(self) -> dict:
        """Merge this process's figures into progress.json: timings add up over restarts and stages."""
        path = self.dir / "progress.json"
        progress = json.loads(path.read_text()) if path.exists() else {"timings_s": {}}
        for phase, seconds in self.watch.seconds.items():
            progress["timings_s"][phase] = progress["timings_s"].get(phase, 0.0) + seconds
        self.watch.seconds.clear()
        progress["timings_s"]["total"] = sum(v for k, v in progress["timings_s"].items() if k != "total")
        if self.loaded("model"):
            progress["parameters"] = parameter_counts(self.model)
        progress.update(self.progress_fields())
        memory = peak_memory()
        if memory["peak_bytes"] > progress.get("memory", {}).get("peak_bytes", 0):
            progress["memory"] = memory
        if self.monitor.summary is not None:
            progress["monitoring"] = self.monitor.summary
        if self.state.is_main_process:
            atomic_write_json(path, progress)
        return progress

    def progress_fields(self) -> dict:
        """Hook: the pipeline's own progress.json figures (row counts...) of what this process has loaded."""
        return {}

    def identity(self) -> dict:
        """What run_info.json names the run by."""
        return {"recipe": self.recipe.run_name, "model": self.recipe.model_name_or_path,
                "dataset": self.recipe.dataset}

    def write_run_info(self, progress: dict) -> None:
        """run_info.json: the run, its figures, hardware and software; written last, it marks the run finished."""
        atomic_write_json(self.dir / "run_info.json", {
            **self.identity(),
            **progress,
            "hardware": hardware_info(self.state.num_processes),
            "software": software_versions(),
        })


def say_parameter_counts(model) -> None:
    counts = parameter_counts(model)
    say(f"Trainable parameters: {counts['trainable']:,} of {counts['total']:,} ({counts['percent']:.4f}%), "
        f"counted by {counts['counting']}")


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def process_state() -> PartialState:
    """accelerate's view of this process. On CPU it sees a multi-process launch only when told it runs on
    the CPU: otherwise every rank takes itself for the main process until the Trainer sets up (the first
    call configures it for the whole process)."""
    if torch.cuda.is_available():
        return PartialState()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return PartialState(cpu=True, backend="gloo")  # as training_arguments sets ddp_backend
    return PartialState(cpu=True)
