"""`tunelab plan --profile P` on a machine without a GPU: the plan is for the profile's GPUs.

- every GPU profile plans here, with the memory it must fit, a time estimate and the commands;
- the time estimate is the recipe's training FLOPs over the GPUs' bf16 peak at the assumed MFU;
- a setting that cannot fit is refused, and the change the refusal names does fit;
- the README's example runs as written, and the printed accelerate line runs (with --dry_run);
- the printed sbatch lines are accepted by a real Slurm cluster with GPUs declared (`sbatch --test-only`);
- run and launch still refuse a GPU profile where no GPU is visible.
"""

import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, SlurmUnavailable
from tunelab.config import parse_recipe
from tunelab.errors import TunelabError
from tunelab.launch.accelerate import launch_command
from tunelab.launch.plan import (
    ASSUMED_MFU,
    TEMPLATES,
    TYPICAL_TOKENS,
    build_plan,
    format_plan,
    parameter_memory,
    requeue_window_s,
    time_limit_s,
)
from tunelab.nli.data import planned_train_rows
from tunelab.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]
PHI2_SNLI = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]
EVAL_ROWS = 700  # phi2_snli: 100 test rows before and after training, 100 validation rows at each of 5 epochs

# profile, --gpus, the GPU's memory, the GPU count, nodes, GPUs per node
GPU_PROFILES = [
    ("a40", None, 48, 1, 1, 1),
    ("vgpu36", None, 36, 1, 1, 1),
    ("h100", None, 80, 1, 1, 1),
    ("multi_gpu", 4, 48, 4, 1, 4),
    ("zero2", 8, 48, 8, 1, 8),
    ("zero3", 16, 48, 16, 2, 8),
    ("fsdp2", 2, 48, 2, 1, 2),
]


def plan_for(argv, train_rows=999, eval_rows=EVAL_ROWS):
    """The plan of phi2_snli with these settings, as `tunelab plan recipes/phi2_snli.py ...` makes it."""
    recipe = parse_recipe(PHI2_SNLI, [*argv, "--dry_run"])
    return build_plan(recipe, world_size=1, train_rows=train_rows, eval_rows=eval_rows,
                      argv=["recipes/phi2_snli.py", *argv, "--dry_run"])


@pytest.fixture(autouse=True)
def no_gpu_here(monkeypatch):
    """This machine, as a login node: no GPU visible and not inside a launcher."""
    monkeypatch.setattr("tunelab.profiles.detect_gpus", lambda nvml=None: [])
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.mark.parametrize("profile, gpus, memory, count, nodes, per_node", GPU_PROFILES)
def test_every_gpu_profile_plans_without_a_gpu(profile, gpus, memory, count, nodes, per_node):
    plan = plan_for(["--profile", profile, *(["--gpus", str(gpus)] if gpus else [])])
    text = format_plan(plan)
    assert plan["processes"] == count and f"on {count} × " in text
    assert "a plan for that hardware, not this machine" in text
    assert plan["fit"]["gpu_gib"] == memory and 0 < plan["fit"]["per_gpu_gib"] < 0.9 * memory
    assert f"per GPU: {plan['fit']['per_gpu_gib']:.1f} of {memory} GiB" in text
    assert plan["time"]["train_s"] > 0 and plan["time"]["eval_s"] > 0
    assert f"an assumed {ASSUMED_MFU:.0%} MFU" in text and "an estimate" in text
    sbatch = plan["commands"]["sbatch"]
    assert f"--nodes={nodes} --gpus-per-node={per_node} --time=" in sbatch
    assert f"ACCELERATE_CONFIG=accelerate_configs/{get_profile(profile).accelerate_config}" in sbatch
    assert sbatch.endswith(f"--profile {profile}"), "the plan's own settings (--gpus, --dry_run) are not passed on"
    assert (plan["commands"]["accelerate"] is None) == (nodes > 1)


