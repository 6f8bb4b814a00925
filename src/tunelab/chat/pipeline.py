"""The chat recipe pipeline: baseline evaluation, LoRA SFT with TRL's SFTTrainer, evaluation, report.

`run(RECIPE)` is what a chat recipe file calls (recipes/phi2_oasst1.py). Like the NLI pipeline
it runs its stages (baseline, train, evaluate, report) in order, or the subset in `--stages`,
under `python`, `accelerate launch` or Slurm, and resumes from the last checkpoint. A run
directory holds:

    config.yaml                   the resolved recipe
    checkpoints/checkpoint-N/     every `save_steps` optimizer steps (resumed automatically)
    adapter/                      the final LoRA adapter, with the tokenizer (chat template, pad token);
                                  model/ instead for --method full or freeze (a whole model folder)
    eval/chat/{baseline,finetuned}/perplexity.json   held-out perplexity, assistant tokens only
    eval/chat/{baseline,finetuned}/replies.json      the fixed prompts answered by each model
    eval/chat/replies.csv         both models' replies side by side
    progress.json, monitoring.json, train_log.json, run_info.json (last: marks the run finished)
    report/report.{md,html,pdf}
    merged/                       after `tunelab merge RUN_DIR`

The run directory, the train stage, W&B and the end-of-run summary are shared with the NLI
pipeline (tunelab.pipeline); `adapter/` also holds tunelab_chat.json, written before the folder
is renamed into place.

Training data are conversations built from OASST1-style message trees (tunelab.chat.data).
Only assistant turns are trained: prompt tokens get label -100, and each reply's end-of-turn
token is kept in the labels, so the model learns to stop (tunelab.chat.format).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import PartialState
from transformers import TrainerCallback

from tunelab.chat.config import ChatRecipe
from tunelab.chat.data import load_chat_splits
from tunelab.chat.format import labels_from_masks, prepare_chat_tokenizer, tokenize_chat
from tunelab.console import say
from tunelab.errors import TrainingDiverged, TunelabError
from tunelab.models import load_model, load_tokenizer, pretrained_weights
from tunelab.packing import tokens_seen
from tunelab.pipeline import (
    PipelineRun,
    process_state,
    run_stages,
    say_parameter_counts,
    to_csv,
    train,
)
from tunelab.rundir import MODELS, atomic_write_json, atomic_write_text
from tunelab.runtime.fsdp import FSDPOnCPU, is_sharded_by_fsdp
from tunelab.training import AdaptersInAutocast, LoraPlusOptimizer, ResumableLengthGrouping, training_kwargs

CHAT_INFO = "tunelab_chat.json"


def main(recipe: ChatRecipe, callbacks: Sequence[TrainerCallback] = ()) -> Path:
    """Run the recipe's stages in order; returns the run directory."""
    process_state()
    stages = {"baseline": evaluate_baseline, "train": train, "evaluate": evaluate_finetuned,
              "report": write_run_report}
    return run_stages(ChatRun, recipe, callbacks, stages)


# ---------------------------------------------------------------------------- stages (train: tunelab.pipeline)

def evaluate_baseline(run: ChatRun) -> None:
    """Held-out perplexity and the eval prompts' replies of the pretrained model (LoRA disabled)."""
    if (run.eval_dir / "baseline" / "perplexity.json").exists():
        say("Baseline already evaluated: reusing it")
        return
    run.load("model")
    with run.watch.phase("baseline_eval"), pretrained_weights(run.model):  # the baseline stage runs before train
        run.evaluate("baseline")
    run.save_progress()


def evaluate_finetuned(run: ChatRun) -> None:
    """Held-out perplexity and the eval prompts' replies of the fine-tuned model."""
    run.load_saved_adapter()
    run.load("model")
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
    run.write_run_info(run.save_progress())
    report = write_report(run.dir)
    before, after = perplexity["baseline"]["perplexity"], perplexity["finetuned"]["perplexity"]
    say(f"Held-out perplexity (assistant tokens): baseline {before:.2f} -> fine-tuned {after:.2f} "
        f"({100 * (after - before) / before:+.1f}%)")
    say(f"Report: {report}")


# ---------------------------------------------------------------------------- the run

