"""Stop cleanly on SIGTERM, SIGINT or SIGUSR1: finish the step, save a checkpoint, exit 3.

Slurm sends SIGUSR1 before a time limit (`--signal=B:USR1@300`) and SIGTERM on preemption;
a user presses Ctrl-C. The signal only sets a flag; at the end of the current optimizer step
every rank learns whether any rank was signalled (one tiny all-reduce), so all ranks save the
same step and stop together. Running the same command again resumes from that checkpoint.
A second Ctrl-C aborts at once.

Outside training (loading, evaluation, the report), `interruptible` turns SIGTERM and SIGUSR1
into TrainingInterrupted, as Ctrl-C already is a KeyboardInterrupt: the run directory is
unlocked, the finished stages are kept and the command ends on one line with status 3.
An exception raised at an arbitrary point can leave an object half-built (a progress bar whose
`__init__` was cut short); its destructor then fails, and after an interrupt that is reported on one
line, not as a traceback (tunelab.errors.one_line_unraisable).
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from tunelab.errors import TrainingInterrupted, one_line_unraisable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopOnSignal(TrainerCallback):
    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.stopped_at_step: int | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_rank_signalled(args.device):
            self.signal_name = self.signal_name or "a signal on another rank"
            self.stopped_at_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    def _any_rank_signalled(self, device: torch.device) -> bool:
        signalled = self.signal_name is not None
        if not (dist.is_available() and dist.is_initialized()):
            return signalled
        flag = torch.tensor([int(signalled)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def restore(self) -> None:
        """Put back the signal handlers that were there before training."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextmanager
def interruptible():
    """SIGTERM and SIGUSR1 raise TrainingInterrupted while inside (StopOnSignal takes over during training)."""
    def interrupt(signum, frame):
        sys.unraisablehook = one_line_unraisable
        raise TrainingInterrupted(f"Interrupted by {signal.Signals(signum).name} outside training: the finished "
                                  "stages and checkpoints are kept; run the same command again to continue")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
