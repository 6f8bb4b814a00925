"""What both recipe pipelines share (tunelab.nli and tunelab.chat).

`PipelineRun` is one run directory, locked while in use: config.yaml, progress.json,
monitoring.json, the final adapter or model (saved atomically) and run_info.json. A pipeline subclasses
it with what is its own, loaded in named steps (`LOAD_STEPS`: data, tokenizer, model, trainer;
a stage asks `run.load(step)` for what it needs, which loads the steps before it first), and
defines its stage functions; the `train` stage is the same for both and lives here.

A rerun of an unfinished run resumes it only with the settings it started with (those that
shape training); `--overwrite` sets the old run aside and deletes it only once the new run has
loaded its data and model and started training; a failed start puts it back.

A pipeline's `main` hands its run class and stages to `run_stages`, which adds W&B around them
and prints the summary at the end. A recipe file calls `tunelab.launch.recipe.run`, which parses its
settings before importing the pipeline and then calls its `main`.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import yaml
from accelerate import PartialState
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import TrainerCallback, set_seed

from tunelab.config import Recipe, recipe_to_dict
from tunelab.console import say
from tunelab.divergence import StopOnDivergence
from tunelab.errors import TrainingInterrupted, TunelabError
from tunelab.hub import check_hub_access, push_run
from tunelab.interrupts import StopOnSignal, interruptible
from tunelab.methods import saved_folder_name
from tunelab.models import check_method_fits_model, parameter_counts
from tunelab.monitoring import ResourceMonitor
from tunelab.network import go_offline_unless_hub_reachable
from tunelab.rundir import (
    MarkCheckpointComplete,
    acquire_run_lock,
    atomic_write_json,
    atomic_write_text,
    check_free_space,
    discard_replaced_run,
    explain_write_failure,
    last_complete_checkpoint,
    prepare_run_dir,
    record_start,
    release_run_lock,
    report_missing,
    restore_replaced_run,
)
from tunelab.runtime.deepspeed_check import launched_with_deepspeed
from tunelab.runtime.fsdp import check_fsdp_settings, launched_fsdp_version, save_trained_adapter
from tunelab.summary import Stopwatch, format_summary, hardware_info, peak_memory, software_versions
from tunelab.tracking import check_tracking, finish_wandb, start_wandb

LOAD_STEPS = ("data", "tokenizer", "model", "trainer")
# Settings a resumed run may change: they do not change what is trained (run control is not in config.yaml).
FREE_TO_CHANGE = ("run_name", "output_dir", "report_to", "logging_steps", "profile", "per_device_eval_batch_size",
                  "save_total_limit", "trust_remote_code", "allow_pickle", "temperature_scaling", "push_to_hub",
                  "hub_model_id", "hub_private", "torch_compile")


def run_stages(run_class: type[PipelineRun], recipe: Recipe, callbacks: Sequence[TrainerCallback],
               stages: Mapping[str, Callable[[PipelineRun], None]]) -> Path:
    """Run, in the order given, the stages the recipe names, then print the summary; returns the run directory."""
    check_tracking(recipe.report_to)  # a missing W&B key fails here, before anything loads
    check_fsdp_settings(recipe)
    check_training_settings(recipe)
    check_method_fits_model(recipe)
    if recipe.push_to_hub and "report" in recipe.stages:
        check_hub_access()  # before anything loads, not after training
    go_offline_unless_hub_reachable([name for name in (recipe.model_name_or_path, recipe.dataset)
                                     if name and looks_like_hub_id(name)])
    set_seed(recipe.seed)
    with interruptible(), run_class(recipe, callbacks) as run:
        wandb_run = start_wandb(recipe, run.dir, run.state)
        chosen = stages_to_run(run)
        for name, stage in stages.items():
            if name in chosen:
                stage(run)
        if recipe.push_to_hub and "report" in recipe.stages and run.state.is_main_process:
            push_run(run.dir)
        progress = run.save_progress()
        for line in format_summary(progress):
            say(line)
        finish_wandb(wandb_run, run.dir, progress)
        run.state.wait_for_everyone()
    # Torn down before the interpreter exits: left to exit, a gloo rank's threads could abort it (SIGABRT) after
    # the run had finished
    run.state.destroy_process_group()
    return run.dir


def stages_to_run(run: PipelineRun) -> list[str]:
    """The recipe's stages, or only the report when an earlier start stopped after run_info.json, before the report."""
    if report_missing(run.dir) and "report" in run.recipe.stages:
        say(f"{run.dir} finished training and evaluation but not its report: writing the report only")
        return ["report"]
    return run.recipe.stages


def looks_like_hub_id(name: str) -> bool:
    """Neither a local path nor one of the names tunelab ships (embedded models, starter sets)."""
    from tunelab.embedded import is_embedded_name

    local = name.startswith((".", "/", "~")) or Path(name).expanduser().exists()
    return not (local or is_embedded_name(name) or name.startswith("starter"))


