"""The resolved run plan, printed without training (`tunelab plan`, or `--dry_run`).

With a GPU profile the plan is for that profile's GPUs (`--gpus N`, `--gpu_memory GiB` for others),
wherever it runs: a login node without a GPU plans a cluster run. It shows the processes, the
effective batch and how it is made up, the steps, the precision and a peak-memory estimate from the
model's architecture, instantiated on PyTorch's meta device (no weights are loaded or downloaded),
also per GPU on 1-8 GPUs under DDP, DeepSpeed ZeRO-2/3 and FSDP2. For GPUs it also says what the
estimate must fit in, refuses settings that cannot fit (naming the cheapest change that does),
estimates the run's time from its FLOPs, and prints the `accelerate launch` and `sbatch` lines.
Without a GPU profile it describes this machine.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tunelab.chat.config import ChatRecipe
from tunelab.errors import TunelabError
from tunelab.flops import non_embedding_parameters, peak_flops, training_flops_per_token
from tunelab.launch.accelerate import accelerate_command
from tunelab.methods import trained_parameters
from tunelab.profiles import PROFILES, STRATEGIES, Gpu, Profile, get_profile, planned_gpus
from tunelab.resources import find_file
from tunelab.runtime.precision import compute_dtype

TYPICAL_TOKENS = 128  # a classification prompt (NLI: 40-120 tokens); chat examples count at their max_length
MEMORY_CLASSES_GIB = (8, 16, 24, 40, 48, 80)
GPU_COUNTS = (1, 2, 4, 8)
KNOWN_HUB_CONFIGS = {"microsoft/phi-2": "phi-2", "gpt2-large": "gpt2-large", "openai-community/gpt2-large": "gpt2-large"}
USABLE_SHARE = 0.9  # of a GPU's memory; the CUDA context and the allocator's fragmentation take the rest
ASSUMED_MFU = 0.35  # model FLOPs utilisation a time estimate assumes (no GPU run has measured one yet)
TIME_MARGIN = 2.0   # a Slurm time limit allows this many times the estimate, the MFU being an assumption
START_UP_S = 600    # and this long for loading the model and data before the first step
GPUS_PER_NODE = 8   # a plan puts at most this many GPUs on one node
SHARDED_GPU_COUNTS = (2, 4, 8, 16, 32, 64)
TEMPLATES = {1: "slurm/single_node.sbatch", 2: "slurm/multi_node.sbatch"}  # by node count; tunelab.resources finds them
PLAN_ONLY = ("dry_run", "gpus", "gpu_memory", "profile")  # settings the printed commands set themselves or drop


@dataclass(frozen=True)
class Target:
    """The GPUs a plan is for: `count` GPUs like `gpu`, run as `profile` says."""
    profile: Profile
    gpu: Gpu
    count: int

    def describe(self) -> str:
        spread = f", {self.profile.strategy}" if self.count > 1 else ""
        if self.gpu == self.profile.gpu:
            return f"{self.count} × {self.gpu.name} ({self.gpu.memory_gib:g} GiB{spread})"
        return f"{self.count} × a {self.gpu.memory_gib:g} GiB GPU ({self.profile.gpu.name}'s peak for time{spread})"


def planned_target(recipe) -> Target | None:
    """The GPUs of the recipe's (resolved) GPU profile; None for the CPU profiles and no profile."""
    if recipe.profile not in PROFILES or not get_profile(recipe.profile).needs_gpu:
        return None
    profile = get_profile(recipe.profile)
    gpus = planned_gpus(profile, recipe.gpus, recipe.gpu_memory)
    return Target(profile, gpus[0], len(gpus))


# ---------------------------------------------------------------------------- the plan

