"""The classification trainer on tiny random models with GPT-2's real tokenizer."""

import dataclasses
import random

import numpy as np
import pytest
import torch
from transformers import set_seed

from tunelab.errors import TunelabError
from tunelab.metrics import classification_metrics
from tunelab.models import load_model, load_tokenizer, parameter_counts
from tunelab.nli.config import NLI_LABELS, NLIRecipe
from tunelab.nli.data import tokenize_rows
from tunelab.nli.trainer import (
    NLICollator,
    NLITrainer,
    label_scores,
    label_token_ids,
    training_arguments,
)

CUES = {"entailment": "surely", "neutral": "perhaps", "contradiction": "never"}


def separable_rows(n, seed):
    """An easy set: the hypothesis' adverb gives the label away."""
    rng = random.Random(seed)
    subjects = ["A man", "The girl", "Two dogs", "A chef", "The band", "An old woman"]
    actions = ["walks home", "sings loudly", "eats lunch", "reads a book", "plays outside", "paints a wall"]
    rows = []
    for i in range(n):
        label = NLI_LABELS[i % 3]
        subject, action = rng.choice(subjects), rng.choice(actions)
        rows.append({"premise": f"{subject} {action}.", "hypothesis": f"{subject} {CUES[label]} {action}.",
                     "label": label})
    return rows


def tiny_recipe(model_dir, tmp_path, **overrides):
    settings = dict(model_name_or_path=str(model_dir), output_dir=str(tmp_path), run_name="tiny",
                    lora_r=8, lora_alpha=16, lora_dropout=0.0, learning_rate=5e-3, num_train_epochs=10,
                    per_device_train_batch_size=8, per_device_eval_batch_size=16, logging_steps=5,
                    save_strategy="no", seed=0, max_length=64, precision="fp32")  # exact comparisons on any CPU
    settings.update(overrides)
    return NLIRecipe(**settings)


def train_and_score(recipe, model=None):
    tokenizer = load_tokenizer(recipe)
    model = model or load_model(recipe)
    label_ids = label_token_ids(tokenizer, recipe.label_words, recipe.label_scoring)
    reserve = max(map(len, label_ids))
    train, _ = tokenize_rows(separable_rows(96, seed=1), tokenizer, recipe.max_length, reserve)
    test, _ = tokenize_rows(separable_rows(48, seed=2), tokenizer, recipe.max_length, reserve)
    trainer = NLITrainer(model=model, args=training_arguments(recipe, str(recipe.run_dir), on_cpu=True),
                         train_dataset=train, data_collator=NLICollator(tokenizer.pad_token_id, label_ids,
                                                                         recipe.label_scoring),
                         label_ids=label_ids, scoring=recipe.label_scoring,
                         loraplus_lr_ratio=recipe.loraplus_lr_ratio)
    before = trainer.predict(test)
    trainer.train()
    after = trainer.predict(test)
    accuracy = lambda out: float((out.predictions.argmax(-1) == out.label_ids).mean())  # noqa: E731
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return accuracy(before), accuracy(after), losses, before.metrics["test_loss"], after.metrics["test_loss"], trainer


def test_adapters_compute_in_bf16_under_autocast_while_their_weights_stay_fp32(tiny_llama_dir, tmp_path):
    recipe = tiny_recipe(tiny_llama_dir, tmp_path, precision="bf16", num_train_epochs=1,
                         lora_target_modules=["q_proj", "v_proj"])
    model = load_model(recipe)
    lora_a = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"]
    inputs = []
    lora_a.register_forward_pre_hook(lambda module, args: inputs.append((module.training, args[0].dtype)))
    _, _, losses, _, _, trainer = train_and_score(recipe, model)
    assert trainer.args.bf16 and losses
    assert {dtype for training, dtype in inputs if training} == {torch.bfloat16}  # no cast up to fp32
    assert lora_a.weight.dtype == torch.float32
    assert model.base_model.model.model.layers[0].self_attn.q_proj.cast_input_dtype_enabled  # outside training: PEFT's
    with torch.no_grad():  # so the model still runs without autocast
        model(input_ids=torch.tensor([[1, 2, 3]]))


