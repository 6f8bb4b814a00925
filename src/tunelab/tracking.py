"""Experiment tracking for `--report_to wandb|tensorboard|none` (or a comma-separated list), built
to work on clusters and without network.

transformers' own callbacks do the logging: `report_to` goes to TrainingArguments, and its
WandbCallback / TensorBoardCallback log every `logs` dict, the monitoring figures included
(tunelab.monitoring). This module adds what a cluster run needs around them:

- `check_tracking(report_to)`: called before anything loads, fails in one line when W&B has no API
  key and is not offline, or when a tracker is not installed;
- `start_wandb(...)`: on rank 0 only, starts the W&B run before the Trainer would, so WandbCallback
  finds it and only adds TrainingArguments and the model config to it (the other ranks never start
  one). Project: $WANDB_PROJECT, else "tunelab". Name: $WANDB_NAME, else RUN_NAME-PROFILE-slurmJOBID
  (the parts that exist). Group: $WANDB_RUN_GROUP, else the Slurm array job, else RUN_NAME. Config:
  the resolved recipe, the hardware profile, the git commit, library versions and hardware, with
  the values of secret-looking environment variables redacted. Files go to RUN_DIR/wandb, and the
  run id is kept there, so a requeued job or a later stage continues the same W&B run;
- `finish_wandb(...)`: logs the report, plots, predictions, metrics and run files, puts the timings
  and monitoring figures into the run summary, and finishes the run.

Without network: WANDB_MODE=offline, then `wandb sync RUN_DIR/wandb/offline-run-*` where there
is network (docs/monitoring.md).
"""

from __future__ import annotations

import configparser
import dataclasses
import importlib.util
import json
import netrc
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlparse

from tunelab.errors import TunelabError
from tunelab.rundir import MODELS
from tunelab.secrets import redact, secret_values

TRACKERS = ("wandb", "tensorboard")
OFFLINE_MODES = ("offline", "dryrun", "disabled")
RUN_ID_FILE = "tunelab-run-id"
LOGGED_FILES = ("config.yaml", "progress.json", "run_info.json", "monitoring.json", "train_log.json",
                "report/*", "eval/*/predictions.csv", "eval/*/*/metrics.json", "eval/*/*/predictions.csv",
                "eval/*/replies.csv", "eval/*/*/perplexity.json", "eval/*/*/replies.json")  # the last three: chat
NO_KEY = ("--report_to wandb, but no W&B API key found (WANDB_API_KEY, or `wandb login`'s ~/.netrc): set one, "
          "or set WANDB_MODE=offline and afterwards `wandb sync RUN_DIR/wandb/offline-run-*` where there is "
          "network (docs/monitoring.md)")


