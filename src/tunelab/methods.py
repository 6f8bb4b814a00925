"""Fine-tuning methods: which weights train, what that costs in memory, and where the result is saved.

    lora    LoRA adapters on the named modules (QLoRA with load_in_4bit, DoRA with use_dora); the base
            weights stay frozen and the run saves an adapter (RUN_DIR/adapter)
    full    every weight trains; the run saves a normal model folder (RUN_DIR/model)
    freeze  only the last `freeze_trainable_layers` decoder layers, the final norm and the output head
            train (the head is tied to the input embeddings in many small models: those train too);
            the run saves a normal model folder (RUN_DIR/model)

Full and freeze keep their weights in fp32 (mixed-precision training computes in bf16/fp16 from them), so
each trained parameter holds an fp32 weight, its gradient and two Adam moments: 16 bytes before sharding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only with a model: the recipe's settings are checked before it
    import torch
    from torch import nn

METHODS = ("lora", "full", "freeze")
METHOD_DESCRIPTIONS = {
    "lora": "lora (adapters on the frozen base weights, saved in adapter/)",
    "full": "full (every weight trained, saved as a model folder in model/)",
    "freeze": "freeze (the last layers and the head trained, saved as a model folder in model/)",
}
# Settings that only shape LoRA adapters: ignored (with a warning) by full and freeze.
LORA_SETTINGS = ("lora_r", "lora_alpha", "lora_dropout", "lora_bias", "lora_target_modules", "use_dora",
                 "loraplus_lr_ratio")
ALL_LINEAR = "all-linear"  # PEFT's shortcut: every linear layer but the output head
ADAM_BYTES = 16  # per trained parameter: fp32 weight, fp32 gradient, two fp32 Adam moments


def method_problems(recipe) -> list[str]:
    """The method settings' problems that need no model: each a message that says what to change."""
    problems = []
    if recipe.method not in METHODS:
        problems.append(f"method must be one of {', '.join(METHODS)}, not {recipe.method!r}")
    elif recipe.method != "lora" and recipe.load_in_4bit:
        problems.append(f"method {recipe.method} trains the base weights, which cannot be 4-bit: set "
                        "--load_in_4bit false, or --method lora for QLoRA")
    if recipe.freeze_trainable_layers < 1:
        problems.append(f"freeze_trainable_layers must be at least 1, not {recipe.freeze_trainable_layers}")
    if ALL_LINEAR in recipe.lora_target_modules and len(recipe.lora_target_modules) > 1:
        problems.append(f"lora_target_modules {ALL_LINEAR} already names every linear layer: give it alone")
    return problems


def ignored_lora_settings(method: str, given: set[str]) -> list[str]:
    """The LoRA-only settings among those the user `given`, which `method` ignores."""
    return [] if method == "lora" else [name for name in LORA_SETTINGS if name in given]


def saved_folder_name(method: str) -> str:
    """The run directory's folder for the trained result: an adapter for LoRA, else a whole model."""
    return "adapter" if method == "lora" else "model"


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers: the ModuleList with `num_hidden_layers` entries."""
    from torch import nn

    count = model.config.get_text_config().num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"no list of {count} decoder layers in {type(model).__name__}")


def trained_by_freeze(model: nn.Module, trainable_layers: int) -> set[str]:
    """The names of the parameters `freeze` trains: the last layers, and outside the layer stack every
    weight but the embeddings (the final norm and the head; a head tied to the embeddings shares them)."""
    from torch import nn

    layers = decoder_layers(model)
    in_layers = {id(p) for p in layers.parameters()}
    last = {id(p) for layer in list(layers)[-trainable_layers:] for p in layer.parameters()}
    in_embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    head = {id(p) for p in (model.get_output_embeddings() or nn.Module()).parameters()}
    return {name for name, p in model.named_parameters()
            if id(p) in last or id(p) in head or (id(p) not in in_layers and id(p) not in in_embeddings)}


def set_trainable(model: nn.Module, method: str, trainable_layers: int) -> None:
    """Full: every weight trains. Freeze: only those `trained_by_freeze` names."""
    trained = None if method == "full" else trained_by_freeze(model, trainable_layers)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(trained is None or name in trained)


def trained_parameters(model: nn.Module, recipe) -> int:
    """How many parameters the recipe's method trains on `model` (a plain model, e.g. on the meta device)."""
    if recipe.method == "full":
        return sum(p.numel() for p in model.parameters())
    if recipe.method == "freeze":
        trained = trained_by_freeze(model, recipe.freeze_trainable_layers)
        return sum(p.numel() for name, p in model.named_parameters() if name in trained)
    return lora_parameters(model, recipe.lora_target_modules, recipe.lora_r)


def lora_parameters(model: nn.Module, targets: list[str], rank: int) -> int:
    """The LoRA matrices' parameters on the targeted linear layers (all-linear: all but the output head)."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    count = 0
    for name, module in model.named_modules():
        targeted = module is not head if targets == [ALL_LINEAR] else name.rsplit(".", 1)[-1] in targets
        if targeted and isinstance(module, (nn.Linear, Conv1D)):
            count += rank * sum(module.weight.shape)
    return count


def weight_bytes(method: str, compute_dtype: torch.dtype) -> float:
    """Bytes per base weight: LoRA keeps them in the compute dtype; full and freeze in fp32."""
    import torch

    return torch.finfo(compute_dtype).bits / 8 if method == "lora" else 4


def training_state_bytes(method: str, trained: int) -> int:
    """Bytes beyond the weights for `trained` parameters before sharding: LoRA adds its own fp32 weights
    beside the base ones (16 bytes each); full and freeze train the fp32 weights themselves (12 more)."""
    return (ADAM_BYTES if method == "lora" else ADAM_BYTES - 4) * trained
