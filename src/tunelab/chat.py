"""The chat recipe pipeline: baseline evaluation, LoRA SFT with TRL's SFTTrainer, evaluation, report.

`run(RECIPE)` is what a chat recipe file calls (recipes/phi2_oasst1.py). Like the NLI pipeline
it runs its stages (baseline, train, evaluate, report) in order, or the subset in `--stages`,
under `python`, `accelerate launch` or Slurm, and resumes from the last checkpoint. A run
directory holds:

    config.yaml                   the resolved recipe
    checkpoints/checkpoint-N/     every `save_steps` optimizer steps (resumed automatically)
    adapter/                      the final LoRA adapter, with the tokenizer (chat template, pad token)
    eval/chat/{baseline,finetuned}/perplexity.json   held-out perplexity, assistant tokens only
    eval/chat/{baseline,finetuned}/replies.json      the fixed prompts answered by each model
    eval/chat/replies.csv         both models' replies side by side
    progress.json, train_log.json, run_info.json (last: marks the run finished)
    report/report.{md,html,pdf}
    merged/                       after `tunelab merge RUN_DIR`

Training data are conversations built from OASST1-style message trees (tunelab.chat_data).
Only assistant turns are trained: prompt tokens get label -100, and each reply's end-of-turn
token is kept in the labels, so the model learns to stop (tunelab.chat_format).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from accelerate import PartialState
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import TrainerCallback, set_seed

from tunelab.chat_data import GENERAL_PROMPTS, load_chat_split
from tunelab.chat_format import TEMPLATE_CHOICES, labels_from_masks, prepare_chat_tokenizer, tokenize_chat
from tunelab.config import Recipe, _require, parse_recipe, recipe_to_dict
from tunelab.errors import TunelabError
from tunelab.interrupts import StopOnSignal, TrainingInterrupted
from tunelab.models import load_model, load_tokenizer, parameter_counts
from tunelab.monitoring import Stopwatch, hardware_info, peak_memory, software_versions
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
from tunelab.trainer import training_kwargs

MODELS = ("baseline", "finetuned")
CHAT_INFO = "tunelab_chat.json"


@dataclass
class ChatRecipe(Recipe):
    """A chat SFT recipe: conversations from OASST1-style message trees, assistant-only loss."""

    dataset: str = "starter"  # "starter", a folder of <split>.jsonl message rows, or a Hub id (OpenAssistant/oasst1)
    train_split: str = "train"
    eval_split: str = "validation"  # held-out conversations for perplexity
    language: str | None = "en"  # keep messages in this language only; none for every language
    train_size: int | None = None  # at most this many training conversations (none: all)
    eval_size: int | None = None  # at most this many held-out conversations (none: all)
    chat_template: str = "auto"  # auto (the model's own, else tunelab's), tunelab, model, or a .jinja file
    max_length: int = 1024  # tokens per conversation; longer ones are cut at the end
    save_strategy: str = "steps"
    save_steps: int = 10
    eval_steps: int | None = None  # validation loss during training every this many steps (none: only before/after)
    eval_prompts: list[str] = field(default_factory=lambda: list(GENERAL_PROMPTS))
    max_new_tokens: int = 128  # per reply to an eval prompt (greedy)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.chat_template in TEMPLATE_CHOICES or self.chat_template.endswith((".jinja", ".j2")),
                 f"chat_template must be one of {', '.join(TEMPLATE_CHOICES)} or a .jinja file, "
                 f"not {self.chat_template!r}")
        _require(self.max_length >= 32, f"max_length must be at least 32, not {self.max_length}")
        _require(self.save_steps >= 1, f"save_steps must be at least 1, not {self.save_steps}")
        _require(self.eval_steps is None or self.eval_steps >= 1,
                 f"eval_steps must be at least 1 (or none), not {self.eval_steps}")
        _require(self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        for name in ("train_size", "eval_size"):
            value = getattr(self, name)
            _require(value is None or value >= 1, f"{name} must be at least 1 (or none for all), not {value}")


def run(defaults: ChatRecipe, argv: list[str] | None = None) -> None:
    """Entry point of a chat recipe file: parse overrides, run, print errors on one line."""
    from tunelab.cli import exit_on_error

    argv = sys.argv[1:] if argv is None else argv
    with exit_on_error(debug="--debug" in argv):
        main(parse_recipe(defaults, argv))


def main(recipe: ChatRecipe, callbacks: Sequence[TrainerCallback] = ()) -> Path:
    """Run the recipe's stages in order; returns the run directory."""
    if recipe.dry_run:
        print_plan(recipe)
        return recipe.run_dir
    set_seed(recipe.seed)
    with ChatRun(recipe, callbacks) as run:
        if "baseline" in recipe.stages:
            evaluate_baseline(run)
        if "train" in recipe.stages:
            train(run)
        if "evaluate" in recipe.stages:
            evaluate_finetuned(run)
        if "report" in recipe.stages:
            write_run_report(run)
        run.state.wait_for_everyone()
    return run.dir


