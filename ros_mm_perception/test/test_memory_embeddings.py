"""Each detection's CLIP crop embedding, from the frame's one CLIP image batch (memory on)."""

import numpy as np
import pytest
import torch

from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.imaging.preprocess import crop_windows, upload
from ros_mm_perception.core.models.owl import load_owl
from ros_mm_perception.core.models.random_models import build_random_owl
from ros_mm_perception.core.perception.clip_grounding import context_squares
from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
from ros_mm_perception.core.results import Frame, Stamp

PHRASES = ["red circle", "blue star"]


@pytest.fixture(scope="module")
def owl(tmp_path_factory):
    return load_owl(
        str(build_random_owl(tmp_path_factory.mktemp("owl"), "owlv2")),
        device="cpu",
        precision="fp32",
    )


def config(**kw):
    base = dict(
        labels=["red circle", "blue star", "green ring"],
        detect_phrases=PHRASES,
        owl_score_threshold=0.2,
        grounding_source="owl",
        label_tiles=0,
    )
    return PerceptionConfig(**{**base, **kw})


def crop_embedding(pipe, image, box):
    (square,) = context_squares(np.array([box]), *image.shape[:2])
    ((x0, y0, x1, y1),) = crop_windows(image.shape, [square])
    pixels = upload(image, pipe.labeler.clip.device)[:, y0:y1, x0:x1]
    with torch.inference_mode():
        emb = pipe.labeler.encode_image(
            pipe.labeler.clip.preprocessor([pixels], pipe.labeler.crop_mode)
        )
    return emb[0].numpy()


@pytest.mark.parametrize("memory", [True, False])
def test_owl_detections_get_their_crop_embedding_from_the_frames_clip_call(
    tiny_clip, owl, rng, memory, monkeypatch
):
    pipe = PerceptionPipeline(config(memory_enabled=memory), clip=tiny_clip, owl=owl)
    image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    calls = []
    encode = pipe.labeler.encode_image
    monkeypatch.setattr(
        pipe.labeler, "encode_image", lambda pixels: calls.append(len(pixels)) or encode(pixels)
    )
    result = pipe.process(Frame(image, stamp=Stamp(1, 0)))
    assert result.detections and result.labels
    assert len(calls) == 1  # labels and crops: one CLIP image call
    if not memory:
        assert all(d.embedding is None for d in result.detections)
        return
    assert calls == [1 + len(result.detections)]
    for det in result.detections:
        assert det.embedding.shape == (tiny_clip.model.visual.output_dim,)
        np.testing.assert_allclose(det.embedding, crop_embedding(pipe, image, det.box), atol=1e-4)
    assert [lab.phrase for lab in result.labels] == [
        lab.phrase
        for lab in PerceptionPipeline(config(), clip=tiny_clip, owl=owl)
        .process(Frame(image, stamp=Stamp(1, 0)))
        .labels
    ]


def test_clip_only_grounding_detections_get_embeddings(tiny_clip, rng):
    pipe = PerceptionPipeline(
        config(memory_enabled=True, grounding_source="clip", score_threshold=0.0), clip=tiny_clip
    )
    image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    dets = pipe.process(Frame(image, stamp=Stamp(1, 0))).detections
    assert dets and all(d.embedding is not None for d in dets)
    np.testing.assert_allclose(
        dets[0].embedding, crop_embedding(pipe, image, dets[0].box), atol=1e-4
    )
