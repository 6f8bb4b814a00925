"""Hardware profiles: which accelerate config to launch with, and what the recipe changes for it.

A profile keeps the recipe's effective batch (per-device batch × accumulation × processes)
while choosing a per-device batch that fits, the precision the hardware supports (bf16 where
supported, fp16 otherwise; on CPU, `auto` for one process, fp32 for two) and gradient checkpointing. `--profile auto` picks one
from the detected GPUs (NVML: name, count, memory; no GPU: cpu) and says why.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from tunelab.console import say
from tunelab.errors import TunelabError
from tunelab.resources import find_file


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    bf16: bool


# The GPUs the profiles are for, as NVML names them; their peak FLOP/s are in tunelab.flops.
A40 = Gpu("NVIDIA A40", 48, bf16=True)
H100 = Gpu("NVIDIA H100 80GB HBM3", 80, bf16=True)
# A 36 GB vGPU slice reports no bf16; the card behind it is unknown, so a plan assumes a V100's fp16 peak.
VGPU36 = Gpu("36 GB vGPU slice (V100-class)", 36, bf16=False)

# How a profile spreads a run over its GPUs (tunelab.launch.plan estimates memory for each).
STRATEGIES = ("DDP", "ZeRO-2", "ZeRO-3", "FSDP2")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    accelerate_config: str
    precision: str
    gpu: Gpu | None = None               # the GPU it is for (a plan's default); None: CPU
    processes: int | None = 1            # None: one per visible GPU
    per_device_train_batch_size: int | None = None  # None keeps the recipe's
    gradient_checkpointing: bool = False
    optim: str | None = None             # None keeps the recipe's
    strategy: str = "DDP"                # one of STRATEGIES

    @property
    def needs_gpu(self) -> bool:
        return self.gpu is not None

    @property
    def config_path(self) -> Path:
        """accelerate_configs/<file> of the working directory, else the packaged copy."""
        return find_file(Path("accelerate_configs") / self.accelerate_config).resolve()


PROFILES = {p.name: p for p in (
    Profile("cpu", "one process on the CPU (the embedded default)", "cpu.yaml", "auto"),
    Profile("cpu_ddp", "two processes on the CPU with gloo (data parallelism anywhere)", "cpu_ddp.yaml", "fp32",
            processes=2),
    Profile("a40", "one 48 GB GPU (A40, A6000, L40S)", "a40.yaml", "bf16", gpu=A40),
    Profile("vgpu36", "one 36 GB virtual GPU slice (no bf16)", "vgpu36.yaml", "fp16", gpu=VGPU36,
            per_device_train_batch_size=4, gradient_checkpointing=True),
    Profile("h100", "one 80 GB Hopper GPU (H100, H200)", "a40.yaml", "bf16", gpu=H100,
            per_device_train_batch_size=16),
    # The profiles for several GPUs take any GPU; a plan assumes A40s unless told --gpu_memory.
    Profile("multi_gpu", "every GPU of one node, data parallel", "multi_gpu.yaml", "bf16", gpu=A40,
            processes=None),
    Profile("zero2", "DeepSpeed ZeRO-2 over every GPU of one or many nodes", "zero2.yaml", "bf16",
            gpu=A40, processes=None, strategy="ZeRO-2"),
    Profile("zero3", "DeepSpeed ZeRO-3 over every GPU of one or many nodes", "zero3.yaml", "bf16",
            gpu=A40, processes=None, gradient_checkpointing=True, strategy="ZeRO-3"),
    # bitsandbytes' optimizers (the recipes' paged AdamW) cannot update FSDP2's sharded weights.
    Profile("fsdp2", "PyTorch FSDP2 over every GPU of one or many nodes", "fsdp2.yaml", "bf16",
            gpu=A40, processes=None, gradient_checkpointing=True, optim="adamw_torch", strategy="FSDP2"),
)}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise TunelabError(f"unknown hardware profile {name!r}: choose one of {', '.join(PROFILES)} or auto")
    return PROFILES[name]


def detect_gpus(nvml=None) -> list[Gpu]:
    """Visible GPUs from NVML (or a stand-in with NVML's interface); [] when there is no driver."""
    if nvml is None:
        import pynvml as nvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return []
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            memory = nvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
            major, _ = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(Gpu(name, round(memory, 1), bf16=major >= 8 and "vgpu" not in name.lower()))
        return gpus
    finally:
        nvml.nvmlShutdown()


def auto_profile(gpus: list[Gpu]) -> tuple[Profile, str]:
    """The profile for the detected hardware, and the reason in words."""
    if not gpus:
        return PROFILES["cpu"], "no GPU visible (NVML found none), so the CPU profile"
    summary = f"{len(gpus)} × {gpus[0].name} ({gpus[0].memory_gib:g} GiB)"
    if len(gpus) > 1:
        return PROFILES["multi_gpu"], f"{summary}: data parallel over all of them"
    gpu = gpus[0]
    if not gpu.bf16:
        return PROFILES["vgpu36"], f"{summary}: no bf16 support, so fp16 with smaller batches"
    if gpu.memory_gib >= 70:
        return PROFILES["h100"], f"{summary}: 70 GiB or more, so larger per-device batches"
    if gpu.memory_gib >= 40:
        return PROFILES["a40"], f"{summary}: 40 GiB or more with bf16"
    return PROFILES["vgpu36"], f"{summary}: under 40 GiB, so smaller batches with gradient checkpointing"


def check_hardware(profile: Profile, gpus: list[Gpu]) -> None:
    if profile.needs_gpu and not gpus:
        raise TunelabError(f"profile {profile.name} needs a GPU but none is visible: use --profile cpu "
                           "(or auto) on this machine")
    if profile.needs_gpu and profile.precision == "bf16" and not all(g.bf16 for g in gpus):
        raise TunelabError(f"profile {profile.name} trains in bf16, which {gpus[0].name} does not support: "
                           "use --profile vgpu36 (fp16) or --precision fp16")
    if not profile.config_path.exists():
        raise TunelabError(f"profile {profile.name} needs {profile.config_path}, which is missing: restore it "
                           "(tunelab init DIR copies the packaged configs)")


def process_count(profile: Profile, gpus: list[Gpu]) -> int:
    return profile.processes if profile.processes is not None else max(1, len(gpus))


def apply_profile(recipe, profile: Profile, world_size: int, explicit: set[str]):
    """The recipe adjusted for the profile; settings the user gave explicitly are kept as given.

    The effective batch is the recipe's per-device batch × accumulation (on one process); the
    profile's per-device batch and the world size are balanced by gradient accumulation.
    """
    effective = recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps
    changes = {}
    if "precision" not in explicit:
        changes["precision"] = profile.precision
    if profile.optim and "optim" not in explicit:
        changes["optim"] = profile.optim
    if "gradient_checkpointing" not in explicit:
        changes["gradient_checkpointing"] = profile.gradient_checkpointing or recipe.gradient_checkpointing
    batch = recipe.per_device_train_batch_size
    if "per_device_train_batch_size" not in explicit:
        batch = min(profile.per_device_train_batch_size or batch, max(1, effective // world_size))
    accumulation = recipe.gradient_accumulation_steps
    if "gradient_accumulation_steps" not in explicit:
        accumulation = max(1, round(effective / (batch * world_size)))
    if batch * accumulation * world_size != effective:
        say(f"profile {profile.name}: effective batch {batch * accumulation * world_size} "
            f"(recipe: {effective}); it cannot be split evenly over {world_size} process(es)")
    return dataclasses.replace(recipe, per_device_train_batch_size=batch,
                               gradient_accumulation_steps=accumulation, **changes)


def planned_gpus(profile: Profile, gpus: int | None, gpu_memory: float | None) -> list[Gpu]:
    """The GPUs a plan for `profile` is for: its GPU (with `gpu_memory` GiB, if given), `gpus` of them."""
    if not profile.needs_gpu:
        raise TunelabError(f"--gpus and --gpu_memory describe GPUs, and profile {profile.name} runs on the CPU: "
                           "choose a GPU profile (a40, vgpu36, h100, multi_gpu, zero2, zero3, fsdp2)")
    if profile.processes == 1 and gpus not in (None, 1):
        raise TunelabError(f"profile {profile.name} runs on one GPU: for {gpus} GPUs use --profile multi_gpu "
                           "(or zero2, zero3, fsdp2)")
    if profile.processes is None and gpus is None:
        if "WORLD_SIZE" not in os.environ:  # a launcher's processes plan for themselves
            raise TunelabError(f"profile {profile.name} runs on every GPU it finds: say how many to plan for "
                               "with --gpus N")
        gpus = int(os.environ["WORLD_SIZE"])
    gpu = dataclasses.replace(profile.gpu, memory_gib=gpu_memory) if gpu_memory else profile.gpu
    return [gpu] * (gpus or 1)


def resolve_profile(recipe, explicit: set[str], gpus: list[Gpu] | None = None):
    """Apply `recipe.profile` (resolving auto from the detected GPUs); the result names the profile used.

    A dry run (a plan) with a GPU profile is for that profile's GPUs (`planned_gpus`), whatever this
    machine has."""
    if recipe.dry_run and recipe.profile != "auto" and (get_profile(recipe.profile).needs_gpu or recipe.gpus
                                                        or recipe.gpu_memory):
        gpus = planned_gpus(get_profile(recipe.profile), recipe.gpus, recipe.gpu_memory)
    gpus = detect_gpus() if gpus is None else gpus
    if recipe.profile == "auto":
        profile, reason = auto_profile(gpus)
        say(f"profile auto -> {profile.name}: {reason}")
    else:
        profile = get_profile(recipe.profile)
    check_hardware(profile, gpus)
    world_size = int(os.environ.get("WORLD_SIZE", process_count(profile, gpus)))
    return dataclasses.replace(apply_profile(recipe, profile, world_size, explicit), profile=profile.name)