def build_plan(recipe, world_size: int = 1, train_rows: int | None = None, eval_rows: int | None = None,
               argv: list[str] | None = None) -> dict:
    """The plan as data. `eval_rows`: every row scored over the run (for the time estimate); `argv`: the recipe
    file and its command-line settings (for the printed commands). Raises TunelabError when the estimate does
    not fit the planned GPUs."""
    target = planned_target(recipe)
    if target and recipe.precision == "auto":  # what auto picks on that GPU, not on this machine
        recipe = dataclasses.replace(recipe, precision="bf16" if target.gpu.bf16 else "fp16")
    world_size = target.count if target else world_size
    per_step = recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps * world_size
    plan = {
        "run_dir": str(recipe.run_dir),
        "profile": recipe.profile,
        "target": target.describe() if target else None,
        "processes": world_size,
        "per_device_train_batch_size": recipe.per_device_train_batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "effective_batch": per_step,
        "precision": str(compute_dtype(recipe.precision)).removeprefix("torch."),
        "gradient_checkpointing": recipe.gradient_checkpointing,
        "load_in_4bit": recipe.load_in_4bit,
        "method": recipe.method,
        "tokens_per_example": tokens_per_example(recipe),
        "train_rows": train_rows,
        "optimizer_steps": optimizer_steps(recipe, train_rows, world_size),
    }
    shape = model_shape(recipe)
    plan["memory"] = memory_estimate(recipe, shape) if shape else None
    if target:
        plan["fit"] = check_fit(recipe, shape, target) if shape else None
        plan["time"] = (time_estimate(recipe, shape, target, plan, eval_rows) if shape
                        else {"note": "no estimate: the model's config is not available offline"})
        if argv:
            plan["commands"] = launch_commands(target, argv, plan["time"].get("total_s"))
    return plan


def optimizer_steps(recipe, train_rows: int | None, world_size: int) -> int | None:
    if recipe.max_steps > 0:
        return recipe.max_steps
    if train_rows is None:
        return None
    batches = math.ceil(train_rows / (recipe.per_device_train_batch_size * world_size))
    return math.ceil(recipe.num_train_epochs * math.ceil(batches / recipe.gradient_accumulation_steps))


# ---------------------------------------------------------------------------- memory

@dataclass(frozen=True)
class ModelShape:
    """What the estimates need of a model's architecture (counted once on the meta device)."""
    parameters: int         # every weight
    embeddings: int         # input and output embedding weights (kept in the compute dtype under 4-bit)
    largest_embedding: int
    layers: int
    hidden: int
    non_embedding: int      # weights a token passes through (tunelab.flops)
    trained: int            # the parameters the recipe's method trains (tunelab.methods): LoRA weights, or the model's
    lora_in_output: int     # LoRA weights on the output head (no FLOPs: only the answer position reaches it)


@dataclass(frozen=True)
class ParameterMemory:
    """Bytes of a model's parameters on one process before sharding: weights as stored, gradients, optimizer."""
    weights: float
    gradients: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer


def parameter_memory(frozen_weight_bytes: float, trainable: int, optim: str) -> ParameterMemory:
    """Frozen weights as stored; every trainable parameter in fp32 with its fp32 gradient and AdamW's two
    moments (fp32, or one byte each with bitsandbytes' 8-bit optimizers). LoRA: the base frozen and the
    adapter trainable. Full fine-tuning: nothing frozen, every parameter trainable, 16 bytes each."""
    moments = 2 if "8bit" in optim else 8
    return ParameterMemory(frozen_weight_bytes + 4 * trainable, 4 * trainable, moments * trainable)


def method_parameter_memory(recipe, shape: ModelShape) -> ParameterMemory:
    """LoRA: the frozen base (4-bit NF4 with double-quantized scales, or the compute dtype; embeddings stay in
    the compute dtype) and the adapter trained. Full and freeze: every weight in fp32, those the method trains
    with their gradients and optimizer state."""
    if recipe.method == "lora":
        return parameter_memory(frozen_weight_bytes(recipe, shape), shape.trained, recipe.optim)
    return parameter_memory(4 * (shape.parameters - shape.trained), shape.trained, recipe.optim)


def frozen_weight_bytes(recipe, shape: ModelShape) -> float:
    return ((shape.parameters - shape.embeddings) * weight_bytes_per_parameter(recipe)
            + shape.embeddings * dtype_bytes(recipe))


def weight_bytes_per_parameter(recipe) -> float:
    return 0.5625 if recipe.load_in_4bit else dtype_bytes(recipe)  # nf4 + double-quantized scales


def dtype_bytes(recipe) -> float:
    return torch.finfo(compute_dtype(recipe.precision)).bits / 8


def tokens_per_example(recipe) -> int:
    """Tokens an estimate assumes per example: a classification prompt's typical length, or for chat the
    recipe's max_length (conversations are cut there, and many reach it)."""
    return recipe.max_length if isinstance(recipe, ChatRecipe) else min(TYPICAL_TOKENS, recipe.max_length)


