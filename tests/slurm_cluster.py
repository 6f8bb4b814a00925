"""A real Slurm cluster on this machine for tests: Debian's slurm-wlm and munge, all in a temp dir.

    cluster = SlurmCluster(nodes=2)
    cluster.start()          # raises SlurmUnavailable (with the reason) where Slurm cannot run
    try:
        job = cluster.sbatch("slurm/single_node.sbatch", "--ntasks-per-node=2", cwd=repo, env=...)
        cluster.wait_until_finished(job, timeout=300)
    finally:
        cluster.stop()       # cancels jobs, stops the daemons and what they left, removes the temp dir

Installs the packages with apt-get when they are missing (needs root). Nothing on the machine is
shared with the test cluster: munged has its own key and socket, slurmctld and the slurmds their
own config, ports, state, spool and log files, so a Slurm or munge already on the machine is left
alone. Commands run against the cluster through `cluster.env` (SLURM_CONF set, the caller's own
Slurm variables removed, so tests also work inside a real Slurm job).

Several nodes are several slurmd daemons on this one machine (`slurmd -N tl2`, each with its own
port; Debian builds Slurm with multiple-slurmd support). Every node declares at least 2 CPUs
(SlurmdParameters=config_overrides trusts the config), so two-task jobs run on a one-core machine.

Settings for speed: a requeued job restarts after ~6 s (AuthInfo cred_expire=5, a scheduler
pass every 2 s) instead of Slurm's default 2 minutes, and KillWait is 5 s. ProctrackType is
proctrack/pgid: the linuxproc plugin leaves a job's orphaned children alive; note that processes
in sessions of their own (torchrun's workers) escape pgid tracking, which is why `stop()` also
ends, by pid, every process that carries this cluster's SLURM_CONF in its environment.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue", "scancel")
FINISHED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                   "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"}


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be started here; the message says why."""


