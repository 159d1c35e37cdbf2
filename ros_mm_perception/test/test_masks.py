"""Masks: COCO RLE, the mono16 instance image and its message, exports, SAM / SAM 2, 3D."""

import functools
import io
import json

import numpy as np
import pytest
import torch

from ros_mm_perception.core.errors import ImageFormatError
from ros_mm_perception.core.imaging.masks import (check_mask, decode_rle, encode_rle,
                                                  instance_image, mask_area,
                                                  overlay_masks)
from ros_mm_perception.core.results import Detection, FrameResult, Intrinsics, Stamp

pycocotools_mask = pytest.importorskip("pycocotools.mask")


def disc(h, w, cx, cy, r):
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


# ------------------------------------------------------------------------------------------ RLE


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (48, 64), (480, 641)])
def test_rle_round_trip_and_pycocotools_format(shape, rng):
    mask = rng.random(shape) < 0.3
    rle = encode_rle(mask)
    assert rle["size"] == list(shape) and isinstance(rle["counts"], str)
    reference = pycocotools_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle["counts"] == reference["counts"].decode("ascii")
    json.dumps(rle)                                                     # plain JSON
    assert np.array_equal(decode_rle(rle), mask)
    assert mask_area(rle) == int(mask.sum())


def test_rle_of_empty_and_full_masks():
    for mask in (np.zeros((5, 9), bool), np.ones((5, 9), bool)):
        rle = encode_rle(mask)
        assert np.array_equal(decode_rle(rle), mask) and mask_area(rle) == int(mask.sum())
    as_bytes = encode_rle(np.zeros((5, 9), bool))["counts"].encode()
    assert decode_rle({"size": [5, 9], "counts": as_bytes}).sum() == 0


def test_bad_masks_and_rles_are_clear_errors():
    with pytest.raises(ImageFormatError, match="H x W"):
        encode_rle(np.zeros((2, 3, 3), bool))
    with pytest.raises(ImageFormatError, match="4x5"):
        check_mask(np.zeros((5, 4), bool), (4, 5))
    with pytest.raises(ImageFormatError, match="finite"):
        check_mask(np.full((2, 2), np.nan), (2, 2))
    with pytest.raises(ValueError, match="COCO RLE"):
        decode_rle({"counts": "x"})
    assert check_mask(np.array([[0.2, 0.7]]), (1, 2)).tolist() == [[False, True]]


@pytest.mark.parametrize("style", ["own", "unseen"])
def test_rendered_objects_carry_their_exact_visible_masks(style):
    from ros_mm_perception.synthetic.evaluation import render

    scene = render(style, np.random.default_rng(3), n_objects=4, size=(120, 160))
    cover = np.zeros((120, 160), int)
    for obj in scene.objects:
        assert obj.mask.shape == (120, 160) and obj.mask.dtype == bool
        rows, cols = np.nonzero(obj.mask)
        extent = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        assert extent == tuple(int(v) for v in obj.box)
        cover += obj.mask
    assert cover.max() == 1                       # visible masks never overlap


# ------------------------------------------------------------------------------- instance image


def test_instance_image_numbers_detections_from_one_and_the_first_wins_overlaps():
    a, b = np.zeros((4, 6), bool), np.zeros((4, 6), bool)
    a[0:2, 0:4] = True
    b[1:4, 2:6] = True                     # overlaps a at rows 1, columns 2..3
    labels = instance_image([a, None, b], (4, 6))
    assert labels.dtype == np.uint16
    assert labels[0, 0] == 1 and labels[3, 5] == 3 and labels[3, 0] == 0
    assert (labels[1, 2:4] == 1).all()     # the lower index owns shared pixels
    assert not (labels == 2).any()         # a detection without a mask owns nothing
    assert (instance_image([b, a], (4, 6))[1, 2:4] == 1).all()
    assert instance_image([], (3, 2)).tolist() == [[0, 0]] * 3


def test_instance_image_rejects_a_mask_of_another_size():
    with pytest.raises(ImageFormatError, match="4x6"):
        instance_image([np.zeros((4, 5), bool)], (4, 6))


