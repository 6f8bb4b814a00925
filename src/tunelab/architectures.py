"""Published architectures of the recipes' models (phi-2, gpt2-large) as configs, for parameter and memory
arithmetic offline (`tunelab plan`, `tunelab bench`); instantiate them only on ``torch.device("meta")``
or with the layers cut down."""

from __future__ import annotations

from tunelab.errors import TunelabError

PUBLISHED_ALIASES = {"phi": "phi-2", "gpt2": "gpt2-large"}
GPT2_END_OF_TEXT_ID = 50256


def published_config(kind: str):
    """The published config of a full-size model: "phi-2" (alias "phi") or "gpt2-large" (alias "gpt2")."""
    builders = {"phi-2": _phi2_config, "gpt2-large": _gpt2_large_config}
    name = PUBLISHED_ALIASES.get(kind, kind)
    if name not in builders:
        known = ", ".join([*builders, *PUBLISHED_ALIASES])
        raise TunelabError(f"Unknown published config {kind!r}; use one of: {known}.")
    return builders[name]()


def meta_parameter_count(config) -> int:
    """Parameters of the model `config` describes, counted on the meta device (no memory used).

    Tied weights count once, as in the published parameter counts.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(parameter.numel() for parameter in model.parameters())


def _phi2_config():
    """microsoft/phi-2's config.json."""
    from transformers import PhiConfig

    return PhiConfig(
        vocab_size=51200,
        hidden_size=2560,
        intermediate_size=10240,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        resid_pdrop=0.1,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        hidden_act="gelu_new",
        max_position_embeddings=2048,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.4},
        qk_layernorm=False,
        bos_token_id=GPT2_END_OF_TEXT_ID,
        eos_token_id=GPT2_END_OF_TEXT_ID,
        tie_word_embeddings=False,
        dtype="float16",
        architectures=["PhiForCausalLM"],
    )


def _gpt2_large_config():
    """openai-community/gpt2-large's config.json."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=50257,
        n_positions=1024,
        n_embd=1280,
        n_layer=36,
        n_head=20,
        activation_function="gelu_new",
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        bos_token_id=GPT2_END_OF_TEXT_ID,
        eos_token_id=GPT2_END_OF_TEXT_ID,
        tie_word_embeddings=True,
        architectures=["GPT2LMHeadModel"],
    )
