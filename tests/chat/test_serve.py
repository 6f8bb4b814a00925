"""Serving a chat run: merged weights equal base + adapter, streaming, compiled layers generating eagerly,
`tunelab merge` and `tunelab chat`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunelab.chat.format import tokenize_chat
from tunelab.chat.serve import (
    generate_reply,
    load_base_and_adapter,
    load_chat_model,
    load_model_folder,
    merge_adapter,
    stop_token_ids,
    stream_reply,
)
from tunelab.errors import TunelabError
from tunelab.models import compile_repeated_layers

ROOT = Path(__file__).resolve().parents[2]
CONVERSATION = [{"role": "user", "content": "What is the capital of Peru?"},
                {"role": "assistant", "content": "The capital of Peru is Lima."},
                {"role": "user", "content": "And Chile?"}]


def tunelab(*args, stdin=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "tunelab.cli", *map(str, args)], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=600)


def test_merged_model_gives_the_same_logits_as_base_plus_adapter(tiny_chat_run):
    adapted, tokenizer = load_base_and_adapter(tiny_chat_run)
    merged, merged_tokenizer = load_model_folder(tiny_chat_run / "merged")
    assert merged_tokenizer.chat_template == tokenizer.chat_template and len(merged_tokenizer) == len(tokenizer)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    rows = [tokenize_chat(tokenizer, CONVERSATION), tokenize_chat(tokenizer, CONVERSATION[:1])]
    width = max(len(r["input_ids"]) for r in rows)
    input_ids = torch.tensor([r["input_ids"] + [tokenizer.pad_token_id] * (width - len(r["input_ids"])) for r in rows])
    attention = (torch.arange(width)[None] < torch.tensor([[len(r["input_ids"])] for r in rows])).long()
    with torch.no_grad():
        with_adapter = adapted(input_ids=input_ids, attention_mask=attention).logits
        folded = merged(input_ids=input_ids, attention_mask=attention).logits
        with adapted.disable_adapter():
            base = adapted(input_ids=input_ids, attention_mask=attention).logits
    real = attention.bool()
    assert torch.allclose(folded[real], with_adapter[real], atol=1e-4, rtol=1e-4)
    assert (base[real] - with_adapter[real]).abs().max() > 1e-2  # the adapter changes the model: not a vacuous check
    assert merged.generation_config.eos_token_id == stop_token_ids(tokenizer)
    assert merged.generation_config.suppress_tokens == [tokenizer.pad_token_id]  # the added pad is never generated


def test_stream_reply_yields_the_greedy_reply_piece_by_piece(tiny_chat_run):
    model, tokenizer, what = load_chat_model(tiny_chat_run)
    assert what.startswith("merged model")
    expected = generate_reply(model, tokenizer, CONVERSATION, max_new_tokens=8, temperature=0.0)
    assert expected["new_tokens"] == 8 and expected["reply"]
    pieces = list(stream_reply(model, tokenizer, CONVERSATION, max_new_tokens=8, temperature=0.0))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == expected["reply"]
    _, _, what = load_chat_model(tiny_chat_run, use="adapter")
    assert what.startswith("base model + adapter")


def test_layers_compiled_for_training_generate_eagerly_without_compiling(tiny_chat_run):
    """Decoding with a key-value cache would compile the layers again for each layer's cache until PyTorch's
    recompile limit: generation runs them eagerly, with the same reply."""
    from torch._dynamo.utils import counters

    model, tokenizer = load_model_folder(tiny_chat_run / "merged")
    eager = generate_reply(model, tokenizer, CONVERSATION, max_new_tokens=6)
    assert compile_repeated_layers(model) > 1
    torch._dynamo.reset()
    counters.clear()
    assert generate_reply(model, tokenizer, CONVERSATION, max_new_tokens=6) == eager
    assert counters["stats"]["unique_graphs"] == 0


def test_merge_command(tiny_chat_run, tmp_path):
    result = tunelab("merge", tiny_chat_run, "--output", tmp_path / "merged")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith(str(tmp_path / "merged"))
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "generation_config.json",
            "tunelab_merged.json"} <= {p.name for p in (tmp_path / "merged").iterdir()}
    with pytest.raises(TunelabError, match="already exists: pass --overwrite"):
        merge_adapter(tiny_chat_run, tmp_path / "merged")
    with pytest.raises(TunelabError, match="not a finished chat run"):
        merge_adapter(tmp_path)


def test_chat_command_streams_replies_on_the_terminal(tiny_chat_run):
    model, tokenizer, _ = load_chat_model(tiny_chat_run)
    first = generate_reply(model, tokenizer, [{"role": "user", "content": "Hello there"}], max_new_tokens=5)
    result = tunelab("chat", tiny_chat_run, "--temperature", "0", "--max_new_tokens", "5", "--threads", "1",
                     stdin="Hello there\n/reset\n\nWhat is 23 plus 19?\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "chatting with the merged model" in result.stderr
    replies = result.stdout.split("assistant> ")[1:]
    assert len(replies) == 2
    first_shown, cleared = replies[0].rsplit("\n(conversation cleared)\n", 1)
    assert first_shown.strip() == first["reply"] and cleared == ""
    assert replies[1].strip()
