"""Device and precision selection shared by the CLIP and PaliGemma engines."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch

from ros_mm_perception.core.errors import UserError

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``. An unavailable CUDA device is a clear
    error."""
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
"""CPU feature flags (as Linux names them) of bf16 matrix instructions: AMX tiles or AVX-512
BF16."""


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset:
    """The feature flags of the first CPU listed in ``cpuinfo`` (empty where the file is
    missing)."""
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


CPU_FIELDS = ("model", "arch", "cores", "avx2", "avx512", "avx512_bf16", "amx", "neon",
              "isa_limits")
"""The keys of :func:`cpu_info`."""
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "FBGEMM_ENABLE_INSTRUCTIONS")
"""Environment variables that make torch use fewer instruction sets than the CPU has."""


def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> Dict:
    """The CPU model and the instruction sets that decide CPU speed, keyed by :data:`CPU_FIELDS`.

    The flags are ``True``/``False`` from ``/proc/cpuinfo`` (``None`` where it cannot be read);
    ``amx`` means AMX tiles with bf16, ``neon`` Arm's SIMD. ``isa_limits`` names the
    :data:`ISA_LIMITS` variables that are set (``NAME=value ...``; torch then uses less than the
    CPU has), else ``None``.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    arch = platform.machine()
    if not flags and arch.lower() in ("arm64", "aarch64"):
        flags = {"asimd"}  # every 64-bit Arm CPU has NEON (e.g. macOS, without /proc/cpuinfo)

    def has(*names: str) -> Optional[bool]:
        return all(n in flags for n in names) if flags else None

    limits = " ".join(f"{n}={os.environ[n]}" for n in ISA_LIMITS if n in os.environ)
    return {
        "model": fields.get("model name") or platform.processor() or None,
        "arch": arch,
        "cores": os.cpu_count(),
        "avx2": has("avx2"),
        "avx512": has("avx512f"),
        "avx512_bf16": has("avx512_bf16"),
        "amx": has("amx_tile", "amx_bf16"),
        "neon": ("asimd" in flags or "neon" in flags) if flags else None,
        "isa_limits": limits or None,
    }


def runs_bf16_natively(flags: Optional[Iterable[str]] = None) -> bool:
    """Whether the CPU has bf16 matrix instructions (:data:`NATIVE_BF16_FLAGS`); ``flags`` default:
    this CPU's."""
    return not set(NATIVE_BF16_FLAGS).isdisjoint(_this_cpu_flags() if flags is None else flags)


AVX512_FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
"""Flags of instructions that torch may not use when its CPU capability is capped below AVX-512."""


@lru_cache(maxsize=1)
def _this_cpu_flags() -> frozenset:
    """This CPU's flags, less the AVX-512 and AMX ones when torch is capped below AVX-512.

    ``ATEN_CPU_CAPABILITY=avx2`` (with ``ONEDNN_MAX_CPU_ISA=AVX2``) makes torch run as on an
    AVX2-only CPU; precision then resolves as it would there.
    """
    flags = cpu_flags()
    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2", "NO AVX"):
        flags = flags - set(AVX512_FLAGS)
    return flags


MIN_BF16_WIDTH = 256
"""Narrowest model (embedding width) that ``auto`` runs in bf16 on the CPU.

Measured on one thread of an AMX CPU: CLIP ViT-B/16 (width 512) encodes 3.3x faster in bf16 than in
fp32, while the embedded CLIP (64) and the tiny test PaliGemma (32) run slower in bf16, their
matrices too small for the bf16 kernels to pay; the bound lies between.
"""


INT8 = "int8"
"""The precision whose CLIP and OWL image towers run their linear layers in int8
(:mod:`.models.int8`).
"""
MIN_INT8_WIDTH = 256
"""Narrowest transformer image tower (hidden width) that ``auto`` runs in int8 without bf16 units.

Measured on one thread: ViT-B/16 (768) encodes 2-4x faster in int8 than in fp32, while the
embedded detector (64) gains nothing (13.1 against 12.5 ms of thread CPU time per frame), its
matrices too small for quantizing each input to pay; the bound lies between, as bf16's does.
"""


def int8_kernels_measured() -> bool:
    """Whether torch's int8 kernels here are x86's fbgemm, the ones measured for ``auto``.

    On ARM torch runs int8 through QNNPACK, not measured: ``auto`` stays fp32 there and ``int8``
    may be set by hand.
    """
    return torch.backends.quantized.engine in ("x86", "fbgemm")


def resolve_precision(precision: str, device: torch.device, *, cuda_default: str = "fp16",
                      width: Optional[int] = None, int8_width: Optional[int] = None) -> str:
    """The precision a model runs in: ``precision`` itself, or what ``auto`` picks for it here.

    ``auto`` is ``cuda_default`` on CUDA. On the CPU it is bf16 where bf16 runs natively and the
    model's embedding ``width`` (when given) is at least :data:`MIN_BF16_WIDTH`; on a CPU without
    bf16 units int8 for models with an int8 image tower (``int8_width``, its hidden width) at least
    :data:`MIN_INT8_WIDTH` wide, where torch's int8 kernels are x86's
    (:func:`int8_kernels_measured`); else fp32. ``int8`` runs on the CPU only.
    """
    if precision in ("", "auto"):
        if device.type == "cuda":
            return cuda_default
        if runs_bf16_natively():
            return "bf16" if width is None or width >= MIN_BF16_WIDTH else "fp32"
        wide = int8_width is not None and int8_width >= MIN_INT8_WIDTH
        return INT8 if wide and int8_kernels_measured() else "fp32"
    if precision not in _DTYPES and precision != INT8:
        raise UserError(f"unknown precision {precision!r}: use auto, fp32, fp16, bf16 or int8")
    if precision == INT8 and device.type != "cpu":
        raise UserError(f"precision int8 runs on the CPU only, not on {device}; "
                        "use fp16 or bf16 there")
    return precision


def resolve_dtype(precision: str, device: torch.device, *, cuda_default: str = "fp16",
                  width: Optional[int] = None) -> torch.dtype:
    """The floating-point type of a model without an int8 path (see :func:`resolve_precision`).

    ``int8`` means fp32 here: only the CLIP and OWL image towers have int8 layers.
    """
    return dtype_of(resolve_precision(precision, device, cuda_default=cuda_default, width=width))


def dtype_of(precision: str) -> torch.dtype:
    """The floating-point type of a resolved precision (fp32 for int8: the rest runs in fp32)."""
    return torch.float32 if precision == INT8 else _DTYPES[precision]