def check_training_settings(recipe: Recipe) -> None:
    """Settings only the Trainer would check, and only after the model has loaded."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    if recipe.torch_compile:
        check_torch_compile(on_cpu=not torch.cuda.is_available())

    for name, choices in (("optim", OptimizerNames), ("lr_scheduler_type", SchedulerType)):
        valid, value = [choice.value for choice in choices], getattr(recipe, name)
        if value not in valid:
            close = difflib.get_close_matches(value, valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(valid)}"
            raise TunelabError(f"{name} {value!r} is not one transformers knows: {hint}")


def check_torch_compile(on_cpu: bool) -> None:
    """What `torch_compile` needs: a launch without DeepSpeed or FSDP, whose hooks wrap the layers it compiles,
    and on a CPU a C++ compiler, with which Inductor builds its kernels."""
    if launched_with_deepspeed() or launched_fsdp_version():
        raise TunelabError("torch_compile is not supported under DeepSpeed or FSDP: pass --torch_compile false, "
                           "or launch without them")
    if on_cpu:
        from torch._inductor import exc
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except exc.InvalidCxxCompiler:
            raise TunelabError("torch_compile on a CPU needs a C++ compiler and PyTorch finds none: install g++ "
                               "(Debian and Ubuntu: apt install g++) or name one in CXX, or pass "
                               "--torch_compile false") from None


def train(run: PipelineRun) -> None:
    """Fine-tuning by the recipe's method, resuming from the last checkpoint; stops with a checkpoint on a signal."""
    run.load("trainer")
    checkpoint = last_complete_checkpoint(run.dir / "checkpoints")
    if checkpoint:
        say(f"Resuming training from {checkpoint}")
    if run.state.is_main_process:
        check_free_space(run.dir / "checkpoints", run.checkpoint_bytes())
        discard_replaced_run(run.dir)  # the new run has loaded everything and starts training
    with run.watch.phase("train"):
        try:
            run.trainer.train(resume_from_checkpoint=checkpoint)
            if run.stop_on_signal.stopped_at_step is not None:
                stop_after_signal(run)
            run.best_checkpoint = best_checkpoint(run.trainer)
            run.save_adapter()
        except Exception as error:  # torch and safetensors report a full disk in their own error types
            explain_write_failure(error, run.dir / "checkpoints", run.checkpoint_bytes())
            raise
        finally:
            run.stop_on_signal.restore()
    run.adapter_ready = True
    if run.state.is_main_process:
        atomic_write_json(run.dir / "train_log.json", run.trainer.state.log_history)
    run.save_progress()


def best_checkpoint(trainer) -> dict | None:
    """The checkpoint `load_best_model_at_end` put back into the model (said on one line), or None."""
    if not (trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint):
        return None
    best = {"metric": f"validation {trainer.args.metric_for_best_model}", "value": trainer.state.best_metric,
            "step": int(Path(trainer.state.best_model_checkpoint).name.removeprefix("checkpoint-"))}
    say(f"Best checkpoint by {best['metric']} ({best['value']:.4f}): {trainer.state.best_model_checkpoint}; "
        "the adapter and its evaluation come from it")
    return best


def stop_after_signal(run: PipelineRun) -> None:
    """Record the progress, then raise TrainingInterrupted naming the checkpoint the next run resumes from."""
    run.save_progress()
    run.state.wait_for_everyone()  # no rank exits (and gets its peers killed) before rank 0 has written
    step = run.stop_on_signal.stopped_at_step
    raise TrainingInterrupted(
        f"Interrupted by {run.stop_on_signal.signal_name} at step {step}: checkpoint saved in "
        f"{run.dir / 'checkpoints' / f'checkpoint-{step}'}; run the same command again to resume")