def test_precision_auto_is_what_auto_picks_on_the_planned_gpu_not_here():
    assert plan_for(["--profile", "vgpu36", "--precision", "auto"])["precision"] == "float16"  # no bf16 on the slice
    assert plan_for(["--profile", "a40", "--precision", "auto"])["precision"] == "bfloat16"


def test_the_time_estimate_is_the_training_flops_over_the_peak_at_the_assumed_mfu():
    a40, h100 = plan_for(["--profile", "a40"]), plan_for(["--profile", "h100"])
    # phi-2: N = 2,779,683,840 weights less the embeddings (51,200 x 2,560) and the output head (with its bias);
    # T = the LoRA weights outside the head: 32 layers x r 32 x (4 x (2,560 + 2,560) + 2 x (2,560 + 10,240)).
    non_embedding = 2_779_683_840 - 51_200 * 2_560 - (51_200 * 2_560 + 51_200)
    lora = 32 * 32 * (4 * 5_120 + 2 * 12_800)
    flops = (4 * (non_embedding + lora) + 2 * lora) * 999 * 5 * TYPICAL_TOKENS
    assert a40["time"]["train_s"] == pytest.approx(flops / (149.7e12 * ASSUMED_MFU))
    assert h100["time"]["train_s"] == pytest.approx(flops / (989e12 * ASSUMED_MFU))
    evaluation = 2 * (non_embedding + lora) * EVAL_ROWS * TYPICAL_TOKENS
    assert a40["time"]["eval_s"] == pytest.approx(evaluation / (149.7e12 * ASSUMED_MFU))
    four = plan_for(["--profile", "fsdp2", "--gpus", "4"])  # + 2N FLOPs: fsdp2 turns gradient checkpointing on
    recomputed = flops + 2 * (non_embedding + lora) * 999 * 5 * TYPICAL_TOKENS
    assert four["time"]["train_s"] == pytest.approx(recomputed / (4 * 149.7e12 * ASSUMED_MFU))


def test_the_time_limit_covers_the_estimate_start_up_and_the_templates_requeue_window():
    assert requeue_window_s(TEMPLATES[1]) == requeue_window_s(TEMPLATES[2]) == 300  # --signal=B:USR1@300
    assert time_limit_s(3600, TEMPLATES[1]) == 2 * 3600 + 600 + 300  # 2:15:00, a whole quarter hour
    assert time_limit_s(60, TEMPLATES[1]) == 1800  # 120 + 600 + 300 s, rounded up to 30 min
    plan = plan_for(["--profile", "a40"])
    limit = re.search(r"--time=(\d\d):(\d\d):00", plan["commands"]["sbatch"])
    assert int(limit[1]) * 3600 + int(limit[2]) * 60 >= 2 * plan["time"]["total_s"] + 900


def test_training_rows_follow_the_recipes_rule():
    assert planned_train_rows(PHI2_SNLI) == 999, "every 550th of SNLI's 549,367 gold rows, at most 1,000"
    assert "training rows: 999; optimizer steps: 625" in format_plan(plan_for(["--profile", "a40"], train_rows=999))


@pytest.mark.parametrize("argv, refused, cheapest", [
    (["--profile", "a40", "--per_device_train_batch_size", "256"], "per GPU 87.3 of 48 GiB",
     "the cheapest change that fits: --per_device_train_batch_size 64 --gradient_accumulation_steps 4 (per GPU"),
    (["--profile", "a40", "--gpu_memory", "4", "--load_in_4bit", "false"], "per GPU 8.3 of 4 GiB",
     "the cheapest change that fits: --per_device_train_batch_size 4 --gradient_accumulation_steps 2 "
     "--load_in_4bit true (per GPU"),
    (["--profile", "vgpu36", "--gpu_memory", "1"], "per GPU 2.3 of 1 GiB",  # even 4-bit and batch 1 need more
     "; over more GPUs: --profile fsdp2 --gpus 8 (per GPU"),
])
def test_a_setting_that_cannot_fit_is_refused_with_a_change_that_fits(argv, refused, cheapest):
    with pytest.raises(TunelabError) as error:
        plan_for(argv)
    message = str(error.value)
    assert refused in message and cheapest in message and "\n" not in message
    changes = re.findall(r"(?:the cheapest change that fits|over more GPUs): ((?:--\w+ \S+ ?)+) \(per GPU", message)
    assert changes, message
    for change in changes:  # the same GPUs (--gpu_memory kept), with the change
        settings = {**dict(zip(argv[::2], argv[1::2])), **dict(zip(change.split()[::2], change.split()[1::2]))}
        replanned = plan_for([arg for pair in settings.items() for arg in pair])
        assert replanned["fit"]["per_gpu_gib"] <= 0.9 * replanned["fit"]["gpu_gib"]


