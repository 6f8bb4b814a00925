"""The run directory: atomic writes, one run at a time, never clobbering a finished run,
and resuming only from checkpoints that were completely written."""

from __future__ import annotations

import atexit
import csv
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from accelerate import PartialState
from transformers import TrainerCallback

from tunelab.console import say
from tunelab.errors import TunelabError

FINISHED_MARKER = "run_info.json"
LOCK_FILE = ".lock"
CHECKPOINT_COMPLETE = "tunelab_checkpoint_complete.json"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """The one way tunelab writes a result file: `write(temporary_path)` beside `path`, flushed to disk,
    then renamed into place, so readers see the old file or the whole new one. A failed write leaves
    no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        temporary.chmod(0o644)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def prepare_run_dir(run_dir: Path, overwrite: bool) -> bool:
    """Refuse a finished run unless `overwrite` (then empty it). Returns True when resuming.

    Call with the run's lock held, so an --overwrite never deletes a directory another run uses.
    """
    finished = (run_dir / FINISHED_MARKER).exists()
    if finished and not overwrite:
        raise TunelabError(f"{run_dir} holds a finished run: choose another --run_name or --output_dir, "
                           "or pass --overwrite to replace it")
    run_dir.mkdir(parents=True, exist_ok=True)
    for child in run_dir.iterdir():
        if finished and _is_run_content(child):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    return any(_is_run_content(child) for child in run_dir.iterdir())


def _is_run_content(path: Path) -> bool:
    """What a run wrote, as opposed to the lock and the launchers' logs (Slurm job logs, logs/)."""
    is_job_log = path.name.startswith("slurm-") and path.name.endswith(".log")
    return path.name not in (LOCK_FILE, "logs") and not is_job_log


# ---------------------------------------------------------------------------- one run at a time

def acquire_run_lock(run_dir: Path) -> None:
    """Create RUN_DIR/.lock (host, pid, Slurm job), released at exit; a stale lock is replaced.

    A lock is stale when its process is gone (same host) or when it belongs to this same Slurm
    job (a requeued job restarting, possibly on another node).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_FILE
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
             "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if not _is_stale(holder):
                raise TunelabError(
                    f"{run_dir} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                    f"(since {holder.get('started')}): wait for that run to finish, choose another --run_name, "
                    f"or delete {lock} if that process is gone") from None
            say(f"removing stale lock {lock} (pid {holder.get('pid')} on {holder.get('host')})",
                every_process=True, stream=sys.stderr)
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(owner, handle)
        atexit.register(release_run_lock, run_dir)
        return
    raise TunelabError(f"could not lock {run_dir}: another run keeps taking {lock}")


def release_run_lock(run_dir: Path) -> None:
    lock = run_dir / LOCK_FILE
    if _read_lock(lock).get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


def _read_lock(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


def _is_stale(holder: dict) -> bool:
    if not holder:
        return True  # unreadable: its writer died before finishing it
    job = os.environ.get("SLURM_JOB_ID")
    if job is not None and holder.get("slurm_job_id") == job:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError):
        return False
    return False


# ---------------------------------------------------------------------------- checkpoints

class MarkCheckpointComplete(TrainerCallback):
    """After every rank has written a checkpoint, add a marker: only marked checkpoints are resumed."""

    def on_save(self, args, state, control, **kwargs):
        process = PartialState()
        process.wait_for_everyone()
        if process.is_main_process:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            atomic_write_json(folder / CHECKPOINT_COMPLETE, {"global_step": state.global_step})
        process.wait_for_everyone()
        return control


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint with its completion marker; incomplete ones are skipped with a warning."""
    if not folder.is_dir():
        return None
    numbered = sorted(((int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name))),
                      reverse=True)
    for _, checkpoint in numbered:
        if (checkpoint / CHECKPOINT_COMPLETE).exists():
            return str(checkpoint)
        say(f"warning: skipping {checkpoint}: it was not completely written (the run stopped while saving it)",
            stream=sys.stderr)
    return None


def record_start(progress_path: Path) -> None:
    """Put the run's start time (ISO 8601, UTC) in progress.json; a resumed run keeps its first start."""
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else {"timings_s": {}}
    if "started" not in progress:
        progress["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(progress_path, progress)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a malformed line is reported with its file and line number."""
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise TunelabError(f"{path}:{number}: not valid JSON ({error.msg}): fix or remove that line") from None
                if not isinstance(row, dict):
                    raise TunelabError(f"{path}:{number}: expected a JSON object per line")
                rows.append(row)
    except UnicodeDecodeError as error:
        raise TunelabError(f"{path} is not valid UTF-8 (byte {error.start}): re-encode the file as UTF-8") from None
    return rows


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """JSON lines, written atomically."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
