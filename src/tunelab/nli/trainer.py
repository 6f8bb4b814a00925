"""The NLI classification trainer: a causal LM scored on its label words at the answer position.

Instead of the language-model loss over the whole prompt, the loss is cross-entropy over the
scores of the label words (" entailment", " neutral", " contradiction") right after
"Relationship:". Evaluation reads the same scores, so every prediction is a valid label, no
text is generated, and the predictions are probabilities over the labels (any number of them).

Two ways to score a label word:
- `first_token` (default): the logit of the word's first token. One forward pass per example
  with only the last position projected to the vocabulary (`logits_to_keep=1`). Needs the
  label words' first tokens to differ.
- `sequence`: the summed log-probability of all the word's tokens. One row per example and
  label, for label words that share a first token.

With `head: classifier` the model is a sequence classifier instead (a linear head with an output per label
on the last token, `scoring="classifier"` here): its logits are the scores, and no label word is involved.

Batches are always padded on the left, whatever the tokenizer's padding side, so the answer
position is the last one; explicit position ids keep left padding harmless for models with
absolute position embeddings (GPT-2). With `padding_free` the rows are packed into one sequence
instead (tunelab.packing), and each row's answer position is its last token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import has_length

from tunelab.classify.config import CLASSIFIER
from tunelab.errors import TunelabError
from tunelab.nli.config import NLIRecipe
from tunelab.packing import last_positions, model_inputs, tokens_seen
from tunelab.runtime.fsdp import FSDPOnCPU
from tunelab.training import AdaptersInAutocast, LoraPlusOptimizer, ResumableLengthGrouping, training_kwargs


def label_token_ids(tokenizer, label_words: list[str], scoring: str) -> list[list[int]]:
    """Token ids of each label word as it follows the prompt (with a leading space)."""
    ids = [tokenizer(" " + word, add_special_tokens=False)["input_ids"] for word in label_words]
    for word, word_ids in zip(label_words, ids):
        if not word_ids or tokenizer.unk_token_id in word_ids:
            raise TunelabError(f"label word {word!r} cannot be represented by this tokenizer: choose other label_words")
    if scoring == "first_token" and len({word_ids[0] for word_ids in ids}) < len(ids):
        raise TunelabError(f"label words {label_words} share a first token for this tokenizer: choose label_words "
                           "that start differently, or set --label_scoring sequence")
    return ids


@dataclass
class NLICollator:
    """Left-pads prompts (one row per example, or per example and label in `sequence` scoring)."""

    pad_token_id: int
    label_ids: list[list[int]]
    scoring: str = "first_token"

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if self.scoring != "sequence":
            rows = [f["input_ids"] for f in features]
        else:
            rows = [f["input_ids"] + word for f in features for word in self.label_ids]
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([[self.pad_token_id] * (width - len(r)) + r for r in rows])
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
            "labels": torch.tensor([f["labels"] for f in features]),
        }
        if "label_distribution" in features[0]:
            batch["label_distribution"] = torch.tensor([f["label_distribution"] for f in features])
        if self.scoring == "sequence":
            longest = max(len(word) for word in self.label_ids)
            batch["label_mask"] = torch.tensor(
                [[0] * (longest - len(word)) + [1] * len(word) for _ in features for word in self.label_ids]
            )
        return batch


def label_scores(model, batch: dict[str, torch.Tensor], label_ids: list[list[int]], scoring: str) -> torch.Tensor:
    """(batch, num_labels) scores whose softmax is the predicted label distribution."""
    inputs = model_inputs(batch)  # padded, or packed (tunelab.packing)
    if scoring == CLASSIFIER:  # a sequence-classification model: its head reads the last (real) token
        return model(**inputs).logits.float()
    if scoring == "first_token":
        logits = model(**inputs, logits_to_keep=last_positions(batch, 1)).logits.flatten(0, 1)  # a row per example
        return logits[:, [word[0] for word in label_ids]].float()
    longest = batch["label_mask"].shape[-1]
    logits = model(**inputs, logits_to_keep=last_positions(batch, longest + 1)).logits[:, :-1, :].float()
    targets = batch["input_ids"][:, -longest:]
    token_logprobs = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    word_logprobs = (token_logprobs * batch["label_mask"]).sum(-1)
    return word_logprobs.view(-1, len(label_ids))


def label_word_loss(model, batch: dict[str, torch.Tensor], label_ids: list[list[int]], scoring: str,
                    targets: torch.Tensor | None = None, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy over the label scores, the scores): the NLI loss against `targets`, label indices or
    (batch, num_labels) label distributions; the batch's gold labels by default."""
    scores = label_scores(model, batch, label_ids, scoring)
    targets = batch["labels"] if targets is None else targets
    return F.cross_entropy(scores, targets, label_smoothing=label_smoothing), scores


def answer_room(label_ids: list[list[int]], scoring: str) -> int:
    """Tokens a prompt must leave free within max_length: the answer position, or the whole label word."""
    return max(map(len, label_ids)) if scoring == "sequence" else 1


class NLITrainer(FSDPOnCPU, ResumableLengthGrouping, LoraPlusOptimizer, AdaptersInAutocast, Trainer):
    """transformers' Trainer with the label-word classification loss and scores as predictions."""

    # compute_loss returns a per-batch mean; let the Trainer divide by gradient accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, label_ids: list[list[int]], scoring: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_ids = label_ids
        self.scoring = scoring

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Smoothed or annotator targets shape training only: evaluation losses stay the plain cross-entropy
        # against the gold label, comparable across runs.
        if model.training:
            targets, smoothing = inputs.get("label_distribution", inputs["labels"]), self.args.label_smoothing_factor
        else:
            targets, smoothing = inputs["labels"], 0.0
        loss, scores = label_word_loss(model, inputs, self.label_ids, self.scoring, targets, smoothing)
        return (loss, scores) if return_outputs else loss

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation rows in their order, always: predictions are matched to rows by position.

        transformers would shuffle them into length groups when train_sampling_strategy is
        group_by_length; `nli.predict` sorts rows by length itself and puts the predictions back.
        """
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, scores = self.compute_loss(model, inputs, return_outputs=True)
        return loss.detach(), (None if prediction_loss_only else scores.detach()), inputs["labels"]


def accuracy_metric(eval_prediction) -> dict[str, float]:
    scores, labels = eval_prediction.predictions, eval_prediction.label_ids
    return {"accuracy": float((scores.argmax(-1) == labels).mean())}


def training_arguments(recipe: NLIRecipe, output_dir: str, on_cpu: bool) -> TrainingArguments:
    """The recipe's optimisation settings as TrainingArguments; checkpoints and eval follow save_strategy."""
    return TrainingArguments(
        **training_kwargs(recipe, output_dir, on_cpu),
        label_smoothing_factor=recipe.label_smoothing,
        eval_strategy=recipe.save_strategy,
        load_best_model_at_end=recipe.metric_for_best_model is not None,
        metric_for_best_model=recipe.metric_for_best_model,
        include_num_input_tokens_seen=tokens_seen(recipe.padding_free),  # real tokens, for tunelab.monitoring
        remove_unused_columns=False,
        label_names=["labels"],
    )
