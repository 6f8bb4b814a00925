"""The classification pipeline (NLI and any other task): baseline evaluation, LoRA fine-tuning, evaluation, report.

`run(RECIPE)` is what a recipe file calls; it works the same under `python`, `accelerate
launch` with one or many processes, and Slurm. The four stages run in order in one process
by default; `--stages train` (etc.) runs a subset, so `launch/pipeline.sh` can run each stage
as its own job. Everything a run writes goes under its run directory (`output_dir/run_name`):

    config.yaml                 the resolved recipe
    checkpoints/checkpoint-N/   one per epoch (resumed automatically when the run restarts)
    adapter/                    the final LoRA adapter (safetensors); model/ instead for --method full or freeze
    eval/<split>/{baseline,finetuned}/metrics.json, predictions.csv and confusion.png
    eval/<split>/predictions.csv   both models side by side
    data/<split>.jsonl          the evaluation rows, chosen once and reused by every stage and restart
    comparison/                 baseline vs fine-tuned over all splits (tunelab.report.compare)
    progress.json               start time, parameters, row counts, timings and memory, updated by each stage
    monitoring.json             memory, step time and throughput at every logging step (tunelab.monitoring)
    train_log.json, run_info.json  (run_info.json last: its presence marks a finished run)
    report/report.{md,html,pdf} and plots

The run directory, the train stage and the entry point are shared with the chat pipeline (tunelab.pipeline).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from tunelab.classify.config import CLASSIFIER, ClassificationRecipe
from tunelab.console import say
from tunelab.errors import TrainingDiverged, TunelabError
from tunelab.metrics import classification_metrics
from tunelab.models import (
    adapter_merged,
    load_model,
    load_tokenizer,
    pretrained_weights,
    pretrained_weights_in_place,
)
from tunelab.nli.data import (
    STARTER_SETS,
    check_saved_rows,
    load_nli_split,
    load_nli_splits,
    load_run_rows,
    planned_train_rows,
    recipe_prompt,
    say_extra_train_rows,
    tokenize_rows,
    warn_about_small_data,
)
from tunelab.nli.trainer import (
    NLICollator,
    NLITrainer,
    accuracy_metric,
    answer_room,
    label_token_ids,
    training_arguments,
)
from tunelab.packing import PackingCollator
from tunelab.pipeline import (
    PipelineRun,
    process_state,
    run_stages,
    say_parameter_counts,
    to_csv,
    train,
)
from tunelab.report.statistics import CALIBRATION_DIR, row_key_columns
from tunelab.rundir import MODELS, atomic_write_json, atomic_write_text, read_csv
from tunelab.runtime.deepspeed_check import launched_with_deepspeed
from tunelab.runtime.fsdp import prepare_for_prediction


def main(recipe: ClassificationRecipe, callbacks: Sequence[TrainerCallback] = ()) -> Path:
    """Run the recipe's stages in order; returns the run directory."""
    process_state()
    check_stages_fit_deepspeed(recipe.stages)
    # The baseline is scored after training when both run in this process: Trainer.predict before
    # train() leaves the model marked as prepared, so train() would skip the DDP wrapper (ranks would
    # never average gradients) and ZeRO-1/2 refuse to evaluate an unprepared model. LoRA leaves the
    # base weights untouched, so the baseline (adapter disabled) is the same afterwards.
    stages = {"train": train, "baseline": evaluate_baseline, "evaluate": evaluate_finetuned,
              "report": write_run_report}
    return run_stages(NLIRun, recipe, callbacks, stages)


# ---------------------------------------------------------------------------- stages (train: tunelab.pipeline)

def check_stages_fit_deepspeed(stages: list[str]) -> None:
    from tunelab.runtime.deepspeed_check import launched_zero_stage

    evaluation_only = "train" not in stages and {"baseline", "evaluate"} & set(stages)
    if evaluation_only and launched_zero_stage() in (1, 2):
        raise TunelabError("DeepSpeed ZeRO-1/2 cannot run evaluation on its own (DeepSpeed infers only under "
                           "ZeRO-3): launch the baseline and evaluate stages with a non-DeepSpeed config "
                           "(--profile cpu, a40 or multi_gpu) or with zero3")


