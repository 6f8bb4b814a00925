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

CONFIG_DIR = Path(__file__).resolve().parents[2] / "accelerate_configs"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    accelerate_config: str
    precision: str
    gpu_memory_gib: float = 0.0          # per GPU; 0 for CPU profiles
    processes: int | None = 1            # None: one per visible GPU
    per_device_train_batch_size: int | None = None  # None keeps the recipe's
    gradient_checkpointing: bool = False
    optim: str | None = None             # None keeps the recipe's

    @property
    def needs_gpu(self) -> bool:
        return self.gpu_memory_gib > 0

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / self.accelerate_config


PROFILES = {p.name: p for p in (
    Profile("cpu", "one process on the CPU (the embedded default)", "cpu.yaml", "auto"),
    Profile("cpu_ddp", "two processes on the CPU with gloo (data parallelism anywhere)", "cpu_ddp.yaml", "fp32",
            processes=2),
    Profile("a40", "one 48 GB GPU (A40, A6000, L40S)", "a40.yaml", "bf16", gpu_memory_gib=48),
    Profile("vgpu36", "one 36 GB virtual GPU slice (no bf16)", "vgpu36.yaml", "fp16", gpu_memory_gib=36,
            per_device_train_batch_size=4, gradient_checkpointing=True),
    Profile("h100", "one 80 GB Hopper GPU (H100, H200)", "a40.yaml", "bf16", gpu_memory_gib=80,
            per_device_train_batch_size=16),
    Profile("multi_gpu", "every GPU of one node, data parallel", "multi_gpu.yaml", "bf16", gpu_memory_gib=24,
            processes=None),
    Profile("zero2", "DeepSpeed ZeRO-2 over every GPU of one or many nodes", "zero2.yaml", "bf16",
            gpu_memory_gib=24, processes=None),
    Profile("zero3", "DeepSpeed ZeRO-3 over every GPU of one or many nodes", "zero3.yaml", "bf16",
            gpu_memory_gib=24, processes=None, gradient_checkpointing=True),
    # bitsandbytes' optimizers (the recipes' paged AdamW) cannot update FSDP2's sharded weights.
    Profile("fsdp2", "PyTorch FSDP2 over every GPU of one or many nodes", "fsdp2.yaml", "bf16",
            gpu_memory_gib=24, processes=None, gradient_checkpointing=True, optim="adamw_torch"),
)}


# How each GPU profile's accelerate config spreads a run (tunelab.launch.plan's strategies); others: DDP.
STRATEGY_OF_CONFIG = {"zero2.yaml": "ZeRO-2", "zero3.yaml": "ZeRO-3", "fsdp2.yaml": "FSDP2"}


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    bf16: bool


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
                           "from the repository")


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


def resolve_profile(recipe, explicit: set[str], gpus: list[Gpu] | None = None):
    """Apply `recipe.profile` (resolving auto from the detected GPUs); the result names the profile used."""
    gpus = detect_gpus() if gpus is None else gpus
    if recipe.profile == "auto":
        profile, reason = auto_profile(gpus)
        say(f"profile auto -> {profile.name}: {reason}")
    else:
        profile = get_profile(recipe.profile)
    check_hardware(profile, gpus)
    world_size = int(os.environ.get("WORLD_SIZE", process_count(profile, gpus)))
    return dataclasses.replace(apply_profile(recipe, profile, world_size, explicit), profile=profile.name)


def check_method_fits_profile(recipe, world_size: int) -> None:
    """Refuse, before the model loads, full or freeze fine-tuning under a GPU profile whose GPUs cannot hold
    it by `tunelab plan`'s estimate for that profile's way of spreading the run over `world_size` GPUs."""
    profile = PROFILES.get(recipe.profile)
    if recipe.method == "lora" or profile is None or not profile.needs_gpu:
        return
    from tunelab.launch.plan import estimate_memory

    memory = estimate_memory(recipe)
    if memory is None:  # no config for the model offline: nothing to estimate from
        return
    strategy = STRATEGY_OF_CONFIG.get(profile.accelerate_config, "DDP")
    by_count = memory["per_gpu_by_strategy"][strategy]
    needed = by_count[max(n for n in by_count if n <= max(world_size, 1))]
    if needed > profile.gpu_memory_gib:
        raise TunelabError(f"method {recipe.method} needs about {needed:.0f} GiB per GPU under profile {profile.name} "
                           f"({strategy}, {world_size} GPU(s); tunelab plan's estimate), more than its "
                           f"{profile.gpu_memory_gib:g} GiB: use --method lora, more GPUs with --profile zero3 or "
                           "fsdp2, or a larger GPU")
