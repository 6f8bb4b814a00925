"""Where tunelab finds its files: the project folders it is known by, and its cache.

The accelerate configs (with their DeepSpeed JSON), the Slurm templates and the recipes travel
inside the package (`tunelab/packaged/`, links to the repository's top-level folders in a source
checkout). A lookup prefers the user's own file, the path as given from the working directory, and
falls back on the packaged copy; `tunelab init DIR` copies the packaged folders into a project to edit.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from tunelab.errors import TunelabError

PROJECT_FOLDERS = ("accelerate_configs", "recipes", "slurm")
DEFAULT_CACHE = Path("~/.cache/tunelab")


def packaged_root() -> Path:
    """The folder inside the installed package that holds the packaged copies of PROJECT_FOLDERS."""
    return Path(str(resources.files("tunelab") / "packaged"))


def find_file(path: str | Path) -> Path:
    """`path` as given when it exists (the user's own file), else the packaged copy at the same relative path
    (absolute); `path` itself when neither exists, so the caller's error names what the user wrote."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    packaged = packaged_root() / given
    return packaged.resolve() if packaged.exists() else given


def project_root(folder: str) -> Path:
    """The folder that holds `folder` (one of PROJECT_FOLDERS): the working directory when it has one, else
    the packaged copies."""
    return Path.cwd() if (Path.cwd() / folder).is_dir() else (packaged_root() / folder).resolve().parent


def package_parent() -> Path:
    """The folder tunelab is imported from (src/ in a checkout, site-packages when installed): a job on
    another node imports the same tunelab through PYTHONPATH."""
    return packaged_root().parent.parent


def cache_root() -> Path:
    """Where tunelab caches converted models, built benchmark models and starter data: ``$TUNELAB_CACHE`` or
    ``~/.cache/tunelab``."""
    return Path(os.environ.get("TUNELAB_CACHE") or DEFAULT_CACHE).expanduser()


def init_project(destination: str | Path) -> list[Path]:
    """Copy the packaged recipes, accelerate configs and Slurm templates into `destination`, to edit there.

    Refuses, before copying anything, when any of those files already exists there."""
    destination = Path(destination)
    sources = [source for folder in PROJECT_FOLDERS for source in sorted((packaged_root() / folder).rglob("*"))
               if source.is_file() and "__pycache__" not in source.parts]
    targets = [destination / source.relative_to(packaged_root()) for source in sources]
    existing = [str(target) for target in targets if target.exists()]
    if existing:
        raise TunelabError(f"{existing[0]} already exists ({len(existing)} file(s) of tunelab init are there): "
                           "choose another folder, or move them away first")
    for source, target in zip(sources, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return targets
