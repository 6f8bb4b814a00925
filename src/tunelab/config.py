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
import math
import re
import runpy
import string
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunelab.console import say
from tunelab.errors import TunelabError
from tunelab.methods import ignored_lora_settings, method_problems
from tunelab.resources import find_file

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
ATTENTION_KERNELS = ("auto", "sdpa", "eager", "flash_attention_2")  # transformers' attn_implementation, or its default
STAGES = ("baseline", "train", "evaluate", "report")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Recipe:
    """Settings shared by every recipe: model, LoRA, optimisation and the run directory.

    Each setting's metadata holds its `help` and its `group` in `--help`.
    """

    # Run
    run_name: str = field(default="run", metadata={
        "group": "run", "help": "the run's folder name under output_dir (letters, digits, '.', '_', '-')"})
    output_dir: str = field(default="runs", metadata={"group": "run", "help": "the folder that holds run folders"})
    overwrite: bool = field(default=False, metadata={"group": "run", "help": "replace a finished run of this name"})
    seed: int = field(default=42, metadata={
        "group": "run", "help": "random seed of LoRA initialisation, data order and dropout"})
    report_to: str = field(default="none", metadata={
        "group": "run", "help": "none, wandb, tensorboard or wandb,tensorboard"})
    debug: bool = field(default=False, metadata={
        "group": "run", "help": "show tracebacks and third-party warnings"})
    dry_run: bool = field(default=False, metadata={
        "group": "run", "help": "print the resolved plan (tunelab plan) instead of running"})
    stages: list[str] = field(default_factory=lambda: list(STAGES), metadata={
        "group": "run", "help": f"the stages to run, any subset of {','.join(STAGES)}"})
    profile: str = field(default="none", metadata={
        "group": "run",
        "help": "a hardware profile (tunelab.profiles), \"auto\", or none to keep the recipe as written"})
    gpus: int | None = field(default=None, metadata={
        "group": "run", "help": "plans only (tunelab plan): the GPUs to plan for (none: the profile's one GPU; "
                                "multi_gpu, zero2, zero3 and fsdp2 need a count)"})
    gpu_memory: float | None = field(default=None, metadata={
        "group": "run", "help": "plans only (tunelab plan): GiB per GPU, for a GPU other than the profile's"})
    push_to_hub: bool = field(default=False, metadata={
        "group": "run", "help": "after the report, upload the saved adapter (or model) folder and its model card to "
                                "hub_model_id on the Hugging Face Hub; needs network and a token (hf auth login)"})
    hub_model_id: str | None = field(default=None, metadata={
        "group": "run", "help": "the Hub repository push_to_hub uploads to, OWNER/NAME (created if missing)"})
    hub_private: bool = field(default=True, metadata={
        "group": "run", "help": "create that Hub repository private (false: public)"})

    # Model
    model_name_or_path: str = field(default="smollm2-135m", metadata={
        "group": "model", "help": "a Hub id, a local model folder, or an embedded model's short name"})
    trust_remote_code: bool = field(default=False, metadata={
        "group": "model", "help": "run the model repository's own Python code; only for repositories you trust"})
    load_in_4bit: bool = field(default=False, metadata={
        "group": "model", "help": "quantize the base weights to 4 bits (QLoRA, bitsandbytes)"})
    bnb_4bit_quant_type: str = field(default="nf4", metadata={"group": "model", "help": "4-bit type: nf4 or fp4"})
    bnb_4bit_use_double_quant: bool = field(default=True, metadata={
        "group": "model", "help": "quantize the quantization constants too (saves about 0.4 bits per weight)"})
    bnb_4bit_quant_storage: str | None = field(default=None, metadata={
        "group": "model", "help": "none: uint8, or the compute dtype under DeepSpeed ZeRO-3"})
    allow_pickle: bool = field(default=False, metadata={
        "group": "model", "help": "load .bin (pickle) weights; only for checkpoints you trust"})
    precision: str = field(default="auto", metadata={
        "group": "model", "help": f"compute precision: {', '.join(PRECISIONS)} (auto: bf16 on GPUs that have it, else fp16; "
                                  "on a CPU, bf16 for one process where it measures faster than fp32, which needs "
                                  "AVX512-BF16 or AMX; else fp32)"})
    attn_implementation: str = field(default="auto", metadata={
        "group": "model", "help": f"attention kernel: {', '.join(ATTENTION_KERNELS)} (auto: the model's default, "
                                  "SDPA for most; eager trains short prompts faster on a CPU in bf16, see "
                                  "docs/performance.md)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "group": "model", "help": "recompute activations in the backward pass: less memory, slower steps"})
    torch_compile: bool = field(default=False, metadata={
        "group": "model", "help": "compile each decoder layer with torch.compile (in place, dynamic shapes): faster "
                                  "steps, after compiling for about 40 s on a 2-core CPU the first time (seconds "
                                  "once Inductor's cache holds it); not with DeepSpeed or FSDP (docs/performance.md)"})

    # Data: every recipe reads a dataset and cuts examples to max_length (each kind sets its own defaults)
    dataset: str = field(default="starter", metadata={
        "group": "data", "help": "starter (the offline set), a local folder or a Hub id"})
    max_length: int = field(default=256, metadata={"group": "data", "help": "tokens per example; longer ones are cut"})

    # Method
    method: str = field(default="lora", metadata={
        "group": "method", "help": "what trains (tunelab.methods): lora (adapters; QLoRA with load_in_4bit), full "
                                   "(every weight) or freeze (the last freeze_trainable_layers layers and the head)"})
    freeze_trainable_layers: int = field(default=2, metadata={
        "group": "method", "help": "method freeze: how many of the last decoder layers train"})

    # LoRA
    lora_r: int = field(default=16, metadata={"group": "LoRA", "help": "rank of the LoRA matrices"})
    lora_alpha: int = field(default=32, metadata={"group": "LoRA", "help": "LoRA scaling: updates scale by alpha / r"})
    lora_dropout: float = field(default=0.05, metadata={"group": "LoRA", "help": "dropout on the LoRA input, in [0, 1)"})
    lora_bias: str = field(default="none", metadata={
        "group": "LoRA", "help": "which biases train: none, all or lora_only (PEFT)"})
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                           metadata={"group": "LoRA", "help": "the modules that get LoRA adapters "
                                                                              "(all-linear: every linear layer but "
                                                                              "the output head)"})
    use_dora: bool = field(default=False, metadata={
        "group": "LoRA", "help": "DoRA (PEFT): learn each weight's magnitude apart from its LoRA direction"})

    # Optimisation
    per_device_train_batch_size: int = field(default=8, metadata={
        "group": "optimisation", "help": "training examples per process and step"})
    per_device_eval_batch_size: int = field(default=16, metadata={
        "group": "optimisation", "help": "evaluation examples per process and forward pass"})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "group": "optimisation", "help": "steps whose gradients add up to one optimizer step"})
    learning_rate: float = field(default=2e-4, metadata={"group": "optimisation", "help": "peak learning rate"})
    num_train_epochs: float = field(default=3.0, metadata={
        "group": "optimisation", "help": "passes over the training rows (max_steps wins when set)"})
    max_steps: int = field(default=-1, metadata={
        "group": "optimisation", "help": "optimizer steps to train; -1: as many as num_train_epochs take"})
    warmup_ratio: float = field(default=0.0, metadata={
        "group": "optimisation", "help": "fraction of the steps with a rising learning rate, in [0, 1)"})
    lr_scheduler_type: str = field(default="linear", metadata={
        "group": "optimisation", "help": "learning-rate schedule (transformers' SchedulerType)"})
    weight_decay: float = field(default=0.0, metadata={"group": "optimisation", "help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={
        "group": "optimisation", "help": "gradient clipping norm; 0 turns clipping off"})
    loraplus_lr_ratio: float | None = field(default=None, metadata={
        "group": "optimisation", "help": "LoRA+: the LoRA B matrices learn at this many times learning_rate (none: "
                                         "the same rate; the LoRA+ paper suggests 16 with a lower learning_rate)"})
    neftune_noise_alpha: float | None = field(default=None, metadata={
        "group": "optimisation", "help": "NEFTune: noise of this scale on the input embeddings while training "
                                         "(transformers' neftune_noise_alpha; its paper used 5); none: off"})
    optim: str = field(default="adamw_torch", metadata={
        "group": "optimisation", "help": "optimizer (transformers' OptimizerNames, e.g. paged_adamw_8bit)"})
    group_by_length: bool = field(default=False, metadata={
        "group": "optimisation",
        "help": "batches of similar lengths (less padding); order still seeded and resumable"})
    padding_free: bool = field(default=False, metadata={
        "group": "optimisation",
        "help": "pack each batch's rows into one sequence, attention confined to each row: no pad tokens "
                "(docs/performance.md)"})
    logging_steps: int = field(default=10, metadata={
        "group": "optimisation", "help": "log loss and monitoring figures every this many steps"})
    save_strategy: str = field(default="epoch", metadata={
        "group": "optimisation", "help": "when to save a checkpoint: epoch, steps or no"})
    save_total_limit: int | None = field(default=2, metadata={
        "group": "optimisation", "help": "checkpoints kept (older ones are deleted); none keeps all"})

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise SettingsError(problems)

    def problems(self) -> list[str]:
        """Every out-of-range setting, one message each that says what to change."""
        unknown_stages = [stage for stage in self.stages if stage not in STAGES]
        checks = [
            (SAFE_NAME.match(self.run_name) is not None,
             f"run_name {self.run_name!r} must be a plain folder name (letters, digits, '.', '_', '-'; "
             "no '/' or '..'): set --run_name to such a name"),
            (not unknown_stages and self.stages,
             f"stages {unknown_stages or '[]'} not understood: choose from {', '.join(STAGES)}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"),
            (self.attn_implementation in ATTENTION_KERNELS, f"attn_implementation must be one of "
                                                            f"{', '.join(ATTENTION_KERNELS)}, not {self.attn_implementation!r}"),
            (self.report_to == "none" or all(n.strip() in ("wandb", "tensorboard") for n in self.report_to.split(",")),
             f"report_to must be none, wandb, tensorboard or wandb,tensorboard, not {self.report_to!r}"),
            (self.bnb_4bit_quant_storage in (None, "uint8", "bf16", "fp16", "fp32"),
             f"bnb_4bit_quant_storage must be uint8, bf16, fp16 or fp32, not {self.bnb_4bit_quant_storage!r}"),
            (self.learning_rate > 0, f"learning_rate must be positive, not {self.learning_rate}"),
            (self.lora_r >= 1, f"lora_r must be at least 1, not {self.lora_r}"),
            (self.lora_alpha > 0, f"lora_alpha must be positive, not {self.lora_alpha}"),
            (0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), not {self.lora_dropout}"),
            (len(self.lora_target_modules) > 0, "lora_target_modules is empty: name at least one module"),
            *((getattr(self, name) >= 1, f"{name} must be at least 1, not {getattr(self, name)}")
              for name in ("per_device_train_batch_size", "per_device_eval_batch_size",
                           "gradient_accumulation_steps", "logging_steps")),
            (self.num_train_epochs > 0 or self.max_steps > 0,
             "set num_train_epochs > 0 or max_steps > 0: there is nothing to train"),
            (math.isfinite(self.num_train_epochs),
             f"num_train_epochs must be a finite number, not {self.num_train_epochs}: set a number of passes, "
             "or --max_steps"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), not {self.warmup_ratio}"),
            (self.max_grad_norm >= 0, f"max_grad_norm must be >= 0, not {self.max_grad_norm}"),
            (self.loraplus_lr_ratio is None or self.loraplus_lr_ratio >= 1,
             f"loraplus_lr_ratio must be at least 1 (or none), not {self.loraplus_lr_ratio}"),
            (self.neftune_noise_alpha is None or self.neftune_noise_alpha > 0,
             f"neftune_noise_alpha must be > 0 (or none), not {self.neftune_noise_alpha}"),
            (self.dry_run or (self.gpus is None and self.gpu_memory is None),
             "gpus and gpu_memory describe the hardware a plan is for: use them with tunelab plan (or --dry_run); "
             "a run uses the GPUs it finds"),
            (self.profile not in ("none", "auto") or (self.gpus is None and self.gpu_memory is None),
             "gpus and gpu_memory describe the GPUs of a hardware profile: add --profile (a40, vgpu36, h100, "
             "multi_gpu, zero2, zero3 or fsdp2)"),
            (self.gpus is None or self.gpus >= 1, f"gpus must be at least 1 (or none), not {self.gpus}"),
            (self.gpu_memory is None or self.gpu_memory > 0, f"gpu_memory must be positive GiB, not {self.gpu_memory}"),
            (not self.push_to_hub or self.hub_model_id,
             "push_to_hub needs the repository to upload to: set --hub_model_id OWNER/NAME"),
            (self.hub_model_id is None or HUB_REPO.match(self.hub_model_id),
             f"hub_model_id must be a Hub repository id, OWNER/NAME, not {self.hub_model_id!r}"),
        ]
        return failed(checks) + method_problems(self)


