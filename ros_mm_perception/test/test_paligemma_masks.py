"""PaliGemma's own masks (``segment`` and the ``<seg>`` mask decoder) in the pipeline and its
outputs, with the tiny random PaliGemma and a tiny random decoder loaded through the real
loaders."""

import io
import json
import logging

import numpy as np
import pytest
import torch

from ros_mm_perception.cli import main
from ros_mm_perception.commands.options import with_masks
from ros_mm_perception.core.config import ConfigError, PerceptionConfig
from ros_mm_perception.core.imaging.image_io import write_rgb
from ros_mm_perception.core.imaging.masks import decode_rle
from ros_mm_perception.core.models.paligemma import load_paligemma
from ros_mm_perception.core.models.paligemma_parser import LOC_GRID
from ros_mm_perception.core.models.random_models import build_random_mask_decoder
from ros_mm_perception.core.models.seg_decoder import load_mask_decoder, masks_in_boxes
from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
from ros_mm_perception.core.results import Frame, Stamp

from test_masks import BoxMasks
from test_pipeline import forced_answers

H, W = 48, 64
PHRASES = ["red mug", "person"]
MUG, PERSON = (100, 200, 500, 600), (512, 0, 1023, 512)  # y0, x0, y1, x1 on the 1024 grid
CODES = tuple(range(0, 128, 8))


def loc(y0, x0, y1, x1):
    return "".join(f"<loc{v:04d}>" for v in (y0, x0, y1, x1))


def segment_answer(grid, phrase, codes=CODES):
    return loc(*grid) + "".join(f"<seg{c:03d}>" for c in codes) + " " + phrase


def pixel_box(grid, h=H, w=W):
    y0, x0, y1, x1 = grid
    return (x0 / LOC_GRID * w, y0 / LOC_GRID * h, x1 / LOC_GRID * w, y1 / LOC_GRID * h)


@pytest.fixture(scope="module")
def decoder_path(tmp_path_factory):
    return build_random_mask_decoder(tmp_path_factory.mktemp("vae") / "vae-oid.npz")


def reference_mask(decoder_path, codes, box, h=H, w=W):
    """The decoder's mask for ``codes`` pasted into ``box``, without the engine."""
    with torch.inference_mode():
        logits = load_mask_decoder(decoder_path)(torch.tensor([codes]))
    return masks_in_boxes(logits, [box], h, w)[0]


def config(tiny_paligemma_dir, **kw):
    base = dict(labels=["a"], detect_phrases=PHRASES, grounding_source="paligemma",
                enable_labels=False, score_threshold=0.0, paligemma_model=str(tiny_paligemma_dir),
                device="cpu", precision="fp32", max_new_tokens=32)
    base.update(kw)
    return PerceptionConfig(**base)


def frames(rng, n):
    return [Frame(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), stamp=Stamp(1, 0),
                  camera=f"cam{i}") for i in range(n)]


def count_generate(engine):
    """Record the batch size of every ``generate`` call of ``engine``."""
    calls, generate = [], engine.model.generate

    def counted(*a, **kw):
        calls.append(kw["input_ids"].shape[0])
        return generate(*a, **kw)

    engine.model.generate = counted
    return calls


