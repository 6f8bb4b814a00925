"""The Slurm templates on a real Slurm cluster (tests/slurm_cluster.py: two nodes on this machine).

- slurm/single_node.sbatch, two CPU processes, to completion: state, exit code, log, report, time.
- the same job interrupted by SIGUSR1: it checkpoints, requeues itself, resumes from that checkpoint
  and ends at the step count of an uninterrupted run, no step lost or trained twice.
- the time limit: Slurm itself sends the template's `#SBATCH --signal=B:USR1@300` to a one-minute job, which
  requeues; RECIPE_ARGS (shell quoting) and the sbatch arguments reach the recipe in order.
- slurm/multi_node.sbatch with a stand-in recipe, 2 nodes x 2 processes: SIGUSR1 to the batch
  script reaches every training process on every node, and the job requeues itself.
- the interruption test across two nodes with slurm/multi_node.sbatch (marked slow).
- `tunelab sweep --slurm`: slurm/sweep.sbatch as a job array of two tiny runs, then the sweep report job.

The cluster is started once for this module and stopped even when a test fails. It needs root (and
apt-get if Slurm is not installed); elsewhere the tests are skipped with the reason, unless
TUNELAB_REQUIRE_SLURM=1 turns that into a failure (for CI, which runs as root). The same holds for the
two-node tests when the second node does not start.
"""

import json
import math
import os
import re
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, SlurmUnavailable

# A stand-in for a recipe: each rank records its node and how it found SIGUSR1, installs a handler
# (as the real recipe does), then waits for the signal and exits 3 as an interrupted recipe does.
SIGNAL_PROBE = """
import json, os, signal, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
folder = os.path.join(args["--output_dir"], args["--run_name"])
start = os.environ.get("SLURM_RESTART_COUNT", "0")
record = {"rank": int(os.environ["RANK"]), "host_task": os.environ.get("SLURM_NODEID"),
          "usr1_ignored_at_start": signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN, "signalled": False}
def save():
    path = os.path.join(folder, f"rank-{record['rank']}-start-{start}.json")
    with open(path + ".tmp", "w") as handle:
        json.dump(record, handle)
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR1, lambda *_: record.update(signalled=True))
save()
for _ in range(1200):
    if record["signalled"]:
        save()
        sys.exit(3)
    time.sleep(0.1)
"""

