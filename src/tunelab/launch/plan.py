"""The resolved run plan, printed without training (`--dry_run` or `tunelab plan`).

Shows the profile and processes, the effective batch and how it is made up, the steps, the
precision, and a rough peak-memory estimate per device from the model's architecture,
instantiated on PyTorch's meta device (no weights are loaded or downloaded), also per GPU on
1-8 GPUs under DDP, DeepSpeed ZeRO-2/3 and FSDP2.
"""

from __future__ import annotations

import math

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tunelab.methods import trained_parameters, training_state_bytes, weight_bytes
from tunelab.models import compute_dtype
from tunelab.nli.config import NLIRecipe

TYPICAL_TOKENS = 128  # an NLI prompt is 40-120 tokens; the estimate assumes this many per example
MEMORY_CLASSES_GIB = (8, 16, 24, 40, 48, 80)
STRATEGIES = ("DDP", "ZeRO-2", "ZeRO-3", "FSDP2")
GPU_COUNTS = (1, 2, 4, 8)
KNOWN_HUB_CONFIGS = {"microsoft/phi-2": "phi-2", "gpt2-large": "gpt2-large", "openai-community/gpt2-large": "gpt2-large"}


def build_plan(recipe: NLIRecipe, world_size: int = 1, train_rows: int | None = None) -> dict:
    per_step = recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps * world_size
    plan = {
        "run_dir": str(recipe.run_dir),
        "profile": recipe.profile,
        "processes": world_size,
        "per_device_train_batch_size": recipe.per_device_train_batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "effective_batch": per_step,
        "precision": str(compute_dtype(recipe.precision)).removeprefix("torch."),
        "gradient_checkpointing": recipe.gradient_checkpointing,
        "load_in_4bit": recipe.load_in_4bit,
        "method": recipe.method,
        "train_rows": train_rows,
        "optimizer_steps": optimizer_steps(recipe, train_rows, world_size),
    }
    plan["memory"] = estimate_memory(recipe)
    return plan


def optimizer_steps(recipe: NLIRecipe, train_rows: int | None, world_size: int) -> int | None:
    if recipe.max_steps > 0:
        return recipe.max_steps
    if train_rows is None:
        return None
    batches = math.ceil(train_rows / (recipe.per_device_train_batch_size * world_size))
    return math.ceil(recipe.num_train_epochs * math.ceil(batches / recipe.gradient_accumulation_steps))


def estimate_memory(recipe: NLIRecipe) -> dict | None:
    """Rough peak memory per device: weights + LoRA training state + activations, on one process, and
    per GPU under each way of spreading a run over GPUs (`per_gpu_by_strategy`)."""
    config = _model_config(recipe.model_name_or_path)
    if config is None:
        return None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    dtype_bytes = torch.finfo(compute_dtype(recipe.precision)).bits / 8
    base_bytes = weight_bytes(recipe.method, compute_dtype(recipe.precision))  # fp32 for full and freeze
    embeddings = {id(p): p.numel() for m in (model.get_input_embeddings(), model.get_output_embeddings())
                  for p in m.parameters()}
    total = sum(p.numel() for p in model.parameters())
    embedding_total = sum(embeddings.values())
    weight_bytes_per_param = 0.5625 if recipe.load_in_4bit else base_bytes  # nf4 + double-quantized scales
    weights = (total - embedding_total) * weight_bytes_per_param + embedding_total * base_bytes
    lora = trained_parameters(model, recipe)  # the LoRA matrices, or the weights full or freeze trains
    training_state = training_state_bytes(recipe.method, lora)
    hidden, layers = config.get_text_config().hidden_size, config.get_text_config().num_hidden_layers
    tokens = recipe.per_device_train_batch_size * min(TYPICAL_TOKENS, recipe.max_length)
    per_token_per_layer = 2 if recipe.gradient_checkpointing else 34  # bytes per hidden unit (Korthikanti et al.)
    activations = tokens * hidden * layers * per_token_per_layer * dtype_bytes / 2
    # A sharded run gathers one unit's full weights at a time (a decoder layer, or the embeddings), and
    # fetches the next while it computes: two units' worth on top of the shards.
    largest_unit = max((total - embedding_total) / layers * weight_bytes_per_param,
                       max(embeddings.values()) * base_bytes)
    peak = weights + training_state + activations
    return {
        "parameters": total,
        "lora_parameters": lora,
        "weights_gib": weights / 2**30,
        "training_state_gib": training_state / 2**30,
        "activations_gib": activations / 2**30,
        "peak_gib": peak / 2**30,
        "memory_class": _memory_class(peak),
        "per_gpu_by_strategy": {
            name: {gpus: per_gpu_memory(name, gpus, weights, lora, activations, largest_unit, recipe.method) / 2**30
                   for gpus in GPU_COUNTS}
            for name in STRATEGIES},
    }


