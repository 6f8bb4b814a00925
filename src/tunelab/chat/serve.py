"""Serving a chat run: merge the adapter, load base + adapter or the merged model, stream replies.

A run trained with method full or freeze (tunelab.methods) saved a whole model in RUN_DIR/model: it
loads as it is, and there is nothing to merge.

    tunelab merge RUN_DIR            RUN_DIR/merged: the adapter folded into the base weights
    tunelab chat RUN_DIR             a terminal chat, tokens printed as they are generated (CPU)

A run directory written by the chat recipe holds `config.yaml` (which names the base model) and
`adapter/` (the LoRA adapter with the tokenizer it was trained with: chat template and pad
token included). The base model is loaded unquantized (float32 by default, the CPU choice),
its embeddings grown to the tokenizer's size when training added a pad token, and the adapter
put on top; merging folds the LoRA product into each base weight, so the merged model computes
the same function without the adapter's extra matrix products at every layer.

Generation stops on the chat template's end-of-turn token (and on EOS).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from threading import Thread
from typing import TextIO

import torch
import yaml

from tunelab.chat.format import end_of_turn_id, generation_prompt
from tunelab.console import say
from tunelab.errors import TunelabError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MERGED_MARKER = "tunelab_merged.json"


# ---------------------------------------------------------------------------- loading

def stop_token_ids(tokenizer) -> list[int]:
    """The end-of-turn token of the tokenizer's chat template, then EOS when it differs."""
    ids = [end_of_turn_id(tokenizer)]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def configure_generation(model, tokenizer) -> None:
    """Stop on the end-of-turn token; pad with the tokenizer's pad token (never the end-of-turn token)."""
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.suppress_tokens = suppressed_ids(tokenizer)


def suppressed_ids(tokenizer) -> list[int] | None:
    """The pad token, which is never a reply token (a pad token added for training has an untrained row)."""
    pad = tokenizer.pad_token_id
    return [pad] if pad is not None and pad not in stop_token_ids(tokenizer) else None


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and ((path / "adapter").is_dir() or (path / "model").is_dir())


def _run_settings(run_dir: Path) -> dict:
    if not is_run_dir(run_dir):
        raise TunelabError(f"{run_dir} is not a finished chat run: it needs config.yaml and adapter/ or model/ "
                           "(written by the chat recipe's train stage)")
    settings = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    if is_lora_run(settings) and not (run_dir / "adapter" / "adapter_config.json").is_file():
        raise TunelabError(f"{run_dir / 'adapter'} holds no adapter: run the recipe's train stage first")
    return settings


def is_lora_run(settings: dict) -> bool:
    """Whether a run's settings (config.yaml) trained a LoRA adapter rather than the model's own weights."""
    return settings.get("method", "lora") == "lora"


def load_base_and_adapter(run_dir: str | Path, dtype: str = "float32", trust_remote_code: bool = False):
    """The base model with the run's LoRA adapter on top (not merged), and the run's tokenizer.

    `trust_remote_code` comes from the command that loads the run, never from the run's config.yaml:
    a run folder is something people share."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.models import resolve_model_path

    run_dir = Path(run_dir)
    settings = _run_settings(run_dir)
    if settings.get("trust_remote_code") and not trust_remote_code:
        say(f"{run_dir} was trained with trust_remote_code: true; no code from the model repository runs here "
            "unless this command is given --trust_remote_code", stream=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    base_path = resolve_model_path(settings["model_name_or_path"])
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=_dtype(dtype), use_safetensors=True,
                                                trust_remote_code=trust_remote_code)
    if len(tokenizer) > base.get_input_embeddings().num_embeddings:
        base.resize_token_embeddings(len(tokenizer))  # the saved adapter carries the trained rows
    model = PeftModel.from_pretrained(base, run_dir / "adapter")
    model.eval()
    configure_generation(model, tokenizer)
    return model, tokenizer


def load_model_folder(path: str | Path, dtype: str = "float32", trust_remote_code: bool = False):
    """A plain model folder (a merged model) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise TunelabError(f"{path} is neither a chat run directory nor a model folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(dtype), use_safetensors=True,
                                                 trust_remote_code=trust_remote_code)
    model.eval()
    configure_generation(model, tokenizer)
    return model, tokenizer


