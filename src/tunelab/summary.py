"""What a run ran on and what it cost: hardware, software versions, wall time by phase, peak memory,
and the summary printed at the end of a run (per-step figures come from tunelab.monitoring)."""

from __future__ import annotations

import platform
import resource
import time
from contextlib import contextmanager
from importlib import metadata

import torch

GIB = 2**30

LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "deepspeed",
             "scikit-learn", "wandb")


def hardware_info(num_processes: int = 1) -> dict:
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "device": "cuda" if gpus else "cpu",
        "cpu": cpu_model(),
        "cpu_count": torch.get_num_threads(),
        "gpus": gpus,
        "num_processes": num_processes,
    }


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 9B14"), from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def software_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def peak_memory() -> dict:
    """Peak GPU memory allocated by PyTorch, or the process's peak resident memory on CPU."""
    if torch.cuda.is_available():
        return {"device": "cuda", "peak_bytes": torch.cuda.max_memory_allocated(),
                "how": "torch.cuda.max_memory_allocated on this process's GPU"}
    return {"device": "cpu", "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "how": "peak resident memory of the main process (getrusage)"}


class Stopwatch:
    """Named wall-clock phases: `with watch.phase("train"): ...`; `watch.seconds` maps phase to seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": time.perf_counter() - self._start}


def format_summary(progress: dict) -> list[str]:
    """The terminal summary: wall time by phase, peak memory, throughput (from progress.json's figures)."""
    timings = progress.get("timings_s") or {}
    phases = {"load": timings.get("load"), "train": timings.get("train"),
              "evaluate": sum(timings.get(key, 0.0) for key in ("baseline_eval", "finetuned_eval")) or None}
    split = ", ".join(f"{name} {_seconds(seconds)}" for name, seconds in phases.items() if seconds is not None)
    lines = [f"Wall time {_seconds(timings.get('total', 0.0))}: {split or 'no stage timed'}"]
    monitoring = progress.get("monitoring") or {}
    memory = progress.get("memory") or {}
    if monitoring.get("peak_devices"):
        peaks = monitoring["peak_devices"]
        lines.append("Peak memory: " + "; ".join(f"{label} {_memory_figures(peaks[label])}" for label in peaks))
    elif memory.get("peak_bytes"):
        lines.append(f"Peak memory: {memory['peak_bytes'] / GIB:.2f} GiB ({memory.get('how', memory.get('device'))})")
    if monitoring.get("step_time_s"):
        throughput = f"Throughput: {monitoring['step_time_s']:.3g} s/step, {monitoring['samples_per_s']:,.1f} samples/s"
        if "tokens_per_s" in monitoring:
            throughput += f", {monitoring['tokens_per_s']:,.0f} real tokens/s"
        if "mfu_pct" in monitoring:
            throughput += f"; MFU {monitoring['mfu_pct']:.1f}% ({monitoring['peak_assumed'].removeprefix('MFU ')})"
        elif monitoring.get("peak_assumed"):
            throughput += f"; {monitoring['peak_assumed']}"
        lines.append(throughput)
    return lines


def _memory_figures(values: dict) -> str:
    if "rss_gib" in values:
        return f"{values['peak_rss_gib']:.2f} GiB peak resident memory"
    text = (f"{values['torch_peak_alloc_gib']:.2f} GiB allocated, {values['torch_reserved_gib']:.2f} GiB reserved "
            f"(PyTorch), {values['mem_used_gib']:.2f} of {values['mem_total_gib']:.1f} GiB used")
    return text + (f", {values['util_pct']:.0f}% peak utilisation" if "util_pct" in values else "")


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s" if whole < 3600 else f"{whole // 3600} h {whole % 3600 // 60} min"
