"""Tiny random models with real architectures, GPT-2's real tokenizer, and published configs."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.pytorch_utils import Conv1D

from tunelab.architectures import meta_parameter_count, published_config
from tunelab.errors import TunelabError
from tunelab.tiny_models import build_tiny_model

GPT2_VOCAB = 50257
HELLO_WORLD_IDS = [15496, 995]

MODULES_BY_KIND = {
    "gpt2": {"c_attn", "c_proj", "c_fc", "lm_head"},
    "phi": {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2", "lm_head"},
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"},
}
CLASS_BY_KIND = {"gpt2": "GPT2LMHeadModel", "phi": "PhiForCausalLM", "llama": "LlamaForCausalLM"}
TIED_BY_KIND = {"gpt2": True, "phi": False, "llama": True}


@pytest.fixture
def tiny_dirs(tiny_gpt2_dir, tiny_phi_dir, tiny_llama_dir):
    return {"gpt2": tiny_gpt2_dir, "phi": tiny_phi_dir, "llama": tiny_llama_dir}


def module_leaf_names(model):
    return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}


def test_gpt2_tokenizer_is_the_real_one(gpt2_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    assert tokenizer("Hello world").input_ids == HELLO_WORLD_IDS
    assert tokenizer(" Hello world").input_ids == [18435, 995]
    assert len(tokenizer) == GPT2_VOCAB
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == 50256
    assert tokenizer.decode(tokenizer("héllo wörld 😀\n").input_ids) == "héllo wörld 😀\n"


def test_gpt2_tokenizer_has_no_pad_token(gpt2_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    assert tokenizer.pad_token is None
    assert tokenizer.pad_token_id is None


@pytest.mark.parametrize("kind", ["gpt2", "phi", "llama"])
def test_tiny_model_loads_and_runs(kind, tiny_dirs):
    directory = tiny_dirs[kind]
    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert type(model).__name__ == CLASS_BY_KIND[kind]
    assert model.dtype == torch.float32
    inputs = tokenizer(["Hello world"], return_tensors="pt")
    assert inputs.input_ids.tolist() == [HELLO_WORLD_IDS]
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, 2, GPT2_VOCAB)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", ["gpt2", "phi", "llama"])
def test_tiny_model_keeps_real_module_names(kind, tiny_dirs):
    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[kind])
    assert MODULES_BY_KIND[kind] <= module_leaf_names(model)
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied == TIED_BY_KIND[kind]


def test_tiny_gpt2_uses_conv1d(tiny_gpt2_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    assert isinstance(model.transformer.h[0].attn.c_attn, Conv1D)


def test_tiny_phi_is_native_with_partial_rotary(tiny_phi_dir):
    config = json.loads((tiny_phi_dir / "config.json").read_text())
    assert config["model_type"] == "phi"
    assert "auto_map" not in config
    assert config["rope_parameters"]["partial_rotary_factor"] == 0.4


@pytest.mark.parametrize("kind", ["gpt2", "phi", "llama"])
def test_tiny_model_folder_is_small(kind, tiny_dirs):
    total_bytes = sum(path.stat().st_size for path in tiny_dirs[kind].iterdir())
    assert total_bytes < 32e6


def test_tiny_model_is_reproducible(tiny_llama_dir, tmp_path):
    rebuilt = build_tiny_model("llama", tmp_path)
    original = load_file(tiny_llama_dir / "model.safetensors")
    again = load_file(rebuilt / "model.safetensors")
    assert original.keys() == again.keys()
    assert all(torch.equal(original[name], again[name]) for name in original)


def test_overrides_reach_the_config(tmp_path):
    directory = build_tiny_model("phi", tmp_path, num_hidden_layers=1)
    assert json.loads((directory / "config.json").read_text())["num_hidden_layers"] == 1


def test_unknown_kind_is_a_tunelab_error(tmp_path):
    with pytest.raises(TunelabError, match="gpt2, phi, llama"):
        build_tiny_model("mamba", tmp_path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("phi-2", 2_779_683_840), ("gpt2-large", 774_030_080)],
)
def test_published_parameter_counts(name, expected):
    count = meta_parameter_count(published_config(name))
    print(f"{name}: {count:,} parameters")
    assert count == expected


def test_published_config_aliases_and_errors():
    assert published_config("phi").hidden_size == 2560
    assert published_config("gpt2").n_layer == 36
    with pytest.raises(TunelabError, match="phi-2"):
        published_config("phi-3")