def test_overlay_tints_mask_pixels_only():
    image = np.full((4, 4, 3), 100, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True
    out = overlay_masks(image, [mask], [(255, 0, 0)])
    assert out[1, 1, 0] > 100 and out[1, 1, 1] < 100 and (out[0, 0] == 100).all()


# ------------------------------------------------------------------------------------ messages


def result_with_masks(h=6, w=8):
    m0, m1 = np.zeros((h, w), bool), np.zeros((h, w), bool)
    m0[1:3, 1:4] = True
    m1[2:5, 3:7] = True
    dets = [Detection("red ring", 0.9, (1, 1, 4, 3), mask=m0),
            Detection("blue star", 0.8, (3, 2, 7, 5), mask=m1),
            Detection("cup", 0.7, (0, 0, 2, 2))]
    return FrameResult(camera="front", frame_id="front_optical", stamp=Stamp(12, 345), width=w,
                       height=h,
                       detections=dets, detections_ran=True, masks_ran=True)


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_instance_mask_message_contract(distro):
    from ros_mm_perception.core.imaging.image_codec import image_to_numpy
    from ros_mm_perception.messages import convert
    from ros_mm_perception.messages.typestore import rosbags_types, typestore

    store = typestore(distro)
    types = rosbags_types(store)
    result = result_with_masks()
    msg = convert.instance_mask(types, result)
    header = (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec)
    assert header == ("front_optical", 12, 345)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("mono16", 6, 8, 16)
    cdr = store.serialize_cdr(msg, msg.__msgtype__)
    labels = image_to_numpy(store.deserialize_cdr(cdr, msg.__msgtype__))
    # pixel = 1 + index in the Detection2DArray (whose order is the result's); 0 = no detection
    array = convert.detection_2d_array(types, result)
    phrases = [d.results[0].hypothesis.class_id for d in array.detections]
    assert phrases == [d.phrase for d in result.detections]
    m0, m1 = result.detections[0].mask, result.detections[1].mask
    assert np.array_equal(labels == 1, m0)
    assert np.array_equal(labels == 2, m1 & ~m0)
    assert not (labels == 3).any() and np.array_equal(labels == 0, ~(m0 | m1))
    assert labels[2, 3] == 1                         # shared by both masks: the first detection's
    assert labels[4, 6] == 2 and labels[0, 0] == 0


def test_jsonl_and_coco_exports_carry_rle_masks():
    from ros_mm_perception.offline.exports import CocoExport, JsonlExport, detection_record
    from ros_mm_perception.offline.input_frame import InputFrame

    result = result_with_masks()
    record = detection_record(result.detections[0])
    assert np.array_equal(decode_rle(record["mask"]), result.detections[0].mask)
    assert "mask" not in detection_record(result.detections[2])
    item = InputFrame(index=0, name="f0.png", frame=None, namespace="", log_time_ns=0)
    lines, coco = io.StringIO(), io.StringIO()
    JsonlExport(lines).add(item, result)
    exporter = CocoExport(coco, ["red ring", "blue star", "cup"])
    exporter.add(item, result)
    exporter.finish()
    row = json.loads(lines.getvalue())
    assert [("mask" in d) for d in row["detections"]] == [True, True, False]
    anns = json.loads(coco.getvalue())["annotations"]
    assert np.array_equal(decode_rle(anns[1]["segmentation"]), result.detections[1].mask)
    assert anns[1]["area"] == int(result.detections[1].mask.sum())
    assert "segmentation" not in anns[2]


# ----------------------------------------------------------------------------- SAM and SAM 2


@pytest.fixture(scope="module", params=["sam", "sam2"])
def sam_dir(request, tmp_path_factory):
    from ros_mm_perception.core.models.random_models import build_random_sam

    return build_random_sam(tmp_path_factory.mktemp(request.param), request.param)


@functools.lru_cache(maxsize=2)
def transformers_sam(directory):
    from transformers import AutoConfig, AutoProcessor, Sam2Model, SamModel

    kind = AutoConfig.from_pretrained(directory).model_type
    net = (SamModel if kind == "sam" else Sam2Model).from_pretrained(directory).eval()
    return kind, AutoProcessor.from_pretrained(directory), net


def reference_masks(directory, image, boxes):
    """transformers' own processor → model → post_process_masks for one image."""
    kind, processor, net = transformers_sam(directory)
    prompts = [[list(map(float, b)) for b in boxes]]
    inputs = processor(images=image, input_boxes=prompts, return_tensors="pt")
    with torch.no_grad():
        pred = net(**inputs, multimask_output=False).pred_masks
    sizes = (inputs["original_sizes"],)
    if kind == "sam":
        sizes += (inputs["reshaped_input_sizes"],)
    return processor.post_process_masks(pred, *sizes)[0][:, 0].numpy()


def test_box_prompted_masks_equal_transformers_post_processing(sam_dir, rng):
    from ros_mm_perception.core.models.sam import load_mask_model

    engine = load_mask_model(str(sam_dir), "cpu", "fp32")
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
              rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)]
    boxes = [[(5, 5, 30, 30), (10, 2, 60, 40)], [(1, 1, 20, 35)]]
    calls = []
    encode = engine.net.get_image_embeddings
    engine.net.get_image_embeddings = lambda pixels: calls.append(len(pixels)) or encode(pixels)
    got = engine.masks(images, boxes)
    assert calls == [2]                                    # one image-encoder call for both frames
    for image, frame_boxes, masks in zip(images, boxes, got):
        reference = reference_masks(sam_dir, image, frame_boxes)
        assert len(masks) == len(frame_boxes)
        for mine, theirs in zip(masks, reference):
            assert mine.shape == image.shape[:2] and mine.dtype == bool
            assert np.array_equal(mine, theirs)


