"""The run directory: atomic writes, one run at a time, never clobbering a finished run,
resuming only with the settings the run started with and only from checkpoints that were
completely written and still read back, and disk problems named on one line."""

from __future__ import annotations

import atexit
import csv
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml
from accelerate import PartialState
from safetensors import safe_open
from transformers import TrainerCallback

from tunelab.console import say
from tunelab.errors import TunelabError
from tunelab.secrets import redact

RUN_MARKER = "tunelab_run.json"  # written into every run directory: only folders holding it are replaced or resumed
FINISHED_MARKER = "run_info.json"
REPORT = Path("report") / "report.md"  # written after run_info.json: with it, the run is finished
LOCK_FILE = ".lock"
REPLACED = ".replaced"  # an earlier run set aside by --overwrite until the new one starts training
CHECKPOINT_COMPLETE = "tunelab_checkpoint_complete.json"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
MODELS = ("baseline", "finetuned")  # what every run evaluates, each in eval/<split>/<model>/


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
    """Text written atomically, with every secret value redacted (tunelab.secrets)."""
    atomic_write(path, lambda temporary: temporary.write_text(redact(text), encoding="utf-8"))


def atomic_write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path, expected: type, fix: str):
    """The JSON value in `path`, which must be an `expected` (dict or list); anything else is one line ending in `fix`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TunelabError(f"{path} could not be read as JSON ({error}): {fix}") from None
    if not isinstance(data, expected):
        raise TunelabError(f"{path} should hold a JSON {'object' if expected is dict else 'array'}: {fix}")
    return data


def prepare_run_dir(run_dir: Path, overwrite: bool, settings: dict, free_to_change: Iterable[str] = ()) -> bool:
    """Refuse a folder tunelab did not make, a finished run, or an unfinished one whose config.yaml differs from
    `settings` in anything but `free_to_change`, unless `overwrite`: then set the old run aside
    (`restore_replaced_run` puts it back, `discard_replaced_run` deletes it). Returns True when resuming.

    Call with the run's lock held, so an --overwrite never moves a directory another run uses.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    restore_replaced_run(run_dir)  # a start killed before it trained: the run it replaced is still the run
    refuse_unless_made_by_tunelab(run_dir)
    finished = is_finished_run(run_dir)
    changed = changed_settings(run_dir / "config.yaml", redact(settings), free_to_change)
    if (finished or changed) and not overwrite:
        if finished:
            raise TunelabError(f"{run_dir} holds a finished run: choose another --run_name or --output_dir, "
                               "or pass --overwrite to replace it")
        raise TunelabError(f"{run_dir} holds an unfinished run started with other settings "
                           f"({', '.join(changed)}), which resuming would mix: pass --overwrite to start it again "
                           "with the new settings, or choose a new --run_name")
    if finished or changed:  # an unfinished run with the same settings resumes, as the interrupt advised
        set_aside = run_dir / REPLACED
        set_aside.mkdir()
        for child in run_content(run_dir):
            os.replace(child, set_aside / child.name)
    resuming = any(path.name != RUN_MARKER for path in run_content(run_dir))
    if not (run_dir / RUN_MARKER).exists():
        atomic_write_json(run_dir / RUN_MARKER, {"written_by": "tunelab", "what": "a run directory"})
    return resuming


def made_by_tunelab(folder: Path) -> bool:
    """Whether `folder` holds the marker tunelab writes into every run directory it may later resume or replace."""
    return (folder / RUN_MARKER).is_file()


def refuse_unless_made_by_tunelab(run_dir: Path) -> None:
    """A folder with files but no run marker is someone else's: never resumed into, never replaced."""
    content = run_content(run_dir)
    if content and not made_by_tunelab(run_dir):
        names = ", ".join(sorted(path.name for path in content)[:3])
        raise TunelabError(f"{run_dir} holds files tunelab did not write ({names}{', ...' if len(content) > 3 else ''})"
                           ", which it neither resumes into nor replaces: choose another --run_name or --output_dir")


def is_finished_run(run_dir: Path) -> bool:
    """A run whose report stage completed: run_info.json, then the report, both written."""
    return made_by_tunelab(run_dir) and (run_dir / FINISHED_MARKER).is_file() and (run_dir / REPORT).is_file()


def report_missing(run_dir: Path) -> bool:
    """A run stopped between run_info.json and its report: only the report is left to write."""
    return made_by_tunelab(run_dir) and (run_dir / FINISHED_MARKER).is_file() and not (run_dir / REPORT).is_file()


