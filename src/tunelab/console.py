"""What tunelab prints: its own `[tunelab]` lines, once per run however many processes it has, and
none of the third-party notices a user cannot act on (shown again with `--debug`).

This module imports no heavy library, so that an entry point can call `quiet_third_party` before
torch, transformers, bitsandbytes or DeepSpeed are imported.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from tunelab.secrets import redact

# (category, module the warning is raised from, message): notices about how libraries call each other.
QUIET_WARNINGS = (
    # The Trainer itself still calls the old gradient-checkpointing names.
    (FutureWarning, r"transformers\.", r"`(gradient_checkpointing_enable|is_gradient_checkpointing)` is deprecated"),
    (UserWarning, r"torch\.", r"torch\.utils\.checkpoint: the use_reentrant parameter should be passed explicitly"),
    (DeprecationWarning, r"torch\.jit\.", r"`torch\.jit\.\w+` is (deprecated|not supported)"),
    (FutureWarning, r"torch\.jit\.", r"`optimize` is deprecated and has no effect"),
    # Recipes written for GPUs use paged AdamW; on a CPU bitsandbytes falls back to the plain one.
    (UserWarning, r"bitsandbytes\.", r"Paged optimizers are not supported on CPU"),
    # A recipe that trains lm_head saves it with the adapter; PEFT announces that it does.
    (UserWarning, r"peft\.", r"Setting `save_embedding_layers` to `True` as embedding layers found"),
    # A test split of one label (or predictions of labels it lacks): the report says what its figures mean.
    (UserWarning, r"sklearn\.", r"A single label was found in 'y_true' and 'y_pred'"),
    (UserWarning, r"sklearn\.", r"y_pred contains classes not in y_true"),
    (UserWarning, r"sklearn\.", r"(Precision|Recall|F-score) is ill-defined"),
    # A training log of a single point draws a curve with equal axis limits.
    (UserWarning, r"matplotlib\.", r"Attempting to set identical (low and high|left == right|bottom == top)"),
)

# (logger, message start): log lines at import or set-up time.
QUIET_LOG_LINES = (
    # The `kernels` package would fetch this kernel from the Hub at run time; it only serves
    # bitsandbytes' packed CPU inference path, which tunelab turns off (models.keep_4bit_weights_unpacked).
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("DeepSpeed", "Setting accelerator to CPU"),
)


class DropNewHeadReport(logging.Filter):
    """Drops transformers' load report when it lists only what `--head classifier` means to do: the causal LM's
    lm_head left out, the new classification head (score) made. Any other missing or unexpected weight shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if "LOAD REPORT" not in message:
            return True
        cells = [[cell.strip() for cell in line.split("|")[:2]] for line in message.splitlines() if "|" in line]
        rows = [(key, status) for key, status in cells if key != "Key" and key.strip("-+")]
        return not rows or not all((key.startswith("lm_head.") and status == "UNEXPECTED")
                                   or (key.startswith("score.") and status == "MISSING") for key, status in rows)


class DropMessages(logging.Filter):
    """Drops the records whose message starts with one of `starts`."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_third_party(debug: bool = False) -> None:
    """Filter QUIET_WARNINGS and QUIET_LOG_LINES, by module and message; with `debug`, filter nothing."""
    if debug:
        return
    for category, module, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in {name for name, _ in QUIET_LOG_LINES}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(tuple(start for n, start in QUIET_LOG_LINES if n == name)))
    loader = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(f, DropNewHeadReport) for f in loader.filters):
        loader.addFilter(DropNewHeadReport())


def is_main_process() -> bool:
    """Rank 0 of a launch (torchrun, accelerate and the Slurm templates set RANK), or a process started alone.

    Read from the environment so that it also answers before accelerate is set up (while parsing settings).
    """
    return os.environ.get("RANK", "0") == "0"


def say(message: str, *, every_process: bool = False, stream=None) -> None:
    """Print a `[tunelab]` line on the main process only (all of them with `every_process`), to stdout or `stream`."""
    if every_process or is_main_process():  # redacted: a path may hold a token, and W&B records the terminal
        print(f"[tunelab] {redact(message)}", file=stream or sys.stdout, flush=True)
