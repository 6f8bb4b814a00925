"""The attention kernel setting: it reaches the loaded model, and eager attention scores and trains as SDPA does."""

import runpy
from pathlib import Path

import torch
from transformers import AutoTokenizer

from tunelab.config import parse_recipe
from tunelab.models import load_model
from tunelab.nli.trainer import NLICollator, label_token_ids, label_word_loss

ROOT = Path(__file__).resolve().parents[1]
RECIPE = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]
PROMPTS = ("Premise: A dog runs in the park.\nHypothesis: An animal moves.\nRelationship:",
           "Premise: Hi.\nHypothesis: Bye.\nRelationship:",
           "Premise: Two men play chess at a table by the window.\nHypothesis: Nobody plays.\nRelationship:")


def tiny_model(model_dir, *settings):
    recipe = parse_recipe(RECIPE, ["--model_name_or_path", str(model_dir), "--load_in_4bit", "false",
                                   "--precision", "fp32", "--lora_target_modules", "q_proj,v_proj", *settings])
    torch.manual_seed(0)
    return load_model(recipe)


def loss_scores_and_gradients(model, batch, label_ids):
    loss, scores = label_word_loss(model, batch, label_ids, "first_token")
    loss.backward()
    return loss.detach(), scores.detach(), {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def test_the_setting_picks_the_kernel_and_auto_keeps_the_models_default(tiny_llama_dir):
    assert tiny_model(tiny_llama_dir, "--attn_implementation", "eager").config._attn_implementation == "eager"
    assert tiny_model(tiny_llama_dir).config._attn_implementation == "sdpa"


def test_eager_attention_scores_and_trains_as_sdpa_on_padded_batches(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    label_ids = label_token_ids(tokenizer, ["entailment", "neutral", "contradiction"], "first_token")
    features = [{"input_ids": tokenizer(prompt)["input_ids"], "labels": label}
                for label, prompt in zip((0, 1, 2), PROMPTS)]
    batch = NLICollator(tokenizer.eos_token_id, label_ids)(features)
    assert (batch["attention_mask"] == 0).any(), "the rows differ in length, so the batch is padded"
    results = {kernel: loss_scores_and_gradients(tiny_model(tiny_llama_dir, "--attn_implementation", kernel),
                                                 batch, label_ids) for kernel in ("sdpa", "eager")}
    (sdpa_loss, sdpa_scores, sdpa_gradients), (loss, scores, gradients) = results["sdpa"], results["eager"]
    assert scores.argmax(-1).tolist() == sdpa_scores.argmax(-1).tolist()
    torch.testing.assert_close(scores, sdpa_scores, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss, sdpa_loss, atol=1e-6, rtol=1e-5)
    assert gradients.keys() == sdpa_gradients.keys() and gradients
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, sdpa_gradients[name], atol=1e-6, rtol=1e-4)
