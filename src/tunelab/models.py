"""Tokenizer and model loading: embedded short names, local folders or Hub ids; 4-bit; LoRA.

Safe defaults: `trust_remote_code` is off unless the recipe turns it on, and weights load from
safetensors only (`use_safetensors=True`), so a pickle checkpoint is never unpickled.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
)
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.pytorch_utils import Conv1D

from tunelab.config import Recipe
from tunelab.errors import TunelabError
from tunelab.methods import ALL_LINEAR, set_trainable
from tunelab.runtime.precision import compute_dtype

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
STORAGE_DTYPES = {"uint8": torch.uint8, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_model_path(name_or_path: str, allow_pickle: bool = False) -> str:
    """A local folder for an embedded short name or a path; a Hub id is returned unchanged."""
    from tunelab.embedded import embedded_model_path, is_embedded_name

    if is_embedded_name(name_or_path):
        return str(embedded_model_path(name_or_path))
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists()
    if not looks_local:
        return name_or_path
    if not path.is_dir():
        raise TunelabError(f"model path {name_or_path} does not exist: check --model_name_or_path")
    pickles = [p.name for p in path.glob("*.bin")]
    if not any((path / f).exists() for f in WEIGHT_FILES) and not (allow_pickle and pickles):
        hint = (f"it has only pickle weights ({', '.join(pickles)}), which can run code when loaded: convert them "
                "to safetensors, or pass --allow_pickle true if you trust them" if pickles else "it holds no model weights")
        raise TunelabError(f"model folder {name_or_path} cannot be used: {hint}")
    return str(path)


def load_tokenizer(recipe: Recipe):
    """The model's tokenizer, with a pad token (the EOS token) when the model has none (GPT-2, phi-2)."""
    path = resolve_model_path(recipe.model_name_or_path, recipe.allow_pickle)
    tokenizer = _from_pretrained(AutoTokenizer, path, trust_remote_code=recipe.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(recipe: Recipe, vocab_size: int | None = None, num_labels: int | None = None):
    """The model set up for the recipe's method (tunelab.methods): for LoRA the base model (4-bit when the
    recipe asks) wrapped with adapters on the named modules; for full and freeze the model in fp32 with
    the weights that train marked trainable.

    `vocab_size`: grow the embeddings to at least this many rows first (a tokenizer that gained a token).
    `num_labels`: a sequence classifier with a new `num_labels`-way head on the last token instead of the
    language-model head; it trains in full with every method (PEFT saves it with the adapter).
    """
    model = load_pretrained(recipe, vocab_size, num_labels)
    if recipe.method != "lora":
        set_trainable(model, recipe.method, recipe.freeze_trainable_layers)
    else:
        model = get_peft_model(model, lora_config(recipe, model, "SEQ_CLS" if num_labels else "CAUSAL_LM"))
    if recipe.torch_compile:
        compile_repeated_layers(model)
    return model


def compile_repeated_layers(module: torch.nn.Module) -> int:
    """torch.compile, in place, each block of the model's stacks of identical layers (regional compilation,
    https://pytorch.org/tutorials/recipes/regional_compilation.html): the blocks share one compiled graph, so
    compiling costs about what one block does, and parameter names and saved weights are unchanged.
    Returns the number of blocks compiled."""
    if isinstance(module, torch.nn.ModuleList) and len(module) > 1 and len({type(block) for block in module}) == 1:
        for block in module:
            block.compile(dynamic=True)
        return len(module)
    return sum(compile_repeated_layers(child) for child in module.children())


def load_pretrained(recipe: Recipe, vocab_size: int | None = None, num_labels: int | None = None):
    """The pretrained model as the recipe's method trains it (weights in fp32 unless LoRA), with no adapter."""
    dtype = compute_dtype(recipe.precision)
    kwargs = {"dtype": dtype if recipe.method == "lora" else torch.float32, "trust_remote_code": recipe.trust_remote_code, "use_safetensors": not recipe.allow_pickle}
    if recipe.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=recipe.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=recipe.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=quant_storage(recipe, dtype),
        )
    if recipe.attn_implementation != "auto":
        kwargs["attn_implementation"] = recipe.attn_implementation
    path = resolve_model_path(recipe.model_name_or_path, recipe.allow_pickle)
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    model = _from_pretrained(AutoModelForSequenceClassification if num_labels else AutoModelForCausalLM, path, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    if vocab_size is not None and vocab_size > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(vocab_size)
    if recipe.load_in_4bit:
        keep_4bit_weights_unpacked(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def check_method_fits_model(recipe: Recipe) -> None:
    """Refuse, from the model's config.json alone, a freeze of more layers than the model has."""
    if recipe.method != "freeze":
        return
    path = resolve_model_path(recipe.model_name_or_path, recipe.allow_pickle)
    config = _from_pretrained(AutoConfig, path, trust_remote_code=recipe.trust_remote_code)
    layers = config.get_text_config().num_hidden_layers
    if recipe.freeze_trainable_layers > layers:
        raise TunelabError(f"freeze_trainable_layers {recipe.freeze_trainable_layers} is more than the "
                           f"{layers} layers of {recipe.model_name_or_path}: set at most {layers}, or --method full")


def quant_storage(recipe: Recipe, dtype: torch.dtype) -> torch.dtype:
    """The dtype 4-bit weights are packed in: uint8, except under DeepSpeed ZeRO-3 and FSDP2, which
    shard every parameter as flat floating-point tensors and so need the packed weights in the compute dtype."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TunelabError("load_in_4bit needs bitsandbytes, which is not installed: pip install bitsandbytes, "
                           "or set --load_in_4bit false")
    chosen = STORAGE_DTYPES[recipe.bnb_4bit_quant_storage] if recipe.bnb_4bit_quant_storage else None
    sharding = weight_sharding()
    if sharding is None:
        return chosen or torch.uint8
    if chosen not in (None, dtype):
        other = "ZeRO-2 (accelerate_configs/zero2.yaml)" if sharding.startswith("DeepSpeed") else \
            "DDP (accelerate_configs/multi_gpu.yaml)"
        raise TunelabError(f"{sharding} with 4-bit weights needs bnb_4bit_quant_storage equal to the compute "
                           f"dtype ({str(dtype).removeprefix('torch.')}), not {recipe.bnb_4bit_quant_storage}: "
                           f"leave --bnb_4bit_quant_storage unset, or use {other}")
    return dtype


def weight_sharding() -> str | None:
    """The launch that shards the weights themselves across processes (DeepSpeed ZeRO-3 or FSDP2), or None."""
    from tunelab.runtime.fsdp import launched_fsdp_version

    if is_deepspeed_zero3_enabled():
        return "DeepSpeed ZeRO-3"
    return "FSDP2" if launched_fsdp_version() == 2 else None


def keep_4bit_weights_unpacked(model: torch.nn.Module) -> None:
    """Keep bitsandbytes from repacking 4-bit weights for CPU inference (bitsandbytes 0.50).

    On a CPU with AVX512-BF16, `Linear4bit.forward` converts its weight into a packed inference
    layout the first time it runs in eval mode without gradients, and never converts it back:
    the next training step then fails ("a view of a leaf Variable that requires grad is being
    used in an in-place operation"), and under ZeRO-3 saving fails. A tunelab model evaluates
    between training steps (baseline, per-epoch validation), so it never takes that path.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def lora_config(recipe: Recipe, model: torch.nn.Module, task_type: str = "CAUSAL_LM") -> LoraConfig:
    """LoRA on exactly the named modules; a name that matches no module is an error, not a silent no-op."""
    all_linear = recipe.lora_target_modules == [ALL_LINEAR]
    if not all_linear:
        check_target_modules(model, recipe.lora_target_modules)
    return LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        bias=recipe.lora_bias,
        target_modules=ALL_LINEAR if all_linear else list(recipe.lora_target_modules),
        use_dora=recipe.use_dora,
        fan_in_fan_out=targets_conv1d(model, recipe.lora_target_modules),
        task_type=task_type,
    )


def check_target_modules(model: torch.nn.Module, targets: list[str]) -> None:
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    missing = [t for t in targets if t not in leaf_names]
    if missing:
        candidates = sorted(n for n in leaf_names if not n.isdigit() and "norm" not in n and "drop" not in n)
        raise TunelabError(f"lora_target_modules {missing} match no module of {model.config.model_type}: "
                           f"choose from {', '.join(candidates)}")
    kinds = {name.rsplit(".", 1)[-1]: type(module).__name__ for name, module in model.named_modules()
             if name.rsplit(".", 1)[-1] in targets and not isinstance(module, LORA_LAYERS)}
    if kinds:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear)})
        raise TunelabError(f"lora_target_modules names {', '.join(f'{n} ({k})' for n, k in kinds.items())}, not a "
                           f"linear layer, which LoRA adapts: choose from {', '.join(linear)}")


