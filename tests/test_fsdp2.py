"""FSDP2 (accelerate_configs/fsdp2.yaml) on two CPU processes over gloo: the NLI recipe with LoRA and with
4-bit QLoRA, the chat recipe, and a resume after an interruption, each under `accelerate launch`.

A wrapper script runs a recipe with a callback that records, on every rank at the end of training,
what that rank trained: the losses it logged, a hash of its trainable weights gathered from the
shards, whether its weights really were sharded (a local shard smaller than the full tensor), and
the storage dtype of 4-bit weights. The tests check that both ranks agree, that one set of sharded
checkpoints was written, and that the saved adapter, loaded with `PeftModel.from_pretrained` in
this process, holds the trained weights and (NLI) predicts what the run's own evaluation predicted.
"""

import csv
import hashlib
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chat_helpers import LLAMA_TARGETS, tiny_chat_overrides

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = 2
PER_DEVICE, ACCUMULATION = 4, 3  # 60 train rows: 15 batches, 8 per rank, 3 optimizer steps per epoch
EPOCHS = 2
# Plain LoRA, batches grouped by length (the NLI default): a resume mid-epoch must draw the same batches.
PLAIN_LORA = ("--load_in_4bit", "false")

RECORDING_RECIPE = '''
"""A recipe run with a callback that records, per rank, what that rank trained (and can stop it)."""
import hashlib
import json
import os
import runpy
import signal
import sys
from pathlib import Path

from accelerate.state import AcceleratorState
from torch.distributed.tensor import DTensor
from transformers import TrainerCallback

from tunelab.config import parse_recipe
from tunelab.errors import exit_on_error


def weights_hash(named_tensors):
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors):
        digest.update(name.replace(".default", "").encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


class RecordTrainedWeights(TrainerCallback):
    def __init__(self, folder, stop_at_step):
        self.folder, self.stop_at_step = Path(folder), stop_at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.stop_at_step and args.process_index == 0:
            os.kill(os.getpid(), signal.SIGUSR1)  # as Slurm warns of the time limit; the ranks agree on a step

    def on_train_end(self, args, state, control, model=None, **kwargs):
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        full = [(name, p.full_tensor() if isinstance(p, DTensor) else p) for name, p in trainable]  # collective
        record = {
            "hash": weights_hash(full),
            "trainable_tensors": len(trainable),
            "sharded": any(isinstance(p, DTensor) and p.to_local().numel() < p.numel() for _, p in trainable),
            "process_index": args.process_index,
            "world_size": args.world_size,
            "global_step": state.global_step,
            "losses": [entry["loss"] for entry in state.log_history if "loss" in entry],
            "distributed_type": str(AcceleratorState().distributed_type),
            "4bit_storage": sorted({str(m.weight.dtype) for m in model.modules() if type(m).__name__ == "Linear4bit"}),
        }
        (self.folder / f"rank{args.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    pipeline, recipe_file, folder, *argv = sys.argv[1:]
    main = runpy.run_module(f"tunelab.{pipeline}.pipeline")["main"]
    RECIPE = runpy.run_path(recipe_file)["RECIPE"]
    stop_at_step = int(os.environ.get("STOP_AT_STEP", "0"))
    with exit_on_error(debug=False):  # as a recipe file runs: one error line, exit 3 after an interruption
        main(parse_recipe(RECIPE, argv), callbacks=[RecordTrainedWeights(folder, stop_at_step)])
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nli_args(model_dir, data_dir, output, *extra) -> list[str]:
    return ["--model_name_or_path", str(model_dir), "--dataset", str(data_dir), "--output_dir", str(output),
            "--train_stride", "1", "--train_size", "none", "--validation_stride", "1", "--validation_size", "none",
            "--test_stride", "1", "--test_size", "none", "--learning_rate", "5e-3", "--num_train_epochs", str(EPOCHS),
            "--precision", "fp32", "--logging_steps", "1", "--per_device_train_batch_size", str(PER_DEVICE),
            "--gradient_accumulation_steps", str(ACCUMULATION), "--optim", "adamw_torch",
            # Without dropout a resumed run must match an uninterrupted one exactly.
            "--lora_dropout", "0", *extra]


def launch(pipeline, recipe, args, folder: Path, stop_at_step=0, expect_status=0, config="fsdp2.yaml"):
    """`accelerate launch --config_file accelerate_configs/fsdp2.yaml --num_processes 2` on a recipe."""
    (folder / "ranks").mkdir(parents=True, exist_ok=True)
    script = folder / "recording_recipe.py"
    script.write_text(RECORDING_RECIPE)
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
               f"accelerate_configs/{config}", "--num_processes", str(PROCESSES), "--main_process_port",
               str(free_port()), "--monitor_interval", "3", str(script), pipeline, str(ROOT / "recipes" / recipe),
               str(folder / "ranks"), *map(str, args)]
    # CUDA hidden: the processes run on the CPU (gloo) whatever GPUs this machine has.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": "", "STOP_AT_STEP": str(stop_at_step)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if expect_status == 0:
        assert result.returncode == 0, failure_summary(result)
    else:
        # torchrun reports a rank's own exit status (accelerate's launcher then exits 1, with its traceback)
        assert f"(exitcode: {expect_status})" in result.stderr, failure_summary(result)
        assert "[rank0]: Traceback" not in result.stderr, failure_summary(result)
    return result


def failure_summary(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("[rank") and "Error" in line]
    return "\n".join([*dict.fromkeys(errors), "--- stdout:", result.stdout[-1500:],
                      "--- stderr:", result.stderr[-3000:]])


def rank_records(folder: Path) -> list[dict]:
    """Both ranks' records, checked to agree: sharded FSDP2 training of the same weights on the same losses."""
    records = [json.loads((folder / "ranks" / f"rank{k}.json").read_text()) for k in range(PROCESSES)]
    assert [r["process_index"] for r in records] == list(range(PROCESSES))
    assert all(r["world_size"] == PROCESSES and r["distributed_type"] == "DistributedType.FSDP" for r in records)
    assert all(r["sharded"] for r in records), "no trainable weight was sharded: FSDP did not run"
    assert records[0]["trainable_tensors"] > 0 and records[0]["losses"]
    assert all(math.isfinite(loss) for loss in records[0]["losses"])
    assert records[0]["losses"] == records[1]["losses"], "the ranks logged different losses"
    assert records[0]["hash"] == records[1]["hash"], "the ranks' gathered LoRA weights differ"
    return records


def check_sharded_checkpoints(checkpoints: Path, steps: list[int]) -> None:
    """One set of checkpoints, each holding one model and one optimizer shard per rank (torch.distributed.checkpoint)."""
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == sorted(f"checkpoint-{s}" for s in steps)
    for step in steps:
        for part in ("pytorch_model_fsdp_0", "optimizer_0"):
            shards = sorted(p.name for p in (checkpoints / f"checkpoint-{step}" / part).glob("*.distcp"))
            assert shards == [f"__{rank}_0.distcp" for rank in range(PROCESSES)], (step, part, shards)


def load_adapter(model_dir, run_dir: Path, four_bit: bool):
    """The run's adapter as a user would load it: the base model, then PeftModel.from_pretrained."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.float32) if four_bit else None
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, quantization_config=quantization)
    return PeftModel.from_pretrained(base, run_dir / "adapter").eval()


def adapter_hash(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted((n, p) for n, p in model.named_parameters() if "lora_" in n):
        digest.update(name.replace(".default", "").encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def nli_probabilities(model, tokenizer_dir, rows) -> torch.Tensor:
    """The 3-way probabilities of the fine-tuned model on `rows`, scored as the recipe scores them."""
    import runpy

    from transformers import AutoTokenizer

    from tunelab.nli.data import tokenize_rows
    from tunelab.nli.trainer import NLICollator, answer_room, label_scores, label_token_ids

    recipe = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    label_ids = label_token_ids(tokenizer, recipe.label_words, recipe.label_scoring)
    dataset, _ = tokenize_rows(rows, tokenizer, recipe.max_length, answer_room(label_ids, recipe.label_scoring))
    batch = NLICollator(tokenizer.pad_token_id, label_ids, recipe.label_scoring)(list(dataset))
    with torch.no_grad():
        return label_scores(model, batch, label_ids, recipe.label_scoring).softmax(-1)


def run_nli(tiny_phi_dir, snli_dir, folder: Path, *extra, stop_at_step=0, expect_status=0):
    return launch("nli", "phi2_snli.py", nli_args(tiny_phi_dir, snli_dir, folder / "runs", *extra), folder,
                  stop_at_step=stop_at_step, expect_status=expect_status)


@pytest.fixture(scope="module")
def lora_run(tiny_phi_dir, snli_dir, tmp_path_factory):
    """The NLI recipe with plain LoRA under FSDP2, never interrupted (also the resume test's reference)."""
    folder = tmp_path_factory.mktemp("fsdp2-lora")
    result = run_nli(tiny_phi_dir, snli_dir, folder, *PLAIN_LORA)
    return folder, result


def check_nli_run(folder: Path, result, model_dir, four_bit: bool) -> list[dict]:
    run_dir = folder / "runs" / "phi2_snli"
    assert len(re.findall(r"\[tunelab\] Starting phi2_snli", result.stdout)) == 1, result.stdout
    records = rank_records(folder)
    steps_per_epoch = 3  # 8 batches per rank, 3 accumulations of them; one rank alone would take 5
    assert all(r["global_step"] == EPOCHS * steps_per_epoch for r in records)
    check_sharded_checkpoints(run_dir / "checkpoints", [steps_per_epoch * (e + 1) for e in range(EPOCHS)])
    assert records[0]["4bit_storage"] == (["torch.float32"] if four_bit else [])

    model = load_adapter(model_dir, run_dir, four_bit)
    assert adapter_hash(model) == records[0]["hash"], "the saved adapter is not the trained one"
    with open(run_dir / "eval" / "test" / "finetuned" / "predictions.csv", newline="") as handle:
        predicted = list(csv.DictReader(handle))
    rows = [json.loads(line) for line in (run_dir / "data" / "test.jsonl").read_text().splitlines()]
    probabilities = nli_probabilities(model, model_dir, rows)
    expected = torch.tensor([[float(p[f"p_{label}"]) for label in ("entailment", "neutral", "contradiction")]
                             for p in predicted])
    # The CSV keeps 4 decimals; 4-bit weights dequantized in another batch layout add float noise.
    assert torch.allclose(probabilities, expected, atol=1e-3 if four_bit else 2e-4), (probabilities - expected).abs().max()
    labels = ("entailment", "neutral", "contradiction")
    assert [labels[i] for i in probabilities.argmax(-1)] == [p["pred"] for p in predicted]
    return records


def test_nli_lora_under_fsdp2(lora_run, tiny_phi_dir):
    folder, result = lora_run
    check_nli_run(folder, result, tiny_phi_dir, four_bit=False)


def test_nli_qlora_under_fsdp2(tiny_phi_dir, snli_dir, tmp_path):
    """The recipe's 4-bit default: the packed weights are stored in fp32 (the compute dtype), so FSDP2 shards them."""
    result = run_nli(tiny_phi_dir, snli_dir, tmp_path)
    check_nli_run(tmp_path, result, tiny_phi_dir, four_bit=True)


def test_resume_under_fsdp2_matches_uninterrupted(lora_run, tiny_phi_dir, snli_dir, tmp_path):
    """Stopped mid-way through the second epoch (steps 4 to 6), then the same command again: the resumed
    run logs the uninterrupted run's losses and ends with its weights."""
    stopped = run_nli(tiny_phi_dir, snli_dir, tmp_path, *PLAIN_LORA, stop_at_step=4, expect_status=3)
    found = re.search(r"Interrupted by SIGUSR1 at step (\d+)", stopped.stdout + stopped.stderr)
    assert found and 3 < int(found[1]) < 6, failure_summary(stopped)  # the ranks agree on a step after the signal
    run_dir = tmp_path / "runs" / "phi2_snli"
    check_sharded_checkpoints(run_dir / "checkpoints", [3, int(found[1])])
    assert not (run_dir / "run_info.json").exists()

    resumed = run_nli(tiny_phi_dir, snli_dir, tmp_path, *PLAIN_LORA)
    assert "Resuming training from" in resumed.stdout, resumed.stdout[-2000:]
    records = rank_records(tmp_path)
    reference = rank_records(lora_run[0])
    assert records[0]["losses"] == pytest.approx(reference[0]["losses"], abs=1e-5)
    assert records[0]["hash"] == reference[0]["hash"], "the resumed run ended with other weights"


def test_chat_under_fsdp2(tiny_llama_dir, tmp_path):
    """The chat recipe (TRL's SFTTrainer) with LoRA on every llama projection."""
    args = tiny_chat_overrides(tiny_llama_dir, tmp_path / "runs", "--load_in_4bit", "false", "--optim", "adamw_torch",
                               "--lora_target_modules", LLAMA_TARGETS, "--lora_dropout", "0")
    launch("chat", "phi2_oasst1.py", args, tmp_path)
    records = rank_records(tmp_path)
    assert all(r["global_step"] == 4 for r in records)
    run_dir = tmp_path / "runs" / "phi2_oasst1"
    check_sharded_checkpoints(run_dir / "checkpoints", [2, 4])
    assert (run_dir / "run_info.json").is_file()
    assert adapter_hash(load_adapter(tiny_llama_dir, run_dir, four_bit=False)) == records[0]["hash"]
