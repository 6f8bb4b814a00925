"""Per-step monitoring of a training run: device memory, utilisation, step time, throughput and MFU.

`ResourceMonitor` is a Trainer callback. At every logging step each rank measures the devices it
uses: on a GPU, NVML's used and total memory and utilisation plus PyTorch's allocated, reserved
and peak allocated memory; on the CPU, the process's resident memory and its peak. With them go
the step time, samples/s, tokens/s (real tokens: the attention mask's ones, which the Trainer
counts with `include_num_input_tokens_seen="non_padding"`) and the model FLOPs utilisation: against
the published peak of a GPU, or the measured matmul peak of a CPU (`tunelab.flops.peak_flops`).
Rank 0 gathers every rank's figures, adds them to the trainer's log (so every tracker and the
progress bar see them) and writes RUN_DIR/monitoring.json. Where NVML is missing (no driver) or
answers NotSupported (MIG slices, vGPUs), PyTorch's figures stand in and the run says so once.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from tunelab.console import say
from tunelab.flops import cpu_peak_flops, flops_per_token, peak_flops
from tunelab.summary import GIB

MONITORING_FILE = "monitoring.json"


class DeviceProbe:
    """Memory figures of this process's devices: NVML where it answers, PyTorch where it cannot.

    `devices` are CUDA device indices (empty: the CPU). `nvml` is the pynvml module or a stand-in
    with its interface; `cuda` is `torch.cuda` or a stand-in. Every problem is noted once in `notes`.
    """

    def __init__(self, devices: list[int], nvml=None, cuda=torch.cuda):
        self.devices, self.cuda = list(devices), cuda
        self.notes: list[str] = []
        self._failed: set[tuple[str, int]] = set()
        self.nvml, self.handles = self._open_nvml(nvml) if self.devices else (None, {})

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def device_name(self) -> str | None:
        """The name of this process's first GPU (NVML's, else PyTorch's); None on the CPU."""
        if not self.devices:
            return None
        device = self.devices[0]
        name = self._query("name", device, self.nvml.nvmlDeviceGetName if self.nvml else None, quiet=True)
        name = name.decode() if isinstance(name, bytes) else name
        return name or self.cuda.get_device_name(device)

    def sample(self) -> dict[str, dict[str, float]]:
        """{"gpu0": {...}, ...} or {"cpu": {...}}: sizes in GiB, utilisation in percent."""
        if not self.devices:
            return {"cpu": _process_memory()}
        return {f"gpu{device}": self._gpu(device) for device in self.devices}

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass
            self.nvml = None

    def _gpu(self, device: int) -> dict[str, float]:
        cuda = self.cuda
        figures = {"torch_alloc_gib": cuda.memory_allocated(device) / GIB,
                   "torch_reserved_gib": cuda.memory_reserved(device) / GIB,
                   "torch_peak_alloc_gib": cuda.max_memory_allocated(device) / GIB}
        nvml = self.nvml
        memory = self._query("memory", device, nvml.nvmlDeviceGetMemoryInfo if nvml else None)
        if memory is not None:
            figures["mem_used_gib"], figures["mem_total_gib"] = memory.used / GIB, memory.total / GIB
        else:
            figures["mem_used_gib"] = figures["torch_reserved_gib"]
            figures["mem_total_gib"] = cuda.get_device_properties(device).total_memory / GIB
        utilization = self._query("utilisation", device, nvml.nvmlDeviceGetUtilizationRates if nvml else None)
        if utilization is not None:
            figures["util_pct"] = float(utilization.gpu)
        return {key: round(value, 4) for key, value in figures.items()}

    def _query(self, what: str, device: int, call, quiet: bool = False):
        """NVML's answer, or None once it has failed for this device (noted the first time)."""
        handle = self.handles.get(device)
        if call is None or handle is None or (what, device) in self._failed:
            return None
        try:
            return call(handle)
        except self.nvml.NVMLError as error:
            self._failed.add((what, device))
            if not quiet:
                fallback = {"memory": "used memory is PyTorch's reserved memory (this process only, without the "
                                      "CUDA context) and total memory PyTorch's device total",
                            "utilisation": "utilisation is not reported"}[what]
                self.note(f"NVML cannot report {what} of GPU {device} ({error}): {fallback}")
            return None

    def _open_nvml(self, nvml):
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                self.note("NVML unavailable (nvidia-ml-py is not installed): GPU memory from PyTorch only, "
                          "no utilisation")
                return None, {}
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            self.note(f"NVML unavailable ({error}): GPU memory from PyTorch only, no utilisation")
            return None, {}
        handles = {}
        for device in self.devices:
            handle = _nvml_handle(nvml, self.cuda, device)
            if handle is None:
                self.note(f"NVML cannot find GPU {device}: its memory from PyTorch only, no utilisation")
            else:
                handles[device] = handle
        return nvml, handles


