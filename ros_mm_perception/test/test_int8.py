"""precision int8: every linear layer of a transformer image tower in int8, the text tower in fp32;
outputs close to fp32; ``auto`` picks int8 only on CPUs without bf16 units."""

import copy

import numpy as np
import pytest
import torch

from ros_mm_perception.core import devices
from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.devices import (MIN_INT8_WIDTH, dtype_of, resolve_dtype,
                                            resolve_precision)
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.models.clip_model import load_clip
from ros_mm_perception.core.models.fast_clip import enable_fast_clip
from ros_mm_perception.core.models.int8 import (ProjectedAttention, quantize_linear_layers,
                                                quantized_layers)
from ros_mm_perception.core.models.owl import EMBEDDED, load_owl
from ros_mm_perception.core.perception.labeler import ClipLabeler
from ros_mm_perception.synthetic.scenes import render_scene

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
INT8_COSINE = 0.999
"""Least cosine between a tiny model's int8 and fp32 image embeddings."""


def test_projected_attention_equals_multihead_attention():
    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
        x = torch.randn(2, 7, 32) if batch_first else torch.randn(7, 2, 32)
        with torch.no_grad():
            expected = mha(x, x, x, need_weights=False)[0]
            got, weights = ProjectedAttention(mha)(x, x, x, need_weights=False)
        assert weights is None
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_every_linear_layer_of_the_image_tower_is_int8(tiny_clip_dir):
    clip = load_clip(str(tiny_clip_dir), device="cpu", precision="int8")
    assert clip.precision == "int8" and clip.dtype == torch.float32
    # one residual block: attention in/out projections and the two MLP layers
    assert quantized_layers(clip.model.visual) == 4
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in clip.model.visual.modules())
    assert quantized_layers(clip.model.transformer) == 0  # the text tower stays fp32


def test_int8_embeddings_and_labels_agree_with_fp32(tiny_clip_dir, rng):
    phrases = ["red mug", "person", "door", "chair"]
    fp32 = ClipLabeler(load_clip(str(tiny_clip_dir), device="cpu", precision="fp32"), phrases)
    int8 = ClipLabeler(load_clip(str(tiny_clip_dir), device="cpu", precision="int8"), phrases)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(16)]
    pixels = fp32.clip.preprocessor.frames(frames)
    a, b = fp32.encode_image(pixels), int8.encode_image(pixels)
    assert torch.isfinite(b).all()
    assert (a * b).sum(dim=-1).min().item() > INT8_COSINE
    np.testing.assert_allclose(int8.probabilities(frames), fp32.probabilities(frames), atol=0.01)
    # text embeddings are the fp32 model's
    torch.testing.assert_close(int8.encode_text(phrases), fp32.encode_text(phrases))


def test_int8_runs_on_the_frozen_fast_path(tiny_clip_dir, rng):
    clip = load_clip(str(tiny_clip_dir), device="cpu", precision="int8")
    pixels = clip.preprocessor.frames([rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
                                       for _ in range(3)])
    with torch.inference_mode():
        eager = clip.encode_image(pixels)
        assert enable_fast_clip(clip, "freeze", warm_up=[4]) is not None
        frozen = clip.encode_image(pixels)
    assert clip.fast_encoder is not None  # it did not fall back
    torch.testing.assert_close(frozen, eager, atol=1e-5, rtol=1e-5)


def test_a_resnet_tower_has_no_int8_layers_and_stays_fp32(caplog):
    clip = load_clip("", device="cpu", precision="int8")  # the embedded model: a ResNet
    assert clip.precision == "fp32" and quantized_layers(clip.model.visual) == 0
    assert "runs fp32" in caplog.text
    # its attention pool reads its projections' weights directly: they must stay nn.Linear
    tower = copy.deepcopy(clip.model.visual)
    assert quantize_linear_layers(tower) == 0


