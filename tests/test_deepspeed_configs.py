"""The launch configs in accelerate_configs/: each parses with accelerate's own loader, each DeepSpeed
JSON resolves against the phi2_snli recipe and passes DeepSpeed's own validation, and the accelerate
YAMLs that point at a JSON set nothing that accelerate refuses next to one."""

import json
import os
import runpy
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from tunelab.errors import TunelabError
from tunelab.nli.trainer import training_arguments
from tunelab.runtime.deepspeed_check import launched_zero_stage, validate_deepspeed_json

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "accelerate_configs"
YAMLS = sorted(CONFIGS.glob("*.yaml"))
JSONS = sorted((CONFIGS / "deepspeed").glob("*.json"))
RECIPE = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]

# What each config is for: distributed type, processes (-1: the launcher's --num_processes), precision.
EXPECTED = {
    "cpu.yaml": (DistributedType.NO, 1, "no"),
    "cpu_ddp.yaml": (DistributedType.MULTI_GPU, 2, "no"),
    "a40.yaml": (DistributedType.NO, 1, "bf16"),
    "vgpu36.yaml": (DistributedType.NO, 1, "fp16"),
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, -1, None),
    "zero2.yaml": (DistributedType.DEEPSPEED, -1, None),
    "zero3.yaml": (DistributedType.DEEPSPEED, -1, None),
    "zero3_offload.yaml": (DistributedType.DEEPSPEED, 1, None),
    "fsdp2.yaml": (DistributedType.FSDP, -1, None),
}
# accelerate raises when these come from the accelerate config next to a deepspeed_config_file.
SET_BY_JSON_ONLY = {"gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
                    "offload_param_device", "offload_param_nvme_path", "offload_optimizer_nvme_path",
                    "zero3_save_16bit_model", "mixed_precision"}
AUTO_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
             "gradient_clipping", "bf16.enabled", "fp16.enabled")


@pytest.fixture(scope="module")
def recipe_args(tmp_path_factory):
    # fp32, as a DeepSpeed launch on a CPU resolves precision auto (ACCELERATE_USE_DEEPSPEED is not set here)
    return training_arguments(replace(RECIPE, precision="fp32"), str(tmp_path_factory.mktemp("checkpoints")),
                              on_cpu=True)


