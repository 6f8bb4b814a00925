"""The NLI recipe pipeline: baseline evaluation, LoRA fine-tuning, evaluation, report.

`run(RECIPE)` is what a recipe file calls; it works the same under `python`, `accelerate
launch` with one or many processes, and Slurm. The four stages run in order in one process
by default; `--stages train` (etc.) runs a subset, so `launch/pipeline.sh` can run each stage
as its own job. Everything a run writes goes under its run directory (`output_dir/run_name`):

    config.yaml                 the resolved recipe
    checkpoints/checkpoint-N/   one per epoch (resumed automatically when the run restarts)
    adapter/                    the final LoRA adapter (safetensors)
    eval/<split>/{baseline,finetuned}/metrics.json, predictions.csv and confusion.png
    eval/<split>/predictions.csv   both models side by side
    data/<split>.jsonl          the evaluation rows, chosen once and reused by every stage and restart
    comparison/                 baseline vs fine-tuned over all splits (tunelab.compare)
    progress.json               start time, parameters, row counts, timings and memory, updated by each stage
    train_log.json, run_info.json  (run_info.json last: its presence marks a finished run)
    report/report.{md,html,pdf} and plots
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import PartialState
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainingArguments, set_seed

from tunelab.config import NLI_LABELS, NLIRecipe, parse_recipe, recipe_to_dict
from tunelab.data import (STARTER_SETS, check_saved_rows, load_nli_split, load_run_rows, planned_train_rows,
                          read_csv, tokenize_rows)
from tunelab.errors import TunelabError
from tunelab.interrupts import StopOnSignal, TrainingInterrupted
from tunelab.metrics import classification_metrics
from tunelab.models import load_model, load_tokenizer, parameter_counts
from tunelab.monitoring import (
    ResourceMonitor,
    Stopwatch,
    format_summary,
    hardware_info,
    peak_memory,
    software_versions,
)
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
from tunelab.trainer import (
    NLICollator,
    NLITrainer,
    accuracy_metric,
    answer_room,
    label_token_ids,
    training_arguments,
)
from tunelab.tracking import check_tracking, finish_wandb, start_wandb

MODELS = ("baseline", "finetuned")


def run(defaults: NLIRecipe, argv: list[str] | None = None) -> None:
    """Entry point of an NLI recipe file: parse overrides, run, print errors on one line."""
    from tunelab.cli import exit_on_error

    argv = sys.argv[1:] if argv is None else argv
    with exit_on_error(debug="--debug" in argv):
        main(parse_recipe(defaults, argv))


def main(recipe: NLIRecipe, callbacks: Sequence[TrainerCallback] = ()) -> Path:
    """Run the recipe's stages in order; returns the run directory."""
    process_state()
    if recipe.dry_run:
        print_plan(recipe)
        return recipe.run_dir
    check_stages_fit_deepspeed(recipe.stages)
    check_tracking(recipe.report_to)  # a missing W&B key fails here, before anything loads
    set_seed(recipe.seed)
    with NLIRun(recipe, callbacks) as run:
        wandb_run = start_wandb(recipe, run.dir, run.state)
        # The baseline is scored after training when both run in this process: Trainer.predict before
        # train() leaves the model marked as prepared, so train() would skip the DDP wrapper (ranks would
        # never average gradients) and ZeRO-1/2 refuse to evaluate an unprepared model. LoRA leaves the
        # base weights untouched, so the baseline (adapter disabled) is the same afterwards.
        if "train" in recipe.stages:
            train(run)
        if "baseline" in recipe.stages:
            evaluate_baseline(run)
        if "evaluate" in recipe.stages:
            evaluate_finetuned(run)
        if "report" in recipe.stages:
            write_run_report(run)
        progress = run.save_progress()
        for line in format_summary(progress):
            say(line)
        finish_wandb(wandb_run, run.dir, progress)
        run.state.wait_for_everyone()
    return run.dir


# ---------------------------------------------------------------------------- stages