# ---------------------------------------------------------------------------- stages

def evaluate_baseline(run: ChatRun) -> None:
    """Held-out perplexity and the eval prompts' replies of the pretrained model (LoRA disabled)."""
    if (run.eval_dir / "baseline" / "perplexity.json").exists():
        say("Baseline already evaluated: reusing it")
        return
    run.tokenized  # data first, so bad data fails before a long model load
    with run.watch.phase("baseline_eval"), run.model.disable_adapter():
        run.evaluate("baseline")
    run.save_progress()


def train(run: ChatRun) -> None:
    """LoRA SFT, resuming from the last checkpoint; stops with a checkpoint on a signal."""
    checkpoints = run.dir / "checkpoints"
    checkpoint = last_complete_checkpoint(checkpoints)
    if checkpoint:
        say(f"Resuming training from {checkpoint}")
    with run.watch.phase("train"):
        try:
            run.trainer.train(resume_from_checkpoint=checkpoint)
        finally:
            run.stop_on_signal.restore()
        if run.stop_on_signal.stopped_at_step is not None:
            run.save_progress()
            run.state.wait_for_everyone()  # no rank exits before rank 0 has written
            step = run.stop_on_signal.stopped_at_step
            raise TrainingInterrupted(
                f"Interrupted by {run.stop_on_signal.signal_name} at step {step}: checkpoint saved in "
                f"{checkpoints / f'checkpoint-{step}'}; run the same command again to resume")
        run.trainer.save_model(str(run.dir / "adapter"))
    run.adapter_ready = True
    if run.state.is_main_process:
        atomic_write_json(run.dir / "adapter" / CHAT_INFO, run.chat_info)
        atomic_write_json(run.dir / "train_log.json", run.trainer.state.log_history)
    run.save_progress()


def evaluate_finetuned(run: ChatRun) -> None:
    """Held-out perplexity and the eval prompts' replies of the fine-tuned model."""
    run.load_saved_adapter()
    with run.watch.phase("finetuned_eval"):
        run.evaluate("finetuned")
    run.save_progress()


def write_run_report(run: ChatRun) -> None:
    """Both models' replies side by side, run_info.json (which marks the run finished) and the report."""
    if not run.state.is_main_process:
        return
    from tunelab.report import write_report

    perplexity = {}
    for name in MODELS:
        path = run.eval_dir / name / "perplexity.json"
        if not path.exists():
            raise TunelabError(f"{path} does not exist: run the baseline and evaluate stages first")
        perplexity[name] = json.loads(path.read_text())
    write_side_by_side(run.eval_dir)
    progress = run.save_progress()
    atomic_write_json(run.dir / "run_info.json", {
        "task": "chat",
        "recipe": run.recipe.run_name,
        "model": run.recipe.model_name_or_path,
        "dataset": run.recipe.dataset,
        "language": run.recipe.language,
        **progress,
        "hardware": hardware_info(run.state.num_processes),
        "software": software_versions(),
    })
    report = write_report(run.dir)
    before, after = perplexity["baseline"]["perplexity"], perplexity["finetuned"]["perplexity"]
    say(f"Held-out perplexity (assistant tokens): baseline {before:.2f} -> fine-tuned {after:.2f} "
        f"({100 * (after - before) / before:+.1f}%)")
    say(f"Report: {report}")


# ---------------------------------------------------------------------------- the run

