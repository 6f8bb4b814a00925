"""Full and freeze fine-tuning of the NLI recipe on two CPU processes under each way of spreading a run:
DDP (cpu_ddp.yaml), DeepSpeed ZeRO-2 and ZeRO-3, and FSDP2, each under `accelerate launch` (the launcher
and rank records of tests/test_fsdp2.py), one epoch of 3 optimizer steps.

Each run's model/ folder, gathered from the shards where the weights were sharded, must load with
transformers alone and predict what the run's own evaluation predicted; under freeze, the frozen
weights must come back exactly as pretrained; the baseline must be the pretrained model's.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from test_fsdp2 import launch, nli_args, rank_records
from test_methods import probabilities, saved_probabilities
from tunelab.methods import trained_by_freeze


@pytest.mark.parametrize("config, method", [
    pytest.param("cpu_ddp.yaml", "full", id="ddp-full"),
    pytest.param("cpu_ddp.yaml", "freeze", id="ddp-freeze"),
    pytest.param("zero2.yaml", "full", id="zero2-full"),
    pytest.param("zero3.yaml", "full", id="zero3-full"),
    pytest.param("zero3.yaml", "freeze", id="zero3-freeze"),
    pytest.param("fsdp2.yaml", "full", id="fsdp2-full"),
    pytest.param("fsdp2.yaml", "freeze", id="fsdp2-freeze"),
])
def test_method_on_two_processes(config, method, tiny_phi_dir, snli_dir, tmp_path):
    args = nli_args(tiny_phi_dir, snli_dir, tmp_path / "runs", "--load_in_4bit", "false", "--method", method,
                    "--freeze_trainable_layers", "1", "--num_train_epochs", "1", "--learning_rate", "1e-3")
    launch("nli", "phi2_snli.py", args, tmp_path, config=config)
    run_dir = tmp_path / "runs" / "phi2_snli"
    if config == "fsdp2.yaml":
        records = rank_records(tmp_path)  # sharded, and both ranks trained the same weights
        assert all(r["global_step"] == 3 for r in records)
    assert (run_dir / "run_info.json").is_file() and not (run_dir / "adapter").exists()

    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    pretrained = AutoModelForCausalLM.from_pretrained(tiny_phi_dir)
    trained = trained_by_freeze(pretrained, 1) if method == "freeze" else {n for n, _ in pretrained.named_parameters()}
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, pretrained.get_parameter(name))}
    assert changed == trained
    assert torch.allclose(probabilities(model, run_dir), saved_probabilities(run_dir), atol=2e-4)
    # the baseline scored the pretrained weights (under DeepSpeed put into the trained model for the while)
    assert torch.allclose(probabilities(pretrained, run_dir), saved_probabilities(run_dir, "baseline"), atol=2e-4)


def test_full_run_resumed_under_fsdp2_ends_as_an_uninterrupted_one(tiny_phi_dir, snli_dir, tmp_path):
    """Stopped after its first step (sharded checkpoint of the whole model and its optimizer), then the same
    command again: the losses and the gathered weights of an uninterrupted run."""
    def run(folder, **kwargs):
        args = nli_args(tiny_phi_dir, snli_dir, folder / "runs", "--load_in_4bit", "false", "--method", "full",
                        "--num_train_epochs", "1", "--learning_rate", "1e-3", "--stages", "train")
        return launch("nli", "phi2_snli.py", args, folder, **kwargs)

    run(tmp_path / "uninterrupted")
    stopped = run(tmp_path / "resumed", stop_at_step=1, expect_status=3)
    assert "Interrupted by SIGUSR1" in stopped.stdout + stopped.stderr
    resumed = run(tmp_path / "resumed")
    assert "Resuming training from" in resumed.stdout, resumed.stdout[-2000:]
    records, reference = rank_records(tmp_path / "resumed"), rank_records(tmp_path / "uninterrupted")
    assert records[0]["losses"] == pytest.approx(reference[0]["losses"], abs=1e-5)
    assert records[0]["hash"] == reference[0]["hash"], "the resumed run ended with other weights"