def per_gpu_memory(strategy: str, gpus: int, weights: float, lora: int, activations: float,
                   largest_unit: float, method: str = "lora") -> float:
    """Bytes per GPU with `gpus` GPUs, `lora` the trained parameters. DDP: a full replica each. ZeRO-2: full
    weights, the trained gradients and Adam moments sharded. ZeRO-3 and FSDP2: everything sharded, plus two
    gathered units (the same estimate: they differ in communication, not in what each GPU holds)."""
    state = training_state_bytes(method, lora)
    if strategy == "DDP":
        return weights + state + activations
    if strategy == "ZeRO-2":
        return weights + (state - 12 * lora) + 12 * lora / gpus + activations
    gathered = 2 * largest_unit if gpus > 1 else 0
    return weights / gpus + state / gpus + activations + gathered


def _memory_class(peak_bytes: float) -> str:
    return next((f"fits {c} GiB" for c in MEMORY_CLASSES_GIB if peak_bytes / 2**30 < 0.9 * c),
                f"more than {MEMORY_CLASSES_GIB[-1]} GiB")


def _model_config(name_or_path: str):
    from tunelab.models import resolve_model_path
    from tunelab.tiny_models import published_config

    try:
        return AutoConfig.from_pretrained(resolve_model_path(name_or_path), local_files_only=True)
    except Exception:  # offline, or no such model: fall back to the published configs we ship
        known = KNOWN_HUB_CONFIGS.get(name_or_path)
        return published_config(known) if known else None


def format_plan(plan: dict) -> str:
    steps = plan["optimizer_steps"]
    rows = plan["train_rows"]
    lines = [
        f"Run plan for {plan['run_dir']} (profile {plan['profile']}, {plan['processes']} process(es))",
        f"  effective batch {plan['effective_batch']} = per-device {plan['per_device_train_batch_size']} × "
        f"accumulation {plan['gradient_accumulation_steps']} × {plan['processes']} process(es)",
        f"  training rows: {rows if rows is not None else 'unknown until the data loads'}; "
        f"optimizer steps: {steps if steps is not None else 'unknown'}",
        f"  precision {plan['precision']}, 4-bit weights {'on' if plan['load_in_4bit'] else 'off'}, "
        f"gradient checkpointing {'on' if plan['gradient_checkpointing'] else 'off'}, method {plan['method']}",
    ]
    memory = plan["memory"]
    if memory is None:
        lines.append("  memory: unknown (model config not available offline)")
    else:
        lines.append(
            f"  expected peak memory per device ≈ {memory['peak_gib']:.1f} GiB ({memory['memory_class']}): "
            f"weights {memory['weights_gib']:.1f}, training state {memory['training_state_gib']:.2f}, "
            f"activations {memory['activations_gib']:.1f} at {TYPICAL_TOKENS} tokens per example; "
            f"{memory['parameters']:,} parameters, {memory['lora_parameters']:,} trained")
        lines.append(f"  per-GPU memory (GiB) on {' / '.join(map(str, GPU_COUNTS))} GPUs:")
        for name, by_count in memory["per_gpu_by_strategy"].items():
            lines.append(f"    {name:<7} " + " / ".join(f"{gib:.1f}" for gib in by_count.values()))
    return "\n".join(lines)
