"""tunelab as a user installs it: the wheel, installed (not editable) into a fresh virtual environment, run from an
empty folder outside the repository.

The new environment gets the pinned packages (requirements.txt, as launch/setup.sh installs them) by seeing the
shared environment's site-packages through a .pth file, so no gigabytes are copied; tunelab itself is installed
into the new environment from the wheel, and the repository's src/ is on no path there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from nli_helpers import tiny_nli_argv

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "src", "accelerate_configs", "recipes", "slurm")


def build_wheel(destination: Path) -> Path:
    """The wheel, built from a copy of the sources (the build leaves no build/ folder in the checkout)."""
    source = destination / "source"
    source.mkdir(parents=True)
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        kwargs = {"symlinks": True, "ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")} \
            if (ROOT / name).is_dir() else {}
        copy(ROOT / name, source / name, **kwargs)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "-w", str(destination / "dist"), str(source)], check=True, timeout=300)
    (wheel,) = (destination / "dist").glob("tunelab-*.whl")
    return wheel


def fresh_environment(folder: Path, wheel: Path) -> Path:
    """A new virtual environment that sees the pinned packages and has the wheel installed; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "pinned_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-index",
                    "--no-deps", "--ignore-installed", str(wheel)], check=True, timeout=300)
    return python


def in_empty_folder(python: Path, folder: Path, *command: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PATH=f"{python.parent}:{env.get('PATH', '')}")
    return subprocess.run(list(command), cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)


def wheel_requirements(wheel: Path) -> list[Requirement]:
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return [Requirement(line.removeprefix("Requires-Dist: ")) for line in metadata.splitlines()
            if line.startswith("Requires-Dist: ")]


def pinned_versions() -> dict[str, str]:
    """The lock: requirements.txt, plus torch, which launch/setup.sh installs first by exact version."""
    text = (ROOT / "requirements.txt").read_text() + re.search(r"torch==[\d.]+", (ROOT / "launch" / "setup.sh")
                                                               .read_text()).group()
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", text, re.M)}


def test_declared_ranges_admit_the_pinned_lock(tmp_path):
    requirements = wheel_requirements(build_wheel(tmp_path))
    pins = pinned_versions()
    runtime = {r.name.lower() for r in requirements if r.marker is None}
    assert {"torch", "transformers", "peft", "trl", "accelerate", "datasets"} <= runtime
    for requirement in requirements:
        pinned = pins.get(requirement.name.lower())
        assert pinned, f"{requirement.name} is declared but not in the lock"
        assert requirement.specifier.contains(pinned, prereleases=True), f"{requirement} excludes the lock's {pinned}"


@pytest.mark.slow
def test_the_installed_wheel_plans_runs_launches_and_inits_from_an_empty_folder(tmp_path, tiny_phi_dir, snli_dir):
    wheel = build_wheel(tmp_path / "build")
    python = fresh_environment(tmp_path / "venv", wheel)
    folder = tmp_path / "empty"
    folder.mkdir()
    tunelab = str(python.parent / "tunelab")

    where = in_empty_folder(python, folder, str(python), "-c", "import tunelab; print(tunelab.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where.stdout + where.stderr

    plan = in_empty_folder(python, folder, tunelab, "plan", "recipes/phi2_snli.py")
    assert plan.returncode == 0 and "Run plan for runs/phi2_snli" in plan.stdout, plan.stderr[-2000:]

    tiny = tiny_nli_argv(tiny_phi_dir, snli_dir, "runs", "--load_in_4bit", "false", "--optim", "adamw_torch",
                         "--max_steps", "2", "--test_size", "8", "--validation_size", "4", "--run_name", "tiny")
    run = in_empty_folder(python, folder, tunelab, "run", "recipes/phi2_snli.py", *tiny)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (folder / "runs" / "tiny" / "run_info.json").is_file() and (folder / "runs" / "tiny" / "report").is_dir()

    launch = in_empty_folder(python, folder, tunelab, "launch", "recipes/phi2_snli.py", "--profile", "cpu",
                             "--dry_run", *tiny[:-1], "planned")
    assert launch.returncode == 0, launch.stderr[-3000:]
    packaged_config = f"{tmp_path / 'venv'}/lib/python{sys.version_info.major}.{sys.version_info.minor}/" \
                      "site-packages/tunelab/packaged/accelerate_configs/cpu.yaml"
    assert f"--config_file {packaged_config}" in launch.stdout + launch.stderr
    assert "Run plan for runs/planned on this machine (profile cpu); 1 process(es)" in launch.stdout, launch.stdout[-2000:]

    init = in_empty_folder(python, folder, tunelab, "init", "project")
    assert init.returncode == 0, init.stderr
    copied = {str(p.relative_to(folder / "project")) for p in (folder / "project").rglob("*") if p.is_file()}
    assert {"recipes/phi2_snli.py", "recipes/embedded_snli.yaml", "accelerate_configs/cpu.yaml",
            "accelerate_configs/deepspeed/zero3.json", "slurm/single_node.sbatch"} <= copied
    again = in_empty_folder(python, folder, tunelab, "init", "project")
    assert again.returncode == 2 and again.stderr.startswith("tunelab: error: ") and "already exists" in again.stderr