def activation_bytes(recipe, shape: ModelShape) -> float:
    tokens = recipe.per_device_train_batch_size * tokens_per_example(recipe)
    per_token_per_layer = 2 if recipe.gradient_checkpointing else 34  # bytes per hidden unit (Korthikanti et al.)
    return tokens * shape.hidden * shape.layers * per_token_per_layer * dtype_bytes(recipe) / 2


def largest_unit_bytes(recipe, shape: ModelShape) -> float:
    """A sharded run gathers one unit's full weights at a time (a decoder layer, or the embeddings)."""
    layer = (shape.parameters - shape.embeddings) / shape.layers * weight_bytes_per_parameter(recipe)
    return max(layer, shape.largest_embedding * dtype_bytes(recipe))


def per_gpu_memory(strategy: str, gpus: int, parameters: ParameterMemory, activations: float,
                   largest_unit: float) -> float:
    """Bytes per GPU with `gpus` GPUs. DDP: a full replica each. ZeRO-2: full weights, gradients and optimizer
    state sharded. ZeRO-3 and FSDP2: everything sharded, plus two gathered units, one computing while the next
    is fetched (the same estimate: they differ in communication, not in what each GPU holds)."""
    if strategy == "DDP":
        return parameters.total + activations
    if strategy == "ZeRO-2":
        return parameters.weights + (parameters.gradients + parameters.optimizer) / gpus + activations
    gathered = 2 * largest_unit if gpus > 1 else 0
    return parameters.total / gpus + activations + gathered


def per_gpu_gib(recipe, shape: ModelShape, strategy: str, gpus: int) -> float:
    return per_gpu_memory(strategy, gpus, method_parameter_memory(recipe, shape), activation_bytes(recipe, shape),
                          largest_unit_bytes(recipe, shape)) / 2**30


def estimate_memory(recipe) -> dict | None:
    """Rough peak memory per device (None when the model's config is not available offline)."""
    shape = model_shape(recipe)
    return memory_estimate(recipe, shape) if shape else None


def memory_estimate(recipe, shape: ModelShape) -> dict:
    """Weights + training state (gradients, optimizer) + activations on one process, and per GPU under each
    strategy."""
    parameters = method_parameter_memory(recipe, shape)
    activations = activation_bytes(recipe, shape)
    peak = parameters.total + activations
    return {
        "parameters": shape.parameters,
        "trained_parameters": shape.trained,
        "weights_gib": parameters.weights / 2**30,
        "training_state_gib": (parameters.gradients + parameters.optimizer) / 2**30,
        "activations_gib": activations / 2**30,
        "peak_gib": peak / 2**30,
        "memory_class": _memory_class(peak),
        "per_gpu_by_strategy": {name: {gpus: per_gpu_gib(recipe, shape, name, gpus) for gpus in GPU_COUNTS}
                                for name in STRATEGIES},
    }


def _memory_class(peak_bytes: float) -> str:
    return next((f"fits {c} GiB" for c in MEMORY_CLASSES_GIB if peak_bytes / 2**30 < USABLE_SHARE * c),
                f"more than {MEMORY_CLASSES_GIB[-1]} GiB")


def model_shape(recipe) -> ModelShape | None:
    model = _meta_model(recipe.model_name_or_path)
    return None if model is None else _count_shape(model, recipe)


@functools.cache
def _meta_model(name_or_path: str) -> torch.nn.Module | None:
    """The model's architecture on PyTorch's meta device (no weights), None when its config is not available."""
    config = _model_config(name_or_path)
    if config is None:
        return None
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _count_shape(model: torch.nn.Module, recipe) -> ModelShape:
    config, targets, rank = model.config, recipe.lora_target_modules, recipe.lora_r
    embeddings = {id(p): p.numel() for m in (model.get_input_embeddings(), model.get_output_embeddings())
                  for p in m.parameters()}
    text = config.get_text_config()
    return ModelShape(
        parameters=sum(p.numel() for p in model.parameters()), embeddings=sum(embeddings.values()),
        largest_embedding=max(embeddings.values()), layers=text.num_hidden_layers, hidden=text.hidden_size,
        non_embedding=sum(non_embedding_parameters(model)), trained=trained_parameters(model, recipe),
        lora_in_output=rank * sum(model.get_output_embeddings().weight.shape) if "lm_head" in targets else 0)