def check_stages_fit_deepspeed(stages: list[str]) -> None:
    from tunelab.deepspeed_check import launched_zero_stage

    evaluation_only = "train" not in stages and {"baseline", "evaluate"} & set(stages)
    if evaluation_only and launched_zero_stage() in (1, 2):
        raise TunelabError("DeepSpeed ZeRO-1/2 cannot run evaluation on its own (DeepSpeed infers only under "
                           "ZeRO-3): launch the baseline and evaluate stages with a non-DeepSpeed config "
                           "(--profile cpu, a40 or multi_gpu) or with zero3")


def evaluate_baseline(run: NLIRun) -> None:
    """Score the pretrained model (LoRA disabled) on every test split."""
    for split in run.recipe.test_splits:
        if (run.eval_dir(split) / "baseline" / "metrics.json").exists():
            say(f"Baseline on {split} already evaluated: reusing it")
            continue
        trainer = run.trainer
        with run.watch.phase("baseline_eval"), run.model.disable_adapter():
            predictions = predict(trainer, run.tokenized(split), f"{split}_baseline")
        run.save_predictions(split, "baseline", predictions)
    run.save_progress()


def train(run: NLIRun) -> None:
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
            run.save_progress()
            run.state.wait_for_everyone()  # no rank exits (and gets its peers killed) before rank 0 has written
            step = run.stop_on_signal.stopped_at_step
            raise TrainingInterrupted(
                f"Interrupted by {run.stop_on_signal.signal_name} at step {step}: checkpoint saved in "
                f"{run.dir / 'checkpoints' / f'checkpoint-{step}'}; run the same command again to resume")
        save_adapter(run)
    run.adapter_ready = True
    if run.state.is_main_process:
        atomic_write_json(run.dir / "train_log.json", run.trainer.state.log_history)
    run.save_progress()


def evaluate_finetuned(run: NLIRun) -> None:
    """Score the fine-tuned adapter on every test split."""
    run.load_saved_adapter()
    for split in run.recipe.test_splits:
        with run.watch.phase("finetuned_eval"):
            predictions = predict(run.trainer, run.tokenized(split), f"{split}_finetuned")
        run.save_predictions(split, "finetuned", predictions)
    run.save_progress()


def write_run_report(run: NLIRun) -> None:
    """Both models side by side, run_info.json (which marks the run finished) and the report."""
    if not run.state.is_main_process:
        return
    from tunelab.compare import write_run_comparison
    from tunelab.report import write_report

    for split in run.recipe.test_splits:
        write_side_by_side(run.eval_dir(split))
    write_run_comparison(run.dir, run.recipe.test_splits)
    progress = run.save_progress()
    atomic_write_json(run.dir / "run_info.json", {
        "recipe": run.recipe.run_name,
        "model": run.recipe.model_name_or_path,
        "dataset": run.recipe.dataset,
        **progress,
        "hardware": hardware_info(run.state.num_processes),
        "software": software_versions(),
    })
    report = write_report(run.dir)
    for split in run.recipe.test_splits:
        before, after = (json.loads((run.eval_dir(split) / m / "metrics.json").read_text())["accuracy"] for m in MODELS)
        say(f"{split} accuracy: baseline {before:.1%} -> fine-tuned {after:.1%} ({100 * (after - before):+.1f} points)")
    say(f"Report: {report}")


# ---------------------------------------------------------------------------- the run

