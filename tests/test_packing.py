"""Padding-free batches (tunelab.packing): the packed path gives the padded path's scores, losses and
gradients on every tiny architecture, for the NLI label-word loss and for the chat trainer's LM loss."""

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from chat_helpers import CHAT_RECIPE, tiny_chat_overrides
from tunelab.chat.config import ChatRecipe
from tunelab.chat.pipeline import ChatRun, sft_config
from tunelab.config import parse_recipe
from tunelab.errors import TunelabError
from tunelab.models import load_model, load_tokenizer
from tunelab.nli.config import NLIRecipe
from tunelab.nli.data import tokenize_rows
from tunelab.nli.pipeline import predict
from tunelab.nli.trainer import NLICollator, NLITrainer, label_token_ids, label_word_loss, training_arguments
from tunelab.packing import PackingCollator, real_tokens

PROMPTS = ("Premise: A dog runs in the park.\nHypothesis: An animal moves.\nRelationship:",
           "Premise: Hi.\nHypothesis: Bye.\nRelationship:",
           "Premise: Two men play chess at a table by the window.\nHypothesis: Nobody plays.\nRelationship:")


def tiny_lora_model(directory):
    model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="sdpa")
    targets = ["c_attn"] if model.config.model_type == "gpt2" else ["q_proj", "v_proj"]
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, init_lora_weights=False,
                        fan_in_fan_out=model.config.model_type == "gpt2")
    return get_peft_model(model, config)


def loss_scores_and_gradients(model, batch, label_ids):
    model.zero_grad()
    loss, scores = label_word_loss(model, batch, label_ids, "first_token")
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), scores.detach(), gradients


@pytest.mark.parametrize("kind", ["gpt2", "phi", "llama"])
def test_packed_nli_batches_score_and_train_as_padded_ones(kind, request):
    directory = request.getfixturevalue(f"tiny_{kind}_dir")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = tiny_lora_model(directory).eval()  # eval: transformers would use a cache, which packing turns off
    label_ids = label_token_ids(tokenizer, ["entailment", "neutral", "contradiction"], "first_token")
    features = [{"input_ids": tokenizer(prompt)["input_ids"], "labels": label}
                for label, prompt in zip((0, 1, 2), PROMPTS)]
    padded = NLICollator(tokenizer.eos_token_id, label_ids)(features)
    packed = PackingCollator()(features)
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in features))
    assert real_tokens(packed) == real_tokens(padded) < padded["input_ids"].numel()

    loss, scores, gradients = loss_scores_and_gradients(model, padded, label_ids)
    packed_loss, packed_scores, packed_gradients = loss_scores_and_gradients(model, packed, label_ids)
    torch.testing.assert_close(packed_scores, scores, atol=1e-5, rtol=1e-4)
    assert packed_scores.argmax(-1).tolist() == scores.argmax(-1).tolist()
    torch.testing.assert_close(packed_loss, loss, atol=1e-6, rtol=1e-5)
    for name, gradient in gradients.items():
        torch.testing.assert_close(packed_gradients[name], gradient, atol=1e-6, rtol=1e-4)