def unfilled_slots(template: str, columns: tuple[str, ...]) -> list[str]:
    """The `{slot}`s of a str.format template that none of `columns` fills; a lone brace counts as one."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError:
        return ["a lone brace"]
    return [name for name in names if name not in columns]


def failed(checks: list[tuple[object, str]]) -> list[str]:
    """The messages of the checks whose condition is false."""
    return [message for condition, message in checks if not condition]


class SettingsError(TunelabError):
    """Every problem found in a recipe's settings; printed as one error, one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:
            super().__init__(problems[0])
        else:
            super().__init__(f"{len(problems)} problems in the settings:\n" + "\n".join(f"  {p}" for p in problems))


# ---------------------------------------------------------------------------- parsing

def parse_recipe(defaults: Recipe, argv: list[str], prog: str | None = None) -> Recipe:
    """Apply `--config FILE.yaml` (if given) and then `--field value` overrides to `defaults`.

    `--help` prints every setting with the value the rest of the command line gives it (the recipe's
    where that does not parse) and exits; `prog` names the command in its usage line (default: sys.argv[0]).
    Every problem found (unknown or mistyped keys, out-of-range
    values) is reported at once, in one SettingsError.
    """
    if "--help" in argv or "-h" in argv:
        try:
            shown = parse_recipe(defaults, [arg for arg in argv if arg not in ("--help", "-h")])
        except SettingsError:
            shown = defaults
        print(settings_help(shown, prog))
        raise SystemExit(0)
    problems: list[str] = []
    config_file, overrides = _split_argv(argv, problems)
    values: dict[str, object] = {}
    if config_file is not None:
        values.update(_coerce_all(defaults, _read_yaml(config_file), config_file, problems))
    values.update(_coerce_all(defaults, overrides, "the command line", problems))
    try:
        recipe = dataclasses.replace(defaults, **values)
    except SettingsError as error:
        problems += error.problems
    if problems:
        raise SettingsError(problems)
    ignored = ignored_lora_settings(recipe.method, set(values))
    if ignored:
        say(f"warning: method {recipe.method} trains no LoRA adapters, so {', '.join(ignored)} "
            f"{'is' if len(ignored) == 1 else 'are'} ignored", stream=sys.stderr)
    if recipe.profile != "none":
        from tunelab.profiles import resolve_profile

        recipe = resolve_profile(recipe, explicit=set(values))
    return recipe