LORA_LAYERS = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, Conv1D,
               torch.nn.MultiheadAttention)  # the layer types PEFT's LoRA can wrap


def targets_conv1d(model: torch.nn.Module, targets: list[str]) -> bool:
    """GPT-2 stores its projections as Conv1D (weights transposed), which LoRA must be told about."""
    return any(isinstance(module, Conv1D) and (targets == [ALL_LINEAR] or name.rsplit(".", 1)[-1] in targets)
               for name, module in model.named_modules())


@contextlib.contextmanager
def adapter_merged(model) -> Iterator[bool]:
    """Inside the block the LoRA weights are added into the base weights (PEFT's `merge_adapter`), so a
    forward pass runs no adapter layers: the same scores to float rounding, and faster (`tunelab bench`,
    variant lora_unmerged). Yields whether it merged: 4-bit weights would be requantized and ZeRO-3 or
    FSDP2 shards cannot be merged in place, so those models run with the adapter as it is; a fully
    fine-tuned model has no adapter."""
    if not (isinstance(model, PeftModel) and can_merge_adapter(model)):
        yield False
        return
    model.merge_adapter()
    try:
        yield True
    finally:
        model.unmerge_adapter()


def can_merge_adapter(model: PeftModel) -> bool:
    return getattr(model.get_base_model(), "hf_quantizer", None) is None and weight_sharding() is None


