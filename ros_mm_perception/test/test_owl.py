"""OWL engine on tiny random OWLv2 / OWL-ViT models saved with save_pretrained and loaded for
real."""

import numpy as np
import pytest
import torch

from ros_mm_perception.core.errors import ModelNotFoundError, UserError
from ros_mm_perception.core.models.fast_owl import FastOwlEncoder, enable_fast_owl
from ros_mm_perception.core.models.owl import load_owl
from ros_mm_perception.core.models.random_models import build_random_owl

KINDS = ("owlv2", "owlvit")
PHRASES = ["red circle", "blue star", "green ring"]


@pytest.fixture(scope="module", params=KINDS)
def engine(request, tmp_path_factory):
    folder = build_random_owl(tmp_path_factory.mktemp(request.param), request.param)
    return load_owl(str(folder), device="cpu", precision="fp32")


def frames(*shapes, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]


@pytest.mark.parametrize("shape", [(37, 61), (61, 37), (200, 130), (48, 48), (20, 20)])
def test_device_preprocessing_equals_the_processor(engine, shape):
    (image,) = frames(shape)
    ours = engine.preprocessor.frames([image])
    reference = engine.processor(images=image, return_tensors="pt")["pixel_values"]
    assert ours.shape == reference.shape == (1, 3, engine.image_size, engine.image_size)
    # OWL-ViT: the same ops, exactly; OWLv2: pad, blur and resize as matrix products, equal to
    # float rounding (far below one grey level, 1 / 255 / std = 0.014 here).
    torch.testing.assert_close(ours, reference, rtol=0,
                               atol=1e-6 if engine.kind == "owlvit" else 1e-4)


@pytest.mark.parametrize("shape", [(480, 640), (300, 200)])
def test_owlv2_preprocessing_equals_the_processor_at_other_sizes(shape):
    from ros_mm_perception.core.imaging.owl_preprocess import Owlv2Preprocessor
    from ros_mm_perception.core.models.random_models import owl_processor

    (image,) = frames(shape)
    # shrinking (blurred) from a camera frame, or enlarging a small one
    for size in (128, 256):
        processor = owl_processor("owlv2", size).image_processor
        ours = Owlv2Preprocessor(processor, torch.device("cpu")).frames([image])
        torch.testing.assert_close(ours,
                                   processor(images=image, return_tensors="pt")["pixel_values"],
                                   rtol=0, atol=1e-4)


def test_boxes_equal_post_process_object_detection_on_non_square_frames(engine):
    images = frames((40, 90), (90, 40))
    inputs = engine.processor(text=[PHRASES] * 2, images=images, return_tensors="pt")
    with torch.no_grad():
        outputs = engine.model(**inputs)
    reference = engine.processor.image_processor.post_process_object_detection(
        outputs, threshold=0.2, target_sizes=[im.shape[:2] for im in images])
    ours = engine.raw_detections(images, PHRASES, threshold=0.2)
    assert sum(len(r["scores"]) for r in reference) > 0
    for ref, (scores, labels, boxes, _) in zip(reference, ours):
        torch.testing.assert_close(scores, ref["scores"], rtol=1e-4, atol=1e-5)
        assert torch.equal(labels, ref["labels"])
        torch.testing.assert_close(boxes, ref["boxes"], rtol=0, atol=1e-2)     # pixels


def test_box_mapping_scales_both_axes_to_the_original_frame(engine):
    h, w = 40, 90
    sx, sy = engine.preprocessor.box_scale(h, w)
    if engine.kind == "owlv2":   # relative to the padded square
        assert (sx, sy) == (90.0, 90.0)
    else:                        # relative to the stretched frame
        assert (sx, sy) == (90.0, 40.0)


def test_detections_are_in_the_frame_with_scores_in_unit_range(engine):
    (image,) = frames((50, 120))
    (dets,) = engine.detect_batch([image], PHRASES, threshold=0.0)
    assert 0 < len(dets) <= engine.max_candidates
    for d in dets:
        assert d.phrase in PHRASES and 0.0 <= d.score <= 1.0
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 50
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_text_queries_are_encoded_once_per_phrase(engine):
    engine.forget_text()
    before = engine.text_encodings
    first = engine.encode_text(["red circle", "blue star"])
    assert engine.text_encodings - before == 2
    again = engine.encode_text(["blue star", "red circle", "green ring"])   # one new phrase
    assert engine.text_encodings - before == 3
    torch.testing.assert_close(again[:2], first.flip(0))
    engine.detect_batch(frames((30, 40)), ["green ring", "red circle"])
    assert engine.text_encodings - before == 3


