"""CPU precision: ``auto`` picks bf16 only where the CPU has bf16 matrix instructions and the model
is wide enough to gain; bf16 embeddings and labels stay close to fp32 on tiny models."""

import numpy as np
import pytest
import torch

from ros_mm_perception.core import devices
from ros_mm_perception.core.devices import (MIN_BF16_WIDTH, cpu_flags, resolve_dtype,
                                            runs_bf16_natively)
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.models.clip_model import load_clip
from ros_mm_perception.core.perception.labeler import ClipLabeler

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
BF16_COSINE = 0.99
"""Least cosine between a tiny model's bf16 and fp32 image embeddings (bf16 keeps 8 bits of
mantissa)."""


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_tile amx_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(str(info)) == {"fpu", "sse", "avx2", "avx512f", "amx_tile", "amx_bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()
    assert runs_bf16_natively({"avx512f", "avx512_bf16"}) and runs_bf16_natively({"amx_bf16"})
    assert not runs_bf16_natively({"avx2", "avx512f", "amx_tile"}) and not runs_bf16_natively(
        set()
    )


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_the_cpu(monkeypatch, native):
    monkeypatch.setattr(devices, "runs_bf16_natively", lambda: native)
    wide = torch.bfloat16 if native else torch.float32
    assert resolve_dtype("auto", CPU) == wide
    assert resolve_dtype("auto", CPU, width=MIN_BF16_WIDTH) == wide
    assert resolve_dtype("auto", CPU, width=MIN_BF16_WIDTH - 1) == torch.float32
    assert resolve_dtype("", CPU, width=2048) == wide
    assert resolve_dtype("fp32", CPU, width=2048) == torch.float32
    assert resolve_dtype("bf16", CPU, width=8) == torch.bfloat16
    assert resolve_dtype("auto", CUDA, width=8) == torch.float16
    assert resolve_dtype("auto", CUDA, cuda_default="bf16") == torch.bfloat16
    with pytest.raises(UserError, match="precision"):
        resolve_dtype("fp8", CPU)


def test_load_clip_auto_follows_the_model_width(monkeypatch, tiny_clip_dir):
    monkeypatch.setattr(devices, "runs_bf16_natively", lambda: True)
    # width 32: too narrow
    assert load_clip(str(tiny_clip_dir), device="cpu").dtype == torch.float32
    # the embedded model: 64
    assert load_clip("", device="cpu").dtype == torch.float32


def test_bf16_labels_stay_close_to_fp32(tiny_clip_dir, rng):
    fp32 = ClipLabeler(load_clip(str(tiny_clip_dir), device="cpu", precision="fp32"),
                       ["red mug", "person", "door"])
    bf16 = ClipLabeler(load_clip(str(tiny_clip_dir), device="cpu", precision="bf16"),
                       ["red mug", "person", "door"])
    assert bf16.clip.dtype == torch.bfloat16 and bf16.clip.preprocessor.dtype == torch.bfloat16
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(8)]
    a = fp32.encode_image(fp32.clip.preprocessor.frames(frames))
    b = bf16.encode_image(bf16.clip.preprocessor.frames(frames))
    assert b.dtype == torch.float32
    assert (a * b).sum(dim=-1).min().item() > BF16_COSINE
    np.testing.assert_allclose(bf16.probabilities(frames), fp32.probabilities(frames), atol=0.05)
