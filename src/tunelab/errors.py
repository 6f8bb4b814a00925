"""What ends a tunelab command: a user-facing error (exit 2) or an interruption with a saved checkpoint (exit 3)."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from tunelab.console import say

INTERRUPTED_EXIT_CODE = 3


class TunelabError(Exception):
    """A user-facing error. The CLI prints its message on one line, without a traceback."""


class TrainingInterrupted(TunelabError):
    """Training stopped on a signal after saving a checkpoint; the CLI exits with status 3."""


@contextmanager
def exit_on_error(debug: bool = False):
    try:
        yield
    except TrainingInterrupted as interrupted:
        say(str(interrupted), stream=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)
    except TunelabError as error:
        if debug:
            raise
        print(f"tunelab: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("tunelab: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
