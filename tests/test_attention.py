"""Kernel settings: the attention kernel reaches the loaded model, and eager attention scores and trains as SDPA
does; compiled layers score and train as eager ones do."""

import runpy
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tunelab.config import parse_recipe
from tunelab.errors import TunelabError
from tunelab.models import load_model
from tunelab.nli.trainer import NLICollator, label_token_ids, label_word_loss
from tunelab.pipeline import check_torch_compile, check_training_settings

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


def padded_batch(model_dir, prompts=PROMPTS):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    label_ids = label_token_ids(tokenizer, ["entailment", "neutral", "contradiction"], "first_token")
    features = [{"input_ids": tokenizer(prompt)["input_ids"], "labels": label} for label, prompt in enumerate(prompts)]
    batch = NLICollator(tokenizer.eos_token_id, label_ids)(features)
    assert (batch["attention_mask"] == 0).any(), "the rows differ in length, so the batch is padded"
    return batch, label_ids


def assert_same_results(results, reference, atol=1e-6):
    (loss, scores, gradients), (reference_loss, reference_scores, reference_gradients) = results, reference
    assert scores.argmax(-1).tolist() == reference_scores.argmax(-1).tolist()
    torch.testing.assert_close(scores, reference_scores, atol=10 * atol, rtol=1e-4)
    torch.testing.assert_close(loss, reference_loss, atol=atol, rtol=1e-5)
    assert gradients.keys() == reference_gradients.keys() and gradients
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, reference_gradients[name], atol=atol, rtol=1e-4)


def test_eager_attention_scores_and_trains_as_sdpa_on_padded_batches(tiny_llama_dir):
    batch, label_ids = padded_batch(tiny_llama_dir)
    results = {kernel: loss_scores_and_gradients(tiny_model(tiny_llama_dir, "--attn_implementation", kernel),
                                                 batch, label_ids) for kernel in ("sdpa", "eager")}
    assert_same_results(results["eager"], results["sdpa"])


def test_compiled_layers_score_and_train_as_eager_ones_at_any_length_and_keep_their_names(tiny_llama_dir):
    no_dropout = ("--lora_dropout", "0")  # compiled code draws its own random masks
    eager, compiled = tiny_model(tiny_llama_dir, *no_dropout), tiny_model(tiny_llama_dir, *no_dropout, "--torch_compile", "true")
    layers = compiled.base_model.model.model.layers
    assert all(layer._compiled_call_impl is not None for layer in layers) and len(layers) > 1
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # adapters save and load as uncompiled ones
    for prompts in (PROMPTS, PROMPTS[:2]):  # two lengths: one graph with dynamic shapes
        batch, label_ids = padded_batch(tiny_llama_dir, prompts)
        for model in (eager, compiled):
            model.zero_grad()
        assert_same_results(loss_scores_and_gradients(compiled, batch, label_ids),
                            loss_scores_and_gradients(eager, batch, label_ids), atol=1e-5)


@pytest.mark.parametrize("launch", [{"ACCELERATE_USE_DEEPSPEED": "true"}, {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}])
def test_torch_compile_is_refused_under_deepspeed_and_fsdp_before_anything_loads(launch, monkeypatch):
    recipe = parse_recipe(RECIPE, ["--torch_compile", "true"])
    check_training_settings(recipe)  # a plain launch compiles
    for name, value in launch.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TunelabError, match="pass --torch_compile false") as error:
        check_training_settings(recipe)
    assert "\n" not in str(error.value)
    check_training_settings(parse_recipe(RECIPE, []))


def test_torch_compile_on_a_cpu_without_a_cpp_compiler_is_refused_with_the_fix(monkeypatch):
    import torch._inductor.config

    check_torch_compile(on_cpu=True)  # this machine has one (Inductor's own search)
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, "no-such-compiler++"))
    with pytest.raises(TunelabError, match="install g[+][+] .* or pass --torch_compile false") as error:
        check_torch_compile(on_cpu=True)
    assert "\n" not in str(error.value)
    check_torch_compile(on_cpu=False)  # a GPU compiles with Triton
