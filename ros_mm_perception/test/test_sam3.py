"""The sam3 grounding source: a tiny random SAM 3 (real config) through the project's loader."""

import functools

import numpy as np
import pytest
import torch

from ros_mm_perception.core.config import ConfigError, PerceptionConfig
from ros_mm_perception.core.results import Frame

PHRASES = ["red ring", "blue star", "cup"]
THRESHOLD = 0.25   # the tiny model's random scores lie around 0.25: some kept, some not


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory):
    from ros_mm_perception.core.models.random_models import build_random_sam3

    return build_random_sam3(tmp_path_factory.mktemp("sam3"))


@pytest.fixture
def engine(sam3_dir):
    from ros_mm_perception.core.models.sam3 import load_sam3

    return load_sam3(str(sam3_dir), "cpu", "fp32")


def images(rng):
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
            rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)]


@functools.lru_cache(maxsize=1)
def transformers_sam3(directory):
    from transformers import Sam3Model, Sam3Processor

    return Sam3Processor.from_pretrained(directory), Sam3Model.from_pretrained(directory).eval()


def reference(directory, image, phrase, threshold):
    """transformers' own processor → Sam3Model → post_process_instance_segmentation, one phrase."""
    processor, net = transformers_sam3(directory)
    inputs = processor(images=image, text=phrase, return_tensors="pt")
    with torch.no_grad():
        out = net(**inputs)
    found = processor.post_process_instance_segmentation(out, threshold=threshold,
                                                         target_sizes=[image.shape[:2]])[0]
    order = np.argsort(-found["scores"].numpy(), kind="stable")
    h, w = image.shape[:2]
    return (found["scores"].numpy()[order], found["boxes"].numpy()[order].clip(0, [w, h, w, h]),
            found["masks"].numpy()[order].astype(bool))


def test_detections_equal_transformers_post_processing(engine, sam3_dir, rng):
    frames = images(rng)
    calls = {"vision": [], "text": []}
    vision, text = engine.net.get_vision_features, engine.net.get_text_features
    engine.net.get_vision_features = (
        lambda **kw: calls["vision"].append(len(kw["pixel_values"])) or vision(**kw))
    engine.net.get_text_features = (
        lambda **kw: calls["text"].append(len(kw["input_ids"])) or text(**kw))
    found = engine.detect_batch(frames, PHRASES, THRESHOLD)
    engine.detect_batch(frames, PHRASES[:2], THRESHOLD)
    assert calls["vision"] == [2, 2]     # one image-encoder call per batch of frames
    assert calls["text"] == [3]                          # each phrase encoded once, then cached
    kept = 0
    for image, dets in zip(frames, found):
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
        for phrase in PHRASES:
            mine = [d for d in dets if d.phrase == phrase]
            scores, boxes, masks = reference(sam3_dir, image, phrase, THRESHOLD)
            assert len(mine) == len(scores)
            kept += len(mine)
            np.testing.assert_allclose([d.score for d in mine], scores, atol=1e-5)
            mine_boxes = np.array([d.box for d in mine]).reshape(-1, 4)
            np.testing.assert_allclose(mine_boxes, boxes, atol=1e-3)
            for det, mask in zip(mine, masks):
                assert det.source == "sam3" and det.mask.shape == image.shape[:2]
                assert np.array_equal(det.mask, mask)
    assert 0 < kept < 2 * len(PHRASES) * 8              # the threshold kept some queries, not all


def test_an_absent_phrase_returns_nothing(engine, rng):
    frames = images(rng)
    assert any(engine.detect_batch(frames, PHRASES, THRESHOLD))
    presence = engine.net.detr_decoder.presence_head.layer3
    presence.bias.data.fill_(-1e4)       # the presence token says: not in the image
    assert engine.detect_batch(frames, PHRASES, 0.01) == [[], []]


def test_pipeline_auto_prefers_sam3_and_outputs_masks(sam3_dir, tiny_clip, rng):
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline

    config = PerceptionConfig(labels=["a"], detect_phrases=PHRASES, enable_labels=False,
                              score_threshold=THRESHOLD, sam3_model=str(sam3_dir), device="cpu",
                              precision="fp32")
    pipe = PerceptionPipeline(config, clip=tiny_clip)
    assert pipe.detection_source() == "sam3" and pipe.makes_masks
    result = pipe.process(Frame(images(rng)[0]))
    assert result.masks_ran and result.detections
    assert all(d.source == "sam3" and d.mask is not None for d in result.detections)
    pipe.close()


def test_sam3_source_needs_a_model(tiny_clip):
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline

    with pytest.raises(ConfigError, match="sam3_model"):
        PerceptionPipeline(PerceptionConfig(labels=["a"], grounding_source="sam3"), clip=tiny_clip)


def test_loader_errors(tmp_path):
    from ros_mm_perception.core.errors import ModelNotFoundError, UserError
    from ros_mm_perception.core.models.random_models import build_random_sam
    from ros_mm_perception.core.models.sam3 import load_sam3

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_sam3(str(tmp_path / "nowhere"), "cpu")
    with pytest.raises(UserError, match="not SAM 3"):
        load_sam3(str(build_random_sam(tmp_path / "sam")), "cpu")
