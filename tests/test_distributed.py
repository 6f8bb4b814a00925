"""The phi2_snli recipe on a tiny Phi with two processes on the CPU: data parallel (cpu_ddp.yaml) and
DeepSpeed ZeRO-2/3 (zero2.yaml, zero3.yaml, zero3_offload.yaml with --num_processes 2), each under
`accelerate launch`, with QLoRA (the recipe's 4-bit default) and without.

A wrapper script runs the recipe with a callback that records, on every rank at the end of training,
what that rank trained: a hash of its trainable weights (gathered first under ZeRO-3), the world size,
the global step and the global batch. The tests then check that both ranks ran, that their replicas
ended identical, that the step count is the one a global batch of per-device x accumulation x 2
gives, and that only rank 0 wrote the run directory.
"""

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = 2
PER_DEVICE, ACCUMULATION = 4, 3  # 60 train rows: 15 batches, 8 per rank, 3 optimizer steps per epoch

RECORDING_RECIPE = '''
"""phi2_snli with a callback that records, per rank, what that rank trained."""
import hashlib
import json
import runpy
import sys
from contextlib import nullcontext
from pathlib import Path

from accelerate.state import AcceleratorState
from transformers import TrainerCallback

from tunelab.config import parse_recipe
from tunelab.nli.pipeline import main


class RecordTrainedWeights(TrainerCallback):
    def __init__(self, folder):
        self.folder = Path(folder)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        params = sorted((name, p) for name, p in model.named_parameters() if p.requires_grad)
        sharded = [p for _, p in params if hasattr(p, "ds_id")]
        if sharded:  # ZeRO-3: each rank holds a shard; gather the full weights (all ranks take part)
            import deepspeed
            gather = deepspeed.zero.GatheredParameters(sharded, modifier_rank=None)
        else:
            gather = nullcontext()
        digest = hashlib.sha256()
        with gather:
            for name, p in params:
                digest.update(name.encode())
                digest.update(p.detach().float().cpu().numpy().tobytes())
        accelerator = AcceleratorState()
        plugin = accelerator.deepspeed_plugin
        record = {
            "hash": digest.hexdigest(),
            "trainable_tensors": len(params),
            "process_index": args.process_index,
            "world_size": args.world_size,
            "global_step": state.global_step,
            "global_batch": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
            "distributed_type": str(accelerator.distributed_type),
            "zero_stage": plugin.zero_stage if plugin else None,
            "deepspeed_train_batch_size": plugin.deepspeed_config["train_batch_size"] if plugin else None,
            "loaded_in_4bit": bool(getattr(model, "is_loaded_in_4bit", False)),
            "4bit_storage": sorted({str(p.dtype) for p in model.parameters() if type(p).__name__ == "Params4bit"}),
        }
        (self.folder / f"rank{args.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    recipe_file, folder, *argv = sys.argv[1:]
    RECIPE = runpy.run_path(recipe_file)["RECIPE"]
    main(parse_recipe(RECIPE, argv), callbacks=[RecordTrainedWeights(folder)])
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_steps(rows: int, per_device: int, accumulation: int, processes: int, epochs: int = 1) -> int:
    """Optimizer steps as the Trainer counts them: accelerate deals whole batches out to the ranks
    (the last one evened out), and each rank steps once per `accumulation` of its batches."""
    batches = math.ceil(rows / per_device)
    per_rank = math.ceil(batches / processes)
    return epochs * math.ceil(per_rank / accumulation)


def launch(config, model_dir, data_dir, tmp_path, *extra):
    """`accelerate launch --config_file accelerate_configs/<config> --num_processes 2` on the recipe."""
    (tmp_path / "ranks").mkdir()
    script = tmp_path / "recording_recipe.py"
    script.write_text(RECORDING_RECIPE)
    output = tmp_path / "runs"
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        str(accelerate), "launch", "--config_file", f"accelerate_configs/{config}",
        "--num_processes", str(PROCESSES), "--main_process_port", str(free_port()),
        str(script), str(ROOT / "recipes" / "phi2_snli.py"), str(tmp_path / "ranks"),
        "--model_name_or_path", str(model_dir), "--dataset", str(data_dir), "--output_dir", str(output),
        "--train_stride", "1", "--train_size", "none", "--validation_stride", "1", "--validation_size", "none",
        "--test_stride", "1", "--test_size", "none", "--learning_rate", "5e-3", "--num_train_epochs", "1",
        "--precision", "fp32", "--logging_steps", "1", "--per_device_train_batch_size", str(PER_DEVICE),
        "--gradient_accumulation_steps", str(ACCUMULATION), *extra,
    ]
    # CUDA hidden: the processes run on the CPU (gloo) whatever GPUs this machine has.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, failure_summary(result)
    return result, output


def failure_summary(result) -> str:
    """The ranks' error lines first (torchrun's own report buries them), then the end of the output."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("[rank") and "Error" in line]
    return "\n".join([*dict.fromkeys(errors), "--- stdout:", result.stdout[-1500:],
                      "--- stderr:", result.stderr[-3000:]])


def check_two_rank_run(result, output: Path, tmp_path: Path) -> list[dict]:
    """Both ranks trained the same replica with a global batch over both; rank 0 alone wrote the run."""
    run_dir = output / "phi2_snli"
    # One run directory, written once: one "Starting" and one report line (rank 0 prints), no stray files.
    assert sorted(p.name for p in output.iterdir()) == ["phi2_snli"]
    assert len(re.findall(r"\[tunelab\] (Starting|Resuming) phi2_snli", result.stdout)) == 1, result.stdout
    assert result.stdout.count("[tunelab] Report: ") == 1, result.stdout
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    for name in ("config.yaml", "run_info.json", "train_log.json", "adapter/adapter_model.safetensors",
                 "eval/test/baseline/metrics.json", "eval/test/finetuned/metrics.json", "eval/test/predictions.csv",
                 "report/report.md", "report/report.html", "report/report.pdf"):
        assert (run_dir / name).is_file(), name

    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["hardware"]["num_processes"] == PROCESSES
    rows = info["train_rows"]
    steps = expected_steps(rows, PER_DEVICE, ACCUMULATION, PROCESSES)
    assert steps != expected_steps(rows, PER_DEVICE, ACCUMULATION, 1), "the step count must tell 1 rank from 2"

    # Both ranks ran and trained identical replicas: gradients were averaged over the ranks.
    records = [json.loads((tmp_path / "ranks" / f"rank{k}.json").read_text()) for k in range(PROCESSES)]
    assert [r["process_index"] for r in records] == list(range(PROCESSES))
    assert all(r["world_size"] == PROCESSES for r in records)
    assert all(r["global_batch"] == PER_DEVICE * ACCUMULATION * PROCESSES for r in records)
    assert all(r["global_step"] == steps for r in records)
    assert records[0]["trainable_tensors"] > 0
    assert records[0]["hash"] == records[1]["hash"], "the ranks' LoRA weights differ: gradients were not synced"

    # One set of checkpoints, at the step count of the global batch; finite losses at every step.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"checkpoint-{steps}"]
    trainer_state = json.loads((run_dir / "checkpoints" / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    assert trainer_state["global_step"] == steps and trainer_state["train_batch_size"] == PER_DEVICE
    losses = [entry["loss"] for entry in json.loads((run_dir / "train_log.json").read_text()) if "loss" in entry]
    assert len(losses) == steps and all(math.isfinite(loss) for loss in losses)

    # The saved adapter holds the trained weights (under ZeRO-3 gathered from the shards, not empty).
    adapter = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert adapter and all(t.numel() > 0 for t in adapter.values())
    assert any(t.abs().sum() > 0 for name, t in adapter.items() if "lora_B" in name)
    return records


def test_data_parallel_on_cpu(tiny_phi_dir, snli_dir, tmp_path):
    """cpu_ddp.yaml: two processes, DDP over gloo, QLoRA (the recipe's 4-bit default)."""
    result, output = launch("cpu_ddp.yaml", tiny_phi_dir, snli_dir, tmp_path)
    records = check_two_rank_run(result, output, tmp_path)
    assert records[0]["distributed_type"] == "DistributedType.MULTI_CPU"
    assert records[0]["loaded_in_4bit"]


@pytest.mark.parametrize("config, four_bit", [
    pytest.param("zero2.yaml", True, id="zero2-qlora"),  # QLoRA (the recipe's default) under ZeRO-2
    pytest.param("zero3.yaml", False, id="zero3"),
    pytest.param("zero3.yaml", True, id="zero3-qlora"),
    # DeepSpeed's CPU AdamW, weights and optimizer offloaded: ~45 s, ~2 min when cpu_adam is first compiled.
    pytest.param("zero3_offload.yaml", False, id="zero3-offload", marks=pytest.mark.slow),
])
def test_deepspeed_on_cpu(config, four_bit, tiny_phi_dir, snli_dir, tmp_path):
    extra = [] if four_bit else ["--load_in_4bit", "false"]
    result, output = launch(config, tiny_phi_dir, snli_dir, tmp_path, *extra)
    records = check_two_rank_run(result, output, tmp_path)
    stage = 2 if config.startswith("zero2") else 3
    assert [r["zero_stage"] for r in records] == [stage] * PROCESSES
    assert records[0]["distributed_type"] == "DistributedType.DEEPSPEED"
    assert records[0]["deepspeed_train_batch_size"] == PER_DEVICE * ACCUMULATION * PROCESSES
    assert records[0]["loaded_in_4bit"] == four_bit
    if four_bit:
        # ZeRO-3 shards every parameter as one flat tensor: the 4-bit weights must be packed in the
        # compute dtype (fp32 here) rather than uint8; ZeRO-2 keeps bitsandbytes' uint8.
        assert records[0]["4bit_storage"] == (["torch.float32"] if stage == 3 else ["torch.uint8"])
