"""The NLI recipe pipeline: baseline evaluation, LoRA fine-tuning, evaluation, report.

`run(RECIPE)` is what a recipe file calls; it works the same under `python`, `accelerate
launch` with one or many processes, and Slurm. Everything a run writes goes under its run
directory (`output_dir/run_name`):

    config.yaml                 the resolved recipe
    checkpoints/checkpoint-N/   one per epoch (resumed automatically when the run restarts)
    adapter/                    the final LoRA adapter (safetensors)
    eval/<split>/{baseline,finetuned}/metrics.json and predictions.csv
    eval/<split>/predictions.csv   both models side by side
    train_log.json, run_info.json  (run_info.json last: its presence marks a finished run)
    report/report.{md,html,pdf} and plots
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import PartialState
from transformers import TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from tunelab.config import NLI_LABELS, NLIRecipe, parse_recipe, recipe_to_dict
from tunelab.data import load_nli_split, tokenize_rows
from tunelab.interrupts import StopOnSignal, TrainingInterrupted
from tunelab.metrics import classification_metrics
from tunelab.models import load_model, load_tokenizer, parameter_counts
from tunelab.monitoring import Stopwatch, hardware_info, peak_memory, software_versions
from tunelab.rundir import atomic_write_json, atomic_write_text, prepare_run_dir
from tunelab.trainer import NLICollator, NLITrainer, accuracy_metric, label_token_ids, training_arguments


def run(defaults: NLIRecipe, argv: list[str] | None = None) -> None:
    """Entry point of an NLI recipe file: parse overrides, run, print errors on one line."""
    from tunelab.cli import exit_on_error

    argv = sys.argv[1:] if argv is None else argv
    with exit_on_error(debug="--debug" in argv):
        main(parse_recipe(defaults, argv))


def main(recipe: NLIRecipe, callbacks: Sequence[TrainerCallback] = ()) -> Path:
    """Baseline evaluation, training, fine-tuned evaluation and the report; returns the run directory."""
    state = PartialState()
    watch = Stopwatch()
    set_seed(recipe.seed)
    run_dir = recipe.run_dir
    if state.is_main_process:
        resuming = prepare_run_dir(run_dir, recipe.overwrite)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
        say(f"{'Resuming' if resuming else 'Starting'} {recipe.run_name} in {run_dir}")
    state.wait_for_everyone()

    with watch.phase("load"):
        splits = {role: load_nli_split(recipe, getattr(recipe, f"{role}_split"))
                  for role in ("train", "validation", "test")}
        tokenizer = load_tokenizer(recipe)
        label_ids = label_token_ids(tokenizer, recipe.label_words, recipe.label_scoring)
        reserve = max(len(ids) for ids in label_ids) if recipe.label_scoring == "sequence" else 1
        tokenized = {}
        for role, rows in splits.items():
            tokenized[role], truncated = tokenize_rows(rows, tokenizer, recipe.max_length, reserve)
            if truncated:
                say(f"{role}: {truncated} of {len(rows)} premises truncated to fit max_length={recipe.max_length}")
        model = load_model(recipe)
        parameters = parameter_counts(model)
        say(f"Trainable parameters: {parameters['trainable']:,} of {parameters['total']:,} "
            f"({parameters['percent']:.4f}%), counted by {parameters['counting']}")

    stop_on_signal = StopOnSignal()
    trainer = NLITrainer(
        model=model,
        args=training_arguments(recipe, str(run_dir / "checkpoints"), on_cpu=not torch.cuda.is_available()),
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        data_collator=NLICollator(tokenizer.pad_token_id, label_ids, recipe.label_scoring),
        compute_metrics=accuracy_metric,
        label_ids=label_ids,
        scoring=recipe.label_scoring,
        callbacks=[stop_on_signal, *callbacks],
    )

    test_split = recipe.test_split
    with watch.phase("baseline_eval"), model.disable_adapter():
        baseline = predict(trainer, tokenized["test"])
    say(f"Baseline {test_split} accuracy: {np.mean(baseline[0] == tokenized['test']['labels']):.1%}")

    with watch.phase("train"):
        try:
            trainer.train(resume_from_checkpoint=get_last_checkpoint(str(run_dir / "checkpoints")))
        finally:
            stop_on_signal.restore()
        if stop_on_signal.stopped_at_step is not None:
            step = stop_on_signal.stopped_at_step
            raise TrainingInterrupted(
                f"Interrupted by {stop_on_signal.signal_name} at step {step}: checkpoint saved in "
                f"{run_dir / 'checkpoints' / f'checkpoint-{step}'}; run the same command again to resume")
        trainer.save_model(str(run_dir / "adapter"))

    with watch.phase("finetuned_eval"):
        finetuned = predict(trainer, tokenized["test"])

    if state.is_main_process:
        write_evaluation(run_dir / "eval" / test_split, splits["test"], baseline, finetuned)
        atomic_write_json(run_dir / "train_log.json", trainer.state.log_history)
        atomic_write_json(run_dir / "run_info.json", {
            "recipe": recipe.run_name,
            "model": recipe.model_name_or_path,
            "dataset": recipe.dataset,
            "parameters": parameters,
            "timings_s": watch.total(),
            "memory": peak_memory(),
            "hardware": hardware_info(state.num_processes),
            "software": software_versions(),
            "train_rows": len(splits["train"]),
            "eval_rows": {test_split: len(splits["test"])},
        })
        from tunelab.report import write_report

        report = write_report(run_dir)
        base_acc = np.mean(baseline[0] == tokenized["test"]["labels"])
        tuned_acc = np.mean(finetuned[0] == tokenized["test"]["labels"])
        say(f"{test_split} accuracy: baseline {base_acc:.1%} -> fine-tuned {tuned_acc:.1%} "
            f"({100 * (tuned_acc - base_acc):+.1f} points)")
        say(f"Report: {report}")
    state.wait_for_everyone()
    return run_dir


def predict(trainer: NLITrainer, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class index and the 3-way probabilities for every row."""
    scores = trainer.predict(dataset).predictions
    probabilities = torch.from_numpy(scores).float().softmax(-1).numpy()
    return probabilities.argmax(-1), probabilities


def write_evaluation(folder: Path, rows: list[dict], baseline, finetuned) -> None:
    """Metrics and predictions of each model, and both models' predictions side by side."""
    gold = [row["label"] for row in rows]
    side_by_side = [{"premise": row["premise"], "hypothesis": row["hypothesis"], "gold": row["label"]} for row in rows]
    for name, (predicted, probabilities) in (("baseline", baseline), ("finetuned", finetuned)):
        names = [NLI_LABELS[i] for i in predicted]
        atomic_write_json(folder / name / "metrics.json", classification_metrics(gold, names, NLI_LABELS))
        per_model = []
        for row, label, probs in zip(side_by_side, names, probabilities):
            row[f"{name}_pred"] = label
            row[f"{name}_prob"] = round(float(probs.max()), 4)
            per_model.append({"premise": row["premise"], "hypothesis": row["hypothesis"], "gold": row["gold"],
                              "pred": label, **{f"p_{l}": round(float(p), 4) for l, p in zip(NLI_LABELS, probs)}})
        atomic_write_text(folder / name / "predictions.csv", to_csv(per_model))
    atomic_write_text(folder / "predictions.csv", to_csv(side_by_side))


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def say(message: str) -> None:
    """Print on the main process only, so multi-process runs print each line once."""
    if PartialState().is_main_process:
        print(f"[tunelab] {message}", flush=True)