@pytest.mark.parametrize("model_fixture", ["tiny_gpt2_dir", "tiny_phi_dir"])
def test_loss_falls_and_accuracy_rises(model_fixture, request, tmp_path):
    model_dir = request.getfixturevalue(model_fixture)
    targets = ["c_attn", "c_proj", "c_fc"] if "gpt2" in model_fixture else \
        ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2", "lm_head"]
    acc_before, acc_after, losses, loss_before, loss_after, _ = train_and_score(
        tiny_recipe(model_dir, tmp_path, lora_target_modules=targets))
    assert losses[-1] < losses[0]
    assert loss_after < loss_before
    assert acc_after >= 0.9 > acc_before


def test_neftune_noise_reaches_training_not_evaluation(tiny_phi_dir, tmp_path):
    """--neftune_noise_alpha goes to transformers' NEFTune: noisy embeddings while training; the fine-tuned
    model is then scored without noise (two scorings of the same rows agree to the last digit)."""
    settings = dict(num_train_epochs=1, lora_target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"])
    recipes = {name: tiny_recipe(tiny_phi_dir, tmp_path, run_name=name, neftune_noise_alpha=alpha, **settings)
               for name, alpha in (("plain", None), ("noisy", 5.0))}
    runs = {}
    for name, recipe in recipes.items():
        set_seed(0)  # the same LoRA initialisation: the noise is the only difference
        runs[name] = train_and_score(recipe)
    plain, noisy = runs["plain"], runs["noisy"]
    assert noisy[2][0] != plain[2][0], "the first logged training losses differ: the noise was there"
    trainer, tokenizer = noisy[5], load_tokenizer(recipes["noisy"])
    reserve = max(map(len, label_token_ids(tokenizer, recipes["noisy"].label_words, recipes["noisy"].label_scoring)))
    test, _ = tokenize_rows(separable_rows(48, seed=2), tokenizer, recipes["noisy"].max_length, reserve)
    again = trainer.predict(test)
    assert again.metrics["test_loss"] == noisy[4], "scored after training as at the end of training: no noise"
    assert np.array_equal(again.predictions, trainer.predict(test).predictions)


def test_dora_learns_magnitudes_beside_the_lora_matrices(tiny_phi_dir, tmp_path):
    recipe = tiny_recipe(tiny_phi_dir, tmp_path, use_dora=True, lora_target_modules=["q_proj", "v_proj", "fc1"])
    acc_before, acc_after, *_, trainer = train_and_score(recipe)
    magnitudes = [name for name, p in trainer.model.named_parameters() if "lora_magnitude_vector" in name]
    assert len(magnitudes) == 2 * 3, "one magnitude vector per adapted module of both layers"
    assert acc_after >= 0.9 > acc_before


def test_loraplus_gives_the_b_matrices_a_larger_learning_rate(tiny_phi_dir, tmp_path):
    recipe = tiny_recipe(tiny_phi_dir, tmp_path, loraplus_lr_ratio=16, learning_rate=1e-3,
                         lora_target_modules=["q_proj", "v_proj", "fc1"])
    acc_before, acc_after, *_, trainer = train_and_score(recipe)
    names = {id(p): name for name, p in trainer.model.named_parameters()}
    peak_lrs = {}  # the scheduler has run to the end: compare each group's initial_lr
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            peak_lrs[names[id(p)].split(".")[-3]] = group["initial_lr"]
    assert peak_lrs == {"lora_A": 1e-3, "lora_B": 16e-3}
    assert acc_after >= 0.9 > acc_before


def test_sequence_scoring_learns_multi_token_labels(tiny_gpt2_dir, tmp_path):
    # Two-token GPT-2 words; the first two share their first token (" ent").
    words = ["entailed", "entailing", "neutralize"]
    recipe = tiny_recipe(tiny_gpt2_dir, tmp_path, lora_target_modules=["c_attn", "c_fc"],
                         label_words=words, label_scoring="sequence")
    tokenizer = load_tokenizer(recipe)
    assert len({ids[0] for ids in label_token_ids(tokenizer, words, "sequence")}) < len(words)
    with pytest.raises(TunelabError, match="share a first token"):
        label_token_ids(tokenizer, words, "first_token")
    acc_before, acc_after, *_ = train_and_score(recipe)
    assert acc_after >= 0.9 > acc_before


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padding_does_not_change_scores_whatever_the_tokenizer_padding_side(padding_side, tiny_gpt2_dir, tmp_path):
    """Rows of different lengths scored in one padded batch or one by one (no padding) score the same, with
    the tokenizer set to either padding side (the collator pads, always on the left)."""
    recipe = tiny_recipe(tiny_gpt2_dir, tmp_path, lora_target_modules=["c_attn"])
    tokenizer = load_tokenizer(recipe)
    tokenizer.padding_side = padding_side
    model = load_model(recipe).eval()
    label_ids = label_token_ids(tokenizer, recipe.label_words, "first_token")
    dataset, _ = tokenize_rows(separable_rows(6, seed=3), tokenizer, 64, 1)
    collate = NLICollator(tokenizer.pad_token_id, label_ids)
    features = [dict(row) for row in dataset]
    batch = collate(features)
    assert (batch["attention_mask"] == 0).any(), "the batch must hold padding for this test to mean anything"
    with torch.no_grad():
        batched = label_scores(model, batch, label_ids, "first_token")
        one_by_one = torch.cat([label_scores(model, collate([f]), label_ids, "first_token") for f in features])
    assert torch.allclose(batched, one_by_one, atol=1e-5)


def test_label_smoothing_shapes_the_training_loss_only(tiny_gpt2_dir, tmp_path):
    """With label_smoothing the training loss is cross-entropy against smoothed targets; evaluation reports the
    plain cross-entropy, so evaluation losses of runs with and without smoothing compare."""
    recipe = tiny_recipe(tiny_gpt2_dir, tmp_path, lora_target_modules=["c_attn"], label_smoothing=0.2)
    tokenizer = load_tokenizer(recipe)
    model = load_model(recipe)
    label_ids = label_token_ids(tokenizer, recipe.label_words, "first_token")
    dataset, _ = tokenize_rows(separable_rows(6, seed=3), tokenizer, 64, 1)
    batch = NLICollator(tokenizer.pad_token_id, label_ids)([dict(row) for row in dataset])
    trainer = NLITrainer(model=model, args=training_arguments(recipe, str(recipe.run_dir), on_cpu=True),
                         label_ids=label_ids, scoring="first_token")
    model.eval()  # no dropout in either pass: the two losses differ by the targets alone
    with torch.no_grad():
        scores = label_scores(model, batch, label_ids, "first_token")
        eval_loss = trainer.compute_loss(model, batch)
        model.train()
        train_loss = trainer.compute_loss(model, batch)
    smoothed = torch.full_like(scores, 0.2 / 3).scatter_add_(
        1, batch["labels"][:, None], torch.full((len(scores), 1), 0.8))
    assert torch.allclose(eval_loss, torch.nn.functional.cross_entropy(scores, batch["labels"]), atol=1e-6)
    assert torch.allclose(train_loss, -(smoothed * scores.log_softmax(-1)).sum(-1).mean(), atol=1e-6)
    assert not torch.allclose(train_loss, eval_loss)
    with pytest.raises(TunelabError, match="label_smoothing must be in"):
        tiny_recipe(tiny_gpt2_dir, tmp_path, label_smoothing=1.0)


def test_annotator_distributions_are_the_training_targets_not_the_evaluation_ones(tiny_gpt2_dir, tmp_path):
    recipe = tiny_recipe(tiny_gpt2_dir, tmp_path, lora_target_modules=["c_attn"], annotator_labels=True)
    tokenizer = load_tokenizer(recipe)
    model = load_model(recipe).eval()
    label_ids = label_token_ids(tokenizer, recipe.label_words, "first_token")
    rows = [{**row, "annotator_labels": ["neutral", row["label"], row["label"]]} for row in separable_rows(6, seed=3)]
    dataset, _ = tokenize_rows(rows, tokenizer, 64, 1, annotator_labels=True)
    batch = NLICollator(tokenizer.pad_token_id, label_ids)([dict(row) for row in dataset])
    trainer = NLITrainer(model=model, args=training_arguments(recipe, str(recipe.run_dir), on_cpu=True),
                         label_ids=label_ids, scoring="first_token")
    with torch.no_grad():
        logprobs = label_scores(model, batch, label_ids, "first_token").log_softmax(-1)
        eval_loss = trainer.compute_loss(model, batch)
        model.train()
        train_loss = trainer.compute_loss(model, batch)
    assert torch.allclose(eval_loss, -logprobs.gather(1, batch["labels"][:, None]).mean(), atol=1e-6)
    assert torch.allclose(train_loss, -(batch["label_distribution"] * logprobs).sum(-1).mean(), atol=1e-6)
    assert not torch.allclose(train_loss, eval_loss)


@pytest.mark.parametrize("scoring", ["first_token", "sequence"])
def test_label_scores_read_the_full_forwards_logits_at_the_answer_positions(scoring, tiny_gpt2_dir, tmp_path):
    """Only the answer positions are projected to the vocabulary (logits_to_keep as position indices): the
    scores equal those read from the full forward's logits at the same positions."""
    recipe = tiny_recipe(tiny_gpt2_dir, tmp_path, lora_target_modules=["c_attn"])
    tokenizer = load_tokenizer(recipe)
    model = load_model(recipe).eval()
    label_ids = label_token_ids(tokenizer, recipe.label_words, scoring)
    dataset, _ = tokenize_rows(separable_rows(6, seed=3), tokenizer, 64, max(map(len, label_ids)))
    batch = NLICollator(tokenizer.pad_token_id, label_ids, scoring)([dict(row) for row in dataset])
    with torch.no_grad():
        full = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}).logits.float()
        scores = label_scores(model, batch, label_ids, scoring)
    if scoring == "first_token":
        expected = full[:, -1, [word[0] for word in label_ids]]
    else:
        longest = batch["label_mask"].shape[-1]
        targets = batch["input_ids"][:, -longest:, None]
        token_logprobs = full[:, -longest - 1:-1].log_softmax(-1).gather(-1, targets).squeeze(-1)
        expected = (token_logprobs * batch["label_mask"]).sum(-1).view(-1, len(label_ids))
    assert torch.allclose(scores, expected, atol=1e-5)