# A stand-in for a recipe that records its arguments and exits 3 on SIGUSR1, as an interrupted recipe does.
TIME_LIMIT_PROBE = """
import json, os, signal, sys, time
args = sys.argv[1:]
folder = os.path.join(args[args.index("--output_dir") + 1], args[args.index("--run_name") + 1])
def stop(*_):
    path = os.path.join(folder, "start-" + os.environ.get("SLURM_RESTART_COUNT", "0") + ".json")
    with open(path + ".tmp", "w") as handle:
        json.dump({"argv": args}, handle)
    os.replace(path + ".tmp", path)
    sys.exit(3)
signal.signal(signal.SIGUSR1, stop)
time.sleep(300)
"""

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = 2  # training processes in every job: 2 tasks on one node, or 1 on each of 2 nodes
TRAIN_ROWS = 60  # snli_dir's train split without its label -1 rows
ONE_NODE = ["--gpus-per-node=0", "--ntasks-per-node=2", "--cpus-per-task=1"]
TWO_NODES = ["--gpus-per-node=0", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1"]


@pytest.fixture(scope="module")
def slurm():
    cluster = SlurmCluster(nodes=2)
    try:
        cluster.start()
    except SlurmUnavailable as error:
        cluster.stop()
        unavailable(f"cannot start a Slurm test cluster: {error}")
    except BaseException:
        cluster.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()


def unavailable(reason):
    """Skip, or fail where TUNELAB_REQUIRE_SLURM=1 (CI): there every Slurm test must run."""
    print(reason, file=sys.stderr)
    if os.environ.get("TUNELAB_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def require_two_nodes(slurm):
    if len(slurm.idle_nodes) < 2:
        unavailable(f"only one test node could start: {slurm.node_failures}")


def recipe_args(model_dir, data_dir, *extra):
    return ["--model_name_or_path", str(model_dir), "--dataset", str(data_dir),
            "--train_stride", "1", "--train_size", "none", "--validation_stride", "1", "--validation_size", "none",
            "--test_stride", "1", "--test_size", "none", "--learning_rate", "5e-3", "--precision", "fp32", *extra]


def submit(slurm, script, output_dir, flags, args, time_limit="30", **settings):
    """Submit a template as a user would: sbatch flags, script settings in the environment, recipe arguments."""
    env = {"OUTPUT_DIR": str(output_dir), **settings}
    if sys.prefix != sys.base_prefix:
        env["VENV"] = sys.prefix  # the environment running the tests, wherever it is
    else:
        env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    return slurm.sbatch(script, *flags, f"--time={time_limit}", f"--output={output_dir}/slurm-%j.out", "--", *args,
                        cwd=ROOT, env=env)


def job_log(run_dir, job_id):
    log = run_dir / f"slurm-{job_id}.log"
    return log.read_text(errors="replace") if log.exists() else f"(no {log})"


def failure(slurm, info, run_dir, job_id):
    return f"job {job_id}: {info}\n--- job log (end)\n{job_log(run_dir, job_id)[-4000:]}\n{slurm.logs()}"


def test_single_node_job_trains_two_processes_to_completion(slurm, tiny_phi_dir, snli_dir, tmp_path):
    job = submit(slurm, "slurm/single_node.sbatch", tmp_path, ONE_NODE,
                 recipe_args(tiny_phi_dir, snli_dir, "--num_train_epochs", "2"))
    info = slurm.wait_until_finished(job, timeout=600)
    run_dir = tmp_path / "phi2_snli"
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", failure(slurm, info, run_dir, job)
    assert info["Restarts"] == "0"

    log = job_log(run_dir, job)
    assert f"[slurm] {PROCESSES} process(es), 0 GPU(s)" in log
    assert "--config_file accelerate_configs/cpu_ddp.yaml --num_processes 2 --main_process_port" in log
    assert "[tunelab] Report: " in log and "[slurm] run finished" in log
    assert re.search(r"^\[slurm\] total job time: \d+h\d\dm\d\ds$", log, re.MULTILINE), log[-2000:]
    for name in ("run_info.json", "report/report.md", "report/report.html", "adapter/adapter_model.safetensors",
                 "eval/test/finetuned/metrics.json"):
        assert (run_dir / name).is_file(), name
    # Two processes share every batch of 8: ceil(60 / 16) = 4 steps an epoch (one process would take 8).
    steps = math.ceil(TRAIN_ROWS / (8 * PROCESSES))
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"checkpoint-{steps}",
                                                                          f"checkpoint-{2 * steps}"]
    assert json.loads((run_dir / "run_info.json").read_text())["hardware"]["num_processes"] == PROCESSES


def interrupt_and_check_resume(slurm, script, flags, tmp_path, tiny_phi_dir, snli_dir, **settings):
    """Interrupt a job in its second epoch with SIGUSR1; check it checkpoints, requeues, resumes and finishes.

    Returns the job's log.
    """
    batch, epochs = 2, 3
    steps_per_epoch = math.ceil(TRAIN_ROWS / (batch * PROCESSES))  # 15
    expected_steps = steps_per_epoch * epochs  # 45, what an uninterrupted run trains
    args = recipe_args(tiny_phi_dir, snli_dir, "--num_train_epochs", str(epochs),
                       "--per_device_train_batch_size", str(batch), "--logging_steps", "1",
                       "--save_total_limit", "none")
    job = submit(slurm, script, tmp_path, flags, args, **settings)
    run_dir = tmp_path / "phi2_snli"

    # Interrupt once the first epoch's checkpoint is written: training is then in its second epoch.
    first_epoch = run_dir / "checkpoints" / f"checkpoint-{steps_per_epoch}" / "trainer_state.json"
    deadline = time.monotonic() + 400
    while not first_epoch.exists():
        info = slurm.job(job)
        assert info.get("JobState") in ("PENDING", "CONFIGURING", "RUNNING"), failure(slurm, info, run_dir, job)
        assert time.monotonic() < deadline, failure(slurm, info, run_dir, job)
        time.sleep(0.2)
    slurm.command("scancel", "--signal=USR1", "--batch", job)

    requeued = slurm.wait_for(job, lambda info: info.get("Restarts") == "1", timeout=300, what="requeue")
    assert requeued["JobState"] in ("REQUEUED", "PENDING", "CONFIGURING", "RUNNING", "COMPLETING"), requeued
    info = slurm.wait_until_finished(job, timeout=600)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", failure(slurm, info, run_dir, job)
    assert info["Restarts"] == "1"

    log = job_log(run_dir, job)
    first_start, _, restart = log.partition("[slurm] restart 1:")
    assert restart, f"the requeued start did not log its restart count:\n{log[-3000:]}"

    # The interrupted start: SIGUSR1 forwarded, a checkpoint mid-epoch, then the requeue.
    match = re.search(r"Interrupted by SIGUSR1 at step (\d+): checkpoint saved", first_start)
    assert match, first_start[-3000:]
    stopped = int(match.group(1))
    assert steps_per_epoch < stopped < expected_steps
    assert "[slurm] SIGUSR1 at" in first_start and "requeueing job" in first_start
    assert "[slurm] total job time" in first_start, "the time is printed before the requeue ends the script"
    state = json.loads((run_dir / "checkpoints" / f"checkpoint-{stopped}" / "trainer_state.json").read_text())
    assert state["global_step"] == stopped

    # The restarted start resumes from exactly that checkpoint and finishes the run.
    assert "[tunelab] Resuming phi2_snli" in restart
    assert f"Resuming training from {run_dir}/checkpoints/checkpoint-{stopped}" in restart
    assert "[tunelab] Report: " in restart and (run_dir / "report" / "report.html").is_file()
    assert re.search(r"^\[slurm\] total job time: \d+h\d\dm\d\ds over 2 starts$", restart, re.MULTILINE)

    # No step lost, none trained twice: each optimizer step logs its loss once (logging_steps 1) across
    # both starts, and the run ends at the step count of an uninterrupted run.
    losses_logged = [text.count("{'loss'") for text in (first_start, restart)]
    assert losses_logged == [stopped, expected_steps - stopped]
    final = json.loads((run_dir / "checkpoints" / f"checkpoint-{expected_steps}" / "trainer_state.json").read_text())
    assert final["global_step"] == final["max_steps"] == expected_steps
    train_log = json.loads((run_dir / "train_log.json").read_text())
    assert [entry["step"] for entry in train_log if "loss" in entry] == list(range(1, expected_steps + 1))
    return log


def test_usr1_checkpoints_requeues_and_resumes_without_losing_or_repeating_steps(slurm, tiny_phi_dir, snli_dir,
                                                                                tmp_path):
    interrupt_and_check_resume(slurm, "slurm/single_node.sbatch", ONE_NODE, tmp_path, tiny_phi_dir, snli_dir)


def test_time_limit_signal_requeues_the_job_and_recipe_args_reach_the_recipe(slurm, tmp_path):
    """Slurm itself sends the template's `#SBATCH --signal=B:USR1@300`: a one-minute job (Slurm's shortest
    limit) is inside that warning time from its start, so the signal comes at Slurm's next time-limit check."""
    template = (ROOT / "slurm" / "single_node.sbatch").read_text()
    assert "\n#SBATCH --signal=B:USR1@300\n" in template and "\n#SBATCH --requeue\n" in template
    probe = tmp_path / "time_limit_probe.py"
    probe.write_text(TIME_LIMIT_PROBE)
    flags = ["--gpus-per-node=0", "--ntasks-per-node=1", "--cpus-per-task=1"]
    job = submit(slurm, "slurm/single_node.sbatch", tmp_path, flags, ["--seed", "7"], time_limit="1",
                 RECIPE=str(probe), RUN_NAME="timed", RECIPE_ARGS="--learning_rate 1e-4 --note 'two words'")
    run_dir = tmp_path / "timed"
    slurm.wait_for(job, lambda info: info.get("Restarts") == "1", timeout=240, what="requeue after the time limit")
    slurm.command("scancel", job)

    record = json.loads((run_dir / "start-0.json").read_text())
    assert record["argv"] == ["--learning_rate", "1e-4", "--note", "two words", "--seed", "7",
                              "--output_dir", str(tmp_path), "--run_name", "timed"]
    # Warned before the one-minute limit, not killed at it: SIGUSR1, then the requeue, and no SIGTERM in between
    # from the limit (Slurm's own output would also say "DUE TO TIME LIMIT").
    first_start = job_log(run_dir, job).split("[slurm] total job time")[0]
    assert "[slurm] SIGUSR1 at" in first_start and "[slurm] SIGTERM" not in first_start
    assert first_start.index("[slurm] SIGUSR1 at") < first_start.index(f"requeueing job {job} to resume from the "
                                                                          "last checkpoint")
    assert "TIME LIMIT" not in (tmp_path / f"slurm-{job}.out").read_text(errors="replace")


def test_sigusr1_reaches_every_training_process_on_every_node(slurm, tmp_path):
    require_two_nodes(slurm)
    probe = tmp_path / "signal_probe.py"
    probe.write_text(SIGNAL_PROBE)
    flags = ["--gpus-per-node=0", "--nodes=2", "--ntasks-per-node=2", "--cpus-per-task=1"]
    job = submit(slurm, "slurm/multi_node.sbatch", tmp_path, flags, [], RECIPE=str(probe), RUN_NAME="probe",
                 MAIN_PROCESS_IP="127.0.0.1")
    run_dir = tmp_path / "probe"
    records = [run_dir / f"rank-{rank}-start-0.json" for rank in range(4)]
    deadline = time.monotonic() + 300
    while not all(record.exists() for record in records):
        info = slurm.job(job)
        assert info.get("JobState") in ("PENDING", "CONFIGURING", "RUNNING"), failure(slurm, info, run_dir, job)
        assert time.monotonic() < deadline, failure(slurm, info, run_dir, job)
        time.sleep(0.2)
    slurm.command("scancel", "--signal=USR1", "--batch", job)
    slurm.wait_for(job, lambda info: info.get("Restarts") == "1", timeout=120, what="requeue")
    slurm.command("scancel", job)

    ranks = [json.loads(record.read_text()) for record in records]
    assert all(rank["signalled"] for rank in ranks), ranks
    assert sorted(rank["host_task"] for rank in ranks) == ["0", "0", "1", "1"], "two ranks on each node"
    # The ranks start with SIGUSR1 ignored, inherited from the launcher, which must not die of it. (They run
    # in sessions of their own, torchrun's start_new_session, so a signal to the launcher's process group
    # would miss them: the script signals each launcher's children by pid.)
    assert all(rank["usr1_ignored_at_start"] for rank in ranks), ranks


def test_sweep_runs_as_a_job_array_then_reports(slurm, tiny_phi_dir, snli_dir, tmp_path):
    sweep_dir = tmp_path / "sweep"
    flags = f"--gpus-per-node=0 --ntasks-per-node=1 --cpus-per-task=1 --time=30 --output={tmp_path}/slurm-%A_%a.out"
    command = [sys.executable, "-m", "tunelab.cli", "sweep", str(ROOT / "recipes" / "phi2_snli.py"), "--sweep_dir",
               str(sweep_dir), "--seed", "1,2", *recipe_args(tiny_phi_dir, snli_dir, "--num_train_epochs", "1"),
               "--slurm", "--sbatch", flags]
    env = {"PYTHONPATH": str(ROOT / "src")}
    if sys.prefix == sys.base_prefix:
        env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    result = slurm.command(*command, cwd=tmp_path, env=env, timeout=300)
    array = re.search(r"Submitted job array (\d+): 2 run\(s\) of 2", result.stdout)
    report_job = re.search(r"Submitted job (\d+): the sweep report", result.stdout)
    assert array and report_job, result.stdout + result.stderr
    info = slurm.wait_until_finished(report_job.group(1), timeout=900)
    runs = [sweep_dir / "seed-1", sweep_dir / "seed-2"]
    logs = "\n".join(log.read_text(errors="replace")[-3000:] for run in runs for log in run.glob("slurm-*.log"))
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{logs}\n{slurm.logs()}"
    for run in runs:  # each array task is single_node.sbatch: its own log in its run directory, a finished run
        (log,) = run.glob("slurm-*.log")
        assert "[slurm] run finished" in log.read_text(), log.read_text()[-3000:]
        assert (run / "run_info.json").is_file() and (run / "report" / "report.md").is_file()
    results = json.loads((sweep_dir / "sweep_results.json").read_text())
    assert [r["finished"] for r in results["runs"]] == [True, True]
    assert (sweep_dir / "report" / "report.md").is_file()

    # The same command again: every run is finished, so only the report is submitted.
    again = slurm.command(*command, cwd=tmp_path, env=env, timeout=300)
    assert "job array" not in again.stdout and "Submitted job" in again.stdout, again.stdout


@pytest.mark.slow
def test_multi_node_job_is_interrupted_on_every_node_and_resumes(slurm, tiny_phi_dir, snli_dir, tmp_path):
    require_two_nodes(slurm)
    # The nodes' names do not resolve; every node of this cluster is 127.0.0.1.
    log = interrupt_and_check_resume(slurm, "slurm/multi_node.sbatch", TWO_NODES, tmp_path, tiny_phi_dir, snli_dir,
                                     MAIN_PROCESS_IP="127.0.0.1")
    assert "[slurm] 2 node(s) (tl1 tl2) x 1 process(es)" in log
    assert "--num_machines 2 --num_processes 2 --main_process_ip 127.0.0.1" in log