class NLIRun:
    """One run directory, locked while in use, plus what its stages share, each loaded on first use."""

    def __init__(self, recipe: NLIRecipe, callbacks: Sequence[TrainerCallback]):
        self.recipe = recipe
        self.callbacks = list(callbacks)
        self.state = process_state()
        self.dir = recipe.run_dir
        self.watch = Stopwatch()
        self.adapter_ready = False
        self._tokenized: dict[str, object] = {}
        if self.state.is_main_process:
            acquire_run_lock(self.dir)
            try:
                resuming = prepare_run_dir(self.dir, recipe.overwrite)
                check_saved_rows(recipe, self.dir / "data")  # before config.yaml: a restart must keep its rows
            except TunelabError:
                release_run_lock(self.dir)
                raise
            atomic_write_text(self.dir / "config.yaml", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
            record_start(self.dir / "progress.json")
            say(f"{'Resuming' if resuming else 'Starting'} {recipe.run_name} in {self.dir}")
        self.state.wait_for_everyone()
        self.monitor = ResourceMonitor(self.dir if self.state.is_main_process else None)

    def __enter__(self) -> NLIRun:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.state.is_main_process:
            release_run_lock(self.dir)

    def eval_dir(self, split: str) -> Path:
        return self.dir / "eval" / split

    @cached_property
    def tokenizer(self):
        with self.watch.phase("load"):
            return load_tokenizer(self.recipe)

    @cached_property
    def label_ids(self) -> list[list[int]]:
        return label_token_ids(self.tokenizer, self.recipe.label_words, self.recipe.label_scoring)

    @cached_property
    def rows(self) -> dict[str, list[dict]]:
        with self.watch.phase("load"):
            return load_run_rows(self.recipe, self.dir / "data", write=self.state.is_main_process)

    def tokenized(self, split: str):
        if split not in self._tokenized:
            rows = self.rows[split]  # first: bad data fails before the tokenizer loads
            reserve = answer_room(self.label_ids, self.recipe.label_scoring)
            progress = f"Tokenizing {split}" if self.state.is_main_process else None
            self._tokenized[split], truncated = tokenize_rows(rows, self.tokenizer, self.recipe.max_length, reserve,
                                                              progress=progress)
            if truncated:
                say(f"{split}: {truncated} of {len(rows)} premises truncated to fit max_length={self.recipe.max_length}")
        return self._tokenized[split]

    @cached_property
    def training_args(self) -> TrainingArguments:
        on_cpu = not torch.cuda.is_available()
        return training_arguments(self.recipe, str(self.dir / "checkpoints"), on_cpu=on_cpu)

    @cached_property
    def model(self):
        self.training_args  # created first: under DeepSpeed ZeRO-3 it makes from_pretrained shard the weights
        with self.watch.phase("load"):
            model = load_model(self.recipe)
        counts = parameter_counts(model)
        say(f"Trainable parameters: {counts['trainable']:,} of {counts['total']:,} ({counts['percent']:.4f}%), "
            f"counted by {counts['counting']}")
        return model

    @cached_property
    def stop_on_signal(self) -> StopOnSignal:
        return StopOnSignal()

    @cached_property
    def trainer(self) -> NLITrainer:
        """The trainer; data is loaded before the model, so bad data fails before a long model load."""
        train_dataset = self.tokenized(self.recipe.train_split)
        eval_dataset = self.tokenized(self.recipe.validation_split)
        eval_dataset = eval_dataset.select(longest_first(eval_dataset))  # little padding, as in predict()
        trainer = NLITrainer(
            model=self.model,
            args=self.training_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=NLICollator(self.tokenizer.pad_token_id, self.label_ids, self.recipe.label_scoring),
            compute_metrics=accuracy_metric,
            label_ids=self.label_ids,
            scoring=self.recipe.label_scoring,
            callbacks=[self.stop_on_signal, MarkCheckpointComplete(), *self.callbacks],
        )
        trainer.callback_handler.callbacks.insert(0, self.monitor)  # first, so the log and trackers get its figures
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

    def save_predictions(self, split: str, model_name: str, predictions: np.ndarray) -> None:
        """metrics.json and predictions.csv of one model on one split (main process only)."""
        if not self.state.is_main_process:
            return
        rows = self.rows[split]
        gold = [row["label"] for row in rows]
        predicted = [NLI_LABELS[i] for i in predictions.argmax(-1)]
        folder = self.eval_dir(split) / model_name
        atomic_write_json(folder / "metrics.json", classification_metrics(gold, predicted, NLI_LABELS))
        atomic_write_text(folder / "predictions.csv", to_csv([
            {"premise": row["premise"], "hypothesis": row["hypothesis"], "gold": row["label"], "pred": label,
             **{f"p_{name}": round(float(p), 4) for name, p in zip(NLI_LABELS, probs)}}
            for row, label, probs in zip(rows, predicted, predictions)
        ]))

    def save_progress(self) -> dict:
        """Merge this process's figures into progress.json: timings add up over restarts and stages."""
        path = self.dir / "progress.json"
        progress = json.loads(path.read_text()) if path.exists() else {"timings_s": {}}
        for phase, seconds in self.watch.seconds.items():
            progress["timings_s"][phase] = progress["timings_s"].get(phase, 0.0) + seconds
        self.watch.seconds.clear()
        progress["timings_s"]["total"] = sum(v for k, v in progress["timings_s"].items() if k != "total")
        if "model" in self.__dict__:
            progress["parameters"] = parameter_counts(self.model)
        if "rows" in self.__dict__:
            progress["train_rows"] = len(self.rows[self.recipe.train_split])
            progress["eval_rows"] = {split: len(self.rows[split]) for split in self.recipe.test_splits}
        memory = peak_memory()
        if memory["peak_bytes"] > progress.get("memory", {}).get("peak_bytes", 0):
            progress["memory"] = memory
        if self.monitor.summary is not None:
            progress["monitoring"] = self.monitor.summary
        if self.state.is_main_process:
            atomic_write_json(path, progress)
        return progress


def save_adapter(run: NLIRun) -> None:
    """Save the final adapter into a temporary folder, then rename it into place."""
    final, staging = run.dir / "adapter", run.dir / ".adapter.partial"
    run.trainer.save_model(str(staging))
    if run.state.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    run.state.wait_for_everyone()


def print_plan(recipe: NLIRecipe) -> None:
    from tunelab.plan import build_plan, format_plan

    local_data = recipe.dataset in STARTER_SETS or Path(recipe.dataset).expanduser().exists()
    train_rows = len(load_nli_split(recipe, recipe.train_split)) if local_data else planned_train_rows(recipe)
    world_size = PartialState().num_processes
    say(format_plan(build_plan(recipe, world_size=world_size, train_rows=train_rows)))


def predict(trainer: NLITrainer, dataset, name: str = "") -> np.ndarray:
    """The 3-way label probabilities for every row, in the dataset's order (gathered from all processes);
    trackers log the metrics as test/<name>_accuracy etc.

    Rows are scored longest first, so each batch holds prompts of similar lengths and carries little
    padding (the scores do not depend on padding); `tunelab bench` measures the gain.
    """
    order = longest_first(dataset)
    scores = trainer.predict(dataset.select(order), metric_key_prefix=f"test_{name}" if name else "test").predictions
    probabilities = np.empty_like(scores, dtype=np.float32)
    probabilities[order] = torch.from_numpy(scores).float().softmax(-1).numpy()
    return probabilities


def longest_first(dataset) -> np.ndarray:
    return np.argsort([-len(ids) for ids in dataset["input_ids"]], kind="stable")


def write_side_by_side(folder: Path) -> None:
    """eval/<split>/predictions.csv: premise, hypothesis, gold and each model's prediction and probability."""
    per_model = {name: read_csv(folder / name / "predictions.csv") for name in MODELS}
    rows = []
    for baseline, finetuned in zip(per_model["baseline"], per_model["finetuned"], strict=True):
        row = {"premise": baseline["premise"], "hypothesis": baseline["hypothesis"], "gold": baseline["gold"]}
        for name, prediction in (("baseline", baseline), ("finetuned", finetuned)):
            row[f"{name}_pred"] = prediction["pred"]
            row[f"{name}_prob"] = prediction[f"p_{prediction['pred']}"]
        rows.append(row)
    atomic_write_text(folder / "predictions.csv", to_csv(rows))


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


def say(message: str) -> None:
    """Print on the main process only, so multi-process runs print each line once."""
    if PartialState().is_main_process:
        print(f"[tunelab] {message}", flush=True)