def test_qlora_4bit_trains_a_few_steps(tiny_llama_dir, tmp_path):
    recipe = tiny_recipe(tiny_llama_dir, tmp_path, load_in_4bit=True, optim="paged_adamw_8bit",
                         lora_target_modules=["q_proj", "v_proj", "gate_proj"], num_train_epochs=1, precision="fp32")
    model = load_model(recipe)
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    counts = parameter_counts(model)
    plain = parameter_counts(load_model(dataclasses.replace(recipe, load_in_4bit=False)))
    assert counts["total"] == plain["total"], "4-bit weights count as one parameter each"
    _, _, losses, loss_before, loss_after, _ = train_and_score(recipe)
    assert losses and all(np.isfinite(losses))
    assert loss_after < loss_before, "the LoRA weights moved the 4-bit model toward the labels"


def test_unknown_target_module_is_loud(tiny_phi_dir, tmp_path):
    recipe = tiny_recipe(tiny_phi_dir, tmp_path, lora_target_modules=["q_proj", "o_proj"])
    with pytest.raises(TunelabError, match=r"\['o_proj'\] match no module of phi: choose from .*dense"):
        load_model(recipe)


def test_missing_model_paths_and_hub_ids(tmp_path):
    with pytest.raises(TunelabError, match="does not exist"):
        load_tokenizer(NLIRecipe(model_name_or_path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TunelabError, match="holds no model weights"):
        load_model(NLIRecipe(model_name_or_path=str(tmp_path / "empty")))
    with pytest.raises(TunelabError, match="cannot load 'nobody/no-such-model' from the Hugging Face Hub"):
        load_tokenizer(NLIRecipe(model_name_or_path="nobody/no-such-model"))


def test_metrics_agree_with_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = random.Random(0)
    gold = [rng.choice(NLI_LABELS) for _ in range(200)]
    predicted = [g if rng.random() < 0.6 else rng.choice(NLI_LABELS) for g in gold]
    metrics = classification_metrics(gold, predicted, NLI_LABELS)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert metrics["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro"))
    assert sum(map(sum, metrics["confusion_matrix"])) == 200
    assert metrics["per_class"]["neutral"]["support"] == gold.count("neutral")