def evaluate_baseline(run: NLIRun) -> None:
    """Score the pretrained model (LoRA disabled) on every test split."""
    splits = [split for split in run.recipe.test_splits
              if not (run.eval_dir(split) / "baseline" / "metrics.json").exists()]
    for split in set(run.recipe.test_splits) - set(splits):
        say(f"Baseline on {split} already evaluated: reusing it")
    if not splits and not run.recipe.temperature_scaling:
        return
    with run.baseline_trainer() as trainer:
        for split in splits:
            with run.watch.phase("baseline_eval"):
                predictions = predict(trainer, run.tokenized(split), f"{split}_baseline")
            run.save_predictions(split, "baseline", predictions)
        if run.recipe.temperature_scaling:
            run.save_validation_predictions("baseline", trainer)
    run.save_progress()


def evaluate_finetuned(run: NLIRun) -> None:
    """Score the fine-tuned model on every test split (a LoRA adapter merged into the weights unless they are
    4-bit: faster)."""
    run.load_saved_adapter()
    run.load("trainer")
    with adapter_merged(run.model):
        for split in run.recipe.test_splits:
            with run.watch.phase("finetuned_eval"):
                predictions = predict(run.trainer, run.tokenized(split), f"{split}_finetuned")
            run.save_predictions(split, "finetuned", predictions)
        if run.recipe.temperature_scaling:
            run.save_validation_predictions("finetuned")
    run.save_progress()


def write_run_report(run: NLIRun) -> None:
    """Both models side by side, run_info.json (which marks the run finished) and the report."""
    if not run.state.is_main_process:
        return
    from tunelab.report import write_report
    from tunelab.report.compare import write_run_comparison

    for split in run.recipe.test_splits:
        for model_name in MODELS:
            if not (run.eval_dir(split) / model_name / "metrics.json").exists():
                stage = "baseline" if model_name == "baseline" else "evaluate"
                raise TunelabError(f"{run.eval_dir(split) / model_name / 'metrics.json'} does not exist: run the "
                                   f"{stage} stage first (--stages {stage},report)")
    for split in run.recipe.test_splits:
        write_side_by_side(run.eval_dir(split))
    write_run_comparison(run.dir, run.recipe.test_splits)
    run.write_run_info(run.save_progress())
    report = write_report(run.dir)
    for split in run.recipe.test_splits:
        before, after = (json.loads((run.eval_dir(split) / m / "metrics.json").read_text())["accuracy"] for m in MODELS)
        say(f"{split} accuracy: baseline {before:.1%} -> fine-tuned {after:.1%} ({100 * (after - before):+.1f} points)")
    say(f"Report: {report}")


# ---------------------------------------------------------------------------- the run

