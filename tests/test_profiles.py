"""Hardware profiles, NVML detection through a stand-in, and the printed run plan."""

import shutil
import subprocess
from types import SimpleNamespace

import pytest
import torch

import tunelab.flops
import tunelab.runtime.precision
from fake_gpu import FakeNVML
from tunelab.config import parse_recipe
from tunelab.errors import TunelabError
from tunelab.launch.plan import build_plan
from tunelab.launch.recipe import run
from tunelab.nli.config import NLIRecipe
from tunelab.profiles import Gpu, auto_profile, detect_gpus, resolve_profile
from tunelab.runtime.precision import compute_dtype

RECIPE = NLIRecipe(run_name="demo", per_device_train_batch_size=8, gradient_accumulation_steps=1)


@pytest.mark.parametrize("devices, expected", [
    ([], "cpu"),
    ([("NVIDIA A40", 48, 8)], "a40"),
    ([("NVIDIA H100 80GB HBM3", 80, 9)], "h100"),
    ([("GRID V100DX-32C", 32, 7)], "vgpu36"),
    ([("NVIDIA A100-SXM4-40GB", 40, 8)] * 4, "multi_gpu"),
])
def test_auto_profile_from_detected_gpus(devices, expected):
    nvml = FakeNVML(devices)
    profile, reason = auto_profile(detect_gpus(nvml))
    assert profile.name == expected and reason
    assert nvml.shut_down


def test_no_driver_means_cpu():
    assert detect_gpus(FakeNVML([], fail_init=True)) == []


def test_real_nvml_finds_the_gpus_nvidia_smi_lists():
    """The real pynvml on this machine: no driver (CI) is no GPU, not a crash; with one, the GPUs nvidia-smi lists."""
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.splitlines() \
        if shutil.which("nvidia-smi") else []
    names = [line.split(": ", 1)[1].split(" (UUID")[0] for line in listed if line.startswith("GPU ")]
    gpus = detect_gpus()
    assert [gpu.name for gpu in gpus] == names
    assert all(gpu.memory_gib > 0 for gpu in gpus)


