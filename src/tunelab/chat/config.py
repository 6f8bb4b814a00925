"""The chat recipe: SFT settings for conversations from OASST1-style message trees."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.chat.data import GENERAL_PROMPTS
from tunelab.chat.format import TEMPLATE_CHOICES
from tunelab.config import Recipe, require


@dataclass
class ChatRecipe(Recipe):
    """A chat SFT recipe: conversations from OASST1-style message trees, assistant-only loss."""

    dataset: str = "starter"  # "starter", a folder of <split>.jsonl message rows, or a Hub id (OpenAssistant/oasst1)
    train_split: str = "train"
    eval_split: str = "validation"  # held-out conversations for perplexity
    language: str | None = "en"  # keep messages in this language only; none for every language
    train_size: int | None = None  # at most this many training conversations (none: all)
    eval_size: int | None = None  # at most this many held-out conversations (none: all)
    chat_template: str = "auto"  # auto (the model's own, else tunelab's), tunelab, model, or a .jinja file
    max_length: int = 1024  # tokens per conversation; longer ones are cut at the end
    save_strategy: str = "steps"
    save_steps: int = 10
    eval_steps: int | None = None  # validation loss during training every this many steps (none: only before/after)
    eval_prompts: list[str] = field(default_factory=lambda: list(GENERAL_PROMPTS))
    max_new_tokens: int = 128  # per reply to an eval prompt (greedy)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.chat_template in TEMPLATE_CHOICES or self.chat_template.endswith((".jinja", ".j2")),
                 f"chat_template must be one of {', '.join(TEMPLATE_CHOICES)} or a .jinja file, "
                 f"not {self.chat_template!r}")
        require(self.max_length >= 32, f"max_length must be at least 32, not {self.max_length}")
        require(self.save_steps >= 1, f"save_steps must be at least 1, not {self.save_steps}")
        require(self.eval_steps is None or self.eval_steps >= 1,
                 f"eval_steps must be at least 1 (or none), not {self.eval_steps}")
        require(self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        for name in ("train_size", "eval_size"):
            value = getattr(self, name)
            require(value is None or value >= 1, f"{name} must be at least 1 (or none for all), not {value}")