def _model_config(name_or_path: str):
    from tunelab.architectures import published_config
    from tunelab.models import resolve_model_path

    try:
        return AutoConfig.from_pretrained(resolve_model_path(name_or_path), local_files_only=True)
    except Exception:  # offline, or no such model: fall back to the published configs we ship
        known = KNOWN_HUB_CONFIGS.get(name_or_path)
        return published_config(known) if known else None


# ---------------------------------------------------------------------------- fitting the GPUs

def check_fit(recipe, shape: ModelShape, target: Target) -> dict:
    """Per-GPU memory against the planned GPU's; raises TunelabError with the cheapest change that fits."""
    need = per_gpu_gib(recipe, shape, target.profile.strategy, target.count)
    if fits(need, target.gpu):
        return {"per_gpu_gib": need, "gpu_gib": target.gpu.memory_gib}
    changes = [_describe_change(change, gib, target.gpu) for change, gib in (
        cheapest_fitting_setting(recipe, shape, target), fewest_sharded_gpus(recipe, shape, target)) if change]
    raise TunelabError(
        f"the settings do not fit {target.describe()}: per GPU {need:.1f} of "
        f"{target.gpu.memory_gib:g} GiB, of which {USABLE_SHARE:.0%} is usable; "
        + (" or ".join(changes) if changes else "no change tunelab knows fits: choose GPUs with more memory"))


def check_run_fits_profile(recipe, world_size: int) -> None:
    """Before a full or freeze run on a GPU profile loads anything: refuse it when this plan's estimate for the
    profile's GPU and spread over `world_size` processes does not fit (LoRA runs are small enough to try)."""
    profile = PROFILES.get(recipe.profile)
    shape = profile and profile.needs_gpu and recipe.method != "lora" and model_shape(recipe)
    if shape:
        check_fit(recipe, shape, Target(profile, profile.gpu, max(world_size, 1)))


def fits(gib: float, gpu: Gpu) -> bool:
    return gib <= USABLE_SHARE * gpu.memory_gib


def cheapest_fitting_setting(recipe, shape: ModelShape, target: Target) -> tuple[dict | None, float]:
    """The first of `cheaper_settings` that fits the same GPUs, and its per-GPU GiB."""
    for change in cheaper_settings(recipe):
        gib = per_gpu_gib(dataclasses.replace(recipe, **change), shape, target.profile.strategy, target.count)
        if fits(gib, target.gpu):
            return change, gib
    return None, 0.0


def cheaper_settings(recipe):
    """Settings that need less memory on the same GPUs, cheapest first: a smaller per-device batch with more
    accumulation (the same effective batch and results), then gradient checkpointing (a third more compute),
    then 4-bit base weights (QLoRA: other numerics; LoRA only), each with the smaller batches."""
    extras = [{}]
    if not recipe.gradient_checkpointing:
        extras.append({"gradient_checkpointing": True})
    if not recipe.load_in_4bit and recipe.method == "lora":
        extras += [{**extra, "load_in_4bit": True} for extra in extras]
    for extra in extras:
        for batch in _smaller_batches(recipe.per_device_train_batch_size, recipe.gradient_accumulation_steps):
            if extra or batch["per_device_train_batch_size"] != recipe.per_device_train_batch_size:
                yield {**batch, **extra}