def report_targets(report_to: str) -> list[str]:
    """The trackers named by `report_to`: [] for none."""
    names = [name.strip() for name in report_to.split(",") if name.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise TunelabError(f"report_to {report_to!r} not understood: use none, wandb, tensorboard or wandb,tensorboard")
    return names


# ---------------------------------------------------------------------------- before anything loads

def check_tracking(report_to: str, environ=os.environ) -> None:
    """Fail now, in one line, if a tracker cannot work; never contacts a server."""
    targets = report_targets(report_to)
    if "tensorboard" in targets and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise TunelabError("--report_to tensorboard needs TensorBoard: pip install tensorboard")
    if "wandb" not in targets:
        return
    if importlib.util.find_spec("wandb") is None:
        raise TunelabError("--report_to wandb needs the wandb library: pip install wandb")
    mode = wandb_mode(environ)
    if mode in OFFLINE_MODES:
        return
    if mode not in ("online", "run"):
        raise TunelabError(f"WANDB_MODE={mode!r} is not a W&B mode: use online or offline")
    if not has_wandb_credentials(environ):
        raise TunelabError(NO_KEY)


def wandb_mode(environ=os.environ) -> str:
    """WANDB_MODE, else the mode `wandb offline` / `wandb online` saved, else online."""
    if environ.get("WANDB_MODE"):
        return environ["WANDB_MODE"].strip().lower()
    config_dir = Path(environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb")
    for settings in (Path(environ.get("WANDB_DIR") or ".") / "wandb" / "settings", config_dir / "settings"):
        parser = configparser.ConfigParser()
        try:
            parser.read(settings)
        except configparser.Error:
            continue
        if parser.has_option("default", "mode"):
            return parser.get("default", "mode").strip().lower()
    return "online"


def has_wandb_credentials(environ=os.environ) -> bool:
    """An API key in the environment, an identity token file, or a ~/.netrc entry for the W&B host."""
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = Path(environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(host) if path.is_file() else None
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


# ---------------------------------------------------------------------------- secrets

# ---------------------------------------------------------------------------- the W&B run

def wandb_init_arguments(recipe, run_dir: Path, num_processes: int, environ=os.environ) -> dict:
    """project, name, group and config for wandb.init (config redacted)."""
    job, array_job = environ.get("SLURM_JOB_ID"), environ.get("SLURM_ARRAY_JOB_ID")
    parts = [recipe.run_name, *([recipe.profile] if recipe.profile not in ("none", "") else []),
             *([f"slurm{job}"] if job else [])]
    return {
        "project": environ.get("WANDB_PROJECT") or "tunelab",
        "name": environ.get("WANDB_NAME") or "-".join(parts),
        "group": environ.get("WANDB_RUN_GROUP") or (f"slurm-array{array_job}" if array_job else recipe.run_name),
        "config": redact(run_config(recipe, run_dir, num_processes, environ), secret_values(environ)),
    }


def run_config(recipe, run_dir: Path, num_processes: int, environ=os.environ) -> dict:
    from tunelab.config import recipe_to_dict
    from tunelab.profiles import PROFILES
    from tunelab.summary import hardware_info, software_versions

    profile = PROFILES.get(recipe.profile)
    slurm = {name.removeprefix("SLURM_").lower(): environ[name] for name in (
        "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME", "SLURM_JOB_PARTITION",
        "SLURM_JOB_NUM_NODES", "SLURM_RESTART_COUNT", "SLURM_CLUSTER_NAME") if environ.get(name)}
    return {
        "recipe": recipe_to_dict(recipe),
        "profile": dataclasses.asdict(profile) if profile else recipe.profile,
        "git": git_info(),
        "software": software_versions(),
        "hardware": hardware_info(num_processes),
        "slurm": slurm or None,
        "run_dir": str(run_dir),
    }


def git_info() -> dict:
    """The commit of the tunelab checkout (or of the working directory) and whether it has local changes."""
    for folder in (Path(__file__).parent, Path.cwd()):  # git finds the checkout that holds either
        try:
            commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                    timeout=10)
            if commit.returncode != 0:
                continue
            status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            break
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return {"commit": commit.stdout.strip(), "dirty": dirty}
    return {"commit": None, "dirty": None}


def start_wandb(recipe, run_dir: Path, state):
    """The W&B run, started on the main process when `report_to` names wandb; None elsewhere.

    Rank 0 is also read from the launcher's RANK: before the Trainer sets up the process group, a
    bare PartialState on CPU processes does not know it is one of several (every rank says main).
    """
    rank_zero = state.is_main_process and os.environ.get("RANK", "0") == "0"
    if "wandb" not in report_targets(recipe.report_to) or not rank_zero:
        return None
    import wandb

    folder = run_dir / "wandb"
    folder.mkdir(parents=True, exist_ok=True)
    id_file = folder / RUN_ID_FILE
    run_id = environ_run_id = os.environ.get("WANDB_RUN_ID")
    if not run_id:
        run_id = id_file.read_text().strip() if id_file.is_file() else ""
    if not run_id:
        run_id = uuid.uuid4().hex[:12]
    if not environ_run_id:
        id_file.write_text(run_id + "\n")
    command_line, sys.argv = sys.argv, redact(sys.argv)  # W&B records the command line in its metadata
    try:
        return wandb.init(dir=str(run_dir), id=run_id, resume="allow",
                          **wandb_init_arguments(recipe, run_dir, state.num_processes))
    finally:
        sys.argv = command_line


def finish_wandb(run, run_dir: Path, progress: dict) -> None:
    """Log the run's files and summary figures, then finish the W&B run (no-op for None)."""
    if run is None:
        return
    for pattern in LOGGED_FILES:
        if any(path.is_file() for path in run_dir.glob(pattern)):
            run.save(str(run_dir / pattern), base_path=str(run_dir), policy="now")
    run.summary.update(summary_figures(progress))
    run.summary.update(statistics_figures(run_dir))
    run.finish()


def summary_figures(progress: dict) -> dict[str, float]:
    """Timings and monitoring figures from progress.json, as flat W&B summary keys."""
    timings = progress.get("timings_s") or {}
    figures = {f"timings/{phase}_s": round(seconds, 3) for phase, seconds in timings.items()}
    evaluate = sum(timings.get(phase, 0.0) for phase in ("baseline_eval", "finetuned_eval"))
    if evaluate:
        figures["timings/evaluate_s"] = round(evaluate, 3)
    monitoring = progress.get("monitoring") or {}
    for key in ("step_time_s", "samples_per_s", "tokens_per_s", "mfu_pct", "flops_per_token", "real_tokens"):
        if monitoring.get(key) is not None:
            figures[f"monitoring/{key}"] = monitoring[key]
    for label, values in (monitoring.get("peak_devices") or {}).items():
        figures.update({f"monitoring/peak/{label}_{key}": value for key, value in values.items()})
    if (progress.get("memory") or {}).get("peak_bytes"):
        figures["memory/peak_gib"] = round(progress["memory"]["peak_bytes"] / 2**30, 4)
    return figures


def statistics_figures(run_dir: Path) -> dict[str, float]:
    """Intervals, McNemar's p and calibration from RUN_DIR/eval/<split>/statistics.json, as flat W&B summary keys."""
    figures = {}
    for path in sorted(run_dir.glob("eval/*/statistics.json")):
        statistics, prefix = json.loads(path.read_text(encoding="utf-8")), f"statistics/{path.parent.name}"
        for metric, roles in statistics["intervals"].items():
            for role, interval in roles.items():
                figures.update({f"{prefix}/{metric}_{role}_{end}": interval[end] for end in ("low", "high")})
        figures[f"{prefix}/mcnemar_p"] = statistics["mcnemar"]["p_value"]
        calibration = statistics["calibration"]
        for model in MODELS:
            figures.update({f"{prefix}/{model}_{name}": calibration[model][name] for name in ("ece", "brier")})
        for model, scaled in calibration.get("temperature_scaled", {}).items():
            figures.update({f"{prefix}/{model}_scaled_{name}": value for name, value in scaled.items()})
    return figures