def test_queries_equal_the_model_text_embeddings(engine):
    inputs = engine.processor(text=[PHRASES], images=frames((32, 32))[0], return_tensors="pt")
    with torch.no_grad():
        outputs = engine.model(**inputs)
    ours = engine.encode_text(PHRASES)
    reference = outputs.text_embeds[0]
    torch.testing.assert_close(ours, reference / (reference.norm(dim=-1, keepdim=True) + 1e-6))


def test_batch_equals_single(engine):
    images = frames((40, 90), (64, 64), (90, 40))
    batch = engine.detect_batch(images, PHRASES, threshold=0.1)
    for image, together in zip(images, batch):
        (alone,) = engine.detect_batch([image], PHRASES, threshold=0.1)
        assert [d.phrase for d in alone] == [d.phrase for d in together]
        np.testing.assert_allclose([d.score for d in alone], [d.score for d in together],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([d.box for d in alone], [d.box for d in together], rtol=1e-5,
                                   atol=1e-3)


def test_max_candidates_keeps_the_most_object_like_patches(engine):
    (image,) = frames((40, 90))
    engine.max_candidates = 3
    try:
        (dets,) = engine.detect_batch([image], PHRASES, threshold=0.0)
    finally:
        engine.max_candidates = 100
    scores, _, _, objectness = engine.raw_detections([image], PHRASES, 0.0)[0]
    assert len(scores) > 3
    rank = objectness if objectness is not None else scores
    kept = scores[torch.topk(rank, 3).indices].tolist()
    assert 1 <= len(dets) <= 3          # boxes of no area inside the frame are dropped
    assert all(min(abs(d.score - k) for k in kept) < 1e-6 for d in dets)


@pytest.mark.parametrize("mode", ["static", "graph"])
def test_fast_path_equals_plain(engine, mode):
    images = frames((40, 90), (64, 64), (90, 40))
    pixels = engine.preprocessor.frames(images)
    plain = engine.encode_image(pixels)
    encoder = enable_fast_owl(engine, mode, buckets=(1, 4))
    try:
        assert isinstance(encoder, FastOwlEncoder)
        fast = engine.encode_image(pixels)                 # 3 frames in the bucket of 4
        assert encoder.captured_buckets == (4,)
        for a, b in zip(plain.tensors(), fast.tensors()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        single = engine.encode_image(pixels[:1])
        torch.testing.assert_close(single.boxes, plain.boxes[:1], rtol=1e-5, atol=1e-5)
    finally:
        enable_fast_owl(engine, "off")
    assert engine.fast_encoder is None


def test_fast_path_rejects_wrong_shapes(engine):
    encoder = FastOwlEncoder(engine.model, engine.image_size, engine.device, engine.dtype,
                             mode="static")
    with pytest.raises(ValueError, match="pixels"):
        encoder(torch.zeros(1, 3, engine.image_size + 1, engine.image_size))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_owl(str(tmp_path / "nope" / "owl"), device="cpu")
    with pytest.raises(ModelNotFoundError, match="not a complete OWL model folder"):
        load_owl(str(tmp_path), device="cpu")
    with pytest.raises(ModelNotFoundError, match="no OWL model given"):
        load_owl("", device="cpu")


def test_hub_id_not_in_cache_says_what_to_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="hf download google/owlv2-base-patch16-ensemble"):
        load_owl("google/owlv2-base-patch16-ensemble", device="cpu")


def test_another_model_type_is_refused(tiny_paligemma_dir):
    with pytest.raises(UserError, match="not OWLv2 or OWL-ViT"):
        load_owl(str(tiny_paligemma_dir), device="cpu")


def test_random_weights_build_the_architecture_from_a_config_folder(tmp_path):
    folder = build_random_owl(tmp_path / "cfg", "owlv2")
    (folder / "model.safetensors").unlink()
    engine = load_owl(str(folder), device="cpu", random_weights=True)
    (dets,) = engine.detect_batch(frames((30, 50)), ["red circle"])
    assert all(0.0 <= d.score <= 1.0 for d in dets)