@pytest.mark.parametrize("profile, world, batch, accumulation, precision", [
    ("cpu", 1, 8, 1, "auto"),
    ("cpu_ddp", 2, 4, 1, "fp32"),
    ("vgpu36", 1, 4, 2, "fp16"),
    ("a40", 1, 8, 1, "bf16"),
])
def test_profiles_keep_the_effective_batch(profile, world, batch, accumulation, precision, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    gpus = [Gpu("NVIDIA A40", 48, True)]
    recipe = resolve_profile(NLIRecipe(profile=profile), explicit=set(), gpus=gpus)
    assert (recipe.per_device_train_batch_size, recipe.gradient_accumulation_steps) == (batch, accumulation)
    assert recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps * world == 8
    assert recipe.precision == precision


@pytest.mark.parametrize("profile, gpus, recipe_batch, recipe_accumulation, batch, accumulation, checkpointing", [
    ("h100", 1, 8, 4, 16, 2, False),      # its larger per-device batch, fewer accumulation steps
    ("h100", 1, 8, 1, 8, 1, False),       # never a per-device batch above the effective one
    ("multi_gpu", 4, 8, 1, 2, 1, False),  # one process per GPU share the batch
    ("multi_gpu", 2, 4, 4, 4, 2, False),
    ("zero2", 2, 8, 1, 4, 1, False),
    ("zero3", 4, 8, 2, 4, 1, True),
])
def test_gpu_profiles_split_the_effective_batch(profile, gpus, recipe_batch, recipe_accumulation, batch,
                                                accumulation, checkpointing, monkeypatch):
    """No WORLD_SIZE: the process count comes from the profile and the visible GPUs, as in `tunelab launch`."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    recipe = NLIRecipe(profile=profile, per_device_train_batch_size=recipe_batch,
                       gradient_accumulation_steps=recipe_accumulation)
    resolved = resolve_profile(recipe, explicit=set(), gpus=[Gpu("NVIDIA H100 80GB HBM3", 80, True)] * gpus)
    assert (resolved.per_device_train_batch_size, resolved.gradient_accumulation_steps) == (batch, accumulation)
    assert batch * accumulation * gpus == recipe_batch * recipe_accumulation
    assert resolved.precision == "bf16" and resolved.gradient_checkpointing == checkpointing


def test_explicit_settings_win_over_the_profile(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    recipe = resolve_profile(NLIRecipe(profile="vgpu36", per_device_train_batch_size=2, precision="fp32"),
                             explicit={"per_device_train_batch_size", "precision"},
                             gpus=[Gpu("GRID A100-36C", 36, False)])
    assert recipe.per_device_train_batch_size == 2 and recipe.gradient_accumulation_steps == 1
    assert recipe.precision == "fp32" and recipe.gradient_checkpointing


@pytest.mark.parametrize("argv, message", [
    (["--profile", "a100"], "unknown hardware profile 'a100': choose one of cpu, cpu_ddp, a40"),
    (["--profile", "a40"], "profile a40 needs a GPU but none is visible: use --profile cpu"),
])
def test_bad_profiles_are_clear(argv, message):
    with pytest.raises(TunelabError) as error:
        parse_recipe(RECIPE, argv)
    assert message in str(error.value)


def test_auto_on_this_machine_is_cpu(capsys):
    recipe = parse_recipe(RECIPE, ["--profile", "auto"])
    assert recipe.profile == "cpu" and recipe.precision == "auto"  # bf16 where the CPU computes it natively
    assert "profile auto -> cpu: no GPU visible" in capsys.readouterr().out


def test_plan_for_phi2_offline_counts_the_real_architecture():
    recipe = NLIRecipe(model_name_or_path="microsoft/phi-2", load_in_4bit=True, lora_r=32,
                       lora_target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2", "lm_head"],
                       num_train_epochs=5, precision="bf16")
    plan = build_plan(recipe, world_size=1, train_rows=1000)
    assert plan["optimizer_steps"] == 625 and plan["effective_batch"] == 8
    memory = plan["memory"]
    assert memory["parameters"] == 2_779_683_840
    # r × (in + out) per projection: 32 layers × (4 × 5120 + 2 × 12800) + lm_head (2560 + 51200)
    assert memory["trained_parameters"] == 32 * (32 * (4 * 5120 + 2 * 12800) + 2560 + 51200)
    assert 1.0 < memory["weights_gib"] < 2.5, "4-bit weights of a 2.8B model"


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_phi_dir, snli_dir, tmp_path, capsys):
    run(RECIPE, ["--dry_run", "--model_name_or_path", str(tiny_phi_dir), "--dataset", str(snli_dir),
                 "--output_dir", str(tmp_path), "--lora_target_modules", "q_proj,fc1"])
    out = capsys.readouterr().out
    assert "effective batch 8 = per-device 8 × accumulation 1 × 1 process(es)" in out
    assert "training rows: 60; optimizer steps: 24" in out
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("instructions, fp32, bf16, expected, said", [
    (False, None, None, False, None),              # emulated bf16: not even measured
    (True, 0.0188, 0.0305, False, "fp32 (on this CPU a training-sized matmul step takes 1.62x"),  # this Intel Xeon
    (True, 0.030, 0.017, True, "bf16 (on this CPU a training-sized matmul step takes 0.57x"),
    (True, 0.030, 0.028, False, "fp32"),           # a tie keeps fp32's precision
])
def test_auto_precision_measures_bf16_against_fp32_on_a_cpu_with_bf16_instructions(
        instructions, fp32, bf16, expected, said, monkeypatch, capsys):
    def timed(dtype):
        assert instructions, "measured on a CPU that emulates bf16"
        return {torch.float32: fp32, torch.bfloat16: bf16}[dtype]

    monkeypatch.setattr(tunelab.runtime.precision, "cpu_has_bf16_instructions", lambda: instructions)
    monkeypatch.setattr(tunelab.runtime.precision, "training_matmul_seconds", timed)
    tunelab.runtime.precision.cpu_trains_faster_in_bf16.cache_clear()
    try:
        assert tunelab.runtime.precision.cpu_trains_faster_in_bf16() is expected
        assert tunelab.runtime.precision.cpu_trains_faster_in_bf16() is expected  # measured once: said once
    finally:
        tunelab.runtime.precision.cpu_trains_faster_in_bf16.cache_clear()
    out = capsys.readouterr().out
    assert out.count("precision auto:") == (0 if said is None else 1)
    assert said is None or f"precision auto: {said}" in out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_bf16_probe_times_real_training_passes_and_keeps_the_fastest(dtype, monkeypatch):
    """One forward and backward pass in `dtype` per repeat, each between two clock readings; the fastest counts."""
    readings = iter([0.0, 5.0, 10.0, 12.0, 20.0, 29.0])  # passes of 5, 2 and 9 s
    monkeypatch.setattr(tunelab.flops, "time", SimpleNamespace(perf_counter=lambda: next(readings)))
    passes, backward = [], torch.Tensor.backward
    monkeypatch.setattr(torch.Tensor, "backward", lambda loss, *args: passes.append(loss.dtype) or backward(loss))
    assert tunelab.flops.training_matmul_seconds(dtype, repeats=3) == 2.0
    assert passes == [dtype] * 3 and next(readings, None) is None


@pytest.mark.parametrize("native_bf16, world_size, deepspeed, expected", [
    (True, "1", "false", torch.bfloat16),  # bf16 measured faster than fp32 on this CPU
    (False, "1", "false", torch.float32),  # emulated, or measured no faster
    (True, "2", "false", torch.float32),   # gloo takes fp32
    (True, "1", "true", torch.float32),    # so does DeepSpeed on a CPU (zero3_offload.yaml runs one process)
])
def test_auto_precision_on_a_cpu(native_bf16, world_size, deepspeed, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(tunelab.runtime.precision, "cpu_trains_faster_in_bf16", lambda: native_bf16)
    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", deepspeed)
    assert compute_dtype("auto") == expected
    assert compute_dtype("fp32") == torch.float32 and compute_dtype("bf16") == torch.bfloat16
