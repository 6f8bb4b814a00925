"""FLOPs per token of a model and the peak FLOP/s of its device, for model FLOPs utilisation (MFU).

A GPU's peak is its published dense tensor-core figure. A CPU has no published figure that training
reaches, so its peak is measured: the FLOP/s of a training-shaped matrix multiply (forward and backward
through an MLP) in the run's precision, on this process's threads. It is measured once per machine and
kept in the tunelab cache, keyed by CPU model, thread count, precision and PyTorch version.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

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


def peak_flops(device_name: str | None, dtype: torch.dtype,
               cpu_peak: Callable[[torch.dtype], tuple[float | None, str]] | None = None) -> tuple[float | None, str]:
    """The device's dense peak FLOP/s for matmuls in `dtype`, and what was assumed, in words (None: unknown).

    `device_name` None is the CPU: its peak comes from `cpu_peak` (by default `cpu_peak_flops`, measured).
    """
    if not device_name:
        return (cpu_peak or cpu_peak_flops)(dtype)
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


# The probe's MLP: SmolLM2's hidden and intermediate sizes (576 -> 1536 -> 576).
PROBE_HIDDEN, PROBE_INTERMEDIATE = 576, 1536
PEAK_PROBE_ROWS = 2048  # tokens per pass when measuring the peak: the embedded job's batches, several at once
PEAK_CACHE_FILE = "matmul_peak.json"


def training_matmul_seconds(dtype: torch.dtype, repeats: int = 6, rows: int = 512) -> float:
    """Seconds for a forward and backward pass through a SmolLM2-sized MLP (576 -> 1536 -> 576) over `rows`
    tokens (512: about a batch of the embedded job): the fastest of `repeats` (the first warms up; other work
    on the same cores only ever slows a pass)."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(rows, PROBE_HIDDEN, generator=generator).to(dtype)
    up = torch.randn(PROBE_HIDDEN, PROBE_INTERMEDIATE, generator=generator).to(dtype).requires_grad_()
    down = torch.randn(PROBE_INTERMEDIATE, PROBE_HIDDEN, generator=generator).to(dtype).requires_grad_()
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ((tokens @ up) @ down).sum().backward()
        fastest = min(fastest, time.perf_counter() - start)
    return fastest


def training_matmul_flops(rows: int) -> float:
    """FLOPs of one `training_matmul_seconds` pass: two matmuls forward; backward, the activations' gradient
    and both weights' gradients (the input needs none): five of 2 x rows x 576 x 1536 each."""
    return 5 * 2.0 * rows * PROBE_HIDDEN * PROBE_INTERMEDIATE


def measured_matmul_peak(dtype: torch.dtype) -> float:
    """FLOP/s of the training-shaped matmul on this process's threads, the fastest of its passes."""
    return training_matmul_flops(PEAK_PROBE_ROWS) / training_matmul_seconds(dtype, rows=PEAK_PROBE_ROWS)


def cpu_peak_flops(dtype: torch.dtype, measure: Callable[[torch.dtype], float] = measured_matmul_peak,
                   cache: Path | None = None) -> tuple[float, str]:
    """This CPU's measured matmul peak in `dtype` and what it is, in words: read from `cache`
    (default: the tunelab cache's matmul_peak.json) or measured by `measure` and added to it."""
    from tunelab.summary import cpu_model

    kind = "fp32" if dtype == torch.float32 else matmul_dtype_name(dtype)
    threads = torch.get_num_threads()
    key = f"{cpu_model()} | {threads} threads | {kind} | torch {torch.__version__}"
    path = cache or default_peak_cache()
    peaks = _read_peaks(path)
    cached = key in peaks
    if not cached:
        peaks[key] = measure(dtype)
        _write_peaks(path, peaks)
    source = f"cached in {path}" if cached else f"measured now, kept in {path}"
    return peaks[key], (f"MFU assumes a peak of {peaks[key] / 1e9:.4g} GFLOP/s per process: the measured {kind} "
                        f"training-shaped matmul peak of this CPU ({cpu_model()}, {threads} threads; {source})")


def default_peak_cache() -> Path:
    from tunelab.embedded import cache_root

    return cache_root() / PEAK_CACHE_FILE


def _read_peaks(path: Path) -> dict[str, float]:
    try:
        peaks = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {key: float(value) for key, value in peaks.items()} if isinstance(peaks, dict) else {}


def _write_peaks(path: Path, peaks: dict[str, float]) -> None:
    """An unwritable cache only costs a measurement next time."""
    from tunelab.rundir import atomic_write_json

    try:
        atomic_write_json(path, peaks)
    except OSError:
        pass
