"""tunelab.resources: the user's own project folders first, then the packaged copies; tunelab init."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.resources import find_file, init_project, project_root

ROOT = Path(__file__).resolve().parents[1]


def test_the_users_file_wins_over_the_packaged_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_file("recipes/phi2_snli.py") == (ROOT / "recipes" / "phi2_snli.py").resolve()
    assert project_root("slurm") == ROOT
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "phi2_snli.py").write_text("RECIPE = None\n")
    assert find_file("recipes/phi2_snli.py") == Path("recipes/phi2_snli.py")
    assert find_file("recipes/none_such.py") == Path("recipes/none_such.py"), "neither: the path as written"
    (tmp_path / "slurm").mkdir()
    assert project_root("slurm") == tmp_path


def test_init_copies_every_packaged_file_and_never_overwrites(tmp_path):
    copied = init_project(tmp_path / "project")
    names = {str(path.relative_to(tmp_path / "project")) for path in copied}
    expected = {str(p.relative_to(ROOT)) for folder in ("recipes", "accelerate_configs", "slurm")
                for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert names == expected
    assert (tmp_path / "project" / "recipes" / "phi2_snli.py").read_text() == (ROOT / "recipes" / "phi2_snli.py").read_text()
    edited = tmp_path / "project" / "recipes" / "phi2_snli.py"
    edited.write_text("# mine\n")
    with pytest.raises(TunelabError, match="already exists"):
        init_project(tmp_path / "project")
    assert edited.read_text() == "# mine\n"
