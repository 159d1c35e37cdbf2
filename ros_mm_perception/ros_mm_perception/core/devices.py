"""Device and precision selection shared by the CLIP and PaliGemma engines."""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Optional

import torch

from ros_mm_perception.core.errors import UserError

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``. An unavailable CUDA device is a clear error."""
    if device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise UserError(f"unknown device {device!r}: use auto, cpu or cuda[:N]") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU feature flags (as Linux names them) of bf16 matrix instructions: AMX tiles or AVX-512 BF16."""


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset:
    """The feature flags of the first CPU listed in ``cpuinfo`` (empty where the file is missing)."""
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def runs_bf16_natively(flags: Optional[Iterable[str]] = None) -> bool:
    """Whether the CPU has bf16 matrix instructions (:data:`NATIVE_BF16_FLAGS`); ``flags`` default: this CPU's."""
    return not set(NATIVE_BF16_FLAGS).isdisjoint(_this_cpu_flags() if flags is None else flags)


@lru_cache(maxsize=1)
def _this_cpu_flags() -> frozenset:
    return cpu_flags()


MIN_BF16_WIDTH = 256
"""Narrowest model (embedding width) that ``auto`` runs in bf16 on the CPU.

Measured on one thread of an AMX CPU: CLIP ViT-B/16 (width 512) encodes 3.3x faster in bf16 than in
fp32, while the embedded CLIP (64) and the tiny test PaliGemma (32) run slower in bf16, their matrices
too small for the bf16 kernels to pay; the bound lies between.
"""


def resolve_dtype(precision: str, device: torch.device, *, cuda_default: str = "fp16",
                  width: Optional[int] = None) -> torch.dtype:
    """``auto`` → ``cuda_default`` on CUDA; on the CPU bf16 where it runs natively, else fp32.

    On the CPU, ``auto`` picks bf16 when :func:`runs_bf16_natively` and the model's embedding ``width``
    (when given) is at least :data:`MIN_BF16_WIDTH`. Otherwise fp32/fp16/bf16 as named.
    """
    if precision in ("", "auto"):
        wide = width is None or width >= MIN_BF16_WIDTH
        precision = cuda_default if device.type == "cuda" else "bf16" if wide and runs_bf16_natively() else "fp32"
    if precision not in _DTYPES:
        raise UserError(f"unknown precision {precision!r}: use auto, fp32, fp16 or bf16")
    return _DTYPES[precision]