GROUPS = ("model", "method", "LoRA", "data", "optimisation", "run")


def settings_help(recipe: Recipe, prog: str | None = None) -> str:
    """Every setting of `recipe` by group: `--name TYPE (default: the recipe's value)` and its help."""
    lines = [f"usage: {prog or sys.argv[0]} [--config FILE.yaml] [--SETTING VALUE ...] [--help]\n\n"
             f"Settings of {recipe.run_name} ({type(recipe).__name__}); each default is the value this command "
             "line gives it: the recipe's, then a --config YAML file's (setting: value), then the other options."]
    for group, settings in settings_by_group(recipe):
        lines.append(f"\n{group}:")
        for f, shown in settings:
            lines.append(f"  --{f.name} {f.type} (default: {shown})")
            lines.append(f"      {f.metadata['help']}")
    return "\n".join(lines)


def settings_by_group(recipe: Recipe) -> list[tuple[str, list[tuple[dataclasses.Field, str]]]]:
    """Each group (GROUPS first, then any other a field names) with its settings: the field and `recipe`'s
    value as the command line writes it. `--help` and `tunelab settings` show these."""
    fields = dataclasses.fields(recipe)
    groups = [*GROUPS, *dict.fromkeys(f.metadata["group"] for f in fields if f.metadata["group"] not in GROUPS)]
    return [(group, [(f, _show(getattr(recipe, f.name))) for f in fields if f.metadata["group"] == group])
            for group in groups]