def test_segment_replaces_detect_with_the_same_boxes_and_adds_masks(tiny_paligemma_dir, tiny_clip,
                                                                    decoder_path, rng):
    pipe = PerceptionPipeline(config(tiny_paligemma_dir, paligemma_mask_decoder=str(decoder_path)),
                              clip=tiny_clip)
    engine = pipe.paligemma
    calls = count_generate(engine)
    # frame 0: one entry per prompt; frame 1: an entry without <seg> codes, and a box in the last
    # pixel column that rounds to nothing
    corner = (1000, 1022, 1023, 1023)
    engine.logits_processors[:] = [forced_answers(engine, [
        segment_answer(MUG, "red mug"), segment_answer(PERSON, "person"),
        loc(*MUG) + " red mug", segment_answer(corner, "person")])]
    first, second = pipe.process_batch(frames(rng, 2))
    assert calls == [4]                              # 2 frames x 2 phrases in one generate call
    assert pipe.makes_masks and first.masks_ran and second.masks_ran
    found = {d.phrase: d for d in first.detections}
    assert set(found) == set(PHRASES)
    for phrase, grid in (("red mug", MUG), ("person", PERSON)):
        det = found[phrase]
        assert det.box == pytest.approx(pixel_box(grid))
        assert det.mask.shape == (H, W) and det.mask.dtype == bool
        assert np.array_equal(det.mask, reference_mask(decoder_path, CODES, det.box))
        assert 0 < det.mask.sum() < (det.box[2] - det.box[0] + 1) * (det.box[3] - det.box[1] + 1)
    for det in second.detections:                    # empty masks, never missing ones
        assert det.mask.shape == (H, W) and not det.mask.any()
    # the same locations answered to ``detect`` (no decoder) give the same boxes, without masks
    plain = PerceptionPipeline(config(tiny_paligemma_dir), clip=tiny_clip)
    engine = plain.paligemma
    engine.logits_processors[:] = [forced_answers(
        engine, [loc(*MUG) + " red mug ; " + loc(*PERSON) + " person"])]
    result = plain.process(frames(rng, 1)[0])
    assert not plain.makes_masks and not result.masks_ran
    assert {d.phrase: d.box for d in result.detections} == {p: d.box for p, d in found.items()}
    assert all(d.mask is None for d in result.detections)
    pipe.close()
    plain.close()


def test_masks_go_through_jsonl_coco_and_the_instance_image(tiny_paligemma_dir, tiny_clip,
                                                            decoder_path, rng):
    from ros_mm_perception.core.imaging.masks import instance_image
    from ros_mm_perception.offline.exports import CocoExport, JsonlExport
    from ros_mm_perception.offline.input_frame import InputFrame

    pipe = PerceptionPipeline(config(tiny_paligemma_dir, paligemma_mask_decoder=str(decoder_path)),
                              clip=tiny_clip)
    engine = pipe.paligemma
    engine.logits_processors[:] = [forced_answers(engine, [segment_answer(MUG, "red mug"),
                                                           segment_answer(PERSON, "person")])]
    frame = frames(rng, 1)[0]
    result = pipe.ground(frame, PHRASES, score_threshold=0.0)
    pipe.close()
    assert len(result.detections) == 2 and result.masks_ran
    item = InputFrame(index=0, name="f0.png", frame=frame, namespace="", log_time_ns=0)
    lines, coco = io.StringIO(), io.StringIO()
    JsonlExport(lines).add(item, result)
    exporter = CocoExport(coco, PHRASES)
    exporter.add(item, result)
    exporter.finish()
    rows = json.loads(lines.getvalue())["detections"]
    annotations = json.loads(coco.getvalue())["annotations"]
    for det, row, annotation in zip(result.detections, rows, annotations):
        assert row["mask"]["size"] == [H, W]
        assert np.array_equal(decode_rle(row["mask"]), det.mask)
        assert np.array_equal(decode_rle(annotation["segmentation"]), det.mask)
        assert annotation["area"] == int(det.mask.sum())
    labels = instance_image([d.mask for d in result.detections], (H, W))
    assert np.array_equal(labels == 1, result.detections[0].mask)