def changed_settings(config_path: Path, settings: dict, free_to_change: Iterable[str]) -> list[str]:
    """'name: old -> new' for each setting in both config.yaml and `settings` that differs and may not change."""
    if not config_path.exists():
        return []
    try:
        saved = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise TunelabError(f"cannot read {config_path} ({error}): fix it, or pass --overwrite to start again") from None
    return [f"{name}: {saved[name]!r} -> {value!r}" for name, value in settings.items()
            if name in saved and saved[name] != value and name not in free_to_change]


def run_content(run_dir: Path) -> list[Path]:
    """What a run wrote, as opposed to the lock, the set-aside run and the launchers' logs (Slurm job logs, logs/)."""
    def is_job_log(path: Path) -> bool:
        return path.name.startswith("slurm-") and path.name.endswith(".log")

    return [path for path in run_dir.iterdir()
            if path.name not in (LOCK_FILE, REPLACED, "logs") and not is_job_log(path)]


def restore_replaced_run(run_dir: Path) -> None:
    """Put back the run that --overwrite set aside, removing what the new run wrote meanwhile."""
    set_aside = run_dir / REPLACED
    if not set_aside.is_dir():
        return
    refuse_foreign_set_aside(set_aside)
    for child in run_content(run_dir):
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    for child in set_aside.iterdir():
        os.replace(child, run_dir / child.name)
    set_aside.rmdir()
    say(f"the run that --overwrite was replacing is back in place in {run_dir}", stream=sys.stderr)


def discard_replaced_run(run_dir: Path) -> None:
    """Delete the run that --overwrite set aside: the new run has started training."""
    set_aside = run_dir / REPLACED
    if set_aside.is_dir():
        refuse_foreign_set_aside(set_aside)
        shutil.rmtree(set_aside)


def refuse_foreign_set_aside(set_aside: Path) -> None:
    if not made_by_tunelab(set_aside):
        raise TunelabError(f"{set_aside} was not made by tunelab's --overwrite (it holds no {RUN_MARKER}): "
                           "move it out of the run directory, then run the command again")


def replaced_run_notice(run_dir: Path) -> str | None:
    """Where the run an unfinished --overwrite set aside is, and how to get it back; None when there is none."""
    set_aside = Path(run_dir) / REPLACED
    if not set_aside.is_dir():
        return None
    return (f"{run_dir} is being replaced by --overwrite, which stopped before training: the earlier run is in "
            f"{set_aside}; run the same command without --overwrite to put it back, or with it to replace it")


# ---------------------------------------------------------------------------- disk space and permissions

def check_free_space(folder: Path, needed: int) -> None:
    """Refuse to start when `folder`'s disk cannot hold twice `needed` bytes (a checkpoint and the final adapter)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < 2 * needed:
        raise TunelabError(f"not enough disk space in {folder}: {_megabytes(free)} free, a checkpoint and the adapter "
                           f"need about {_megabytes(2 * needed)}: free space there or choose another --output_dir")


def explain_write_failure(error: BaseException, folder: Path, needed: int) -> None:
    """Raise a one-line TunelabError for a full disk or a read-only folder; other errors pass through.

    torch.save reports a full disk as a RuntimeError ('unexpected pos ...', 'file write failed'), safetensors
    as its own error ('No space left on device (os error 28)').
    """
    code = getattr(error, "errno", None)
    torch_write = isinstance(error, RuntimeError) and any(
        text in str(error) for text in ("unexpected pos", "file write failed", "PytorchStreamWriter failed"))
    full = (code in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error)
            or (torch_write and shutil.disk_usage(folder).free < needed))
    if full:
        free = shutil.disk_usage(folder).free
        raise TunelabError(f"the disk holding {folder} is full ({_megabytes(free)} free; a checkpoint needs about "
                           f"{_megabytes(needed)}): free space there or choose another --output_dir, then run the "
                           "same command again to resume") from None
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        raise TunelabError(f"cannot write to {getattr(error, 'filename', None) or folder} ({error.strerror}): "
                           "choose a writable --output_dir") from None


def writable_run_dir(run_dir: Path) -> None:
    """Create the run directory, or say on one line why it cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-")
        probe.close()
    except OSError as error:
        raise TunelabError(f"cannot write to {run_dir} ({error.strerror}): choose a writable --output_dir, or "
                           "free space there") from None


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


# ---------------------------------------------------------------------------- one run at a time

