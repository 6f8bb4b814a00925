"""Recipes as dataclasses, plus the parser for a YAML file and command-line overrides.

A recipe file builds one of these dataclasses with its reference hyperparameters. At run
time `parse_recipe` applies, in order, an optional `--config FILE.yaml` and then any
`--field value` overrides. Unknown keys are rejected with the closest valid key, values are
converted to the field's type, and `__post_init__` rejects out-of-range settings with a
message that says what to change.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import runpy
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunelab.errors import TunelabError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
STAGES = ("baseline", "train", "evaluate", "report")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Recipe:
    """Settings shared by every recipe: model, LoRA, optimisation and the run directory."""

    # Run
    run_name: str = "run"
    output_dir: str = "runs"
    overwrite: bool = False
    seed: int = 42
    report_to: str = "none"
    debug: bool = False
    dry_run: bool = False  # print the resolved plan (tunelab plan) instead of running
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    profile: str = "none"  # a hardware profile (tunelab.profiles), "auto", or none to keep the recipe as written

    # Model
    model_name_or_path: str = "smollm2-135m"
    trust_remote_code: bool = False
    load_in_4bit: bool = False
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_quant_storage: str | None = None  # none: uint8, or the compute dtype under DeepSpeed ZeRO-3
    allow_pickle: bool = False  # load .bin (pickle) weights; only for checkpoints you trust
    precision: str = "auto"
    gradient_checkpointing: bool = False

    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_bias: str = "none"
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    # Optimisation
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    num_train_epochs: float = 3.0
    max_steps: int = -1
    warmup_ratio: float = 0.0
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    group_by_length: bool = False  # batches of similar lengths (less padding); order still seeded and resumable
    logging_steps: int = 10
    save_strategy: str = "epoch"
    save_total_limit: int | None = 2

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def __post_init__(self) -> None:
        require(SAFE_NAME.match(self.run_name) is not None,
                 f"run_name {self.run_name!r} must be a plain folder name (letters, digits, '.', '_', '-'; "
                 "no '/' or '..'): set --run_name to such a name")
        unknown_stages = [stage for stage in self.stages if stage not in STAGES]
        require(not unknown_stages and self.stages,
                 f"stages {unknown_stages or '[]'} not understood: choose from {', '.join(STAGES)}")
        require(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        require(self.report_to == "none" or all(n.strip() in ("wandb", "tensorboard") for n in self.report_to.split(",")),
                 f"report_to must be none, wandb, tensorboard or wandb,tensorboard, not {self.report_to!r}")
        require(self.bnb_4bit_quant_storage in (None, "uint8", "bf16", "fp16", "fp32"),
                 f"bnb_4bit_quant_storage must be uint8, bf16, fp16 or fp32, not {self.bnb_4bit_quant_storage!r}")
        require(self.learning_rate > 0, f"learning_rate must be positive, not {self.learning_rate}")
        require(self.lora_r >= 1, f"lora_r must be at least 1, not {self.lora_r}")
        require(self.lora_alpha > 0, f"lora_alpha must be positive, not {self.lora_alpha}")
        require(0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), not {self.lora_dropout}")
        require(len(self.lora_target_modules) > 0, "lora_target_modules is empty: name at least one module")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "logging_steps"):
            require(getattr(self, name) >= 1, f"{name} must be at least 1, not {getattr(self, name)}")
        require(self.num_train_epochs > 0 or self.max_steps > 0,
                 "set num_train_epochs > 0 or max_steps > 0: there is nothing to train")
        require(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
        require(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0, not {self.max_grad_norm}")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise TunelabError(message)


# ---------------------------------------------------------------------------- parsing

def parse_recipe(defaults: Recipe, argv: list[str]) -> Recipe:
    """Apply `--config FILE.yaml` (if given) and then `--field value` overrides to `defaults`."""
    config_file, overrides = _split_argv(argv)
    values: dict[str, object] = {}
    if config_file is not None:
        values.update(_coerce_all(defaults, _read_yaml(config_file), source=config_file))
    values.update(_coerce_all(defaults, overrides, source="the command line"))
    recipe = dataclasses.replace(defaults, **values)
    if recipe.profile != "none":
        from tunelab.profiles import resolve_profile

        recipe = resolve_profile(recipe, explicit=set(values))
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict:
    """The resolved recipe as plain data, ready for YAML (run-control flags left out)."""
    data = dataclasses.asdict(recipe)
    for run_control in ("overwrite", "debug", "stages", "dry_run"):
        data.pop(run_control)
    return data


def _split_argv(argv: list[str]) -> tuple[str | None, dict[str, object]]:
    config_file = None
    overrides: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise TunelabError(f"unexpected argument {arg!r}: settings are given as --name value")
        key, has_value, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not has_value:
            next_is_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            value = argv[i + 1] if next_is_value else "true"
            i += 1 if next_is_value else 0
        if key == "config":
            config_file = value
        else:
            overrides[key] = value
        i += 1
    return config_file, overrides


def _read_yaml(path: str) -> dict[str, object]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise TunelabError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise TunelabError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TunelabError(f"config file {path} must be a mapping of setting: value")
    return {str(k): v for k, v in data.items()}


def _coerce_all(recipe: Recipe, raw: dict[str, object], source: str) -> dict[str, object]:
    types_by_name = typing.get_type_hints(type(recipe))
    known = [f.name for f in dataclasses.fields(recipe)]
    coerced = {}
    for key, value in raw.items():
        if key not in known:
            raise TunelabError(f"unknown setting {key!r} in {source}{_suggestion(key, known)}")
        coerced[key] = _coerce(key, value, types_by_name[key])
    return coerced


def _suggestion(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f": did you mean {close[0]!r}?" if close else f": valid settings are {', '.join(sorted(known))}"


def _coerce(key: str, value: object, annotation: object) -> object:
    """Convert a YAML or command-line value to the field's declared type, or explain why not."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if type(None) in allowed and (value is None or str(value).lower() in ("none", "null")):
        return None
    target = next(t for t in allowed if t is not type(None))
    try:
        return _convert(value, target)
    except (TypeError, ValueError):
        raise TunelabError(f"{key} must be {_describe(target)}, not {value!r}") from None


def _convert(value: object, target: object) -> object:
    if target is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "on"):
            return True
        if str(value).lower() in ("false", "no", "0", "off"):
            return False
        raise ValueError(value)
    if target is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value) if not isinstance(value, str) else int(value.strip())
    if target is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if target is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise TypeError(value)
        return str(value)
    if typing.get_origin(target) is list:
        items = value if isinstance(value, list) else [part.strip() for part in str(value).split(",") if part.strip()]
        return [_convert(item, typing.get_args(target)[0]) for item in items]
    raise TypeError(f"unsupported type {target}")


def _describe(target: object) -> str:
    if typing.get_origin(target) is list:
        return f"a list of {_describe(typing.get_args(target)[0])} values (comma-separated on the command line)"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(target, str(target))


def load_recipe(path: str, argv: list[str]):
    """The RECIPE a recipe file defines, with command-line settings applied."""
    if not os.path.isfile(path):
        raise TunelabError(f"recipe file {path} does not exist: see recipes/ for the recipes")
    return parse_recipe(runpy.run_path(path)["RECIPE"], argv)