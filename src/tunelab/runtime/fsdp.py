"""PyTorch FSDP2 through accelerate (`accelerate_configs/fsdp2.yaml`): what tunelab arranges around it.

accelerate does the sharding (`fsdp_version: 2`: `fully_shard` on every decoder layer, the
sharded checkpoints, CPU-RAM-efficient loading). Around it tunelab
- reads, before anything loads, whether `accelerate launch` set FSDP up (`launched_fsdp_version`) and
  refuses what cannot work with it (`check_fsdp_settings`): FSDP version 1, a bitsandbytes optimizer,
  or FSDP's own activation checkpointing next to the recipe's (which is non-reentrant, as FSDP needs);
- gathers the trained adapter from the shards into a normal PEFT folder (`save_trained_adapter`): with a
  sharded state dict the Trainer's `save_model` writes no weights;
- runs accelerate's FSDP2 path on CPU processes too (`FSDPOnCPU`): accelerate 1.15 turns an FSDP
  launch into FSDP only on accelerator devices (`AcceleratorState` promotes MULTI_GPU/XPU/... to FSDP,
  never MULTI_CPU), although `fully_shard` itself runs on CPU over gloo. Without it a CPU launch of
  fsdp2.yaml would silently train unsharded replicas; with it, tests on two CPU processes exercise
  the same prepare, checkpoint and resume code as a GPU run.

The 4-bit storage dtype that sharding needs is chosen by `tunelab.models.quant_storage`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tunelab.errors import TunelabError

# Parts of the names of transformers' optimizers that run bitsandbytes kernels (paged_adamw_32bit,
# adamw_bnb_8bit, lion_32bit, ademamix...): those kernels have no sharding rule for FSDP2's DTensors.
BITSANDBYTES_OPTIMIZERS = ("bnb", "8bit", "32bit", "paged", "lion", "ademamix")


def launched_fsdp_version(environ: Mapping[str, str] = os.environ) -> int | None:
    """The FSDP version `accelerate launch` set up for this process (1 or 2), or None without FSDP."""
    if environ.get("ACCELERATE_USE_FSDP", "false").lower() not in ("1", "true", "yes"):
        return None
    return int(environ.get("FSDP_VERSION", "1"))


def check_fsdp_settings(recipe, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse an FSDP launch tunelab cannot run, before the model loads."""
    version = launched_fsdp_version(environ)
    if version is None:
        return
    if version != 2:
        raise TunelabError(f"the accelerate config asks for FSDP version {version}: tunelab supports FSDP2 only "
                           "(LoRA and 4-bit weights need it); set fsdp_version: 2, as accelerate_configs/fsdp2.yaml "
                           "does")
    if any(marker in recipe.optim for marker in BITSANDBYTES_OPTIMIZERS):
        raise TunelabError(f"optim {recipe.optim} is a bitsandbytes optimizer, which cannot update FSDP2's sharded "
                           "weights: pass --optim adamw_torch (the fsdp2 profile's choice)")
    if environ.get("FSDP_ACTIVATION_CHECKPOINTING", "false").lower() == "true" and recipe.gradient_checkpointing:
        raise TunelabError("the accelerate config turns on FSDP's activation checkpointing and the recipe its own "
                           "gradient checkpointing: keep one, either --gradient_checkpointing false or "
                           "fsdp_activation_checkpointing: false (as in accelerate_configs/fsdp2.yaml)")


class FSDPOnCPU:
    """Trainer mixin: an FSDP launch on CPU processes is sharded by accelerate's FSDP2 code as on GPUs."""

    def create_accelerator_and_postprocess(self):
        from accelerate import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        super().create_accelerator_and_postprocess()
        state = self.accelerator.state
        if launched_fsdp_version() == 2 and state.distributed_type == DistributedType.MULTI_CPU:
            state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables accelerate launch set
            # Both shared states: each AcceleratorState() copies PartialState's distributed type back in.
            state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
            self.is_fsdp_enabled = True


def is_sharded_by_fsdp(model) -> bool:
    """Whether `model` (or a module in it) has been sharded by FSDP2's `fully_shard`."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(module, FSDPModule) for module in model.modules())


def save_trained_adapter(trainer, folder: str) -> None:
    """The trained adapter as a normal PEFT folder; under FSDP2 its weights are gathered from the shards first.

    Every process must call this: gathering is collective. For a LoRA model only the trainable (LoRA)
    weights are gathered, never the frozen base model; a fully fine-tuned model is gathered whole.
    """
    from peft import PeftModel

    model = trainer.model
    if not is_sharded_by_fsdp(model):
        trainer.save_model(folder)
        return
    from torch.distributed.tensor import DTensor

    whole = not isinstance(model, PeftModel)
    state_dict = {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu()
                  for name, p in model.named_parameters() if p.requires_grad or whole}
    if trainer.args.should_save:
        model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)


def prepare_for_prediction(trainer) -> None:
    """Under FSDP2, shard a trainer's model that only predicts (a second model beside the trained one):
    accelerate prepares an FSDP2 model only together with an optimizer, so one that never steps goes with it."""
    import torch

    if launched_fsdp_version() != 2:
        return
    never_steps = torch.optim.SGD(list(trainer.model.parameters()), lr=0.0)
    trainer.model, _ = trainer.accelerator.prepare(trainer.model, never_steps)
    trainer.model_wrapped = trainer.model