@contextlib.contextmanager
def pretrained_weights(model) -> Iterator[None]:
    """Inside the block `model` computes as the pretrained model: a LoRA model with its adapter disabled. A
    full or freeze model is pretrained only until it trains, so it must not have trained in this process."""
    if isinstance(model, PeftModel):
        with model.disable_adapter():
            yield
    else:
        yield


@contextlib.contextmanager
def pretrained_weights_in_place(model, pretrained: str, trained: str) -> Iterator[None]:
    """Inside the block a trained full or freeze model's own parameters hold the pretrained weights (of the model
    folder or Hub id `pretrained`); after it, the trained ones saved in the folder `trained`. For DeepSpeed,
    which cannot prepare a second model beside the trained one in the same process."""
    load_weights_in_place(model, pretrained_folder(pretrained))
    try:
        yield
    finally:
        load_weights_in_place(model, Path(trained))


def pretrained_folder(name_or_path: str) -> Path:
    """The local folder of a model folder or Hub id (the Hub cache, which loading the model filled)."""
    path = resolve_model_path(name_or_path)
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(path, allow_patterns=["*.safetensors", "*.json"]))


def load_weights_in_place(model, folder: Path) -> None:
    """Copy a model folder's safetensors weights into `model`'s parameters; under DeepSpeed ZeRO-3 each is
    gathered, set (every process reads the files) and partitioned again."""
    weights = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    parameters = dict(model.named_parameters())
    missing = sorted(set(parameters) - set(weights))
    if missing:
        raise TunelabError(f"{folder} lacks weights of the model ({', '.join(missing[:3])}...): it is not the "
                           "model this run trains")
    gathered = contextlib.nullcontext()
    if is_deepspeed_zero3_enabled():
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(list(parameters.values()), modifier_rank=0)
    with gathered, torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(weights[name].to(parameter.dtype))


def parameter_counts(model) -> dict:
    """Trainable and total parameters: counted by PEFT for a LoRA model (a 4-bit weight counts as one
    parameter), else over every weight (under ZeRO-3 at its full size, not its shard's)."""
    if isinstance(model, PeftModel):
        trainable, total = model.get_nb_trainable_parameters()
        counting = ("PEFT's get_nb_trainable_parameters over all weights, base and LoRA; each 4-bit weight counts "
                    "once (not as the half byte it is stored in), so QLoRA totals equal the unquantized model's "
                    "plus the adapters")
    else:
        sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
        trainable, total = sum(n for n, trains in sizes if trains), sum(n for n, _ in sizes)
        counting = "every weight of the model (tied weights once)"
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / total, "counting": counting}


def _from_pretrained(cls, path: str, **kwargs):
    try:
        return cls.from_pretrained(path, **kwargs)
    except OSError as error:
        if Path(path).exists():
            raise TunelabError(f"cannot load {path}: {str(error).splitlines()[0]}") from None
        raise TunelabError(
            f"cannot load {path!r} from the Hugging Face Hub (no network, or no such model): check the id, "
            "download it where you have network, or pass a local folder with --model_name_or_path"
        ) from None