class NLIRun(PipelineRun):
    """An NLI run: its rows (chosen once, kept in data/), the tokenizer, the model and NLITrainer."""

    def __init__(self, recipe: ClassificationRecipe, callbacks: Sequence[TrainerCallback]):
        super().__init__(recipe, callbacks)
        self._tokenized: dict[str, object] = {}

    def check_before_config(self) -> None:
        check_saved_rows(self.recipe, self.dir / "data")  # a restart must keep its rows

    def eval_dir(self, split: str) -> Path:
        return self.dir / "eval" / split

    def load_data(self) -> None:
        """Every split's rows; first, so that bad data fails before anything slow loads."""
        with self.watch.phase("load"):
            self.rows = load_run_rows(self.recipe, self.dir / "data", write=self.state.is_main_process)
        if self.state.is_main_process and "train" in self.recipe.stages:
            say_extra_train_rows(self.recipe, self.rows)
            warn_about_small_data(self.recipe, self.rows)

    def load_tokenizer(self) -> None:
        with self.watch.phase("load"):
            self.tokenizer = load_tokenizer(self.recipe)
        self.label_ids = label_token_ids(self.tokenizer, self.recipe.words(), self.recipe.label_scoring)
        self.prompt = recipe_prompt(self.recipe, self.tokenizer)

    def load_model(self) -> None:
        # The arguments come first: under DeepSpeed ZeRO-3 they make from_pretrained shard the weights.
        self.training_args = training_arguments(self.recipe, str(self.dir / "checkpoints"),
                                                on_cpu=not torch.cuda.is_available())
        with self.watch.phase("load"):
            self.model = load_model(self.model_recipe, num_labels=len(self.recipe.labels) if self.classifier else None)
        say_parameter_counts(self.model)

    def load_trainer(self) -> None:
        eval_dataset = self.tokenized(self.recipe.validation_split)
        self.trainer = self.add_monitor(NLITrainer(
            model=self.model,
            args=self.training_args,
            train_dataset=self.tokenized(self.recipe.train_split),
            eval_dataset=eval_dataset.select(longest_first(eval_dataset)),  # little padding, as in predict()
            data_collator=PackingCollator() if self.recipe.padding_free else
            NLICollator(self.tokenizer.pad_token_id, self.label_ids, self.scoring),
            compute_metrics=accuracy_metric,
            label_ids=self.label_ids,
            scoring=self.scoring,
            loraplus_lr_ratio=self.recipe.loraplus_lr_ratio,
            callbacks=self.trainer_callbacks(),
        ))

    @property
    def classifier(self) -> bool:
        return self.recipe.head == CLASSIFIER

    @property
    def scoring(self) -> str:
        """How the trained model scores a row: its classifier head, or the label words (tunelab.nli.trainer)."""
        return CLASSIFIER if self.classifier else self.recipe.label_scoring

    @contextlib.contextmanager
    def baseline_trainer(self) -> Iterator[NLITrainer]:
        """What scores the pretrained model: the run's own trainer with LoRA disabled (or, for full and freeze,
        before the model trained in this process; after it, under DeepSpeed, with the pretrained weights put back
        for the while); for a classifier head, which has no pretrained meaning, and for full and freeze otherwise,
        the pretrained language model, loaded beside the trained one, scoring the label words zero-shot."""
        self.load("trainer")
        if not self.classifier and (self.recipe.method == "lora" or not self.adapter_ready):
            with pretrained_weights(self.model):  # a full or freeze model not trained in this process: as it is
                yield self.trainer
            return
        if not self.classifier and launched_with_deepspeed():  # it prepares no second model beside the trained one
            with pretrained_weights_in_place(self.model, self.recipe.model_name_or_path, self.saved_dir):
                yield self.trainer
            return
        with self.watch.phase("load"):
            language_model = load_model(self.recipe)
        trainer = NLITrainer(model=language_model, args=self.training_args, eval_dataset=self.trainer.eval_dataset,
                             data_collator=NLICollator(self.tokenizer.pad_token_id, self.label_ids,
                                                       self.recipe.label_scoring),
                             label_ids=self.label_ids, scoring=self.recipe.label_scoring)
        prepare_for_prediction(trainer)
        with pretrained_weights(trainer.model):
            yield trainer
        del language_model, trainer

    def tokenized(self, split: str):
        if split not in self._tokenized:
            self.load("tokenizer")
            rows = self.rows[split]
            reserve = answer_room(self.label_ids, self.recipe.label_scoring)
            progress = f"Tokenizing {split}" if self.state.is_main_process else None
            soft = self.recipe.annotator_labels and split == self.recipe.train_split
            self._tokenized[split], truncated = tokenize_rows(rows, self.tokenizer, self.recipe.max_length, reserve,
                                                              progress=progress, prompt=self.prompt,
                                                              annotator_labels=soft, labels=self.recipe.labels)
            if truncated:
                say(f"{split}: {truncated} of {len(rows)} {self.recipe.text_columns[0]} texts truncated to fit "
                    f"max_length={self.recipe.max_length}")
        return self._tokenized[split]

    def save_validation_predictions(self, model_name: str, trainer: NLITrainer | None = None) -> None:
        """The validation split's predictions, on which the report fits a temperature (tunelab.report.statistics)."""
        split = self.recipe.validation_split
        with self.watch.phase(f"{model_name}_eval"):
            predictions = predict(trainer or self.trainer, self.tokenized(split), f"{split}_{model_name}")
        self.save_predictions(split, model_name, predictions, self.dir / CALIBRATION_DIR / model_name)

    def save_predictions(self, split: str, model_name: str, predictions: np.ndarray, folder: Path | None = None) -> None:
        """metrics.json and predictions.csv of one model on one split (main process only)."""
        if not np.isfinite(predictions).all():
            raise TrainingDiverged(f"the {model_name} model's probabilities on {split} are not finite (nan or inf): "
                                   "its weights diverged, so no evaluation or report is written: lower "
                                   "--learning_rate, then start again with --overwrite or a new --run_name")
        if not self.state.is_main_process:
            return
        rows, labels, columns = self.rows[split], self.recipe.labels, self.recipe.text_columns
        gold = [row["label"] for row in rows]
        predicted = [labels[i] for i in predictions.argmax(-1)]
        folder = folder or self.eval_dir(split) / model_name
        atomic_write_json(folder / "metrics.json", classification_metrics(gold, predicted, labels, predictions))
        atomic_write_text(folder / "predictions.csv", to_csv([
            {**{column: row[column] for column in columns}, "gold": row["label"], "pred": label,
             **{f"p_{name}": round(float(p), 4) for name, p in zip(labels, probs)}}
            for row, label, probs in zip(rows, predicted, predictions)
        ]))

    def identity(self) -> dict:
        return {**super().identity(), "head": self.recipe.head}

    def progress_fields(self) -> dict:
        if not self.loaded("data"):
            return {}
        return {"train_rows": len(self.rows[self.recipe.train_split]),
                "eval_rows": {split: len(self.rows[split]) for split in self.recipe.test_splits}}