def test_boxes_outside_the_image_get_empty_masks_without_a_model_call(sam_dir, rng):
    from ros_mm_perception.core.models.sam import load_mask_model

    engine = load_mask_model(str(sam_dir), "cpu", "fp32")
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    engine.net.get_image_embeddings = None                 # any model call would fail
    (masks,) = engine.masks([image], [[(70, 10, 90, 30), (-20, -20, -5, -5), (10, 10, 10.5, 30)]])
    assert [m.shape for m in masks] == [(48, 64)] * 3 and not any(m.any() for m in masks)
    assert engine.masks([image], [[]]) == [[]]
    with pytest.raises(ValueError, match="finite"):
        engine.masks([image], [[(0, 0, np.nan, 4)]])


def test_a_box_partly_outside_is_clipped_to_the_image(sam_dir, rng):
    from ros_mm_perception.core.models.sam import load_mask_model

    engine = load_mask_model(str(sam_dir), "cpu", "fp32")
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    (outside,), = engine.masks([image], [[(-30, -10, 40, 30)]])
    (inside,), = engine.masks([image], [[(0, 0, 40, 30)]])
    assert np.array_equal(outside, inside)


@pytest.mark.parametrize("crop_margin", [None, 0.25])
def test_images_one_or_three_pixels_high_or_wide_get_masks_of_their_size(sam_dir, crop_margin):
    from ros_mm_perception.core.models.sam import load_mask_model

    engine = load_mask_model(str(sam_dir), "cpu", "fp32")
    engine.crop_margin = crop_margin
    images = [np.full(hw + (3,), 200, np.uint8) for hw in [(1, 1), (1, 50), (50, 1), (3, 40)]]
    boxes = [[(0, 0, 1, 1)], [(0, 0, 45, 1)], [(0, 0, 1, 45)], [(0, 0, 3, 3)]]
    for image, masks in zip(images, engine.masks(images, boxes)):
        assert [m.shape for m in masks] == [image.shape[:2]]


def test_crop_window_is_a_square_around_the_box_moved_into_the_image():
    from ros_mm_perception.core.models.sam import crop_window

    assert crop_window((40, 30, 60, 40), 100, 200, 0.25) == (35, 20, 65, 50)   # side 20 * 1.5
    assert crop_window((0, 0, 20, 10), 100, 200, 0.25) == (0, 0, 30, 30)       # moved right, down
    assert crop_window((180, 90, 200, 100), 100, 200, 0.25) == (170, 70, 200, 100)
    assert crop_window((0, 10, 80, 40), 50, 200, 0.5) == (0, 0, 160, 50)       # cut to the image


def test_crop_path_pastes_each_box_mask_from_its_crop_into_frame_pixels(sam_dir, rng):
    from ros_mm_perception.core.imaging.masks import decode_rle, encode_rle
    from ros_mm_perception.core.models.sam import clip_boxes, crop_window, load_mask_model

    engine = load_mask_model(str(sam_dir), "cpu", "fp32")
    engine.crop_margin = 0.25
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
              rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)]
    # near the border, partly outside, inside, outside (empty, no crop)
    boxes = [[(50, 30, 70, 52), (-6, 4, 14, 20), (20, 10, 36, 34)],
             [(2, 2, 12, 30), (40, 1, 50, 9)]]
    calls, decoded = [], []
    encode, decode = engine.net.get_image_embeddings, engine.net.forward
    engine.net.get_image_embeddings = lambda pixels: calls.append(len(pixels)) or encode(pixels)
    engine.net.forward = lambda **kw: decoded.append(len(kw["input_boxes"])) or decode(**kw)
    got = engine.masks(images, boxes)
    assert calls == [4] and decoded == [4]     # one encoder and one decoder call for four crops
    assert engine.masks(images, boxes)[0][1].tobytes() == got[0][1].tobytes()   # deterministic
    for image, frame_boxes, masks in zip(images, boxes, got):
        h, w = image.shape[:2]
        assert len(masks) == len(frame_boxes)
        for box, mask in zip(clip_boxes(frame_boxes, h, w), masks):
            assert mask.shape == (h, w) and mask.dtype == bool
            assert np.array_equal(decode_rle(encode_rle(mask)), mask)
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                assert not mask.any()
                continue
            c0, r0, c1, r1 = crop_window(box, h, w, 0.25)
            expected = np.zeros((h, w), bool)
            expected[r0:r1, c0:c1] = reference_masks(sam_dir, image[r0:r1, c0:c1],
                                                     [box - [c0, r0, c0, r0]])[0]
            assert np.array_equal(mask, expected)