def test_predict_scores_longest_first_and_returns_every_row_in_its_place(tiny_gpt2_dir, tmp_path):
    from tunelab.nli.pipeline import predict

    # group_by_length on: transformers' own evaluation sampler would shuffle the rows into length groups
    recipe = tiny_recipe(tiny_gpt2_dir, tmp_path, lora_target_modules=["c_attn"], group_by_length=True,
                         per_device_eval_batch_size=2)
    tokenizer = load_tokenizer(recipe)
    model = load_model(recipe).eval()
    label_ids = label_token_ids(tokenizer, recipe.label_words, "first_token")
    rows = separable_rows(9, seed=4)
    for i, row in enumerate(rows):  # lengths that differ, in no sorted order
        row["premise"] = row["premise"] + " It is sunny." * (i * 5 % 7)
    dataset, _ = tokenize_rows(rows, tokenizer, 96, 1)
    collate = NLICollator(tokenizer.pad_token_id, label_ids)
    trainer = NLITrainer(model=model, args=training_arguments(recipe, str(recipe.run_dir), on_cpu=True),
                         data_collator=collate, label_ids=label_ids, scoring="first_token")
    probabilities = predict(trainer, dataset)
    with torch.no_grad():
        alone = torch.cat([label_scores(model, collate([dict(f)]), label_ids, "first_token") for f in dataset])
    np.testing.assert_allclose(probabilities, alone.softmax(-1).numpy(), atol=1e-5)