def load_chat_model(path: str | Path, use: str = "auto", dtype: str = "float32", trust_remote_code: bool = False):
    """(model, tokenizer, what) for a run directory or a model folder.

    For a run directory, `use` picks the merged model (`merged`, which must exist), base +
    adapter (`adapter`), or the merged model when there is one and base + adapter otherwise (`auto`).
    """
    path = Path(path)
    if not path.exists():
        raise TunelabError(f"{path} does not exist: give a chat run directory or a merged model folder")
    if not is_run_dir(path):
        return (*load_model_folder(path, dtype, trust_remote_code), f"model folder {path}")
    if not is_lora_run(_run_settings(path)):  # full or freeze: the run saved a whole model
        if use == "adapter":
            raise TunelabError(f"{path} trained the model's own weights, not an adapter: use --use auto")
        return (*load_model_folder(path / "model", dtype, trust_remote_code), f"fine-tuned model {path / 'model'}")
    merged = path / "merged"
    if use == "merged" or (use == "auto" and (merged / MERGED_MARKER).is_file()):
        if not (merged / MERGED_MARKER).is_file():
            raise TunelabError(f"{merged} does not exist: run `tunelab merge {path}` first, or use --use adapter")
        return (*load_model_folder(merged, dtype, trust_remote_code), f"merged model {merged}")
    return (*load_base_and_adapter(path, dtype, trust_remote_code), f"base model + adapter of {path}")