def _smaller_batches(batch: int, accumulation: int):
    """The per-device batch, then halved while it still divides the batch per process."""
    while batch >= 1:
        yield {"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation}
        if batch % 2:
            return
        batch, accumulation = batch // 2, accumulation * 2


def fewest_sharded_gpus(recipe, shape: ModelShape, target: Target) -> tuple[dict | None, float]:
    """The fewest GPUs like the target's that fit with everything sharded (ZeRO-3 for a ZeRO-3 plan, else
    FSDP2), with gradient checkpointing as those profiles turn it on."""
    profile = get_profile("zero3" if target.profile.name == "zero3" else "fsdp2")
    sharded = dataclasses.replace(recipe, gradient_checkpointing=True)
    for gpus in (g for g in SHARDED_GPU_COUNTS if g > target.count or profile != target.profile):
        gib = per_gpu_gib(sharded, shape, profile.strategy, gpus)
        if fits(gib, target.gpu):
            return {"profile": profile.name, "gpus": gpus}, gib
    return None, 0.0


def _describe_change(change: dict, gib: float, gpu: Gpu) -> str:
    flags = " ".join(f"--{name} {str(value).lower()}" for name, value in change.items())
    what = "over more GPUs" if "gpus" in change else "the cheapest change that fits"
    return f"{what}: {flags} (per GPU: {gib:.1f} of {gpu.memory_gib:g} GiB)"


# ---------------------------------------------------------------------------- time

def time_estimate(recipe, shape: ModelShape, target: Target, plan: dict, eval_rows: int | None) -> dict:
    """Training and evaluation FLOPs over the planned GPUs' dense peak at ASSUMED_MFU (None where unknown)."""
    peak, assumed = peak_flops(target.gpu.name, compute_dtype(recipe.precision))
    trained_examples = (plan["optimizer_steps"] * plan["effective_batch"] if recipe.max_steps > 0
                        else plan["train_rows"] and plan["train_rows"] * recipe.num_train_epochs)
    if peak is None or not trained_examples:
        why = assumed if peak is None else "the training rows are unknown until the data loads"
        return {"note": f"no estimate: {why}"}
    speed = peak * target.count * ASSUMED_MFU
    trainable = (shape.trained - shape.lora_in_output if recipe.method == "lora"
                 else min(shape.trained, shape.non_embedding))  # full and freeze: as many weights trained in the layers
    frozen = shape.non_embedding if recipe.method == "lora" else shape.non_embedding - trainable
    per_token = training_flops_per_token(frozen, trainable, recipe.gradient_checkpointing)
    tokens = tokens_per_example(recipe)
    train_s = trained_examples * tokens * per_token / speed
    forward = 2 * (frozen + trainable)
    eval_s = eval_rows * tokens * forward / speed if eval_rows is not None else None
    return {"train_s": train_s, "eval_s": eval_s, "total_s": train_s + (eval_s or 0.0),
            "note": f"an estimate: FLOPs at {tokens} tokens per example ({per_token / 1e9:.1f} GFLOPs per "
                    f"trained token, tunelab.flops) over {target.count} × the dense peak at an assumed "
                    f"{ASSUMED_MFU:.0%} MFU; {assumed.removeprefix('MFU assumes ')}"}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60:d} h {minutes % 60:02d} min"


# ---------------------------------------------------------------------------- commands

def launch_commands(target: Target, argv: list[str], estimate_s: float | None) -> dict:
    """The `accelerate launch` line (one node) and the `sbatch` line for the plan."""
    recipe_path, settings = _shown(argv[0]), _settings_for_commands(argv[1:])
    nodes = math.ceil(target.count / GPUS_PER_NODE)
    if target.count % nodes:
        raise TunelabError(f"{target.count} GPUs do not split evenly over {nodes} nodes of at most {GPUS_PER_NODE}: "
                           f"plan for {nodes * math.ceil(target.count / nodes)} or {GPUS_PER_NODE * (nodes - 1)} GPUs")
    template = TEMPLATES[min(nodes, 2)]
    sbatch = ["sbatch", f"--nodes={nodes}", f"--gpus-per-node={target.count // nodes}"]
    if estimate_s is not None:
        sbatch.append(f"--time={_slurm_time(time_limit_s(estimate_s, template))}")
    sbatch += [f"--export=ALL,RECIPE={recipe_path},ACCELERATE_CONFIG={_shown(target.profile.config_path)}",
               _shown(find_file(template)), "--profile", target.profile.name, *settings]
    accelerate = accelerate_command(recipe_path, target.profile, target.count, settings, accelerate="accelerate")
    accelerate[accelerate.index("--config_file") + 1] = _shown(target.profile.config_path)
    return {"accelerate": shlex.join(accelerate) if nodes == 1 else None, "sbatch": shlex.join(sbatch),
            "nodes": nodes}


def time_limit_s(estimate_s: float, template: str) -> int:
    """The estimate with its margin, the start-up, and the template's warning before the limit (the job
    checkpoints and requeues then), rounded up to 15 minutes."""
    seconds = estimate_s * TIME_MARGIN + START_UP_S + requeue_window_s(template)
    return math.ceil(seconds / 900) * 900


def requeue_window_s(template: str) -> int:
    """Seconds before the time limit at which the template's job is told to checkpoint and requeue."""
    return int(re.search(r"^#SBATCH --signal=B:USR1@(\d+)", find_file(template).read_text(), re.MULTILINE).group(1))


