"""Chat formatting for training: the chat template, the end-of-turn token, the pad token, loss masks.

- Template: a model's own chat template is used when it has one (SmolLM2-Instruct, Qwen, Llama-3
  Instruct ...). A model without one (phi-2, GPT-2) gets `TUNELAB_CHAT_TEMPLATE`, a plain
  "### User:" / "### Assistant:" layout whose assistant turns end with the tokenizer's EOS
  token. A recipe can also force either (`chat_template: tunelab | model`) or give a .jinja file.
- End-of-turn token: the special token that closes an assistant turn under the template, found
  by rendering a probe conversation. Generation stops on it, and it is part of the loss, so the
  model learns to stop.
- Pad token: never the end-of-turn token. The tokenizer's own pad token is kept when it differs,
  else its unknown token is used when it differs, else a new `<|pad|>` special token is added
  (the model's embeddings grow by one row when they have no spare row; padding is masked out
  everywhere, so the row is never trained or attended to).
- Loss masks: only assistant turns are trained. For each assistant turn the conversation is
  rendered up to that turn with the generation prompt, and up to and including that turn; the
  characters between the two renderings (trailing whitespace trimmed) are the turn's reply and
  its end-of-turn token, and the tokens starting inside them form the mask. This works for any
  prefix-preserving template, with or without `{% generation %}` markers (tunelab's template has
  them, so transformers' `return_assistant_tokens_mask` gives the same mask).
"""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError

TEMPLATE_CHOICES = ("auto", "tunelab", "model")
PAD_TOKEN = "<|pad|>"
TUNELAB_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ '### User:\\n' + message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '### Assistant:\\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\\n\\n' }}"
    "{%- else -%}"
    "{{ raise_exception('unknown role ' + message['role'] + ': use system, user or assistant') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '### Assistant:\\n' }}{%- endif -%}"
)
PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
         {"role": "user", "content": "Bye"}]


def prepare_chat_tokenizer(tokenizer, chat_template: str = "auto") -> dict:
    """Set the tokenizer's chat template and a pad token distinct from the end-of-turn token.

    Returns what was chosen: {"chat_template": "model" | "tunelab" | PATH, "end_of_turn",
    "end_of_turn_id", "pad_token", "pad_token_id", "pad_token_added"}.
    """
    source = _set_template(tokenizer, chat_template)
    end_of_turn = end_of_turn_id(tokenizer)
    pad_added = _set_pad_token(tokenizer, end_of_turn)
    return {
        "chat_template": source,
        "end_of_turn": tokenizer.convert_ids_to_tokens(end_of_turn),
        "end_of_turn_id": end_of_turn,
        "pad_token": tokenizer.pad_token,
        "pad_token_id": tokenizer.pad_token_id,
        "pad_token_added": pad_added,
    }


def _set_template(tokenizer, choice: str) -> str:
    own = tokenizer.chat_template
    if isinstance(own, dict):
        own = own.get("default")
    if choice == "auto":
        choice = "model" if own else "tunelab"
    if choice == "model":
        if not own:
            raise TunelabError("chat_template is 'model' but this model's tokenizer has no chat template: "
                               "use --chat_template tunelab (or auto)")
        tokenizer.chat_template = own
        return "model"
    if choice == "tunelab":
        tokenizer.chat_template = TUNELAB_CHAT_TEMPLATE
        return "tunelab"
    path = Path(choice).expanduser()
    if not path.is_file():
        raise TunelabError(f"chat_template {choice!r} is neither {', '.join(TEMPLATE_CHOICES)} nor an existing "
                           "Jinja file: check --chat_template")
    tokenizer.chat_template = path.read_text(encoding="utf-8")
    return str(path)


def _set_pad_token(tokenizer, end_of_turn: int) -> bool:
    """A pad token that is not the end-of-turn token; True when a new token had to be added."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != end_of_turn:
        return False
    if tokenizer.unk_token is not None and tokenizer.unk_token_id not in (end_of_turn, None):
        tokenizer.pad_token = tokenizer.unk_token
        return False
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return True


def end_of_turn_id(tokenizer) -> int:
    """The special token that closes an assistant turn under the tokenizer's chat template."""
    text, spans = assistant_spans(tokenizer, PROBE)
    start, end = spans[0]
    ids = tokenizer(text[start:end], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    if not ids or ids[-1] not in special:
        raise TunelabError(
            "the chat template does not close an assistant turn with a special end-of-turn token "
            f"(a reply renders as {text[start:end]!r}), so the model could not learn to stop: "
            "use --chat_template tunelab")
    return ids[-1]


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant reply (with its end-of-turn token)."""
    text = render(tokenizer, messages)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:index], add_generation_prompt=True)
        through = render(tokenizer, messages[:index + 1])
        if not (text.startswith(through) and through.startswith(before)):
            raise TunelabError(
                "the chat template is not prefix-preserving (a conversation does not start with the rendering "
                "of its first turns), so assistant turns cannot be located for the loss mask: "
                "use --chat_template tunelab or a template file")
        spans.append((len(before), max(len(before), len(through.rstrip()))))
    return text, spans


def tokenize_chat(tokenizer, messages: list[dict], max_length: int | None = None) -> dict:
    """input_ids and assistant_masks (1 on assistant reply tokens and their end-of-turn token)."""
    text, spans = assistant_spans(tokenizer, messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    masks = [int(any(start <= begin < end for start, end in spans) and stop > begin)
             for begin, stop in encoding["offset_mapping"]]
    input_ids = list(encoding["input_ids"])
    if max_length is not None:
        input_ids, masks = input_ids[:max_length], masks[:max_length]
    return {"input_ids": input_ids, "assistant_masks": masks}


def labels_from_masks(input_ids: list[int], masks: list[int]) -> list[int]:
    """Token ids where the mask is 1, -100 (ignored by the loss) elsewhere."""
    return [token if keep else -100 for token, keep in zip(input_ids, masks, strict=True)]


def generation_prompt(tokenizer, messages: list[dict]) -> str:
    """The conversation so far, ready for the assistant's next reply."""
    return render(tokenizer, messages, add_generation_prompt=True)
