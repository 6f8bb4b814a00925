"""The compute dtype a run trains in, from the recipe's `precision` and the hardware.

On a CPU `auto` measures once per process whether bf16 trains faster than fp32 (it depends on the
CPU's instructions, not only on whether it has them).
"""

from __future__ import annotations

import functools
import os

import torch

from tunelab.console import say
from tunelab.flops import training_matmul_seconds
from tunelab.runtime.deepspeed_check import launched_with_deepspeed


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype for weights and compute: bf16 where supported, fp16 on older GPUs; on a CPU, bf16 for one
    process without DeepSpeed where it measured faster than fp32 (cpu_trains_faster_in_bf16), else fp32."""
    if precision == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        # gloo (two CPU processes) and DeepSpeed on a CPU take fp32
        single_process = int(os.environ.get("WORLD_SIZE", "1")) == 1 and not launched_with_deepspeed()
        return torch.bfloat16 if single_process and cpu_trains_faster_in_bf16() else torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


@functools.cache
def cpu_trains_faster_in_bf16() -> bool:
    """Whether this CPU trains faster in bf16 than in fp32, measured once per process (about 0.3 s).

    Without bf16 instructions (AVX512-BF16 or AMX) bf16 is emulated: 17x slower than fp32 (docs/performance.md).
    With them it can go either way: the embedded job trained 1.75x faster in bf16 on an AMD EPYC with
    AVX512-BF16, and 1.75x slower on an Intel Xeon with AVX512-BF16 but no AMX. So it is measured.
    """
    if not cpu_has_bf16_instructions():
        return False
    fp32, bf16 = (training_matmul_seconds(dtype) for dtype in (torch.float32, torch.bfloat16))
    faster = bf16_is_faster(fp32, bf16)
    say(f"precision auto: {'bf16' if faster else 'fp32'} (on this CPU a training-sized matmul step takes "
        f"{bf16 / fp32:.2f}x as long in bf16 as in fp32)")
    return faster


def cpu_has_bf16_instructions() -> bool:
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def bf16_is_faster(fp32_seconds: float, bf16_seconds: float) -> bool:
    """bf16 only when clearly faster (by 10%): on a tie fp32 keeps its precision."""
    return bf16_seconds < 0.9 * fp32_seconds
