"""`tunelab launch`: turn a hardware profile into the `accelerate launch` command and run it."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from tunelab.config import recipe_file
from tunelab.console import say
from tunelab.profiles import (
    Profile,
    auto_profile,
    check_hardware,
    detect_gpus,
    get_profile,
    process_count,
)
from tunelab.resources import find_file


def launch_command(recipe_path: str, argv: list[str], gpus=None) -> tuple[list[str], dict[str, str]]:
    """The accelerate command line and extra environment for a recipe and its settings."""
    argv, profile_name = _pop_option(argv, "profile", default="auto")
    gpus = detect_gpus() if gpus is None else gpus
    profile = auto_profile(gpus)[0] if profile_name == "auto" else get_profile(profile_name)
    check_hardware(profile, gpus)
    command = accelerate_command(str(recipe_file(recipe_path)), profile, process_count(profile, gpus), argv)
    # Two CPU processes need accelerate's GPU code path told to stay on the CPU (its MULTI_CPU path
    # starts a single process unless run through mpirun).
    env = {} if profile.needs_gpu else {"ACCELERATE_USE_CPU": "true"}
    return command, env


def accelerate_command(recipe_path: str, profile: Profile, processes: int, argv: list[str],
                       accelerate: str | None = None) -> list[str]:
    """`accelerate launch` with the profile's config and `processes` processes, then the recipe and its settings."""
    accelerate = accelerate or str(Path(sys.executable).with_name("accelerate"))
    command = [accelerate, "launch", "--config_file", str(profile.config_path), *deepspeed_file(profile.config_path)]
    if profile.processes is None:
        command += ["--num_processes", str(processes)]
    return command + [recipe_path, "--profile", profile.name, *argv]


def deepspeed_file(config_path: Path) -> list[str]:
    """`--deepspeed_config_file PATH` for a config that names one: the path in the YAML is relative to the
    working directory, where a packaged config's JSON is not."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    named = (config.get("deepspeed_config") or {}).get("deepspeed_config_file")
    return ["--deepspeed_config_file", str(find_file(named))] if named else []


def launch_recipe(recipe_path: str, argv: list[str]) -> None:
    """Run accelerate's launcher in this process, exiting with the recipe's own status (2 for a
    user error, 3 for an interruption) instead of accelerate's 1 and its traceback."""
    from accelerate.commands.launch import launch_command as accelerate_launch
    from accelerate.commands.launch import launch_command_parser

    command, env = launch_command(recipe_path, argv)
    shown = [f"{k}={v}" for k, v in env.items()] + [shlex.join(command)]
    say(" ".join(shown))
    os.environ.update(env)
    try:
        accelerate_launch(launch_command_parser().parse_args(command[2:]))
    except subprocess.CalledProcessError as failed:
        sys.exit(failed.returncode)
    except Exception as failed:  # torch.distributed.elastic's ChildFailedError for multi-process runs
        print(f"tunelab: error: a training process failed ({type(failed).__name__}); see its output above",
              file=sys.stderr, flush=True)
        sys.exit(1)


def _pop_option(argv: list[str], name: str, default: str) -> tuple[list[str], str]:
    rest, value, i = [], default, 0
    while i < len(argv):
        if argv[i] == f"--{name}" and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith(f"--{name}="):
            value = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    return rest, value