def plan_train_rows(recipe: ClassificationRecipe) -> int | None:
    """The training rows for the run plan: counted where the data is local, else as the recipe plans them."""
    return len(load_nli_split(recipe, recipe.train_split)) if local_data(recipe) else planned_train_rows(recipe)


def local_data(recipe: ClassificationRecipe) -> bool:
    return recipe.dataset in STARTER_SETS or Path(recipe.dataset).expanduser().exists()


def plan_eval_rows(recipe: ClassificationRecipe) -> int | None:
    """Rows scored over the run, at most: each test split before and after training, the validation rows
    at every save (None when a split's size is known only from the data)."""
    if local_data(recipe):
        rows = load_nli_splits(recipe, [*recipe.test_splits, recipe.validation_split])
        test, validation = [len(rows[split]) for split in recipe.test_splits], len(rows[recipe.validation_split])
    else:
        test = [recipe.test_sample or recipe.test_size for _ in recipe.test_splits]
        validation = recipe.validation_sample or recipe.validation_size
        if recipe.validation_fraction:
            chosen = recipe.train_sample or recipe.train_size
            validation = chosen and max(1, round(recipe.validation_fraction * chosen))
    if None in test or validation is None:
        return None
    saves = math.ceil(recipe.num_train_epochs) if recipe.save_strategy == "epoch" else 0
    return 2 * sum(test) + saves * validation


def predict(trainer: NLITrainer, dataset, name: str = "") -> np.ndarray:
    """The label probabilities for every row, in the dataset's order (gathered from all processes);
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
    """eval/<split>/predictions.csv: the text columns, gold and each model's prediction and probability."""
    per_model = {name: read_csv(folder / name / "predictions.csv") for name in MODELS}
    rows = []
    for baseline, finetuned in zip(per_model["baseline"], per_model["finetuned"], strict=True):
        row = {column: baseline[column] for column in row_key_columns(baseline)}
        for name, prediction in (("baseline", baseline), ("finetuned", finetuned)):
            row[f"{name}_pred"] = prediction["pred"]
            row[f"{name}_prob"] = prediction[f"p_{prediction['pred']}"]
        rows.append(row)
    atomic_write_text(folder / "predictions.csv", to_csv(rows))
