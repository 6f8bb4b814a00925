"""FLOPs per token of a model and the peak FLOP/s of known GPUs, for model FLOPs utilisation (MFU)."""

from __future__ import annotations

import re

import torch

# Dense (no sparsity) peak tensor-core TFLOP/s from NVIDIA's datasheets, by the dtype of the matmuls.
# The first pattern found in the device name wins; a MIG slice "MIG 3g.40gb" gets 3/7 of its GPU.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    (r"H200.*NVL", {"bf16": 835, "fp16": 835, "tf32": 418, "fp32": 60}),
    (r"H200", {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67}),
    (r"H100.*PCIe", {"bf16": 756, "fp16": 756, "tf32": 378, "fp32": 51}),
    (r"H100.*NVL", {"bf16": 835, "fp16": 835, "tf32": 418, "fp32": 60}),
    (r"H100", {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67}),  # SXM
    (r"A100", {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5}),
    (r"L40S", {"bf16": 362, "fp16": 362, "tf32": 183, "fp32": 91.6}),
    (r"L40(?![0-9S])", {"bf16": 181, "fp16": 181, "tf32": 90.5, "fp32": 90.5}),
    (r"A40(?![0-9])", {"bf16": 149.7, "fp16": 149.7, "tf32": 74.8, "fp32": 37.4}),
    (r"A6000", {"bf16": 154.8, "fp16": 154.8, "tf32": 77.4, "fp32": 38.7}),
    (r"A10(?![0-9G])", {"bf16": 125, "fp16": 125, "tf32": 62.5, "fp32": 31.2}),
    (r"L4(?![0-9])", {"bf16": 121, "fp16": 121, "tf32": 60, "fp32": 30.3}),
    (r"V100.*PCI", {"fp16": 112, "fp32": 14}),  # no bf16 before Ampere
    (r"V100", {"fp16": 125, "fp32": 15.7}),
    (r"T4(?![0-9])", {"fp16": 65, "fp32": 8.1}),
)


KNOWN_GPUS = "H200, H100 (SXM, PCIe, NVL), A100, L40S, L40, A40, RTX A6000, A10, L4, V100, T4"
MIG_SLICES = 7  # compute slices of an A100/H100 in MIG mode


def matmul_dtype_name(dtype: torch.dtype) -> str:
    """bf16, fp16, or for float32 tf32 when PyTorch lets matmuls use TF32 tensor cores, else fp32."""
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float16:
        return "fp16"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def peak_flops(device_name: str | None, dtype: torch.dtype) -> tuple[float | None, str]:
    """The device's dense peak FLOP/s for matmuls in `dtype`, and what was assumed, in words (None: unknown)."""
    if not device_name:
        return None, "MFU omitted: no GPU (there is no peak FLOP/s to measure a CPU against)"
    kind = matmul_dtype_name(dtype)
    for pattern, peaks in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            if kind not in peaks:
                return None, f"MFU omitted: {device_name} has no {kind} tensor-core peak in tunelab's table"
            mig = re.search(r"MIG (\d)g\.", device_name)
            share = int(mig.group(1)) / MIG_SLICES if mig else 1.0
            tflops = peaks[kind] * share
            slice_note = f", {mig.group(1)}/{MIG_SLICES} of the GPU for its MIG slice" if mig else ""
            cores = "CUDA cores, no tensor cores" if kind == "fp32" else "tensor cores"
            return tflops * 1e12, (f"MFU assumes a peak of {tflops:.4g} TFLOP/s per device: {device_name}, dense "
                                   f"{kind} on {cores}{slice_note}")
    return None, f"MFU omitted: peak FLOP/s of {device_name!r} unknown (tunelab knows {KNOWN_GPUS})"


def flops_per_token(model: torch.nn.Module, gradient_checkpointing: bool = False) -> tuple[float, str]:
    """Training FLOPs per token of `model`, and how they were counted.

    N counts the weights a token passes through: every parameter except the input (and position)
    embeddings and the output head (the NLI trainer projects only the answer position to the
    vocabulary). Of N, F are frozen and T trainable. Forward is 2N; backward is 2N for the
    gradients of the activations plus 2T for the gradients of the trainable weights; gradient
    checkpointing recomputes the forward (2N more). Full fine-tuning (F = 0) gives the usual 6N,
    LoRA on a frozen base 4F + 6T. Attention scores (2 × layers × context × hidden per token) are
    left out: small next to N at NLI prompt lengths.
    """
    frozen, trainable = non_embedding_parameters(model)
    total = frozen + trainable
    flops = training_flops_per_token(frozen, trainable, gradient_checkpointing)
    recompute = " + 2N recomputation (gradient checkpointing)" if gradient_checkpointing else ""
    return float(flops), (f"{flops:,.0f} FLOPs per real token = 4N{recompute} + 2T with N = {total:,} non-embedding "
                          f"weights ({frozen:,} frozen, T = {trainable:,} trainable)")


def training_flops_per_token(frozen: int, trainable: int, gradient_checkpointing: bool) -> int:
    """4N (+ 2N recomputed under gradient checkpointing) + 2T, as `flops_per_token` explains."""
    passes = 4 + (2 if gradient_checkpointing else 0)
    return passes * (frozen + trainable) + 2 * trainable


def non_embedding_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(frozen, trainable) parameters outside the embeddings and the output head; 4-bit weights count unpacked."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    excluded = {id(p) for module in model.modules() if isinstance(module, torch.nn.Embedding) or module is output
                for p in module.parameters()}
    frozen = trainable = 0
    for parameter in model.parameters():
        if id(parameter) in excluded:
            continue
        count = getattr(parameter, "ds_numel", None) or parameter.numel()  # ZeRO-3 shards report ds_numel
        if type(parameter).__name__ == "Params4bit":  # two 4-bit values per byte of the storage dtype
            count *= 2 * getattr(getattr(parameter, "quant_storage", None), "itemsize", 1)
        if parameter.requires_grad:
            trainable += count
        else:
            frozen += count
    return frozen, trainable