def lookup(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def test_every_config_is_known():
    assert sorted(p.name for p in YAMLS) == sorted(EXPECTED)
    assert sorted(p.name for p in JSONS) == ["zero2.json", "zero3.json", "zero3_offload.json"]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_accelerate_config_parses(path):
    config = load_config_from_file(str(path))
    distributed_type, processes, precision = EXPECTED[path.name]
    assert config.distributed_type == distributed_type
    assert config.num_processes == processes
    assert config.mixed_precision == precision
    assert config.use_cpu == path.name.startswith("cpu")
    assert path.read_text().startswith("#"), "each config opens with a comment saying when to use it"


@pytest.mark.parametrize("path", [p for p in YAMLS if EXPECTED[p.name][0] == DistributedType.DEEPSPEED],
                         ids=lambda p: p.name)
def test_deepspeed_yaml_leaves_the_json_in_charge(path, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    config = load_config_from_file(str(path))
    ds = config.deepspeed_config
    json_file = ROOT / ds["deepspeed_config_file"]
    assert json_file.is_file()
    assert not SET_BY_JSON_ONLY & set(ds) and config.mixed_precision is None
    stage = json.loads(json_file.read_text())["zero_optimization"]["stage"]
    assert ds["zero3_init_flag"] == (stage == 3)
    # What `accelerate launch` hands the processes, and the check accelerate then runs on it.
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", ",".join(ds))
    plugin = DeepSpeedPlugin(hf_ds_config=str(json_file), zero3_init_flag=ds["zero3_init_flag"])
    assert plugin.zero_stage == stage


def test_accelerate_refuses_a_json_field_in_the_yaml(monkeypatch):
    """The check above has teeth: a zero_stage next to deepspeed_config_file is an error."""
    from accelerate.utils import DeepSpeedPlugin

    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", "deepspeed_config_file,zero_stage")
    with pytest.raises(ValueError, match="When using `deepspeed_config_file`"):
        DeepSpeedPlugin(hf_ds_config=str(CONFIGS / "deepspeed" / "zero2.json"))


@pytest.mark.parametrize("path", JSONS, ids=lambda p: p.name)
def test_deepspeed_json_resolves_against_the_recipe(path, recipe_args):
    raw = json.loads(path.read_text())
    for key in AUTO_KEYS:
        assert lookup(raw, key) == "auto", f"{key} must be \"auto\": the recipe decides it"

    resolved = validate_deepspeed_json(path, recipe_args)
    b, g = RECIPE.per_device_train_batch_size, RECIPE.gradient_accumulation_steps
    assert resolved["train_micro_batch_size_per_gpu"] == b
    assert resolved["gradient_accumulation_steps"] == g
    assert resolved["train_batch_size"] == b * g * recipe_args.world_size
    assert resolved["gradient_clipping"] == RECIPE.max_grad_norm
    assert resolved["bf16"]["enabled"] is False and resolved["fp16"]["enabled"] is False  # fp32 on CPU
    zero = resolved["zero_optimization"]
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    if "offload" in path.name:
        assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
        assert resolved["optimizer"]["params"]["lr"] == RECIPE.learning_rate

    # Once the model and step count are known, nothing is left "auto".
    full = validate_deepspeed_json(path, recipe_args, hidden_size=64, num_training_steps=10)
    assert "auto" not in json.dumps(full)
    assert full["zero_optimization"]["reduce_bucket_size"] == 64 * 64
    assert raw == json.loads(path.read_text()), "the file is not modified"


def test_deepspeed_json_follows_the_recipe_precision(tmp_path):
    args = training_arguments(RECIPE, str(tmp_path), on_cpu=True)
    args.bf16 = True  # what precision bf16 gives on a GPU
    resolved = validate_deepspeed_json(CONFIGS / "deepspeed" / "zero2.json", args)
    assert resolved["bf16"]["enabled"] is True and resolved["fp16"]["enabled"] is False


@pytest.mark.parametrize("content, message", [
    ({"train_batch_size": "auto", "zero_optimization": {"stage": 7}}, r"rejected by DeepSpeed: .*stage"),
    ({"train_batch_size": "auto", "zero_optimization": {"stage": 2, "overlap_com": True}},
     r"rejected by DeepSpeed: .*overlap_com.*Extra inputs are not permitted"),
    ({"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2}},
     r"contradicts the recipe \(ds train_micro_batch_size_per_gpu=4 vs hf per_device_train_batch_size=8\)"),
    ({"train_batch_size": "auto", "zero_optimization": {"stage": 3, "sub_group_size": "auto"}},
     r"\"auto\" is not supported for zero_optimization.sub_group_size"),
    ({"train_batch_size": "auto"}, "has no zero_optimization section"),
    ("{not json", "is not valid JSON"),
])
def test_bad_deepspeed_json_is_one_line_error(content, message, tmp_path, recipe_args):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(TunelabError, match=message) as error:
        validate_deepspeed_json(path, recipe_args)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_deepspeed_json(tmp_path, recipe_args):
    with pytest.raises(TunelabError, match=f"DeepSpeed config {tmp_path / 'nope.json'} does not exist"):
        validate_deepspeed_json(tmp_path / "nope.json", recipe_args)


def test_validation_leaves_no_active_deepspeed_config(recipe_args):
    """transformers registers a DeepSpeed config globally (from_pretrained reads it): none must leak."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    validate_deepspeed_json(CONFIGS / "deepspeed" / "zero3.json", recipe_args)
    assert not is_deepspeed_zero3_enabled()


DS = {"ACCELERATE_USE_DEEPSPEED": "true"}


@pytest.mark.parametrize("environ, stage", [
    ({}, None),
    ({**DS, "ACCELERATE_DEEPSPEED_CONFIG_FILE": "accelerate_configs/deepspeed/zero3.json"}, 3),
    ({**DS, "ACCELERATE_DEEPSPEED_CONFIG_FILE": "accelerate_configs/deepspeed/zero2.json"}, 2),
    ({**DS, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, 3),
    (DS, 2),  # accelerate's default stage
])
def test_launched_zero_stage(environ, stage, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert launched_zero_stage(environ) == stage


def test_launched_zero_stage_reads_what_accelerate_launch_passes(tmp_path):
    """The environment `accelerate launch --config_file zero3.yaml` gives its processes names the stage."""
    script = tmp_path / "stage.py"
    script.write_text("from tunelab.runtime.deepspeed_check import launched_zero_stage\n"
                      "print('STAGE', launched_zero_stage())\n")
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([str(accelerate), "launch", "--config_file", str(CONFIGS / "zero3.yaml"), "--num_processes",
                             "1", "--main_process_port", "0", str(script)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "STAGE 3" in result.stdout, result.stderr[-2000:]


def test_multi_gpu_config_asks_for_the_process_count(tmp_path):
    """multi_gpu.yaml leaves num_processes open: accelerate refuses to launch without --num_processes."""
    assert "num_processes" not in yaml.safe_load((CONFIGS / "multi_gpu.yaml").read_text())
    script, started = tmp_path / "started.py", tmp_path / "started"
    script.write_text(f"open({str(started)!r}, 'w').close()\n")
    accelerate = Path(sys.executable).parent / "accelerate"
    result = subprocess.run([str(accelerate), "launch", "--config_file", str(CONFIGS / "multi_gpu.yaml"), str(script)],
                            cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and not started.exists(), "nothing launched"
    assert result.stderr.strip().splitlines()[-1] == \
        "ValueError: You need to manually pass in `--num_processes` using this config yaml."