def test_full_fine_tuning_holds_16_bytes_per_parameter_before_sharding():
    full = parameter_memory(frozen_weight_bytes=0, trainable=1_000_000, optim="adamw_torch")
    assert (full.weights, full.gradients, full.optimizer) == (4_000_000, 4_000_000, 8_000_000)
    assert parameter_memory(0, 1_000_000, "paged_adamw_8bit").total == 10_000_000  # 8-bit Adam moments
    lora = parameter_memory(frozen_weight_bytes=5e9, trainable=1_000_000, optim="adamw_torch")
    assert lora.total == 5e9 + 16_000_000


@pytest.mark.parametrize("argv, message", [
    (["--profile", "multi_gpu"], "say how many to plan for with --gpus N"),
    (["--profile", "a40", "--gpus", "2"], "profile a40 runs on one GPU: for 2 GPUs use --profile multi_gpu"),
    (["--gpus", "2"], "describe the GPUs of a hardware profile: add --profile"),
    (["--profile", "cpu", "--gpu_memory", "24"], "profile cpu runs on the CPU: choose a GPU profile"),
    (["--profile", "zero3", "--gpus", "9"], "9 GPUs do not split evenly over 2 nodes"),
])
def test_hardware_a_plan_cannot_describe_is_refused(argv, message):
    with pytest.raises(TunelabError, match=re.escape(message)):
        plan_for(argv)


def test_run_and_launch_still_refuse_a_gpu_profile_without_a_gpu():
    with pytest.raises(TunelabError, match="profile a40 needs a GPU but none is visible"):
        parse_recipe(PHI2_SNLI, ["--profile", "a40"])
    with pytest.raises(TunelabError, match="profile a40 needs a GPU but none is visible"):
        launch_command("recipes/phi2_snli.py", ["--profile", "a40"], gpus=[])
    with pytest.raises(TunelabError, match="gpus and gpu_memory describe the hardware a plan is for"):
        parse_recipe(PHI2_SNLI, ["--profile", "fsdp2", "--gpus", "4"])


