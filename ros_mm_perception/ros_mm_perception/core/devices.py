"""Device and precision selection shared by the CLIP and PaliGemma engines."""

from __future__ import annotations

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


def resolve_dtype(precision: str, device: torch.device, *, cuda_default: str = "fp16") -> torch.dtype:
    """``auto`` → ``cuda_default`` on CUDA, fp32 on CPU; otherwise fp32/fp16/bf16 as named."""
    if precision in ("", "auto"):
        precision = cuda_default if device.type == "cuda" else "fp32"
    if precision not in _DTYPES:
        raise UserError(f"unknown precision {precision!r}: use auto, fp32, fp16 or bf16")
    return _DTYPES[precision]
