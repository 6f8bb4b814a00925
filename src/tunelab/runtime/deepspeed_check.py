"""Check a DeepSpeed JSON against a recipe's training arguments before a run starts.

`validate_deepspeed_json` fills every `"auto"` the way the Trainer will at run time (with
transformers' own `HfTrainerDeepSpeedConfig`), reports a value that contradicts the recipe,
then parses the result with DeepSpeed's own `DeepSpeedConfig`, which really validates (an
unknown ZeRO stage or key, inconsistent batch sizes) where accelerate's parser accepts nonsense.
Nothing distributed is initialised: outside a launcher DeepSpeed sees a world of one process,
as does `TrainingArguments`, so batch sizes are checked for that world size (inside a launched
process both see the real one).

`"auto"` values that depend on the model (`reduce_bucket_size`, `stage3_prefetch_bucket_size`,
`stage3_param_persistence_threshold`, from its hidden size) or on the number of training steps
(scheduler `total_num_steps`, `warmup_num_steps`) are filled when both `hidden_size` and
`num_training_steps` are given; otherwise they are checked with stand-in values and stay
`"auto"` in the returned dict, as the Trainer fills them once it has the model.

`launched_zero_stage` says which ZeRO stage `accelerate launch` set up, before anything loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

from tunelab.errors import TunelabError

# Only to check the types of the model-dependent "auto" values when the model is not known.
_STAND_IN_HIDDEN_SIZE = 1024
_STAND_IN_TRAINING_STEPS = 100


def validate_deepspeed_json(path, training_args, *, hidden_size: int | None = None,
                            num_training_steps: int | None = None) -> dict:
    """The DeepSpeed config at `path` with its "auto" values resolved against `training_args`.

    Raises TunelabError, on one line naming the file, when the file is missing or not JSON, when
    a value contradicts the training arguments, or when DeepSpeed rejects the config.
    """
    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"DeepSpeed config {path} does not exist: check deepspeed_config_file in the accelerate "
                           "config (relative paths are relative to the directory you launch from)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TunelabError(f"DeepSpeed config {path} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise TunelabError(f"DeepSpeed config {path} must hold a JSON object, not {type(raw).__name__}")
    if "zero_optimization" not in raw:
        # accelerate refuses a config file without it ("Please specify the ZeRO optimization config").
        raise TunelabError(f"DeepSpeed config {path} has no zero_optimization section: add one with a \"stage\"")

    resolved = _resolve_auto(path, raw, training_args, hidden_size, num_training_steps)
    _validate_with_deepspeed(path, resolved)
    return resolved


def launched_with_deepspeed(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `accelerate launch` set this process up for DeepSpeed."""
    return environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("1", "true", "yes")


def launched_zero_stage(environ: Mapping[str, str] = os.environ) -> int | None:
    """The ZeRO stage `accelerate launch` set up for this process, or None when it runs without DeepSpeed.

    Readable before anything is initialised (before the model loads, unlike transformers'
    `is_deepspeed_zero3_enabled`, which only knows once TrainingArguments exist). With a
    `deepspeed_config_file` accelerate passes only the file's path (ACCELERATE_DEEPSPEED_CONFIG_FILE),
    not the stage; without one, the YAML's `zero_stage` (ACCELERATE_DEEPSPEED_ZERO_STAGE, default 2).
    """
    if not launched_with_deepspeed(environ):
        return None
    default = int(environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", 2))
    config_file = environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    if config_file == "none":
        return default
    path = Path(config_file)
    if not path.is_file():
        raise TunelabError(f"DeepSpeed config {path} does not exist: check deepspeed_config_file in the accelerate "
                           "config (relative paths are relative to the directory you launch from)")
    try:
        stage = json.loads(path.read_text(encoding="utf-8")).get("zero_optimization", {}).get("stage", 0)
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise TunelabError(f"DeepSpeed config {path} is not a valid JSON object: {error}") from None
    return default if stage == "auto" else int(stage)


def _resolve_auto(path: Path, raw: dict, training_args, hidden_size, num_training_steps) -> dict:
    """Fill "auto" exactly as transformers' Trainer does; mismatches with the arguments are errors."""
    import transformers.integrations.deepspeed as hf_deepspeed

    # Building an HfTrainerDeepSpeedConfig registers it as the process's active DeepSpeed config
    # (a weakref that from_pretrained consults): put back whatever was registered before.
    previous = hf_deepspeed._hf_deepspeed_config_weak_ref
    try:
        config = hf_deepspeed.HfTrainerDeepSpeedConfig(raw)  # deep-copies raw
        try:
            config.trainer_config_process(training_args)
            mismatches = list(config.mismatches)
            config.mismatches = []
            if hidden_size is not None and num_training_steps is not None:
                model = SimpleNamespace(config=SimpleNamespace(hidden_size=hidden_size))
                config.trainer_config_finalize(training_args, model, num_training_steps)
        except ValueError as error:
            raise TunelabError(f"DeepSpeed config {path}: {_one_line(error)}") from None
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = previous
    if mismatches:
        details = "; ".join(m.lstrip("- ") for m in mismatches)
        raise TunelabError(f"DeepSpeed config {path} contradicts the recipe ({details}): set these values to "
                           "\"auto\" in the JSON so the recipe decides them")
    return config.config


def _stand_ins(config: dict) -> dict:
    """A copy with the model- and step-dependent "auto" values replaced by stand-ins of the right type."""
    checked = json.loads(json.dumps(config))
    zero = checked.get("zero_optimization")
    if isinstance(zero, dict):
        for key, value in (("reduce_bucket_size", _STAND_IN_HIDDEN_SIZE ** 2),
                           ("stage3_prefetch_bucket_size", int(0.9 * _STAND_IN_HIDDEN_SIZE ** 2)),
                           ("stage3_param_persistence_threshold", 10 * _STAND_IN_HIDDEN_SIZE)):
            if zero.get(key) == "auto":
                zero[key] = value
    params = (checked.get("scheduler") or {}).get("params")
    if isinstance(params, dict):
        for key, value in (("total_num_steps", _STAND_IN_TRAINING_STEPS), ("warmup_num_steps", 1)):
            if params.get(key) == "auto":
                params[key] = value
    return checked


def _validate_with_deepspeed(path: Path, resolved: dict) -> None:
    from deepspeed.runtime.config import DeepSpeedConfig

    checked = _stand_ins(resolved)
    left = sorted(_auto_keys(checked))
    if left:
        raise TunelabError(f"DeepSpeed config {path}: \"auto\" is not supported for {', '.join(left)} "
                           "(transformers fills only batch sizes, accumulation, clipping, precision, optimizer, "
                           "scheduler and bucket sizes): give a value")
    try:
        # mpu=None and no process group: DeepSpeed takes world size 1 and rank 0; nothing is initialised.
        DeepSpeedConfig(checked, mpu=None)
    except Exception as error:  # pydantic ValidationError, AssertionError, DeepSpeedConfigError, ValueError
        raise TunelabError(f"DeepSpeed config {path} is rejected by DeepSpeed: {_one_line(error)}") from None


def _auto_keys(node, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [key for name, value in node.items() for key in _auto_keys(value, f"{prefix}{name}.")]
    return [prefix.rstrip(".")] if node == "auto" else []


def _one_line(error: Exception) -> str:
    """pydantic and DeepSpeed messages span lines: keep the lines that say what is wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("For further information")]
    return " ".join(lines) or type(error).__name__