def test_detect_masks_json_uses_paligemmas_own_masks(tiny_paligemma_dir, tiny_clip_dir,
                                                     decoder_path, tmp_path, monkeypatch, capsys):
    from ros_mm_perception.core.models import paligemma

    def forced_loader(*args, **kwargs):
        engine = load_paligemma(*args, **kwargs)
        engine.logits_processors[:] = [forced_answers(engine, [segment_answer(MUG, "red mug"),
                                                               segment_answer(PERSON, "person")])]
        return engine

    monkeypatch.setattr(paligemma, "load_paligemma", forced_loader)
    image_path = tmp_path / "frame.png"
    write_rgb(image_path, np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8))
    assert main(["detect", str(image_path), "red mug ; person", "--paligemma-model",
                 str(tiny_paligemma_dir), "--paligemma-mask-decoder", str(decoder_path),
                 "--clip-model", str(tiny_clip_dir), "--device", "cpu", "--precision", "fp32",
                 "--score-threshold", "0", "--masks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["detections"]
    assert sorted(r["label"] for r in rows) == sorted(PHRASES)
    for row in rows:                                 # the decoder's masks, not a mask model's
        expected = reference_mask(decoder_path, CODES, tuple(row["box"]))
        assert np.array_equal(decode_rle(row["mask"]), expected)


def test_with_masks_keeps_paligemmas_own_masks_and_adds_the_embedded_model_otherwise():
    own = PerceptionConfig(paligemma_model="pg", paligemma_mask_decoder="vae-oid.npz")
    assert with_masks(own).mask_model == ""                                  # auto → PaliGemma
    assert with_masks(own.replace(grounding_source="paligemma", owl_model="owl")).mask_model == ""
    assert with_masks(own.replace(owl_model="owl")).mask_model == "embedded"  # auto → OWL
    assert with_masks(own.replace(paligemma_mask_decoder="")).mask_model == "embedded"


def test_a_configured_mask_model_wins_over_the_decoder(tiny_paligemma_dir, tiny_clip,
                                                       decoder_path, rng, caplog):
    whole = np.ones((H, W), bool)
    masker = BoxMasks(lambda box, hw: whole)
    with caplog.at_level(logging.WARNING):
        pipe = PerceptionPipeline(config(tiny_paligemma_dir,
                                         paligemma_mask_decoder=str(decoder_path)),
                                  clip=tiny_clip, masker=masker)
    assert "mask_model gives the masks" in caplog.text
    engine = pipe.paligemma
    assert not engine.has_mask_decoder                # not even loaded
    engine.logits_processors[:] = [forced_answers(engine, [loc(*MUG) + " red mug"])]
    result = pipe.process(frames(rng, 1)[0])         # detect's answer parses: detect ran
    assert result.masks_ran and [d.phrase for d in result.detections] == ["red mug"]
    assert result.detections[0].mask is whole and masker.calls == [[1]]
    pipe.close()


def test_decoder_settings_that_cannot_work_are_config_errors(tiny_paligemma_dir, tiny_clip,
                                                             decoder_path):
    with pytest.raises(ConfigError, match="needs a PaliGemma model"):
        PerceptionPipeline(config(tiny_paligemma_dir, paligemma_model="", grounding_source="clip",
                                  paligemma_mask_decoder=str(decoder_path)), clip=tiny_clip)
    engine = load_paligemma(str(tiny_paligemma_dir), device="cpu")
    with pytest.raises(ConfigError, match="passed in has none"):
        PerceptionPipeline(config(tiny_paligemma_dir, paligemma_mask_decoder=str(decoder_path)),
                           clip=tiny_clip, paligemma=engine)
    engine.close()


def test_without_a_decoder_segments_have_no_mask_and_a_warning_says_so_once(tiny_paligemma_dir,
                                                                            rng, caplog):
    engine = load_paligemma(str(tiny_paligemma_dir), device="cpu", max_new_tokens=32)
    image = frames(rng, 1)[0].image
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            engine.logits_processors[:] = [forced_answers(engine, [segment_answer(MUG, "cat")])]
            (found,) = engine.segment_batch([image], ["cat"])[0]
            assert found.seg_codes == CODES and found.mask is None
    assert caplog.text.count("no mask decoder") == 1
    engine.close()


def test_the_fast_path_encodes_each_frame_once_for_all_phrases(tiny_paligemma_dir, decoder_path,
                                                               rng):
    engine = load_paligemma(str(tiny_paligemma_dir), device="cpu", max_new_tokens=4,
                            mask_decoder=str(decoder_path), fast_path="static")
    encoded, encode = [], engine.model.get_image_features

    def counted(pixels, *a, **kw):
        encoded.append(len(pixels))
        return encode(pixels, *a, **kw)

    engine.model.get_image_features = counted
    images = [f.image for f in frames(rng, 2)]
    assert len(engine.segment_batch(images, ["cat", "dog", "person", "cup"])) == 2
    assert encoded == [2]                            # 8 prompts, 2 distinct frames
    engine.close()