class PipelineRun:
    """One run directory, locked while in use, plus what its stages share, loaded in named steps.

    A subclass provides one method per step of LOAD_STEPS, in that order: `load_data`,
    `load_tokenizer`, `load_model` (sets `self.model`) and `load_trainer` (sets `self.trainer`, built
    with `trainer_callbacks()`, then passed to `add_monitor`). It may override the hooks
    `check_before_config`, `progress_fields`, `identity` and `add_to_adapter`.
    """

    def __init__(self, recipe: Recipe, callbacks: Sequence[TrainerCallback]):
        self.recipe = recipe
        self.model_recipe = recipe  # what load_model loads: load_saved_model points it at the run's model folder
        self.callbacks = list(callbacks)
        self.state = process_state()
        self.dir = recipe.run_dir
        self.watch = Stopwatch()
        self.adapter_ready = False
        self.best_checkpoint: dict | None = None
        self.loaded_steps: list[str] = []
        self.divergence = StopOnDivergence()
        if self.state.is_main_process:
            self.open_run_dir()
        self.state.wait_for_everyone()
        self.monitor = ResourceMonitor(self.dir if self.state.is_main_process else None)

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if self.state.is_main_process:
            if exc_type is None:
                discard_replaced_run(self.dir)
            else:
                restore_replaced_run(self.dir)  # a run replaced by --overwrite comes back if this one never trained
            release_run_lock(self.dir)

    def open_run_dir(self) -> None:
        """Lock the run directory, refuse a finished run or changed settings (unless --overwrite: then set the
        old run aside), then write config.yaml and the start time."""
        acquire_run_lock(self.dir)
        try:
            resuming = prepare_run_dir(self.dir, self.recipe.overwrite, self.training_settings(), FREE_TO_CHANGE)
            self.check_before_config()
            atomic_write_text(self.dir / "config.yaml", yaml.safe_dump(self.training_settings(), sort_keys=False))
            record_start(self.dir / "progress.json")
        except BaseException:
            restore_replaced_run(self.dir)
            release_run_lock(self.dir)
            raise
        say(f"{'Resuming' if resuming else 'Starting'} {self.recipe.run_name} in {self.dir}")

    def training_settings(self) -> dict:
        """The resolved recipe, as config.yaml holds it."""
        return recipe_to_dict(self.recipe)

    def check_before_config(self) -> None:
        """Hook: refuse what an earlier start of the run left in its directory, before config.yaml is rewritten."""

    def load(self, step: str) -> None:
        """Load `step` of LOAD_STEPS and, first, every step before it; each step runs once per process."""
        steps = {"data": self.load_data, "tokenizer": self.load_tokenizer, "model": self.load_model,
                 "trainer": self.load_trainer}
        for name in LOAD_STEPS[:LOAD_STEPS.index(step) + 1]:
            if name not in self.loaded_steps:
                steps[name]()
                self.loaded_steps.append(name)

    def loaded(self, step: str) -> bool:
        """Whether the load step `step` has run in this process."""
        return step in self.loaded_steps

    def trainer_callbacks(self) -> list[TrainerCallback]:
        """What every pipeline's trainer gets: stop on a signal or on divergence, mark complete checkpoints,
        then the caller's."""
        self.stop_on_signal = StopOnSignal()
        return [self.stop_on_signal, self.divergence, MarkCheckpointComplete(), *self.callbacks]

    def checkpoint_bytes(self) -> int:
        """What one checkpoint takes: the largest saved so far, else the trainable weights, two AdamW moments
        and 1 MB of state."""
        saved = [sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
                 for folder in (self.dir / "checkpoints").glob("checkpoint-*") if folder.is_dir()]
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return max([12 * trainable + 2**20, *saved])

    def add_monitor(self, trainer):
        """`trainer` with the resource monitor first in its callbacks, so the log and trackers get its figures."""
        trainer.callback_handler.callbacks.insert(0, self.monitor)
        return trainer

    @property
    def saved_dir(self) -> Path:
        """Where the trained result is saved: adapter/ (LoRA), else model/ (a whole model folder)."""
        return self.dir / saved_folder_name(self.recipe.method)

    def load_saved_adapter(self) -> None:
        """Put the saved result into the model, unless this process just trained it: the adapter's weights
        (LoRA), or the saved model folder loaded in place of the pretrained model (full, freeze)."""
        if self.adapter_ready:
            return
        if self.recipe.method != "lora":
            self.load_saved_model()
        else:
            weights = self.saved_dir / "adapter_model.safetensors"
            if not weights.exists():
                raise TunelabError(f"{weights} does not exist: run the train stage first (--stages train)")
            self.load("model")
            set_peft_model_state_dict(self.model, load_file(str(weights)))
        self.adapter_ready = True

    def load_saved_model(self) -> None:
        """Load the model (and a new trainer around it) from the run's model folder."""
        if not (self.saved_dir / "config.json").exists():
            raise TunelabError(f"{self.saved_dir} holds no model: run the train stage first (--stages train)")
        self.model_recipe = dataclasses.replace(self.recipe, model_name_or_path=str(self.saved_dir))
        self.loaded_steps = [step for step in self.loaded_steps if step not in ("model", "trainer")]
        self.load("model")

    def save_adapter(self) -> None:
        """Save the trained result (an adapter, or a whole model with its tokenizer) into a temporary folder,
        then rename it into place: it appears complete at once."""
        final, staging = self.saved_dir, self.dir / f".{self.saved_dir.name}.partial"
        save_trained_adapter(self.trainer, str(staging))  # gathered from the shards under FSDP2
        if self.state.is_main_process:
            if self.recipe.method != "lora":
                self.tokenizer.save_pretrained(staging)
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
        if self.best_checkpoint:
            progress["best_checkpoint"] = self.best_checkpoint
        if self.divergence.warning:
            progress["warnings"] = sorted({*progress.get("warnings", []), self.divergence.warning})
        if self.state.is_main_process:
            atomic_write_json(path, progress)
        return progress

    def progress_fields(self) -> dict:
        """Hook: the pipeline's own progress.json figures (row counts...) of what this process has loaded."""
        return {}

    def identity(self) -> dict:
        """What run_info.json names the run by."""
        return {"recipe": self.recipe.run_name, "model": self.recipe.model_name_or_path,
                "dataset": self.recipe.dataset, "method": self.recipe.method}

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