def test_models_trained_on_crops_mask_on_crops(sam_dir, tmp_path):
    import shutil

    from ros_mm_perception.core.models.embedded import EMBEDDED_SAM_DIR
    from ros_mm_perception.core.models.sam import CROP_MARGIN, load_mask_model

    assert load_mask_model(str(sam_dir), "cpu", "fp32").crop_margin is None
    assert load_mask_model("embedded", "cpu", "fp32").crop_margin == CROP_MARGIN
    retrained = shutil.copytree(EMBEDDED_SAM_DIR, tmp_path / "retrained")
    assert load_mask_model(str(retrained), "cpu", "fp32").crop_margin == CROP_MARGIN
    info = json.loads((retrained / "training.json").read_text())
    del info["crop_margins"]
    (retrained / "training.json").write_text(json.dumps(info))
    assert load_mask_model(str(retrained), "cpu", "fp32").crop_margin is None


def test_mask_model_loader_errors(tmp_path, tiny_clip_dir):
    from ros_mm_perception.core.errors import ModelNotFoundError, UserError
    from ros_mm_perception.core.models.random_models import build_random_owl
    from ros_mm_perception.core.models.sam import load_mask_model

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_mask_model(str(tmp_path / "nowhere"), "cpu")
    with pytest.raises(UserError, match="not SAM or SAM 2"):
        load_mask_model(str(build_random_owl(tmp_path / "owl")), "cpu")


# ----------------------------------------------------------------------------- the pipeline


class BoxMasks:
    """A mask model stand-in: each box's mask is ``masks_for(box)``; records the calls."""

    def __init__(self, masks_for):
        self.masks_for, self.calls = masks_for, []

    def masks(self, images, boxes):
        self.calls.append([len(b) for b in boxes])
        return [[self.masks_for(b, image.shape[:2]) for b in frame_boxes]
                for image, frame_boxes in zip(images, boxes)]

    def warm_up(self):
        pass

    def close(self):
        pass


def ring_scene(h=60, w=80, cx=40, cy=30):
    """A ring 1 m away (outer radius 20 px, inner 11 px) before a wall 3 m away."""
    ring = disc(h, w, cx, cy, 20) & ~disc(h, w, cx, cy, 11)
    depth = np.where(ring, 1.0, 3.0).astype(np.float32)
    return ring, depth


def test_pipeline_gives_masks_and_3d_from_the_ring_not_the_wall(tiny_clip):
    from ros_mm_perception.core.config import PerceptionConfig
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
    from ros_mm_perception.core.results import Frame

    ring, depth = ring_scene()
    assert depth[30, 40] == 3.0                       # the box centre sees the wall
    masker = BoxMasks(lambda box, hw: ring)
    config = PerceptionConfig(labels=["a"], detect_phrases=["red ring"], grounding_source="clip",
                              enable_labels=False)
    pipe = PerceptionPipeline(config, clip=tiny_clip, masker=masker)
    image = np.full((60, 80, 3), 90, np.uint8)
    k = Intrinsics(100.0, 100.0, 39.5, 29.5)
    frame = Frame(image, depth=depth, intrinsics=k)
    result = pipe.ground(frame, ["red ring"], score_threshold=0.0)
    assert pipe.makes_masks and result.masks_ran and result.detections
    assert masker.calls == [[len(result.detections)]]  # one call for all the frame's boxes
    for det in result.detections:
        assert det.mask is ring
        assert det.xyz[2] == pytest.approx(1.0)       # the ring's depth, not the wall's 3 m
        # 40 px wide at 1 m with f = 100 px
        assert det.size_xyz[0] == pytest.approx(40 / 100.0, abs=0.03)
    # the mask decides: a mask over the ring's hole gives the wall's depth
    hole = disc(60, 80, 40, 30, 9)
    pipe_hole = PerceptionPipeline(config, clip=tiny_clip, masker=BoxMasks(lambda box, hw: hole))
    for det in pipe_hole.ground(frame, ["red ring"], score_threshold=0.0).detections:
        assert det.xyz[2] == pytest.approx(3.0)