def _nvml_handle(nvml, cuda, device: int):
    """NVML's handle for a CUDA device index: by UUID (right under any CUDA_VISIBLE_DEVICES), else by position."""
    uuid = str(getattr(cuda.get_device_properties(device), "uuid", "") or "")
    candidates = [uuid] if uuid.startswith(("GPU-", "MIG-")) else [f"GPU-{uuid}", f"MIG-{uuid}"] if uuid else []
    visible = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    entry = visible[device] if device < len(visible) else str(device)
    candidates.append(int(entry) if entry.isdigit() else entry)
    for candidate in candidates:
        try:
            if isinstance(candidate, int):
                return nvml.nvmlDeviceGetHandleByIndex(candidate)
            return nvml.nvmlDeviceGetHandleByUUID(candidate)
        except nvml.NVMLError:
            continue
    return None


def _process_memory() -> dict[str, float]:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        import psutil

        resident = psutil.Process().memory_info().rss
    except ImportError:
        resident = peak
    return {"rss_gib": round(resident / GIB, 4), "peak_rss_gib": round(peak / GIB, 4)}


class ResourceMonitor(TrainerCallback):
    """Memory, step time, throughput and MFU at every logging step, gathered from every rank.

    Put it first in the trainer's callbacks (`trainer.callback_handler.callbacks.insert(0, monitor)`):
    its figures are added to the `logs` the later callbacks (W&B, TensorBoard, the progress bar)
    receive, and to `state.log_history`. `summary` holds the run's peaks and averages after
    training; RUN_DIR/monitoring.json holds it with every sample.
    """

    def __init__(self, run_dir: str | Path | None = None, nvml=None, cuda=torch.cuda, clock=time.perf_counter,
                 cpu_peak=cpu_peak_flops):
        self.path = Path(run_dir) / MONITORING_FILE if run_dir is not None else None
        self._nvml, self._cuda, self._clock, self._cpu_peak = nvml, cuda, clock, cpu_peak
        self.probe: DeviceProbe | None = None
        self.samples: list[dict] = self._previous_samples()
        self.notes: list[str] = []
        self.summary: dict | None = None
        self.flops_per_token: float | None = None
        self.flops_counting = ""
        self.peak_flops: float | None = None
        self.peak_assumed = ""
        self._window: tuple[float, int, int] | None = None
        self._totals = {"steps": 0, "seconds": 0.0, "tokens": 0}

    # -------------------------------------------------------------- Trainer events

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.probe = DeviceProbe(self._devices(args), self._nvml, self._cuda)
        if model is not None:
            checkpointing = args.gradient_checkpointing or _checkpointing(model)
            self.flops_per_token, self.flops_counting = flops_per_token(model, checkpointing)
        dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else weights_dtype(model)
        if self.probe.devices or state.is_world_process_zero:  # a CPU's peak is measured by rank 0 alone
            self.peak_flops, self.peak_assumed = peak_flops(self.probe.device_name(), dtype, self._cpu_peak)
        self._window, self._totals = None, {"steps": 0, "seconds": 0.0, "tokens": 0}
        if state.is_world_process_zero:
            for line in (self.peak_assumed, *self.probe.notes):
                say(line, every_process=True)
            self.notes = list(self.probe.notes)

    def on_step_begin(self, args, state, control, **kwargs):
        if self._window is None:
            self._window = (self._clock(), state.global_step, state.num_input_tokens_seen or 0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.probe is None or logs is None or "loss" not in logs:  # only the logs of training steps
            return
        figures = self._measure(args, state)
        if state.is_world_process_zero:
            logs.update(figures)
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(figures)
            self._write()

    def on_train_end(self, args, state, control, **kwargs):
        if self.probe is None:
            return
        self._measure(args, state)  # a last sample: the peaks of the steps since the last log
        if state.is_world_process_zero:
            self.summary = self._summarise(args)
            self._write()
        self.probe.close()
        self.probe = None

    # -------------------------------------------------------------- measuring

    def _devices(self, args) -> list[int]:
        device = getattr(args, "device", torch.device("cpu"))
        if device.type != "cuda":
            return []
        if args.world_size > 1:
            return [device.index if device.index is not None else self._cuda.current_device()]
        return list(range(self._cuda.device_count()))  # one process drives every visible GPU

    def _measure(self, args, state) -> dict[str, float]:
        """This rank's sample, gathered on every rank; the flat figures for the log (rank 0's are complete)."""
        now = self._clock()
        tokens_seen = state.num_input_tokens_seen or 0
        start, first_step, first_tokens = self._window or (now, state.global_step, tokens_seen)
        self._window = None
        steps, seconds, tokens = state.global_step - first_step, now - start, tokens_seen - first_tokens
        mine = {"rank": args.process_index, "devices": self.probe.sample(), "notes": self.probe.notes}
        everyone = _gather(mine)
        if not state.is_world_process_zero:
            return {}
        devices = {}
        for sample in sorted(everyone, key=lambda s: s["rank"]):
            prefix = f"rank{sample['rank']}_" if len(everyone) > 1 else ""
            devices.update({prefix + label: figures for label, figures in sample["devices"].items()})
            for text in sample["notes"]:
                if text not in self.notes:
                    self.notes.append(text)
                    say(f"rank {sample['rank']}: {text}" if len(everyone) > 1 else text, every_process=True)
        record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), "devices": devices}
        if steps > 0 and seconds > 0:
            self._totals["steps"] += steps
            self._totals["seconds"] += seconds
            self._totals["tokens"] += tokens
            record.update(self._rates(args, steps, seconds, tokens, devices))
        self.samples.append(record)
        figures = {key: value for key, value in record.items() if key not in ("step", "epoch", "time", "devices")}
        for label, values in devices.items():
            figures.update({f"{label}_{key}": value for key, value in values.items()})
        return figures

    def _rates(self, args, steps: int, seconds: float, tokens: int, devices: dict) -> dict[str, float]:
        global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        rates = {"step_time_s": round(seconds / steps, 4), "samples_per_s": round(steps * global_batch / seconds, 3)}
        if tokens > 0:
            rates["tokens_per_s"] = round(tokens / seconds, 2)
            if self.flops_per_token and self.peak_flops and devices:  # a peak per GPU, or per CPU process
                mfu = 100 * tokens / seconds * self.flops_per_token / (self.peak_flops * len(devices))
                rates["mfu_pct"] = float(f"{mfu:.4g}")
        return rates

    def _summarise(self, args) -> dict:
        totals = self._totals
        summary: dict = {"flops_per_token": self.flops_per_token, "flops_counting": self.flops_counting,
                         "peak_flops": self.peak_flops, "peak_assumed": self.peak_assumed, "notes": self.notes,
                         "world_size": args.world_size, "train_steps": totals["steps"],
                         "train_step_seconds": round(totals["seconds"], 3), "real_tokens": totals["tokens"]}
        if totals["steps"] and totals["seconds"] > 0:
            summary.update(self._rates(args, totals["steps"], totals["seconds"], totals["tokens"],
                                       self.samples[-1]["devices"] if self.samples else {}))
        peaks: dict[str, dict[str, float]] = {}
        for sample in self.samples:
            for label, values in sample["devices"].items():
                for key, value in values.items():
                    peaks.setdefault(label, {})[key] = max(value, peaks.get(label, {}).get(key, value))
        summary["peak_devices"] = peaks
        return summary

    # -------------------------------------------------------------- monitoring.json

    def _previous_samples(self) -> list[dict]:
        """Samples of earlier sessions of this run (it resumed), kept so the file covers the whole run."""
        if self.path is None or not self.path.is_file():
            return []
        try:
            return list(json.loads(self.path.read_text())["samples"])
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def _write(self) -> None:
        if self.path is None:
            return
        from tunelab.rundir import atomic_write_json

        atomic_write_json(self.path, {"summary": self.summary, "samples": self.samples})


def weights_dtype(model) -> torch.dtype:
    """The dtype the model's matmuls run in without autocast: that of its weights (fp32 when unknown)."""
    dtype = getattr(model, "dtype", torch.float32)
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


def _checkpointing(model) -> bool:
    """Whether the model recomputes activations (transformers 5 renamed the flag)."""
    flag = getattr(model, "is_activation_checkpointing", None)
    if flag is None:
        flag = getattr(model, "is_gradient_checkpointing", False)
    return bool(flag)


def _gather(sample: dict) -> list[dict]:
    """Every rank's sample, on every rank (a collective: all ranks call it at the same logging steps)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [sample]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, sample)
    return gathered