class ChatRun:
    """One run directory, locked while in use, plus what its stages share, each piece loaded on first use."""

    def __init__(self, recipe: ChatRecipe, callbacks: Sequence[TrainerCallback]):
        self.recipe = recipe
        self.callbacks = list(callbacks)
        self.state = PartialState()
        self.dir = recipe.run_dir
        self.eval_dir = self.dir / "eval" / "chat"
        self.watch = Stopwatch()
        self.adapter_ready = False
        if self.state.is_main_process:
            acquire_run_lock(self.dir)
            try:
                resuming = prepare_run_dir(self.dir, recipe.overwrite)
            except TunelabError:
                release_run_lock(self.dir)
                raise
            atomic_write_text(self.dir / "config.yaml", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
            record_start(self.dir / "progress.json")
            say(f"{'Resuming' if resuming else 'Starting'} {recipe.run_name} in {self.dir}")
        self.state.wait_for_everyone()

    def __enter__(self) -> ChatRun:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.state.is_main_process:
            release_run_lock(self.dir)

    @cached_property
    def tokenizer(self):
        with self.watch.phase("load"):
            tokenizer = load_tokenizer(self.recipe)
            self.chat_info = prepare_chat_tokenizer(tokenizer, self.recipe.chat_template)
        info = self.chat_info
        say(f"Chat template: {info['chat_template']}; end of turn {info['end_of_turn']!r} (id "
            f"{info['end_of_turn_id']}, trained); pad {info['pad_token']!r} (id {info['pad_token_id']}"
            f"{', added' if info['pad_token_added'] else ''})")
        return tokenizer

    @cached_property
    def conversations(self) -> dict[str, list[dict]]:
        recipe = self.recipe
        with self.watch.phase("load"):
            return {
                "train": load_chat_split(recipe.dataset, recipe.train_split, recipe.language, recipe.train_size),
                "eval": load_chat_split(recipe.dataset, recipe.eval_split, recipe.language, recipe.eval_size),
            }

    @cached_property
    def tokenized(self) -> dict[str, list[dict]]:
        """input_ids and assistant_masks of every conversation, cut to max_length."""
        tokenized = {}
        for role, conversations in self.conversations.items():
            rows = [tokenize_chat(self.tokenizer, c["messages"], self.recipe.max_length) for c in conversations]
            kept = [row for row in rows if any(row["assistant_masks"])]
            if len(kept) < len(rows):
                say(f"{role}: {len(rows) - len(kept)} conversations dropped (no assistant token within "
                    f"max_length={self.recipe.max_length})")
            if not kept:
                raise TunelabError(f"no {role} conversation has an assistant turn within max_length="
                                   f"{self.recipe.max_length}: raise --max_length")
            tokenized[role] = kept
        return tokenized

    @cached_property
    def model(self):
        tokenizer = self.tokenizer  # first: a pad token it adds grows the embeddings
        with self.watch.phase("load"):
            model = load_model(self.recipe, vocab_size=len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = stop_ids(self.chat_info, tokenizer)
        counts = parameter_counts(model)
        say(f"Trainable parameters: {counts['trainable']:,} of {counts['total']:,} ({counts['percent']:.4f}%), "
            f"counted by {counts['counting']}")
        return model

    @cached_property
    def stop_on_signal(self) -> StopOnSignal:
        return StopOnSignal()

    @cached_property
    def trainer(self):
        """TRL's SFTTrainer on the tokenized conversations; data is prepared before the model loads."""
        from datasets import Dataset
        from trl import SFTTrainer

        train_dataset = Dataset.from_list(self.tokenized["train"])
        eval_dataset = Dataset.from_list(self.tokenized["eval"]) if self.recipe.eval_steps else None
        model = self.model
        adapter_dtypes = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
        trainer = SFTTrainer(
            model=model,
            args=sft_config(self.recipe, str(self.dir / "checkpoints"), on_cpu=not torch.cuda.is_available()),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=self.tokenizer,
            callbacks=[self.stop_on_signal, MarkCheckpointComplete(), *self.callbacks],
        )
        # SFTTrainer casts a quantized model's adapter weights to bf16 (the QLoRA paper's choice). Keep them in
        # the dtype PEFT made them (fp32): bf16 weights do not train under fp16 autocast on GPUs without bf16,
        # nor well on CPU, and checkpoints then resume into the same dtypes.
        for name, parameter in model.named_parameters():
            if name in adapter_dtypes and parameter.dtype != adapter_dtypes[name]:
                parameter.data = parameter.data.to(adapter_dtypes[name])
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

    def evaluate(self, name: str) -> None:
        """perplexity.json (all processes share the work) and replies.json (main process) of one model."""
        model, tokenizer = self.model, self.tokenizer
        was_training = model.training
        model.eval()
        try:
            perplexity = assistant_perplexity(model, self.tokenized["eval"], tokenizer.pad_token_id,
                                              self.recipe.per_device_eval_batch_size, self.state)
            replies = []
            if self.state.is_main_process:
                from tunelab.serve import generate_reply

                for prompt in self.recipe.eval_prompts:
                    reply = generate_reply(model, tokenizer, [{"role": "user", "content": prompt}],
                                           max_new_tokens=self.recipe.max_new_tokens, temperature=0.0)
                    replies.append({"prompt": prompt, **reply})
        finally:
            model.train(was_training)
        if self.state.is_main_process:
            perplexity["conversations"] = len(self.tokenized["eval"])
            atomic_write_json(self.eval_dir / name / "perplexity.json", perplexity)
            atomic_write_json(self.eval_dir / name / "replies.json", replies)
            say(f"{name}: held-out perplexity {perplexity['perplexity']:.2f} over {perplexity['assistant_tokens']:,} "
                f"assistant tokens; {sum(r['stopped'] for r in replies)} of {len(replies)} replies ended on their own")
        self.state.wait_for_everyone()

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
        if "tokenized" in self.__dict__:
            progress["train_rows"] = len(self.tokenized["train"])
            progress["eval_rows"] = {"held-out conversations": len(self.tokenized["eval"])}
            progress["train_assistant_tokens"] = sum(sum(r["assistant_masks"]) for r in self.tokenized["train"])
        if "tokenizer" in self.__dict__:
            progress["chat_format"] = self.chat_info
        memory = peak_memory()
        if memory["peak_bytes"] > progress.get("memory", {}).get("peak_bytes", 0):
            progress["memory"] = memory
        if self.state.is_main_process:
            atomic_write_json(path, progress)
        return progress


def stop_ids(chat_info: dict, tokenizer) -> list[int]:
    ids = [chat_info["end_of_turn_id"]]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def sft_config(recipe: ChatRecipe, output_dir: str, on_cpu: bool):
    """The recipe's optimisation settings (tunelab.trainer.training_kwargs) as TRL's SFTConfig.

    Gradient checkpointing is left to `load_model`, which already set it up for LoRA.
    """
    from trl import SFTConfig

    evaluate = recipe.eval_steps is not None
    return SFTConfig(
        **training_kwargs(recipe, output_dir, on_cpu),
        gradient_checkpointing=False,
        save_steps=recipe.save_steps,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=recipe.eval_steps,
        max_length=recipe.max_length,
        packing=False,
        assistant_only_loss=False,  # the data carry their own assistant masks (tunelab.chat_format)
    )


@torch.no_grad()
def assistant_perplexity(model, rows: list[dict], pad_token_id: int, batch_size: int, state=None) -> dict:
    """exp(mean negative log-likelihood) over the assistant tokens (and their end-of-turn tokens) of `rows`.

    Each process scores every world_size-th conversation; the sums are added over processes.
    """
    state = state or PartialState()
    device = next(model.parameters()).device
    mine = rows[state.process_index::state.num_processes]
    order = sorted(range(len(mine)), key=lambda i: len(mine[i]["input_ids"]))  # similar lengths share a batch
    total = torch.zeros(2, dtype=torch.float64, device=device)  # summed NLL, token count
    for start in range(0, len(order), batch_size):
        batch = [mine[i] for i in order[start:start + batch_size]]
        width = max(len(row["input_ids"]) for row in batch)
        input_ids = torch.tensor([r["input_ids"] + [pad_token_id] * (width - len(r["input_ids"])) for r in batch])
        attention = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch])
        labels = torch.tensor([labels_from_masks(r["input_ids"], r["assistant_masks"])
                               + [-100] * (width - len(r["input_ids"])) for r in batch])
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
        targets = labels[:, 1:].to(device)
        nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                              ignore_index=-100, reduction="sum")
        total += torch.stack([nll.double(), (targets != -100).sum().double()])
    if state.num_processes > 1 and torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
    nll_sum, tokens = total.tolist()
    mean = nll_sum / max(tokens, 1)
    return {"perplexity": math.exp(mean), "mean_nll": mean, "assistant_tokens": int(tokens)}


def write_side_by_side(eval_dir: Path) -> None:
    """eval/chat/replies.csv: each prompt with both models' replies."""
    from tunelab.nli import to_csv

    replies = {name: json.loads((eval_dir / name / "replies.json").read_text()) for name in MODELS}
    rows = [{"prompt": b["prompt"], "baseline": b["reply"], "baseline_stopped": b["stopped"],
             "finetuned": f["reply"], "finetuned_stopped": f["stopped"]}
            for b, f in zip(replies["baseline"], replies["finetuned"], strict=True)]
    if rows:
        atomic_write_text(eval_dir / "replies.csv", to_csv(rows))


def print_plan(recipe: ChatRecipe) -> None:
    from tunelab.plan import build_plan, format_plan

    local = recipe.dataset == "starter" or Path(recipe.dataset).expanduser().exists()
    rows = (len(load_chat_split(recipe.dataset, recipe.train_split, recipe.language, recipe.train_size))
            if local else recipe.train_size)
    say(format_plan(build_plan(recipe, world_size=PartialState().num_processes, train_rows=rows)))


def say(message: str) -> None:
    """Print on the main process only, so multi-process runs print each line once."""
    if PartialState().is_main_process:
        print(f"[tunelab] {message}", flush=True)