def test_pipeline_without_mask_model_has_no_masks(tiny_clip, rng):
    from ros_mm_perception.core.config import PerceptionConfig
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
    from ros_mm_perception.core.results import Frame

    config = PerceptionConfig(labels=["a"], detect_phrases=["red ring"], grounding_source="clip")
    pipe = PerceptionPipeline(config, clip=tiny_clip)
    result = pipe.process(Frame(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)))
    assert not pipe.makes_masks and not result.masks_ran
    assert all(d.mask is None for d in result.detections)


def test_pipeline_with_a_tiny_sam_from_its_folder(tiny_clip, tmp_path, rng):
    from ros_mm_perception.core.config import PerceptionConfig
    from ros_mm_perception.core.models.random_models import build_random_sam
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
    from ros_mm_perception.core.results import Frame

    folder = build_random_sam(tmp_path / "sam", "sam")
    config = PerceptionConfig(labels=["a"], detect_phrases=["red ring", "blue star"],
                              grounding_source="clip", enable_labels=False, mask_model=str(folder),
                              device="cpu", precision="fp32")
    pipe = PerceptionPipeline(config, clip=tiny_clip)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    result = pipe.ground(Frame(image), ["red ring", "blue star"], score_threshold=0.0)
    assert result.masks_ran and result.detections
    reference = reference_masks(folder, image, [d.box for d in result.detections])
    for det, theirs in zip(result.detections, reference):
        assert np.array_equal(det.mask, theirs)
    pipe.close()


def test_an_empty_mask_falls_back_to_the_box_window():
    from ros_mm_perception.core.perception.geometry import locate

    ring, depth = ring_scene()
    k = Intrinsics(100.0, 100.0, 39.5, 29.5)
    empty, boxed = (Detection("red ring", 0.9, (20, 10, 60, 50), mask=np.zeros((60, 80), bool)),
                    Detection("red ring", 0.9, (20, 10, 60, 50)))
    locate([empty, boxed], depth, k, depth.shape)
    assert empty.xyz is not None and empty.xyz == boxed.xyz and empty.size_xyz == boxed.size_xyz


def test_the_embedded_mask_model_masks_rendered_objects():
    from ros_mm_perception.core.models.sam import load_mask_model
    from ros_mm_perception.synthetic.mask_evaluation import mask_iou
    from ros_mm_perception.synthetic.scenes import render_scene

    engine = load_mask_model("embedded", "cpu", "fp32")
    ious = []
    for seed in range(3):
        scene = render_scene(np.random.default_rng([seed, 99]), n_objects=2, size=(240, 320))
        (masks,) = engine.masks([scene.image], [[o.box for o in scene.objects]])
        ious += [mask_iou(m, o.mask) for m, o in zip(masks, scene.objects)]
    assert np.mean(ious) >= 0.35     # eval-embedded --masks has the figures; see docs/models.md


def test_mask_training_continues_from_a_saved_model(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from ros_mm_perception.core.models.embedded import EMBEDDED_SAM_DIR
    from training import train_sam

    monkeypatch.setattr(train_sam, "POOL", 4)
    # learning rate 0: the saved weights are the loaded ones, so the run started from them
    assert train_sam.main(["--init-from", str(EMBEDDED_SAM_DIR), "--steps", "1", "--lr", "0",
                           "--batch-size", "2", "--seed", "3", "--out", str(tmp_path)]) == 0
    before = load_file(EMBEDDED_SAM_DIR / "model.safetensors")
    after = load_file(tmp_path / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    shipped = json.loads((EMBEDDED_SAM_DIR / "training.json").read_text())
    info = json.loads((tmp_path / "training.json").read_text())
    assert info["seed"] == 3 and info["steps"] == 1
    assert info["continued_from"] == {k: v for k, v in shipped.items() if k != "loss_curve"}


def test_mask_training_on_crops_is_deterministic_given_the_seed(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from training import train_sam

    monkeypatch.setattr(train_sam, "POOL", 4)
    runs = []
    for name in ("a", "b"):
        assert train_sam.main(["--steps", "2", "--batch-size", "2", "--seed", "5",
                               "--out", str(tmp_path / name)]) == 0
        runs.append(load_file(tmp_path / name / "model.safetensors"))
        info = json.loads((tmp_path / name / "training.json").read_text())
        assert info["crop_margins"] == list(train_sam.CROP_MARGINS)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
