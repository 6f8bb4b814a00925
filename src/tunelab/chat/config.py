"""The chat recipe: SFT settings for conversations from OASST1-style message trees."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.chat.format import TEMPLATE_CHOICES
from tunelab.config import Recipe, failed

# What both models answer for the report unless a recipe names its own eval_prompts.
GENERAL_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain what a black hole is in two sentences.",
    "Give me three tips for learning a new language.",
    "How do I reverse a list in Python?",
    "What should I consider when adopting a dog?",
]


@dataclass
class ChatRecipe(Recipe):
    """A chat SFT recipe: conversations (OASST1-style message trees or one conversation a row), assistant-only
    loss."""

    dataset: str = field(default="starter", metadata={
        "group": "data", "help": "\"starter\", a .jsonl file (a tenth of its conversations held out), a folder of "
                                 "<split>.jsonl files, or a Hub id (OpenAssistant/oasst1); rows are OASST1 messages "
                                 "or one conversation each as messages: [{role, content}, ...]"})
    train_split: str = field(default="train", metadata={"group": "data", "help": "the split to train on"})
    eval_split: str = field(default="validation", metadata={
        "group": "data", "help": "held-out conversations for perplexity (a single file holds its own out)"})
    language: str | None = field(default="en", metadata={
        "group": "data", "help": "keep messages in this language only; none for every language"})
    train_size: int | None = field(default=None, metadata={
        "group": "data", "help": "at most this many training conversations (none: all)"})
    eval_size: int | None = field(default=None, metadata={
        "group": "data", "help": "at most this many held-out conversations (none: all)"})
    chat_template: str = field(default="auto", metadata={
        "group": "data", "help": "auto (the model's own, else tunelab's), tunelab, model, or a .jinja file"})
    max_length: int = field(default=1024, metadata={
        "group": "data", "help": "tokens per conversation; longer ones are cut at the end"})
    save_strategy: str = field(default="steps", metadata={
        "group": "optimisation", "help": "when to save a checkpoint: steps, epoch or no"})
    save_steps: int = field(default=10, metadata={
        "group": "optimisation", "help": "save a checkpoint every this many steps (save_strategy steps)"})
    eval_steps: int | None = field(default=None, metadata={
        "group": "optimisation",
        "help": "validation loss during training every this many steps (none: only before/after)"})
    eval_prompts: list[str] = field(default_factory=lambda: list(GENERAL_PROMPTS), metadata={
        "group": "run", "help": "prompts both models answer for the report"})
    max_new_tokens: int = field(default=128, metadata={
        "group": "run", "help": "per reply to an eval prompt (greedy)"})

    def problems(self) -> list[str]:
        checks = [
            (self.chat_template in TEMPLATE_CHOICES or self.chat_template.endswith((".jinja", ".j2")),
             f"chat_template must be one of {', '.join(TEMPLATE_CHOICES)} or a .jinja file, "
             f"not {self.chat_template!r}"),
            (self.max_length >= 32, f"max_length must be at least 32, not {self.max_length}"),
            (self.save_steps >= 1, f"save_steps must be at least 1, not {self.save_steps}"),
            (self.eval_steps is None or self.eval_steps >= 1,
             f"eval_steps must be at least 1 (or none), not {self.eval_steps}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, not {self.max_new_tokens}"),
            *((getattr(self, name) is None or getattr(self, name) >= 1,
               f"{name} must be at least 1 (or none for all), not {getattr(self, name)}")
              for name in ("train_size", "eval_size")),
        ]
        return super().problems() + failed(checks)