def test_embedded_owl_int8_agrees_with_fp32():
    fp32 = load_owl(EMBEDDED, "cpu", "fp32")
    int8 = load_owl(EMBEDDED, "cpu", "int8")
    assert int8.precision == "int8" and fp32.precision == "fp32"
    layers = int8.model.config.vision_config.num_hidden_layers
    assert quantized_layers(int8.model) == 6 * layers  # q, k, v, out and the two MLP layers
    scenes = [render_scene(np.random.default_rng(seed), n_objects=3, size=(240, 320))
              for seed in range(3)]
    phrases = [o.phrase for o in scenes[0].objects] + ["blue ball", "red cube"]
    for scene in scenes:
        (sa, la, ba, _), = fp32.raw_detections([scene.image], phrases)
        (sb, lb, bb, _), = int8.raw_detections([scene.image], phrases)
        assert torch.isfinite(sb).all() and torch.isfinite(bb).all()
        assert (sa - sb).abs().max().item() < 0.02
        top = torch.topk(sa, 10).indices  # the patches that become detections
        assert (la[top] == lb[top]).float().mean().item() >= 0.9
        assert (ba[top] - bb[top]).abs().max().item() < 2.0  # pixels of a 320 px frame


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_picks_int8_only_without_bf16_units(monkeypatch, native_bf16):
    monkeypatch.setattr(devices, "runs_bf16_natively", lambda: native_bf16)
    wide = "bf16" if native_bf16 else "int8"
    assert resolve_precision("auto", CPU, width=512, int8_width=768) == wide
    assert resolve_precision("auto", CPU, width=64, int8_width=MIN_INT8_WIDTH - 1) == "fp32"
    assert resolve_precision("auto", CPU, width=512) == ("bf16" if native_bf16 else "fp32")
    assert resolve_precision("auto", CUDA, width=512, int8_width=768) == "fp16"
    assert resolve_precision("int8", CPU) == "int8" and dtype_of("int8") == torch.float32
    bf16 = torch.bfloat16 if native_bf16 else torch.float32
    assert resolve_dtype("auto", CPU, width=512) == bf16


def test_auto_keeps_fp32_where_int8_kernels_are_not_x86s(monkeypatch):
    monkeypatch.setattr(devices, "runs_bf16_natively", lambda: False)
    monkeypatch.setattr(devices, "int8_kernels_measured", lambda: False)  # e.g. ARM's QNNPACK
    assert resolve_precision("auto", CPU, width=512, int8_width=768) == "fp32"
    assert resolve_precision("int8", CPU) == "int8"


def test_int8_is_a_cpu_precision():
    with pytest.raises(UserError, match="CPU only"):
        resolve_precision("int8", CUDA)
    with pytest.raises(UserError, match="int8"):
        resolve_precision("int4", CPU)
    assert PerceptionConfig(precision="int8").precision == "int8"


@pytest.mark.parametrize("capability, native", [("AVX2", False), ("AVX512", True)])
def test_capping_torch_at_avx2_hides_the_bf16_units(monkeypatch, capability, native):
    flags = frozenset({"fpu", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
    monkeypatch.setattr(devices, "cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    devices._this_cpu_flags.cache_clear()
    try:
        assert devices.runs_bf16_natively() is native
        picked = resolve_precision("auto", CPU, width=512, int8_width=768)
        assert picked == ("bf16" if native else "int8")
    finally:
        devices._this_cpu_flags.cache_clear()


def test_mobileclip_style_branches_are_merged_on_load(tmp_path):
    import open_clip

    from ros_mm_perception.core.models.clip_model import save_clip

    cfg = {"embed_dim": 32,
           "vision_cfg": {"timm_model_name": "fastvit_t8", "timm_model_pretrained": False,
                          "timm_pool": "avg", "timm_proj": "linear", "image_size": 64},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                        "layers": 1}}
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg).eval()
    assert any(getattr(m, "reparam_conv", 0) is None for m in model.visual.modules())
    folder = save_clip(model, cfg, tmp_path / "fastvit")
    clip = load_clip(str(folder), device="cpu", precision="fp32")
    assert not any(getattr(m, "reparam_conv", 0) is None for m in clip.model.visual.modules())
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_image(pixels), model.encode_image(pixels),
                                   atol=1e-4, rtol=1e-4)