def acquire_run_lock(run_dir: Path) -> None:
    """Create RUN_DIR/.lock (host, pid, Slurm job), released at exit; a stale lock is replaced.

    A lock is stale when its process is gone (same host) or when it belongs to this same Slurm
    job (a requeued job restarting, possibly on another node).
    """
    writable_run_dir(run_dir)
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
    """The newest checkpoint that was completely written and still reads back (`checkpoint_damage`).

    An unmarked one is skipped with a warning; a marked one that is damaged is renamed
    checkpoint-N.damaged (kept for inspection, never resumed) with a warning.
    """
    if not folder.is_dir():
        return None
    numbered = sorted(((int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name))),
                      reverse=True)
    main_process = PartialState().is_main_process
    for _, checkpoint in numbered:
        if not (checkpoint / CHECKPOINT_COMPLETE).exists():
            if main_process:
                say(f"warning: skipping {checkpoint}: it was not completely written (the run stopped while saving it)",
                    stream=sys.stderr)
            continue
        damage = checkpoint_damage(checkpoint)
        if damage is None:
            return str(checkpoint)
        if main_process:
            checkpoint.rename(checkpoint.with_name(f"{checkpoint.name}.damaged"))
            say(f"warning: {checkpoint} is damaged ({damage}): set aside as {checkpoint.name}.damaged "
                "(delete it when done); resuming from the checkpoint before it", stream=sys.stderr)
    return None


def checkpoint_damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint folder, or None: trainer_state.json must parse, weights must be present,
    every safetensors file must read back and every torch file must pass its zip checksums."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
    except (OSError, ValueError, KeyError) as error:
        return f"trainer_state.json unreadable: {type(error).__name__}"
    weights = list(checkpoint.glob("*.safetensors"))
    sharded = list(checkpoint.glob("pytorch_model_fsdp_*"))  # FSDP2's sharded state dict: one folder per model
    if not weights and not sharded:
        return "no weights file"
    for folder in sharded:
        problem = sharded_checkpoint_damage(folder)
        if problem:
            return problem
    for path in weights:
        try:
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():
                    handle.get_slice(name)
        except Exception as error:  # safetensors raises its own error types for every kind of damage
            return f"{path.name} unreadable: {str(error).splitlines()[0][:80]}"
    for path in [*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth"), *checkpoint.glob("*.bin")]:
        try:
            with zipfile.ZipFile(path) as archive:
                if archive.testzip() is not None:
                    return f"{path.name} fails its checksum"
        except (OSError, zipfile.BadZipFile) as error:
            return f"{path.name} unreadable: {error}"
    return None


def sharded_checkpoint_damage(folder: Path) -> str | None:
    """A torch.distributed.checkpoint folder must have readable metadata and every shard file it names."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(folder)).read_metadata()
    except Exception as error:  # a truncated or missing .metadata fails in pickle or in the file system
        return f"{folder.name}/.metadata unreadable: {type(error).__name__}"
    missing = {item.relative_path for item in metadata.storage_data.values()} - {p.name for p in folder.iterdir()}
    return f"{folder.name} lacks {', '.join(sorted(missing))}" if missing else None


def record_start(progress_path: Path) -> None:
    """Put the run's start time (ISO 8601, UTC) in progress.json; a resumed run keeps its first start."""
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else {"timings_s": {}}
    if "started" not in progress:
        progress["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(progress_path, progress)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file (a UTF-8 byte-order mark is skipped); a folder, a link that loops, a JSON array
    or a malformed line is reported on one line with the file (and line number)."""
    rows = []
    try:
        with open_data_file(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if not rows and line.lstrip().startswith("["):
                    raise TunelabError(f"{path}:{number} holds a JSON array, not JSON lines: write one object per "
                                       "line (for example with: jq -c '.[]' FILE)")
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


def open_data_file(path: Path, newline: str | None = None):
    """`path` opened as UTF-8 text (a byte-order mark skipped), or a one-line error for what is not a readable file.
    Every data reader opens its file here (`newline=""` for the csv module)."""
    if Path(path).is_dir():
        raise TunelabError(f"{path} is a folder where a data file should be: give the file itself")
    try:
        return open(path, encoding="utf-8-sig", newline=newline)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise TunelabError(f"{path} is a symbolic link that loops back on itself: point it at the data "
                               "file") from None
        raise TunelabError(f"cannot read {path} ({error.strerror}): check the path") from None


def read_csv(path: Path) -> list[dict]:
    with open_data_file(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """JSON lines, written atomically."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))