def _slurm_time(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:00"


def _settings_for_commands(argv: list[str]) -> list[str]:
    """The command line's settings without those a plan consumes (`--name value`, `--name=value` or a bare flag)."""
    kept, i = [], 0
    while i < len(argv):
        name = argv[i].removeprefix("--").split("=", 1)[0].replace("-", "_")
        takes_value = "=" not in argv[i] and i + 1 < len(argv) and not argv[i + 1].startswith("--")
        step = 2 if takes_value else 1
        if name not in PLAN_ONLY:
            kept += argv[i:i + step]
        i += step
    return kept


def _shown(path) -> str:
    """A path as typed in the working directory: relative to it when inside it, else absolute (a packaged copy)."""
    absolute, here = Path(os.path.abspath(path)), Path.cwd()
    return str(absolute.relative_to(here)) if absolute.is_relative_to(here) else str(absolute)


# ---------------------------------------------------------------------------- printing

def format_plan(plan: dict) -> str:
    steps = plan["optimizer_steps"]
    rows = plan["train_rows"]
    where = (f"on {plan['target']} with profile {plan['profile']}: a plan for that hardware, not this machine"
             if plan["target"] else f"on this machine (profile {plan['profile']})")
    lines = [
        f"Run plan for {plan['run_dir']} {where}; {plan['processes']} process(es)",
        f"  effective batch {plan['effective_batch']} = per-device {plan['per_device_train_batch_size']} × "
        f"accumulation {plan['gradient_accumulation_steps']} × {plan['processes']} process(es)",
        f"  training rows: {rows if rows is not None else 'unknown until the data loads'}; "
        f"optimizer steps: {steps if steps is not None else 'unknown'}",
        f"  precision {plan['precision']}, 4-bit weights {'on' if plan['load_in_4bit'] else 'off'}, "
        f"gradient checkpointing {'on' if plan['gradient_checkpointing'] else 'off'}, method {plan['method']}",
        *_memory_lines(plan),
        *_time_lines(plan),
        *_command_lines(plan),
    ]
    return "\n".join(lines)


def _memory_lines(plan: dict) -> list[str]:
    memory = plan["memory"]
    if memory is None:
        return ["  memory: unknown (model config not available offline)"]
    fit = plan.get("fit")
    peak = (f"per GPU: {fit['per_gpu_gib']:.1f} of {fit['gpu_gib']:g} GiB (fits: {USABLE_SHARE:.0%} of it is usable)"
            if fit else f"per process ≈ {memory['peak_gib']:.1f} GiB ({memory['memory_class']})")
    lines = [
        f"  expected peak memory {peak}; one process holds weights {memory['weights_gib']:.1f}, "
        f"training state {memory['training_state_gib']:.2f}, activations {memory['activations_gib']:.1f} GiB "
        f"at {plan['tokens_per_example']} tokens per example; {memory['parameters']:,} parameters, "
        f"{memory['trained_parameters']:,} trained",
        f"  per-GPU memory (GiB) on {' / '.join(map(str, GPU_COUNTS))} GPUs:",
    ]
    for name, by_count in memory["per_gpu_by_strategy"].items():
        lines.append(f"    {name:<7} " + " / ".join(f"{gib:.1f}" for gib in by_count.values()))
    return lines


def _time_lines(plan: dict) -> list[str]:
    time = plan.get("time")
    if time is None:
        return []
    if "total_s" not in time:
        return [f"  time: {time['note']}"]
    evaluation = "evaluation not estimated" if time["eval_s"] is None else f"evaluation {_duration(time['eval_s'])}"
    return [f"  time ≈ {_duration(time['total_s'])}: training {_duration(time['train_s'])}, {evaluation}",
            f"    ({time['note']})"]


def _command_lines(plan: dict) -> list[str]:
    commands = plan.get("commands")
    if not commands:
        return []
    lines = ["  commands (from the repository root):"]
    if commands["accelerate"]:
        lines.append(f"    {commands['accelerate']}")
    lines.append(f"    {commands['sbatch']}")
    if "--time=" in commands["sbatch"]:
        lines.append(f"    (--time: {TIME_MARGIN:g} × the estimate, {START_UP_S // 60} min to start, and the "
                     "template's warning before the limit, when the job checkpoints and requeues)")
    else:
        lines.append("    (no --time without an estimate: the template's own limit applies)")
    return lines
