"""What tunelab prints: `[tunelab]` lines on rank 0, and no third-party notices a user cannot act on."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tunelab.console import quiet_third_party, say

ROOT = Path(__file__).resolve().parents[1]

# One line of each notice tunelab filters, as the libraries print it.
NOISE = ("Failed to load CPU gemm_4bit_forward", "`gradient_checkpointing_enable` is deprecated",
         "`is_gradient_checkpointing` is deprecated", "the use_reentrant parameter should be passed explicitly",
         "Setting accelerator to CPU", "Paged optimizers are not supported on CPU",
         "Setting `save_embedding_layers` to `True`")


def test_say_prints_on_rank_zero_only(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    say("hidden")
    say("shown everywhere", every_process=True)
    monkeypatch.setenv("RANK", "0")
    say("to stderr", stream=sys.stderr)
    out, err = capsys.readouterr()
    assert out == "[tunelab] shown everywhere\n" and err == "[tunelab] to stderr\n"


def test_filters_match_module_and_message_not_category_alone(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        quiet_third_party()
        for module in ("transformers.modeling_utils", "tunelab.pipeline"):
            warnings.warn_explicit("`gradient_checkpointing_enable` is deprecated and will be removed in v6.",
                                   FutureWarning, "x.py", 1, module=module)
        warnings.warn_explicit("another FutureWarning", FutureWarning, "x.py", 1, module="transformers.trainer")
    assert [(w.filename, str(w.message)) for w in caught] == [
        ("x.py", "`gradient_checkpointing_enable` is deprecated and will be removed in v6."),
        ("x.py", "another FutureWarning")], "only transformers' own rename notice is filtered"
    with caplog.at_level(logging.WARNING):
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "No module named 'kernels'")
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("a real problem")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]


def expected_here(notice: str) -> bool:
    """Whether the libraries print `notice` on this machine: some only on a CPU-only machine, one only with AVX512-BF16."""
    from bitsandbytes.functional import has_avx512bf16

    if notice == "Failed to load CPU gemm_4bit_forward":
        return has_avx512bf16()
    if notice == "the use_reentrant parameter should be passed explicitly":
        return False  # tunelab's own checkpointing passes use_reentrant=False (models.load_model)
    cpu_only = ("Setting accelerator to CPU", "Paged optimizers are not supported on CPU")
    return notice not in cpu_only or not torch.cuda.is_available()


@pytest.mark.parametrize("debug", [False, True], ids=["quiet", "debug"])
def test_a_run_prints_no_third_party_notices_unless_debug(tiny_phi_dir, snli_dir, tmp_path, debug):
    """One step of the real phi2_snli recipe (4-bit, paged AdamW, lm_head in LoRA) with gradient checkpointing."""
    command = [str(Path(sys.executable).with_name("tunelab")), "run", "recipes/phi2_snli.py",
               "--model_name_or_path", str(tiny_phi_dir), "--dataset", str(snli_dir), "--output_dir", str(tmp_path),
               "--train_stride", "1", "--train_size", "8", "--validation_stride", "1", "--validation_size", "4",
               "--max_steps", "1", "--stages", "train", "--gradient_checkpointing", "true",
               *(["--debug"] if debug else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "100%" in result.stderr and "[tunelab] Wall time" in result.stdout, "progress bars and tunelab's lines stay"
    shown = [line for line in NOISE if line in output]
    if not debug:
        assert shown == [], output
    else:
        assert shown == [line for line in NOISE if expected_here(line)], output
