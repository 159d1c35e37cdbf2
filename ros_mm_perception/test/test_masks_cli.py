"""``detect --masks`` and ``bag --masks`` through the real entry point, with a tiny random SAM."""

import json

import numpy as np
import pytest

from ros_mm_perception.cli import main
from ros_mm_perception.core.imaging.image_io import write_rgb
from ros_mm_perception.core.imaging.masks import decode_rle

from offline_helpers import noise_images, tiny_clip_options

H, W = 48, 64


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    from ros_mm_perception.core.models.random_models import build_random_sam

    return build_random_sam(tmp_path_factory.mktemp("sam"), "sam")


@pytest.fixture
def frames_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(noise_images(3)):
        write_rgb(folder / f"{i:03d}.png", image)
    return folder


def test_detect_masks_json_gives_each_detection_an_rle_mask(tiny_clip_dir, sam_dir, frames_folder,
                                                            capsys):
    args = ["detect", str(frames_folder / "000.png"), "red mug ; person",
            "--clip-model", str(tiny_clip_dir), "--device", "cpu", "--precision", "fp32",
            "--score-threshold", "0", "--json"]
    assert main(args + ["--masks", "--mask-model", str(sam_dir)]) == 0
    dets = json.loads(capsys.readouterr().out)["detections"]
    assert dets
    for det in dets:
        assert det["mask"]["size"] == [H, W] and isinstance(det["mask"]["counts"], str)
        assert decode_rle(det["mask"]).shape == (H, W)
    assert main(args) == 0                               # without --masks: no mask field
    assert all("mask" not in d for d in json.loads(capsys.readouterr().out)["detections"])


def test_bag_masks_write_rle_in_jsonl_and_coco_and_an_instance_mask_topic(tiny_clip_dir, sam_dir,
                                                                          frames_folder, tmp_path):
    from test_offline_bag import read_mcap

    out, jsonl, coco = tmp_path / "out.mcap", tmp_path / "f.jsonl", tmp_path / "coco.json"
    options = tiny_clip_options(tiny_clip_dir, "red mug,person", "a,b", threshold=0)
    assert main(["bag", str(frames_folder), "--out", str(out), "--jsonl", str(jsonl),
                 "--coco", str(coco), "--masks", "--mask-model", str(sam_dir), "--fps", "10",
                 *options]) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 3
    assert all(d["mask"]["size"] == [H, W] for r in rows for d in r["detections"])
    annotations = json.loads(coco.read_text())["annotations"]
    assert annotations
    assert all(decode_rle(a["segmentation"]).sum() == a["area"] for a in annotations)
    messages = read_mcap(out)
    masks = [(m, t) for topic, _, m, t in messages if topic.endswith("/instance_mask")]
    detections = [(m, t) for topic, _, m, t in messages if topic.endswith("/detections")]
    assert len(masks) == len(detections) == 3
    for (mask, t_mask), (array, t_det), row in zip(masks, detections, rows):
        assert (mask.encoding, mask.height, mask.width) == ("mono16", H, W) and t_mask == t_det
        stamp = (mask.header.stamp.sec, mask.header.stamp.nanosec)
        assert stamp == (array.header.stamp.sec, array.header.stamp.nanosec)
        assert mask.header.frame_id == array.header.frame_id
        labels = np.frombuffer(bytes(mask.data), np.uint16).reshape(H, W)
        assert labels.max() <= len(array.detections)
        first = (decode_rle(row["detections"][0]["mask"]) if row["detections"]
                 else np.zeros((H, W), bool))
        assert np.array_equal(labels == 1, first)        # the first detection owns all its pixels


def test_bag_without_masks_has_no_instance_mask_topic(tiny_clip_dir, frames_folder, tmp_path):
    from test_offline_bag import read_mcap

    out = tmp_path / "out.mcap"
    assert main(["bag", str(frames_folder), "--out", str(out), "--fps", "10",
                 *tiny_clip_options(tiny_clip_dir, "red mug", "a,b", threshold=0)]) == 0
    assert not any(topic.endswith("/instance_mask") for topic, *_ in read_mcap(out))


def test_eval_embedded_masks_reports_iou_and_3d_error_for_both_styles(sam_dir, capsys):
    assert main(["eval-embedded", "--masks", "--mask-model", str(sam_dir), "--scenes", "1",
                 "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for style in ("own", "unseen"):
        masks = report[style]["masks"]
        assert 0.0 <= masks["mean_iou"] <= 1.0
        assert masks["objects"] >= 1 and masks["ms_per_frame"] > 0
        assert set(report[style]["depth"]) == {"ring", "cross", "star"}
        for errors in report[style]["depth"].values():
            assert set(errors) == {"median_error_m_mask", "median_error_m_box"}


def test_masks_without_a_mask_model_use_the_embedded_one(tiny_clip_dir, frames_folder, capsys):
    assert main(["detect", str(frames_folder / "000.png"), "red circle", "--clip-model",
                 str(tiny_clip_dir), "--device", "cpu", "--score-threshold", "0", "--masks",
                 "--json"]) == 0
    dets = json.loads(capsys.readouterr().out)["detections"]
    assert dets and all(decode_rle(d["mask"]).shape == (H, W) for d in dets)