def install_packages() -> None:
    """apt-get install Debian's Slurm and munge if a command is missing (apt-get update only on failure)."""
    if all(shutil.which(name) for name in COMMANDS):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"Slurm is not installed and installing it needs root (missing: {missing()})")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable(f"Slurm is not installed and there is no apt-get to install it (missing: {missing()})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not all(shutil.which(name) for name in COMMANDS):
        raise SlurmUnavailable(f"`{' '.join(install)}` failed: {(result.stderr or result.stdout).strip()[-500:]}")


def missing() -> str:
    return ", ".join(name for name in COMMANDS if not shutil.which(name))


def alive(pid: int) -> bool:
    """Running (a zombie, waiting for an init that may never reap it, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SlurmCluster:
    """`nodes` Slurm nodes on this machine (one slurmd each, all at 127.0.0.1), named tl1, tl2, ..."""

    def __init__(self, nodes: int = 1, gpus_per_node: int = 0, cpus_per_node: int = 2) -> None:
        # Declared GPUs and CPUs beyond this machine's (no devices behind the GPUs): for `sbatch --test-only`.
        self.gpus_per_node, self.cpus_per_node = gpus_per_node, cpus_per_node
        self.root: Path | None = None
        self.host = socket.gethostname().split(".")[0]
        self.names = [f"tl{i}" for i in range(1, nodes + 1)]
        self.idle_nodes: list[str] = []
        self.node_failures: dict[str, str] = {}  # node name -> why its slurmd did not start
        self.started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60) -> None:
        """Start munged, slurmctld and the slurmds; raise SlurmUnavailable unless the first node gets idle.

        A node after the first whose slurmd fails (Slurm built without multiple-slurmd support) is
        left out: see `node_failures`; `idle_nodes` lists the usable ones.
        """
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test cluster's slurmd must run as root")
        install_packages()
        # munged wants every directory on its socket's path to be searchable by all users.
        self.root = Path(tempfile.mkdtemp(prefix="tunelab-slurm-"))
        self.root.chmod(0o755)
        atexit.register(self.stop)  # in case the caller never gets to stop()
        for folder in ("state", "spool", *(f"spool/{name}" for name in self.names)):
            (self.root / folder).mkdir()
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        self._run_daemon(["munged", f"--key-file={key}", f"--socket={self.socket}",
                          f"--pid-file={self.root / 'munged.pid'}", f"--log-file={self.root / 'munged.log'}",
                          f"--seed-file={self.root / 'munged.seed'}"], "munged.log")
        self.conf.write_text(self._slurm_conf())
        self._declare_gpus()
        self._run_daemon(["slurmctld", "-f", str(self.conf)], "slurmctld.log")
        self.started = True
        for i, name in enumerate(self.names):
            try:
                self._run_daemon(["slurmd", "-f", str(self.conf), "-N", name], f"slurmd-{name}.log")
            except SlurmUnavailable as error:
                if i == 0:
                    raise
                self.node_failures[name] = str(error)
        wanted = [name for name in self.names if name not in self.node_failures]
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            listing = self.command("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split()
            states = dict(zip(listing[::2], listing[1::2]))
            if all(states.get(name) == "idle" for name in wanted):
                self.idle_nodes = wanted
                return
            time.sleep(0.2)
        raise SlurmUnavailable(f"the test nodes did not become idle in {timeout:.0f} s ({states}):\n" + self.logs())

    def stop(self) -> None:
        """Cancel every job, stop the daemons and their leftovers, remove the temp dir. Safe to call twice."""
        if self.root is None:
            return
        if self.started:
            self.command("scancel", "--full", "--user", "root", check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.command("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
            self.command("scontrol", "shutdown", check=False)
        for name in (*(f"slurmd-{node}" for node in self.names), "slurmctld", "munged"):
            self._stop_pid(self.root / f"{name}.pid")
        self._kill_cluster_processes()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        self.started = False

    # ------------------------------------------------------------------ commands

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def socket(self) -> Path:
        return self.root / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """The caller's environment without its own Slurm settings, pointed at this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def command(self, *args: str, check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        env = {**self.env, **kwargs.pop("env", {})}
        result = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def sbatch(self, script: str | Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
        """Submit `script` with sbatch `args` (flags before the script, then `--` and script arguments)."""
        flags, script_args = list(args), []
        if "--" in flags:
            cut = flags.index("--")
            flags, script_args = flags[:cut], flags[cut + 1:]
        result = self.command("sbatch", "--parsable", *flags, str(script), *script_args, cwd=cwd, env=env or {})
        return result.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, Reason, ...); {} once the job is gone."""
        result = self.command("scontrol", "show", "job", "-o", job_id, check=False)
        info = {}
        for token in result.stdout.split():
            key, _, value = token.partition("=")
            info.setdefault(key, value)
        return info

    def wait_for(self, job_id: str, condition: Callable[[dict[str, str]], bool], timeout: float,
                 what: str = "the condition", poll: float = 0.5) -> dict[str, str]:
        """Poll the job until `condition(info)`; fail with the job's state and the daemons' logs on timeout."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info and condition(info):
                return info
            time.sleep(poll)
        raise AssertionError(f"job {job_id}: no {what} after {timeout:.0f} s; last state "
                             f"{info.get('JobState')} ({info.get('Reason')})\n{self.logs()}")

    def wait_until_finished(self, job_id: str, timeout: float) -> dict[str, str]:
        return self.wait_for(job_id, lambda info: info.get("JobState") in FINISHED_STATES, timeout, "end")

    def logs(self, lines: int = 15) -> str:
        parts = []
        for name in ("slurmctld.log", *(f"slurmd-{node}.log" for node in self.names), "munged.log"):
            path = self.root / name if self.root else None
            if path and path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name}\n" + "\n".join(tail))
        return "\n".join(parts)

    # ------------------------------------------------------------------ internals

    def _slurm_conf(self) -> str:
        hardware = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout
        found = dict(re.findall(r"(CPUs|RealMemory)=(\d+)", hardware))
        if "CPUs" not in found:
            raise SlurmUnavailable(f"`slurmd -C` did not describe this machine: {hardware.strip()[:200]}")
        # At least 2 CPUs (cpus_per_node), so two-task jobs run on a one-core machine too (config_overrides trusts
        # this line).
        node = f"CPUs={max(self.cpus_per_node, int(found['CPUs']))} RealMemory={found.get('RealMemory', '1000')}"
        node += f" Gres=gpu:{self.gpus_per_node}" if self.gpus_per_node else ""
        root = self.root
        return "\n".join([
            "ClusterName=tunelabtest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket},cred_expire=5",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}/%n",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root}/slurmd-%n.pid",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root}/slurmd-%n.log",
            "ProctrackType=proctrack/pgid",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MailProg=/bin/true",
            "SchedulerParameters=bf_interval=1,sched_interval=2",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            *(["GresTypes=gpu"] if self.gpus_per_node else []),
            "KillWait=5",
            "MinJobAge=600",
            *(f"NodeName={name} NodeHostname={self.host} NodeAddr=127.0.0.1 Port={free_port()} {node} State=UNKNOWN"
              for name in self.names),
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    def _declare_gpus(self) -> None:
        """gres.conf beside slurm.conf: `gpus_per_node` GPUs whose device files are copies of /dev/null (slurmd
        drops a GPU without a device file, and nothing here opens them)."""
        lines = []
        if self.gpus_per_node:
            (self.root / "gpus").mkdir()
            for index in range(self.gpus_per_node):
                os.mknod(self.root / "gpus" / f"gpu{index}", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            lines.append(f"Name=gpu File={self.root}/gpus/gpu[0-{self.gpus_per_node - 1}]")
        (self.root / "gres.conf").write_text("".join(f"{line}\n" for line in lines))

    def _run_daemon(self, command: list[str], log_name: str) -> None:
        """Start a daemon that forks into the background; its start-up errors become SlurmUnavailable."""
        try:
            result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SlurmUnavailable(f"{command[0]} did not start: {error}") from None
        if result.returncode != 0:
            log = self.root / log_name
            detail = log.read_text(errors="replace").strip()[-800:] if log.exists() else ""
            raise SlurmUnavailable(f"{command[0]} did not start ({result.returncode}): "
                                   f"{(result.stderr or result.stdout).strip()[-500:]}\n{detail}")

    @staticmethod
    def _stop_pid(pid_file: Path, timeout: float = 10) -> None:
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not alive(pid):
                return
            os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and alive(pid):
                time.sleep(0.1)

    def _kill_cluster_processes(self) -> None:
        """SIGKILL, by pid, processes whose environment names this cluster's slurm.conf (jobs' leftovers)."""
        marker = f"\0SLURM_CONF={self.conf}\0".encode()
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if marker in b"\0" + environ.read_bytes() + b"\0":
                    pid = int(environ.parent.name)
                    if pid != os.getpid():
                        os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                continue
