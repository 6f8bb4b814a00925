"""FSDP2 without training: the accelerate config as `accelerate launch` hands it to the processes, the checks
that stop an impossible combination before the model loads, the 4-bit storage, the profile and the plan."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.launch.plan import GPU_COUNTS, build_plan
from tunelab.models import quant_storage
from tunelab.nli.config import NLIRecipe
from tunelab.profiles import Gpu, resolve_profile
from tunelab.runtime.fsdp import check_fsdp_settings, launched_fsdp_version

ROOT = Path(__file__).resolve().parents[1]
FSDP2 = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}


def test_fsdp2_yaml_reaches_the_processes_as_accelerate_fsdp2(tmp_path):
    """What `accelerate launch --config_file fsdp2.yaml` gives its process: FSDP2, sharded checkpoints,
    rank-0 loading, transformer-layer wrapping, FSDP's own activation checkpointing off."""
    script = tmp_path / "plugin.py"
    script.write_text("from accelerate.utils import FullyShardedDataParallelPlugin\n"
                      "from tunelab.runtime.fsdp import launched_fsdp_version\n"
                      "p = FullyShardedDataParallelPlugin()\n"
                      "print('FSDP', launched_fsdp_version(), p.fsdp_version, p.state_dict_type.name,\n"
                      "      p.cpu_ram_efficient_loading, p.activation_checkpointing, p.reshard_after_forward,\n"
                      "      p.auto_wrap_policy.__name__ if p.auto_wrap_policy else None)\n")
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([str(accelerate), "launch", "--config_file", "accelerate_configs/fsdp2.yaml",
                             "--num_processes", "1", "--main_process_port", "0", str(script)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "FSDP 2 2 SHARDED_STATE_DICT True False True transformer_auto_wrap_policy" in result.stdout, \
        result.stderr[-2000:]


@pytest.mark.parametrize("environ, version", [({}, None), (FSDP2, 2), ({"ACCELERATE_USE_FSDP": "true"}, 1)])
def test_launched_fsdp_version(environ, version):
    assert launched_fsdp_version(environ) == version


@pytest.mark.parametrize("environ, settings, message", [
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, {}, "FSDP version 1: tunelab supports FSDP2 only"),
    (FSDP2, {"optim": "paged_adamw_8bit"}, "optim paged_adamw_8bit is a bitsandbytes optimizer"),
    (FSDP2, {"optim": "adamw_bnb_8bit"}, "pass --optim adamw_torch"),
    ({**FSDP2, "FSDP_ACTIVATION_CHECKPOINTING": "true"}, {"gradient_checkpointing": True},
     "keep one, either --gradient_checkpointing false or fsdp_activation_checkpointing: false"),
])
def test_impossible_fsdp_settings_stop_with_one_line(environ, settings, message):
    recipe = NLIRecipe(**{"optim": "adamw_torch", **settings})
    with pytest.raises(TunelabError, match=message) as error:
        check_fsdp_settings(recipe, environ)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("environ, possible, refused", [
    ({}, {"optim": "paged_adamw_8bit", "gradient_checkpointing": True}, None),  # without FSDP anything goes
    (FSDP2, {"optim": "adamw_torch", "gradient_checkpointing": True}, {"optim": "paged_adamw_8bit"}),
    ({**FSDP2, "FSDP_ACTIVATION_CHECKPOINTING": "true"}, {"optim": "adamw_torch", "gradient_checkpointing": False},
     {"gradient_checkpointing": True}),
])
def test_possible_settings_pass_and_their_impossible_neighbour_does_not(environ, possible, refused):
    """Each launch accepts its possible settings, and refuses them with one setting changed: the check reads
    that launch's environment rather than passing everything."""
    assert check_fsdp_settings(NLIRecipe(**possible), environ) is None
    if refused is None:
        assert launched_fsdp_version(environ) is None
    else:
        with pytest.raises(TunelabError):
            check_fsdp_settings(NLIRecipe(**{**possible, **refused}), environ)


def test_4bit_weights_are_stored_in_the_compute_dtype_under_fsdp2(monkeypatch):
    assert quant_storage(NLIRecipe(), torch.bfloat16) == torch.uint8
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert quant_storage(NLIRecipe(), torch.bfloat16) == torch.bfloat16
    assert quant_storage(NLIRecipe(bnb_4bit_quant_storage="bf16"), torch.bfloat16) == torch.bfloat16
    with pytest.raises(TunelabError, match=r"FSDP2 with 4-bit weights needs bnb_4bit_quant_storage equal to the "
                                           r"compute dtype \(bfloat16\), not uint8: .*multi_gpu.yaml"):
        quant_storage(NLIRecipe(bnb_4bit_quant_storage="uint8"), torch.bfloat16)


def test_fsdp2_profile(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    gpus = [Gpu("NVIDIA A100-SXM4-80GB", 80, True)] * 4
    recipe = resolve_profile(NLIRecipe(profile="fsdp2", optim="paged_adamw_8bit"), explicit=set(), gpus=gpus)
    assert (recipe.optim, recipe.precision, recipe.gradient_checkpointing) == ("adamw_torch", "bf16", True)
    assert recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps * 4 == 8
    kept = resolve_profile(NLIRecipe(profile="fsdp2", optim="adamw_torch_fused"), explicit={"optim"}, gpus=gpus)
    assert kept.optim == "adamw_torch_fused"


def test_plan_estimates_each_strategy_per_gpu():
    recipe = NLIRecipe(model_name_or_path="microsoft/phi-2", load_in_4bit=False, lora_r=32,
                       lora_target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
                       precision="bf16", gradient_checkpointing=True)
    memory = build_plan(recipe, world_size=1)["memory"]
    table = memory["per_gpu_by_strategy"]
    assert list(table) == ["DDP", "ZeRO-2", "ZeRO-3", "FSDP2"] and all(list(t) == list(GPU_COUNTS) for t in table.values())
    assert all(t[1] == pytest.approx(memory["peak_gib"]) for t in table.values()), "one GPU: nothing to shard"
    assert len(set(table["DDP"].values())) == 1, "DDP keeps a full replica on every GPU"
    for gpus in GPU_COUNTS[1:]:
        assert table["FSDP2"][gpus] < table["ZeRO-2"][gpus] < table["DDP"][gpus]
    # Sharding saves 7/8 of weights and LoRA state; each GPU gathers two units, here phi-2's embedding matrix
    # (51,200 x 2,560 in bf16, larger than a decoder layer), twice.
    gathered = 2 * 51200 * 2560 * 2 / 2**30
    saved = 7 / 8 * (memory["weights_gib"] + memory["training_state_gib"]) - gathered
    assert table["DDP"][8] - table["FSDP2"][8] == pytest.approx(saved, abs=1e-6)