def test_group_by_length_draws_transformers_length_groups_from_seed_and_epoch(tiny_gpt2_dir, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from tunelab.training import EpochSeededSampler

    for grouped in (False, True):
        recipe = tiny_recipe(tiny_gpt2_dir, tmp_path, lora_target_modules=["c_attn"], group_by_length=grouped)
        tokenizer = load_tokenizer(recipe)
        dataset, _ = tokenize_rows(separable_rows(24, seed=5), tokenizer, 64, 1)
        trainer = NLITrainer(model=load_model(recipe), train_dataset=dataset,
                             args=training_arguments(recipe, str(recipe.run_dir), on_cpu=True),
                             label_ids=label_token_ids(tokenizer, recipe.label_words, "first_token"),
                             scoring="first_token")
        sampler = trainer._get_train_sampler()
        assert isinstance(sampler, EpochSeededSampler) is grouped
    assert isinstance(sampler.sampler, LengthGroupedSampler) and len(sampler) == 24

    def order(epoch: float) -> list[int]:
        trainer.state.epoch = epoch  # mid-epoch (a resumed run) draws that epoch's order
        torch.rand(100)  # the global random state moves on, as it does differently in a resumed run
        return list(sampler)

    assert order(1) == order(1.5) and sorted(order(1)) == list(range(24))
    assert order(0) != order(1)  # each epoch its own order


def test_adapter_merged_scores_as_the_adapter_does_and_restores_the_weights(tiny_gpt2_dir, tmp_path):
    from peft.tuners.lora import LoraLayer

    from tunelab.models import adapter_merged

    model = load_model(tiny_recipe(tiny_gpt2_dir, tmp_path, lora_target_modules=["c_attn", "c_fc"])).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # a trained adapter: merging it changes the base weights
    base_weights = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" not in name}
    lora_layers = [module for module in model.modules() if isinstance(module, LoraLayer)]
    input_ids = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.no_grad():
        with_adapter = model(input_ids=input_ids).logits
        with adapter_merged(model) as merged:
            assert merged and all(layer.merged for layer in lora_layers)
            changed = [n for n, p in model.named_parameters() if n in base_weights and not torch.equal(p, base_weights[n])]
            merged_logits = model(input_ids=input_ids).logits
    assert changed, "merging a non-zero adapter must change the base weights"
    torch.testing.assert_close(merged_logits, with_adapter, atol=1e-4, rtol=1e-4)
    assert not any(layer.merged for layer in lora_layers)
    for name, parameter in model.named_parameters():
        if name in base_weights:
            torch.testing.assert_close(parameter, base_weights[name], atol=1e-5, rtol=1e-5)


def test_adapter_merged_leaves_4bit_weights_as_they_are(tiny_llama_dir, tmp_path):
    from peft.tuners.lora import LoraLayer

    from tunelab.models import adapter_merged

    model = load_model(tiny_recipe(tiny_llama_dir, tmp_path, load_in_4bit=True, lora_target_modules=["q_proj"]))
    with adapter_merged(model) as merged:
        assert not merged
        assert not any(m.merged for m in model.modules() if isinstance(m, LoraLayer))


def test_4bit_weights_stay_trainable_after_an_evaluation_on_avx512_bf16_cpus(tiny_llama_dir, tmp_path, monkeypatch):
    """bitsandbytes 0.50 repacks 4-bit weights for CPU inference on CPUs with AVX512-BF16 and never
    unpacks them, so training after an evaluation crashed there. Pretend this CPU has it, on any CPU."""
    import bitsandbytes.nn.modules

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: True)
    recipe = tiny_recipe(tiny_llama_dir, tmp_path, load_in_4bit=True, lora_target_modules=["q_proj", "v_proj"],
                         precision="fp32")
    model = load_model(recipe)
    layers = [m for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    assert layers and not any(layer.support_avx512bf16_for_cpu for layer in layers)
    ids = torch.tensor([[5, 6, 7, 8]])
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    assert not any(getattr(layer.weight.quant_state, "packing_format_for_cpu", False) for layer in layers)
    model.train()
    before = model.get_base_model().model.layers[0].self_attn.q_proj.lora_B["default"].weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    after = model.get_base_model().model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert not torch.equal(before, after), "a training step after the evaluation moved the LoRA weights"


def test_classifier_head_learns_and_reloads_with_its_adapter(tiny_llama_dir, tmp_path):
    """head=classifier: a new 3-way head on the last token, trained in full beside LoRA, saved with the adapter."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    recipe = tiny_recipe(tiny_llama_dir, tmp_path, head="classifier", learning_rate=5e-3, num_train_epochs=8)
    tokenizer = load_tokenizer(recipe)
    model = load_model(recipe, num_labels=len(NLI_LABELS))
    train, _ = tokenize_rows(separable_rows(96, seed=1), tokenizer, recipe.max_length, 1)
    test, _ = tokenize_rows(separable_rows(48, seed=2), tokenizer, recipe.max_length, 1)
    collator = NLICollator(tokenizer.pad_token_id, [], "classifier")
    trainer = NLITrainer(model=model, args=training_arguments(recipe, str(recipe.run_dir), on_cpu=True),
                         train_dataset=train, data_collator=collator, label_ids=[], scoring="classifier")
    before = trainer.predict(test)
    trainer.train()
    after = trainer.predict(test)
    accuracy = lambda out: float((out.predictions.argmax(-1) == out.label_ids).mean())  # noqa: E731
    assert accuracy(after) >= 0.9 > accuracy(before)
    head = model.get_base_model().score
    assert head.modules_to_save["default"].weight.requires_grad, "the head is trained in full"

    model.save_pretrained(tmp_path / "adapter")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=len(NLI_LABELS))
    base.config.pad_token_id = tokenizer.pad_token_id
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    batch = collator([test[i] for i in range(8)])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(label_scores(model, batch, [], "classifier"),
                              label_scores(reloaded, batch, [], "classifier"), atol=1e-5)


def test_classifier_head_stays_full_precision_over_4bit_weights(tiny_llama_dir, tmp_path):
    import bitsandbytes

    recipe = tiny_recipe(tiny_llama_dir, tmp_path, head="classifier", load_in_4bit=True, precision="fp32")
    model = load_model(recipe, num_labels=len(NLI_LABELS))
    assert any(isinstance(m, bitsandbytes.nn.Linear4bit) for m in model.modules())
    head = model.get_base_model().score.modules_to_save["default"]
    assert not isinstance(head, bitsandbytes.nn.Linear4bit) and head.weight.dtype == torch.float32
