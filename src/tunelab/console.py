"""What tunelab prints: its own `[tunelab]` lines, once per run however many processes it has."""

from __future__ import annotations

import sys

from accelerate import PartialState


def say(message: str, *, every_process: bool = False, stream=None) -> None:
    """Print a `[tunelab]` line on the main process only (all of them with `every_process`)."""
    if every_process or PartialState().is_main_process:
        print(f"[tunelab] {message}", file=stream or sys.stdout, flush=True)