class ChatRun(PipelineRun):
    """A chat run: its conversations, the tokenizer with its chat template, the model and TRL's SFTTrainer."""

    @property
    def eval_dir(self) -> Path:
        return self.dir / "eval" / "chat"

    def load_data(self) -> None:
        """The train and held-out conversations; first, so that bad data fails before anything slow loads."""
        recipe = self.recipe
        with self.watch.phase("load"):
            train, held_out = load_chat_splits(recipe.dataset, (recipe.train_split, recipe.eval_split),
                                               recipe.language, (recipe.train_size, recipe.eval_size))
            self.conversations = {"train": train, "eval": held_out}

    def load_tokenizer(self) -> None:
        """The tokenizer with its chat template, then every conversation tokenized with it."""
        with self.watch.phase("load"):
            self.tokenizer = load_tokenizer(self.recipe)
            self.chat_info = prepare_chat_tokenizer(self.tokenizer, self.recipe.chat_template)
        info = self.chat_info
        say(f"Chat template: {info['chat_template']}; end of turn {info['end_of_turn']!r} (id "
            f"{info['end_of_turn_id']}, trained); pad {info['pad_token']!r} (id {info['pad_token_id']}"
            f"{', added' if info['pad_token_added'] else ''})")
        self.tokenized = {role: self.tokenize(role, conversations) for role, conversations in self.conversations.items()}

    def tokenize(self, role: str, conversations: list[dict]) -> list[dict]:
        """input_ids and assistant_masks of every conversation, cut to max_length."""
        rows = [tokenize_chat(self.tokenizer, c["messages"], self.recipe.max_length) for c in conversations]
        kept = [row for row in rows if any(row["assistant_masks"])]
        if len(kept) < len(rows):
            say(f"{role}: {len(rows) - len(kept)} conversations dropped (no assistant token within "
                f"max_length={self.recipe.max_length})")
        if not kept:
            raise TunelabError(f"no {role} conversation has an assistant turn within max_length="
                               f"{self.recipe.max_length}: raise --max_length")
        return kept

    def load_model(self) -> None:
        tokenizer = self.tokenizer  # loaded first: a pad token it adds grows the embeddings
        with self.watch.phase("load"):
            model = load_model(self.model_recipe, vocab_size=len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = stop_ids(self.chat_info, tokenizer)
        say_parameter_counts(model)
        self.model = model

    def load_trainer(self) -> None:
        """TRL's SFTTrainer on the tokenized conversations."""
        from datasets import Dataset
        from trl import SFTTrainer

        class ChatTrainer(FSDPOnCPU, ResumableLengthGrouping, LoraPlusOptimizer, AdaptersInAutocast, SFTTrainer):
            """TRL's SFTTrainer; with group_by_length, a resumed run sees the same batches (tunelab.training)."""

        train_dataset = Dataset.from_list(self.tokenized["train"])
        eval_dataset = Dataset.from_list(self.tokenized["eval"]) if self.recipe.eval_steps else None
        model = self.model
        adapter_dtypes = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
        trainer = ChatTrainer(
            model=model,
            args=sft_config(self.recipe, str(self.dir / "checkpoints"), on_cpu=not torch.cuda.is_available()),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=self.tokenizer,
            loraplus_lr_ratio=self.recipe.loraplus_lr_ratio,
            callbacks=self.trainer_callbacks(),
        )
        # SFTTrainer casts a quantized model's adapter weights to bf16 (the QLoRA paper's choice). Keep them in
        # the dtype PEFT made them (fp32): bf16 weights do not train under fp16 autocast on GPUs without bf16,
        # nor well on CPU, and checkpoints then resume into the same dtypes.
        for name, parameter in model.named_parameters():
            if name in adapter_dtypes and parameter.dtype != adapter_dtypes[name]:
                parameter.data = parameter.data.to(adapter_dtypes[name])
        self.trainer = self.add_monitor(trainer)

    def evaluate(self, name: str) -> None:
        """perplexity.json (all processes share the work) and replies.json (main process) of one model."""
        model, tokenizer = self.model, self.tokenizer
        was_training = model.training
        model.eval()
        try:
            perplexity = assistant_perplexity(model, self.tokenized["eval"], tokenizer.pad_token_id,
                                              self.recipe.per_device_eval_batch_size, self.state)
            replies = []
            # A sharded model's forward passes are collective: every rank generates (greedy: the same tokens).
            if self.state.is_main_process or is_sharded_by_fsdp(model):
                from tunelab.chat.serve import generate_reply

                for prompt in self.recipe.eval_prompts:
                    reply = generate_reply(model, tokenizer, [{"role": "user", "content": prompt}],
                                           max_new_tokens=self.recipe.max_new_tokens, temperature=0.0)
                    replies.append({"prompt": prompt, **reply})
        finally:
            model.train(was_training)
        if not math.isfinite(perplexity["perplexity"]):
            raise TrainingDiverged(f"the {name} model's held-out perplexity is not finite: its weights diverged, so "
                                   "no evaluation or report is written: lower --learning_rate, then start again "
                                   "with --overwrite or a new --run_name")
        if self.state.is_main_process:
            perplexity["conversations"] = len(self.tokenized["eval"])
            atomic_write_json(self.eval_dir / name / "perplexity.json", perplexity)
            atomic_write_json(self.eval_dir / name / "replies.json", replies)
            say(f"{name}: held-out perplexity {perplexity['perplexity']:.2f} over {perplexity['assistant_tokens']:,} "
                f"assistant tokens; {sum(r['stopped'] for r in replies)} of {len(replies)} replies ended on their own")
        self.state.wait_for_everyone()

    def progress_fields(self) -> dict:
        fields = {}
        if self.loaded("tokenizer"):
            fields["train_rows"] = len(self.tokenized["train"])
            fields["eval_rows"] = {"held-out conversations": len(self.tokenized["eval"])}
            fields["train_assistant_tokens"] = sum(sum(r["assistant_masks"]) for r in self.tokenized["train"])
            fields["chat_format"] = self.chat_info
        return fields

    def identity(self) -> dict:
        return {"task": "chat", **super().identity(), "language": self.recipe.language}

    def add_to_adapter(self, folder: Path) -> None:
        """tunelab_chat.json: the chat format (template, end-of-turn and pad tokens) the adapter learned."""
        atomic_write_json(folder / CHAT_INFO, self.chat_info)


def stop_ids(chat_info: dict, tokenizer) -> list[int]:
    ids = [chat_info["end_of_turn_id"]]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def sft_config(recipe: ChatRecipe, output_dir: str, on_cpu: bool):
    """The recipe's optimisation settings (tunelab.training.training_kwargs) as TRL's SFTConfig.

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
        max_length=None if recipe.padding_free else recipe.max_length,  # padding-free: rows were cut in tokenize
        include_num_input_tokens_seen=tokens_seen(recipe.padding_free),  # real tokens, for tunelab.monitoring
        packing=False,
        padding_free=recipe.padding_free,
        assistant_only_loss=False,  # the data carry their own assistant masks (tunelab.chat.format)
    )


@torch.no_grad()
def assistant_perplexity(model, rows: list[dict], pad_token_id: int, batch_size: int, state=None) -> dict:
    """exp(mean negative log-likelihood) over the assistant tokens (and their end-of-turn tokens) of `rows`.

    Each process scores every world_size-th conversation; the sums are added over processes. Each
    conversation's summed NLL and token count are kept too (`per_conversation`), for the report's
    bootstrap interval of the change (tunelab.stats). Under FSDP2 a forward pass is collective, so a
    process with fewer batches runs (and does not count) extra ones.
    """
    state = state or PartialState()
    device = next(model.parameters()).device
    mine = list(range(len(rows)))[state.process_index::state.num_processes]
    order = sorted(mine, key=lambda i: len(rows[i]["input_ids"]))  # similar lengths share a batch
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    per_row = torch.zeros(len(rows), 2, dtype=torch.float64, device=device)  # summed NLL, token count
    for indices in batches:
        per_row[indices] = _summed_nll(model, [rows[i] for i in indices], pad_token_id, device)
    if is_sharded_by_fsdp(model):
        most = math.ceil(math.ceil(len(rows) / state.num_processes) / batch_size)
        for _ in range(most - len(batches)):
            _summed_nll(model, rows[:1], pad_token_id, device)
    if state.num_processes > 1 and torch.distributed.is_initialized():
        torch.distributed.all_reduce(per_row)
    nll_sum, tokens = per_row.sum(0).tolist()
    mean = nll_sum / max(tokens, 1)
    perplexity = math.exp(min(mean, 709.0)) if math.isfinite(mean) else math.nan  # exp(709) is a float's limit
    return {"perplexity": perplexity, "mean_nll": mean, "assistant_tokens": int(tokens),
            "per_conversation": {"nll_sum": per_row[:, 0].tolist(), "assistant_tokens": per_row[:, 1].long().tolist()}}


def _summed_nll(model, batch: list[dict], pad_token_id: int, device) -> torch.Tensor:
    """(len(batch), 2): each conversation's summed negative log-likelihood over its assistant tokens, and their count."""
    width = max(len(row["input_ids"]) for row in batch)
    input_ids = torch.tensor([r["input_ids"] + [pad_token_id] * (width - len(r["input_ids"])) for r in batch])
    attention = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch])
    labels = torch.tensor([labels_from_masks(r["input_ids"], r["assistant_masks"])
                           + [-100] * (width - len(r["input_ids"])) for r in batch])
    logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
    targets = labels[:, 1:].to(device)
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return torch.stack([nll.double().sum(1), (targets != -100).sum(1).double()], dim=1)


def write_side_by_side(eval_dir: Path) -> None:
    """eval/chat/replies.csv: each prompt with both models' replies."""
    replies = {name: json.loads((eval_dir / name / "replies.json").read_text()) for name in MODELS}
    rows = [{"prompt": b["prompt"], "baseline": b["reply"], "baseline_stopped": b["stopped"],
             "finetuned": f["reply"], "finetuned_stopped": f["stopped"]}
            for b, f in zip(replies["baseline"], replies["finetuned"], strict=True)]
    if rows:
        atomic_write_text(eval_dir / "replies.csv", to_csv(rows))


def plan_train_rows(recipe: ChatRecipe) -> int | None:
    """The training conversations for the run plan: counted where the data is local, else the recipe's cap."""
    local = recipe.dataset == "starter" or Path(recipe.dataset).expanduser().exists()
    if not local:
        return recipe.train_size
    train, _ = load_chat_splits(recipe.dataset, (recipe.train_split, recipe.eval_split), recipe.language,
                                (recipe.train_size, None))
    return len(train)


def plan_eval_rows(recipe: ChatRecipe) -> None:
    """A chat run's evaluation time is not estimated (perplexity and sampled replies, no row count to scale)."""
    return None
