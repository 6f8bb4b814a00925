"""Running a sweep: here, one `tunelab run` process after another, or as a Slurm job array."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tunelab.console import say
from tunelab.errors import INTERRUPTED_EXIT_CODE, TrainingInterrupted, TunelabError
from tunelab.resources import package_parent, project_root
from tunelab.rundir import atomic_write
from tunelab.sweep.grid import finished, parse_sweep_args, plan_sweep, record_sweep
from tunelab.sweep.report import write_sweep_report


def sweep_command(argv: list[str]) -> Path:
    """`tunelab sweep`: plan, run (here or on Slurm) and report; returns the sweep directory."""
    args, overrides = parse_sweep_args(argv)
    sweep_dir = Path(args.sweep_dir or Path("runs") / f"sweep-{Path(args.recipe).stem}")
    sweep = plan_sweep(args.recipe, overrides, sweep_dir)
    restarted = record_sweep(sweep, sweep_dir)  # then its runs' folders hold the failed command's settings
    if args.slurm:
        submit_to_slurm(sweep, sweep_dir, shlex.split(args.sbatch), restarted)
        return sweep_dir
    for index, run in enumerate(sweep["runs"], 1):
        if finished(sweep_dir, run):
            say(f"Run {index} of {len(sweep['runs'])}, {run['name']}: finished before, reusing it")
            continue
        try:
            say(f"Run {index} of {len(sweep['runs'])}: {run['name']}")
            run_here(sweep, sweep_dir, run, restarted)
        except KeyboardInterrupt:  # Ctrl-C before the run's own process started: nothing of it to save
            raise stopped_during(run) from None
    report = write_sweep_report(sweep_dir)
    say(f"Sweep report: {report}")
    return sweep_dir


def run_here(sweep: dict, sweep_dir: Path, run: dict, overwrite: bool = False) -> None:
    """`tunelab run` in a process of its own; on Ctrl-C it saves a checkpoint, and the sweep stops after it."""
    command = [sys.executable, "-m", "tunelab.cli", "run", sweep["recipe"], *run_arguments(sweep_dir, run, overwrite)]
    process = subprocess.Popen(command)
    interrupted = False
    while True:
        try:
            status = process.wait()
            break
        except KeyboardInterrupt:  # the run got the same Ctrl-C: let it save its checkpoint
            interrupted = True
    if interrupted or status in (INTERRUPTED_EXIT_CODE, 130, -2):
        raise stopped_during(run)
    if status != 0:
        raise TunelabError(f"run {run['name']} failed (exit status {status}, see above): fix the cause and run "
                           "the same command again; finished runs are reused")


def run_arguments(sweep_dir: Path, run: dict, overwrite: bool) -> list[str]:
    """The run's settings and folder; --overwrite when the sweep restarted with another command (then it replaces
    only what the failed command's run left, which tunelab made)."""
    return [*run["arguments"], "--output_dir", str(sweep_dir), "--run_name", run["name"],
            *(["--overwrite"] if overwrite else [])]


def stopped_during(run: dict) -> TrainingInterrupted:
    return TrainingInterrupted(f"sweep stopped during {run['name']}: run the same command again to resume "
                               "(finished runs are reused, this one resumes from its checkpoint)")


def write_task_files(sweep: dict, sweep_dir: Path, overwrite: bool = False) -> list[int]:
    """SWEEP_DIR/tasks/<index>.env for each unfinished run: the settings slurm/single_node.sbatch reads."""
    pending = []
    for index, run in enumerate(sweep["runs"]):
        if finished(sweep_dir, run):
            continue
        arguments = [*run["arguments"], *(["--overwrite"] if overwrite else [])]
        settings = {"RECIPE": sweep["recipe"], "RECIPE_ARGS": shlex.join(arguments),
                    "OUTPUT_DIR": str(sweep_dir.resolve()), "RUN_NAME": run["name"]}
        text = "".join(f"{key}={shlex.quote(value)}\n" for key, value in settings.items())
        # the job's own command line, as given (not redacted: the job must read the real paths)
        atomic_write(sweep_dir / "tasks" / f"{index}.env", lambda temporary: temporary.write_text(text))
        pending.append(index)
    return pending


def submit_to_slurm(sweep: dict, sweep_dir: Path, sbatch_flags: list[str], overwrite: bool = False) -> None:
    """One array task per unfinished run, then a job that writes the report once the array has ended."""
    pending = write_task_files(sweep, sweep_dir, overwrite)
    project = project_root("slurm")  # the working directory's slurm/, accelerate_configs/ ..., else the packaged
    source = str(package_parent())  # the jobs import this tunelab
    environment = {**os.environ, "SWEEP_DIR": str(sweep_dir.resolve()), "REPO_DIR": str(project),
                   "PYTHONPATH": os.pathsep.join(filter(None, (source, os.environ.get("PYTHONPATH"))))}
    if sys.prefix != sys.base_prefix:
        environment.setdefault("VENV", sys.prefix)
    dependency = []
    if pending:
        array = sbatch(["--array=" + ",".join(map(str, pending)), *sbatch_flags, str(project / "slurm" / "sweep.sbatch")],
                       environment, project)
        say(f"Submitted job array {array}: {len(pending)} run(s) of {len(sweep['runs'])} in {sweep_dir}")
        dependency = [f"--dependency=afterany:{array}"]
    report_command = shlex.join([sys.executable, "-m", "tunelab.cli", "sweep-report", str(sweep_dir.resolve())])
    report_flags = [flag for flag in sbatch_flags if flag.split("=")[0] in ("--time", "--partition")]
    job = sbatch([*dependency, "--job-name=tunelab-sweep-report", "--ntasks=1", "--cpus-per-task=1",
                  "--gpus-per-node=0", *report_flags, f"--output={sweep_dir.resolve()}/slurm-sweep-report-%j.out",
                  f"--wrap={report_command}"], environment, project)
    say(f"Submitted job {job}: the sweep report, once the runs have ended ({sweep_dir / 'report' / 'report.md'})")


def sbatch(arguments: list[str], environment: dict[str, str], project: Path) -> str:
    try:
        result = subprocess.run(["sbatch", "--parsable", *arguments], env=environment, cwd=project,
                                capture_output=True, text=True, timeout=120)
    except FileNotFoundError as error:
        raise TunelabError("sbatch not found: --slurm needs Slurm's commands on this machine") from error
    if result.returncode != 0:
        raise TunelabError(f"sbatch refused the sweep: {result.stderr.strip()}")
    return result.stdout.strip().split(";")[0]
