"""tunelab chat demo for Hugging Face Spaces: a merged chat model on CPU, replies streamed token by token.

The model is a plain model folder written by `tunelab merge RUN_DIR` (weights, tokenizer with
its chat template, and a generation config that stops on the end-of-turn token):

    TUNELAB_CHAT_MODEL   a folder or a Hub model id (default: ./model next to this file)
    TUNELAB_MAX_NEW_TOKENS, TUNELAB_TEMPERATURE, TUNELAB_THREADS   optional defaults and limits
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT   where to listen (Spaces sets them; default 127.0.0.1:7860)

Self-contained on purpose (torch, transformers, gradio only): a Space does not install tunelab.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from threading import Thread

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the server
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer  # noqa: E402

HERE = Path(__file__).resolve().parent
MODEL = os.environ.get("TUNELAB_CHAT_MODEL") or str(HERE / "model")
MAX_NEW_TOKENS = int(os.environ.get("TUNELAB_MAX_NEW_TOKENS", "256"))
TEMPERATURE = float(os.environ.get("TUNELAB_TEMPERATURE", "0.7"))
TITLE = "tunelab chat"
# System fonts only: the page then loads nothing from outside the Space (no web fonts).
THEME = gr.themes.Default(font=[gr.themes.Font("system-ui"), "sans-serif"],
                          font_mono=[gr.themes.Font("ui-monospace"), "monospace"])


def load(model_path: str):
    if os.environ.get("TUNELAB_THREADS"):
        torch.set_num_threads(int(os.environ["TUNELAB_THREADS"]))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, use_safetensors=True)
    model.eval()
    if tokenizer.chat_template is None:
        raise SystemExit(f"{model_path} has no chat template: serve a folder written by `tunelab merge`")
    return tokenizer, model


TOKENIZER, CHAT_MODEL = load(MODEL)


def _text(content) -> str:
    """A message's text, whatever shape Gradio gives it (a string, or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return "".join(_text(part) for part in content)
    return "" if content is None else str(content)


def to_messages(message, history) -> list[dict]:
    messages = []
    for turn in history or []:
        if isinstance(turn, dict):
            role = turn.get("role")
            if role in ("user", "assistant", "system"):
                messages.append({"role": role, "content": _text(turn.get("content"))})
        elif isinstance(turn, (list, tuple)) and len(turn) == 2:  # [user, assistant] pairs
            messages += [{"role": "user", "content": _text(turn[0])}, {"role": "assistant", "content": _text(turn[1])}]
    messages.append({"role": "user", "content": _text(message)})
    return messages


def respond(message, history, temperature: float = TEMPERATURE, max_new_tokens: int = MAX_NEW_TOKENS):
    """Stream the reply: each yield is the reply so far."""
    inputs = TOKENIZER.apply_chat_template(to_messages(message, history), add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    streamer = TextIteratorStreamer(TOKENIZER, skip_prompt=True, skip_special_tokens=True)
    sampling = {"do_sample": True, "temperature": float(temperature), "top_p": 0.9} if temperature > 0 else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    kwargs = {**inputs, "streamer": streamer, "max_new_tokens": int(max_new_tokens), **sampling}

    def work():
        try:
            with torch.no_grad():
                CHAT_MODEL.generate(**kwargs)
        finally:
            streamer.end()

    Thread(target=work, daemon=True).start()
    reply = ""
    for piece in streamer:
        reply += piece
        if piece:
            yield reply
    if not reply:
        yield "(no reply)"


def describe(model_path: str) -> str:
    merged = Path(model_path) / "tunelab_merged.json"
    try:
        base = json.loads(merged.read_text(encoding="utf-8"))["base_model"]
        return f"{base}, fine-tuned with tunelab (LoRA merged), on CPU. Replies stream as they are generated."
    except (OSError, ValueError, KeyError):
        return f"{model_path}, on CPU. Replies stream as they are generated."


def build_demo() -> gr.Blocks:
    return gr.ChatInterface(
        respond,
        title=TITLE,
        description=describe(MODEL),
        additional_inputs=[
            gr.Slider(0.0, 1.5, value=TEMPERATURE, step=0.05, label="temperature (0 = greedy)"),
            gr.Slider(1, max(MAX_NEW_TOKENS, 1), value=MAX_NEW_TOKENS, step=1, label="max new tokens"),
        ],
        concurrency_limit=1,
    )


demo = build_demo()

if __name__ == "__main__":
    demo.queue(max_size=16).launch(theme=THEME, ssr_mode=False, show_error=True)