def merge_adapter(run_dir: str | Path, output: str | Path | None = None, dtype: str = "float32",
                  overwrite: bool = False, trust_remote_code: bool = False) -> Path:
    """Fold the run's adapter into the base weights and save a plain model folder (RUN_DIR/merged).

    A run that trained the model's own weights (full, freeze) has nothing to merge: its model/ folder is
    returned. The model repository's own code (and the `auto_map` that names it) is carried into the merged
    folder only with `trust_remote_code`."""
    run_dir = Path(run_dir)
    settings = _run_settings(run_dir)
    if not is_lora_run(settings):
        if output:
            raise TunelabError(f"{run_dir} trained the model's own weights (method {settings['method']}): "
                               f"{run_dir / 'model'} is already a plain model folder; copy it instead of merging")
        say(f"nothing to merge: method {settings['method']} saved a plain model folder, {run_dir / 'model'}",
            stream=sys.stderr)
        return run_dir / "model"
    target = Path(output) if output else run_dir / "merged"
    check_merge_target(target, overwrite)
    model, tokenizer = load_base_and_adapter(run_dir, dtype, trust_remote_code)
    merged = model.merge_and_unload()
    if not trust_remote_code and hasattr(merged.config, "auto_map"):
        del merged.config.auto_map
    staging = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / MERGED_MARKER).write_text(json.dumps({
            "run_dir": str(run_dir.resolve()),
            "base_model": settings["model_name_or_path"],
            "dtype": dtype,
        }, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def check_merge_target(target: Path, overwrite: bool) -> None:
    """Only an empty folder or a merged model tunelab wrote (it holds MERGED_MARKER) may be replaced."""
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if not (target / MERGED_MARKER).is_file():
        raise TunelabError(f"{target} exists and is not a merged model tunelab wrote (no {MERGED_MARKER}), so it is "
                           "never replaced: choose another --output folder")
    if not overwrite:
        raise TunelabError(f"{target} already exists: pass --overwrite to replace it, or --output another folder")


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise TunelabError(f"dtype must be one of {', '.join(DTYPES)}, not {name!r}")
    return DTYPES[name]


# ---------------------------------------------------------------------------- generation

def _generation_kwargs(model, tokenizer, messages: list[dict], max_new_tokens: int, temperature: float,
                       top_p: float) -> dict:
    prompt = generation_prompt(tokenizer, messages)
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
    kwargs = {**inputs, "max_new_tokens": max_new_tokens, "eos_token_id": stop_token_ids(tokenizer),
              "pad_token_id": tokenizer.pad_token_id, "suppress_tokens": suppressed_ids(tokenizer),
              "do_sample": temperature > 0}
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


@torch.no_grad()
def generate_reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 256, temperature: float = 0.0,
                   top_p: float = 0.9) -> dict:
    """One reply: {"reply", "new_tokens", "stopped"} (stopped: it ended with the end-of-turn token)."""
    kwargs = _generation_kwargs(model, tokenizer, messages, max_new_tokens, temperature, top_p)
    # Layers compiled for training (torch_compile) run eagerly here: decoding with a key-value cache would
    # compile them again for every layer's cache, and PyTorch would give up after its recompile limit.
    with torch.compiler.set_stance("force_eager"):
        output = model.generate(**kwargs)
    new = output[0, kwargs["input_ids"].shape[1]:].tolist()
    stops = set(kwargs["eos_token_id"])
    stopped = bool(new) and new[-1] in stops
    return {"reply": tokenizer.decode(new, skip_special_tokens=True).strip(), "new_tokens": len(new),
            "stopped": stopped}


def stream_reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 256, temperature: float = 0.7,
                 top_p: float = 0.9) -> Iterator[str]:
    """The reply to the conversation so far, yielded piece by piece as tokens are generated."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = {**_generation_kwargs(model, tokenizer, messages, max_new_tokens, temperature, top_p),
              "streamer": streamer}
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with torch.no_grad():
                model.generate(**kwargs)
        except BaseException as error:  # surfaced in the caller's thread below
            failure.append(error)
            streamer.end()

    thread = Thread(target=work, daemon=True)
    thread.start()
    for piece in streamer:
        if piece:
            yield piece
    thread.join()
    if failure:
        raise failure[0]


def chat_loop(model, tokenizer, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, max_new_tokens: int = 256,
              temperature: float = 0.7, system: str | None = None) -> int:
    """Read a message per line, stream the reply; /reset forgets the conversation, /exit or EOF ends.

    Returns the number of replies given.
    """
    base = [{"role": "system", "content": system}] if system else []
    history = list(base)
    interactive = stdin.isatty()
    replies = 0
    stdout.write("Type a message and press Enter; /reset starts over, /exit (or Ctrl-D) quits.\n")
    while True:
        if interactive:
            stdout.write("you> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            break
        message = line.strip()
        if not message:
            continue
        if message in ("/exit", "/quit"):
            break
        if message == "/reset":
            history = list(base)
            stdout.write("(conversation cleared)\n")
            continue
        history.append({"role": "user", "content": message})
        stdout.write("assistant> ")
        stdout.flush()
        pieces = []
        for piece in stream_reply(model, tokenizer, history, max_new_tokens, temperature):
            pieces.append(piece)
            stdout.write(piece)
            stdout.flush()
        stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(pieces).strip()})
        replies += 1
    stdout.flush()
    return replies


def chat_command(path: str, use: str = "auto", max_new_tokens: int = 256, temperature: float = 0.7,
                 system: str | None = None, threads: int | None = None, trust_remote_code: bool = False) -> None:
    """`tunelab chat`: load on CPU, then chat on the terminal."""
    if threads:
        torch.set_num_threads(threads)
    model, tokenizer, what = load_chat_model(path, use, trust_remote_code=trust_remote_code)
    say(f"chatting with the {what} (CPU, {torch.get_num_threads()} threads)", stream=sys.stderr)
    chat_loop(model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, system=system)