def _show(value: object) -> str:
    """A value as it is written on the command line."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if value is None:
        return "none"
    if isinstance(value, str) and "\n" in value:
        return repr(value)  # one line in --help; in a YAML file write it as a block (|) or in double quotes
    return str(value).lower() if isinstance(value, bool) else str(value)


def recipe_to_dict(recipe: Recipe) -> dict:
    """The resolved recipe as plain data, ready for YAML (run-control flags left out)."""
    data = dataclasses.asdict(recipe)
    for run_control in ("overwrite", "debug", "stages", "dry_run", "gpus", "gpu_memory"):
        data.pop(run_control)
    return data


def _split_argv(argv: list[str], problems: list[str]) -> tuple[str | None, dict[str, object]]:
    config_file = None
    overrides: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            problems.append(f"unexpected argument {arg!r}: settings are given as --name value")
            continue
        key, has_value, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not has_value:
            next_is_value = i < len(argv) and not argv[i].startswith("--")
            value = argv[i] if next_is_value else "true"
            i += 1 if next_is_value else 0
        if key == "config":
            config_file = value
        else:
            overrides[key] = value
    return config_file, overrides


def _read_yaml(path: str) -> dict[str, object]:
    try:
        text = find_file(path).read_text(encoding="utf-8")
    except OSError as error:
        raise TunelabError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise TunelabError(f"config file {path} {yaml_problem(error, text)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TunelabError(f"config file {path} must be a mapping of setting: value")
    return {str(k): v for k, v in data.items()}


class RepeatedKey(yaml.constructor.ConstructorError):
    """A YAML mapping that gives one key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, refusing a key given twice (YAML would keep the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise RepeatedKey(None, None, f"has the key {key!r} twice: keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_problem(error: yaml.YAMLError, text: str) -> str:
    """What is wrong in a YAML file, on one line with its line number: a repeated key, a tab, or YAML's words."""
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return f"is not valid YAML: {str(error).splitlines()[0]}"
    line = (text.splitlines() + [""])[mark.line]
    if isinstance(error, RepeatedKey):
        return f"line {mark.line + 1} {error.problem}"
    if "\t" in line[:len(line) - len(line.lstrip())]:
        return f"line {mark.line + 1} is indented with a tab: YAML indents with spaces only"
    return f"is not valid YAML at line {mark.line + 1}: {error.problem}"


def _coerce_all(recipe: Recipe, raw: dict[str, object], source: str, problems: list[str]) -> dict[str, object]:
    """The known settings converted to their types; each unknown or mistyped one adds to `problems`."""
    types_by_name = typing.get_type_hints(type(recipe))
    known = [f.name for f in dataclasses.fields(recipe)]
    coerced = {}
    for key, value in raw.items():
        try:
            if key not in known:
                raise TunelabError(f"unknown setting {key!r} in {source}{_suggestion(key, known)}")
            coerced[key] = _coerce(key, value, types_by_name[key])
        except TunelabError as error:
            problems.append(str(error))
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


def read_recipe(path: str) -> Recipe:
    """The RECIPE a recipe file defines: `path` from the working directory, else tunelab's packaged copy
    (tunelab.resources). Its `__main__` block does not run."""
    recipe = runpy.run_path(str(recipe_file(path))).get("RECIPE")
    if not isinstance(recipe, Recipe):
        raise TunelabError(f"recipe file {path} defines no RECIPE: assign the recipe's settings to RECIPE")
    return recipe


def recipe_file(path: str) -> Path:
    """The recipe file `path` names: from the working directory, else tunelab's packaged copy."""
    found = find_file(path)
    if not found.is_file():
        raise TunelabError(f"recipe file {path} does not exist: see recipes/ for the recipes")
    return found


def load_recipe(path: str, argv: list[str]) -> Recipe:
    """The RECIPE a recipe file defines, with command-line settings applied."""
    return parse_recipe(read_recipe(path), argv, prog=path)
