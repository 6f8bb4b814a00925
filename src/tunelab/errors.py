"""What ends a tunelab command, each on one line with a documented exit status:

2  a setting, data, file or disk problem the message names (TunelabError), or any other error
   (its type and message; `--debug` shows the traceback);
3  interrupted by a signal; the work done so far (checkpoint, finished stages) is kept (TrainingInterrupted);
4  training diverged (a non-finite loss or gradient); no result was written (TrainingDiverged);
130  a second Ctrl-C.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from tunelab.console import is_main_process, say
from tunelab.secrets import redact

INTERRUPTED_EXIT_CODE = 3
DIVERGED_EXIT_CODE = 4


class TunelabError(Exception):
    """A user-facing error. The CLI prints its message on one line, without a traceback."""

    exit_code = 2


class TrainingInterrupted(TunelabError):
    """Training stopped on a signal after saving a checkpoint; the CLI exits with status 3."""

    exit_code = INTERRUPTED_EXIT_CODE


class TrainingDiverged(TunelabError):
    """The loss or the gradients stopped being finite; the CLI exits with status 4."""

    exit_code = DIVERGED_EXIT_CODE


@contextmanager
def exit_on_error(debug: bool = False):
    try:
        yield
    except TunelabError as error:
        if debug and not isinstance(error, TrainingInterrupted):
            raise
        if isinstance(error, TrainingInterrupted):
            say(str(error), stream=sys.stderr)
        elif is_main_process():
            print(f"tunelab: error: {redact(str(error))}", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.unraisablehook = one_line_unraisable
        print("tunelab: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    except Exception as error:  # anything else still ends on one line; --debug shows where it came from
        if debug:
            raise
        print(f"tunelab: error: {describe(error)} (run again with --debug for the traceback)", file=sys.stderr,
              flush=True)
        sys.exit(2)


def one_line_unraisable(unraisable) -> None:
    """After an interrupt: an error Python could not raise (the `__del__` of an object the interrupt left
    half-built, such as a progress bar) on one line, without a traceback."""
    where = getattr(unraisable.object, "__qualname__", type(unraisable.object).__name__)
    print(f"tunelab: ignored after the interrupt: {unraisable.exc_type.__name__} in {where}: "
          f"{unraisable.exc_value}", file=sys.stderr, flush=True)


def describe(error: BaseException) -> str:
    """An unexpected error on one line: its type and the first line of its message, with a known fix when there is one."""
    message = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    for needle, fix in KNOWN_FIXES:
        if needle in str(error):
            return f"{message[:300]}: {fix}"
    return f"{type(error).__name__}: {message[:300]}"


# Third-party messages a user can act on, and the fix to print with them.
KNOWN_FIXES = (
    ("trust_remote_code", "this model folder ships its own code; pass --trust_remote_code true only if you trust it"),
    ("No space left on device", "free disk space or choose another --output_dir"),
    ("Read-only file system", "choose a writable --output_dir"),
    ("incomplete metadata, file not fully covered", "the model's weights file is truncated: download or copy it again"),
)