def cli_env():
    """No GPU, this checkout's code, not inside a launcher."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return {**env, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}


def run_command(command):
    return subprocess.run(command, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)


def printed_commands(output):
    return {line.split()[0]: shlex.split(line) for line in map(str.strip, output.splitlines())
            if line.startswith(("accelerate launch", "sbatch "))}


def test_the_readme_example_and_its_accelerate_line_run_without_a_gpu():
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"^\s*(\.venv/bin/tunelab plan recipes/phi2_snli\.py --profile a40)\b", readme, re.MULTILINE)
    assert example, "the README's plan example"
    command = shlex.split(example[1])
    result = run_command([str(Path(sys.executable).with_name("tunelab")), *command[1:]])
    assert result.returncode == 0, result.stderr
    assert "on 1 × NVIDIA A40 (48 GiB) with profile a40: a plan for that hardware, not this machine" in result.stdout
    assert "training rows: 999; optimizer steps: 625" in result.stdout
    accelerate = printed_commands(result.stdout)["accelerate"]
    assert accelerate[:4] == ["accelerate", "launch", "--config_file", "accelerate_configs/a40.yaml"]
    again = run_command([str(Path(sys.executable).with_name("accelerate")), *accelerate[1:], "--dry_run"])
    assert again.returncode == 0, again.stderr
    assert "per GPU: " in again.stdout and " of 48 GiB" in again.stdout


def test_a_printed_multi_process_accelerate_line_runs_with_dry_run():
    result = run_command([str(Path(sys.executable).with_name("tunelab")), "plan", "recipes/phi2_snli.py",
                          "--profile", "multi_gpu", "--gpus", "2"])
    assert result.returncode == 0, result.stderr
    accelerate = printed_commands(result.stdout)["accelerate"]
    assert "--num_processes" in accelerate and accelerate[accelerate.index("--num_processes") + 1] == "2"
    again = run_command([str(Path(sys.executable).with_name("accelerate")), *accelerate[1:], "--dry_run"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "on 2 × NVIDIA A40 (48 GiB, DDP) with profile multi_gpu" in again.stdout


# ---------------------------------------------------------------------------- Slurm

@pytest.fixture(scope="module")
def gpu_cluster():
    """Two Slurm nodes of 8 declared GPUs and 64 CPUs (the templates ask for up to 32 per task)."""
    cluster = SlurmCluster(nodes=2, gpus_per_node=8, cpus_per_node=64)
    try:
        cluster.start()
    except SlurmUnavailable as error:
        cluster.stop()
        if os.environ.get("TUNELAB_REQUIRE_SLURM") == "1":
            pytest.fail(f"cannot start a Slurm test cluster: {error}")
        pytest.skip(f"cannot start a Slurm test cluster: {error}")
    try:
        yield cluster
    finally:
        cluster.stop()


def sbatch_test_only(cluster, sbatch):
    return cluster.command(*sbatch[:1], "--test-only", *sbatch[1:], check=False, cwd=ROOT)


@pytest.mark.parametrize("argv", [["--profile", "a40"], ["--profile", "fsdp2", "--gpus", "4"],
                                  ["--profile", "zero3", "--gpus", "16", "--learning_rate", "1e-4"]])
def test_the_printed_sbatch_line_is_accepted_by_slurm(gpu_cluster, argv):
    if len(gpu_cluster.idle_nodes) < 2:
        if os.environ.get("TUNELAB_REQUIRE_SLURM") == "1":
            pytest.fail(f"only one test node could start: {gpu_cluster.node_failures}")
        pytest.skip(f"only one test node could start: {gpu_cluster.node_failures}")
    sbatch = shlex.split(plan_for(argv)["commands"]["sbatch"])
    result = sbatch_test_only(gpu_cluster, sbatch)
    assert result.returncode == 0, result.stderr
    assert "to start at" in result.stderr
    too_many = [f"--gpus-per-node={9}" if arg.startswith("--gpus-per-node=") else arg for arg in sbatch]
    assert sbatch_test_only(gpu_cluster, too_many).returncode != 0, "the cluster checks what a line asks for"


def test_a_chat_plan_counts_examples_at_the_chat_recipes_own_length():
    """Chat conversations are cut at max_length, not at a classification prompt's length: the memory and the
    time a chat plan estimates grow with it."""
    chat = runpy.run_path(str(ROOT / "recipes" / "phi2_oasst1.py"))["RECIPE"]
    plans = {length: build_plan(parse_recipe(chat, ["--profile", "a40", "--max_length", str(length), "--dry_run"]),
                                train_rows=1000) for length in (512, 1024)}
    assert [plans[length]["tokens_per_example"] for length in (512, 1024)] == [512, 1024]
    assert plans[1024]["memory"]["activations_gib"] == pytest.approx(2 * plans[512]["memory"]["activations_gib"])
    assert plans[1024]["time"]["train_s"] == pytest.approx(2 * plans[512]["time"]["train_s"])
    assert "at 1024 tokens per example" in format_plan(plans[1024])
    assert build_plan(parse_recipe(PHI2_SNLI, ["--dry_run"]))["tokens_per_example"] == TYPICAL_TOKENS