def test_the_nli_trainer_trains_and_predicts_alike_packed_and_padded(tiny_llama_dir, tmp_path):
    """Three optimizer steps and a prediction through NLITrainer: the same losses, tokens seen and scores."""
    rows = [{"premise": "A dog runs" + " fast" * (i % 5), "hypothesis": "An animal moves.", "label": label}
            for i, label in enumerate(["entailment", "neutral", "contradiction"] * 4)]
    runs = {}
    for padding_free in (False, True):
        recipe = NLIRecipe(model_name_or_path=str(tiny_llama_dir), output_dir=str(tmp_path), run_name=str(padding_free),
                           lora_r=4, lora_dropout=0.0, learning_rate=5e-3, max_steps=3, logging_steps=1,
                           per_device_train_batch_size=4, save_strategy="no", seed=0, precision="fp32",
                           padding_free=padding_free)
        tokenizer = load_tokenizer(recipe)
        label_ids = label_token_ids(tokenizer, recipe.label_words, "first_token")
        dataset, _ = tokenize_rows(rows, tokenizer, 64, 1)
        set_seed(0)
        collator = PackingCollator() if padding_free else NLICollator(tokenizer.pad_token_id, label_ids)
        trainer = NLITrainer(model=load_model(recipe), args=training_arguments(recipe, str(recipe.run_dir), True),
                             train_dataset=dataset, data_collator=collator, label_ids=label_ids, scoring="first_token")
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        runs[padding_free] = losses, trainer.state.num_input_tokens_seen, predict(trainer, dataset)
    (losses, tokens, probabilities), (packed_losses, packed_tokens, packed_probabilities) = runs[False], runs[True]
    assert len(losses) == 3 and packed_losses == pytest.approx(losses, rel=1e-4)
    assert packed_tokens == tokens == sum(len(ids) for ids in dataset["input_ids"])  # 3 batches of 4: every row once
    np.testing.assert_allclose(packed_probabilities, probabilities, atol=1e-5)


def test_packing_keeps_per_row_fields_and_marks_each_rows_answer_position():
    packed = PackingCollator()([{"input_ids": [5, 6, 7], "labels": 2, "label_distribution": [0.0, 0.5, 0.5]},
                                {"input_ids": [8, 9], "labels": 0, "label_distribution": [1.0, 0.0, 0.0]}])
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert packed["row_ends"].tolist() == [2, 4] and packed["labels"].tolist() == [2, 0]
    assert packed["label_distribution"].tolist() == [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]


def test_a_padding_free_chat_run_packs_its_batches_and_trains(tiny_llama_dir, tmp_path):
    argv = tiny_chat_overrides(tiny_llama_dir, tmp_path, "--load_in_4bit", "false", "--optim", "adamw_torch",
                               "--lora_target_modules", "q_proj,v_proj", "--padding_free", "true")
    with ChatRun(parse_recipe(CHAT_RECIPE, argv), []) as run:
        run.load("trainer")
        trainer, rows = run.trainer, [run.trainer.train_dataset[i] for i in (0, 2, 5)]
        packed = trainer.data_collator(rows)
        assert "attention_mask" not in packed and packed["input_ids"].shape[0] == 1
        padded = DataCollatorForLanguageModeling(pad_token_id=run.tokenizer.pad_token_id)(rows)
        model = trainer.model.eval()
        with torch.no_grad():
            losses = [model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids",
                                                                        "labels")}, use_cache=False).loss
                      for batch in (padded, packed)]
        torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
        trainer.train()
        assert trainer.state.global_step == 4 and trainer.state.num_input_tokens_seen > 0


def test_padding_free_reaches_both_trainers_and_counts_every_packed_token(tmp_path):
    chat = sft_config(ChatRecipe(padding_free=True, max_length=64), str(tmp_path), on_cpu=True)
    assert chat.padding_free and chat.max_length is None and chat.include_num_input_tokens_seen == "all"
    padded_chat = sft_config(ChatRecipe(max_length=64), str(tmp_path), on_cpu=True)
    assert not padded_chat.padding_free and padded_chat.max_length == 64
    nli = training_arguments(NLIRecipe(padding_free=True), str(tmp_path), on_cpu=True)
    assert nli.include_num_input_tokens_seen == "all"
    assert training_arguments(NLIRecipe(), str(tmp_path), on_cpu=True).include_num_input_tokens_seen == "non_padding"


@pytest.mark.parametrize("settings", [{"label_scoring": "sequence"}, {"head": "classifier"}])
def test_padding_free_is_refused_where_the_answer_is_not_one_position(settings):
    with pytest.raises(TunelabError, match="padding_free packs rows for label_scoring first_token"):
        NLIRecipe(padding_free=True, **settings)
