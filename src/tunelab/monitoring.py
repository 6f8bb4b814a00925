"""What a run ran on and what it cost: hardware, software versions, wall time and peak memory."""

from __future__ import annotations

import platform
import resource
import time
from contextlib import contextmanager
from importlib import metadata

import torch

LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "deepspeed",
             "scikit-learn", "wandb")


def hardware_info(num_processes: int = 1) -> dict:
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "device": "cuda" if gpus else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": torch.get_num_threads(),
        "gpus": gpus,
        "num_processes": num_processes,
    }


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
