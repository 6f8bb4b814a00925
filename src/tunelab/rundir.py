"""The run directory: atomic writes, refusing to clobber a finished run, finding the last checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from tunelab.errors import TunelabError

FINISHED_MARKER = "run_info.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def prepare_run_dir(run_dir: Path, overwrite: bool) -> bool:
    """Create the run directory; refuse a finished run unless `overwrite`. Returns True when resuming."""
    finished = (run_dir / FINISHED_MARKER).exists()
    if finished and not overwrite:
        raise TunelabError(f"{run_dir} holds a finished run: choose another --run_name or --output_dir, "
                           "or pass --overwrite to replace it")
    if finished:
        shutil.rmtree(run_dir)
    resuming = run_dir.exists() and any(run_dir.iterdir())
    run_dir.mkdir(parents=True, exist_ok=True)
    return resuming
