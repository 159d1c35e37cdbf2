"""The shipped embedded CLIP understands the rendered world: it names, finds and rejects
objects."""

import json
from pathlib import Path

import numpy as np
import torch
import pytest

from ros_mm_perception.cli import main
from ros_mm_perception.core.perception.boxes import box_iou
from ros_mm_perception.core.perception.clip_grounding import ground_with_clip
from ros_mm_perception.core.models.clip_model import load_clip
from ros_mm_perception.core.models.embedded import embedded_clip_dir
from ros_mm_perception.core.imaging.image_io import read_rgb
from ros_mm_perception.core.perception.labeler import ClipLabeler
from ros_mm_perception.synthetic.scenes import all_combos, all_phrases, phrase, render_scene

SAMPLES = Path(embedded_clip_dir()).parent / "samples"


@pytest.fixture(scope="module")
def labeler():
    return ClipLabeler(load_clip("", device="cpu", precision="fp32"))


@pytest.fixture(scope="module")
def shapes_sample():
    truth = json.loads((SAMPLES / "shapes.json").read_text())
    return read_rgb(SAMPLES / truth["image"]), truth["objects"]


def test_shipped_model_fits_the_size_budget_and_records_its_training():
    folder = embedded_clip_dir()
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 15 * 1024 * 1024
    info = json.loads((folder / "training.json").read_text())
    heldout = [tuple(c) for c in info["heldout"]]
    assert heldout and set(heldout) < set(all_combos())
    assert (
        len(info["loss_curve"]) == info["steps"] and info["loss_curve"][-1] < info["loss_curve"][0]
    )


def test_classify_names_the_object_in_the_bundled_sample(capsys):
    assert main(["classify", str(SAMPLES / "red_circle.png"), "--labels", ",".join(all_phrases()),
                 "--device", "cpu", "--json", "--top-k", "3"]) == 0
    labels = json.loads(capsys.readouterr().out)["labels"]
    assert labels[0]["label"] == "red circle" and labels[0]["score"] > 0.5


def test_fresh_scenes_are_named_correctly(labeler):
    rng = np.random.default_rng(314)
    combos = [all_combos()[i] for i in rng.choice(len(all_combos()), 12, replace=False)]
    scenes = [render_scene(rng, objects=[c], size=(256, 256)) for c in combos]
    top = [labels[0].phrase
           for labels in labeler.label_batch([s.image for s in scenes], 1, all_phrases())]
    correct = sum(t == phrase(*c) for t, c in zip(top, combos))
    assert correct >= 11, list(zip(top, combos))


def test_grounding_finds_each_named_object(labeler, shapes_sample):
    image, objects = shapes_sample
    dets = ground_with_clip(labeler, image, [o["phrase"] for o in objects])
    for obj in objects:
        mine = [d for d in dets if d.phrase == obj["phrase"]]
        assert mine, f"{obj['phrase']} not found"
        assert box_iou([mine[0].box], [obj["box"]])[0, 0] >= 0.5, (obj, mine[0])


def test_an_absent_object_gets_a_low_score(labeler, shapes_sample):
    image, objects = shapes_sample
    present = {o["phrase"] for o in objects}
    absent = [p for p in ("red star", "green square", "yellow ring") if p not in present][:2]
    dets = ground_with_clip(labeler, image, absent, score_threshold=0.0)
    assert max(d.score for d in dets) < 0.3


def test_training_is_deterministic_given_the_seed(tmp_path):
    from training import train_clip as train

    runs = [train.train(seed=3, steps=2, batch_size=12, lr=1e-3, out=tmp_path / name, threads=1)
            for name in ("a", "b")]
    assert runs[0]["loss_curve"] == runs[1]["loss_curve"]
    weights = [(tmp_path / name / "open_clip_model.safetensors").read_bytes()
               for name in ("a", "b")]
    assert weights[0] == weights[1]


def test_batches_rendered_ahead_in_another_process_equal_those_rendered_here():
    from training import train_clip as train
    from training.common import prefetched_batches

    args = (train.MODEL_CFG["vision_cfg"]["image_size"], 6)
    ahead = list(prefetched_batches(train.batch_maker, args, seed=4, steps=5))
    make = train.batch_maker(*args)
    assert len(ahead) == 5
    for step, (pixels, samples) in enumerate(ahead):
        here_pixels, here_samples = make(np.random.default_rng([4, step]))
        assert torch.equal(pixels, here_pixels) and samples == here_samples
    assert not torch.equal(ahead[0][0], ahead[1][0])


def test_whole_frames_are_seen_as_the_labeler_fits_them():
    """A letterboxed frame crop counts every object in it; a centre-cropped one only what its
    square keeps."""
    from training import train_clip as train
    from ros_mm_perception.synthetic.scenes import SceneObject

    # in the left band of a 160x120 frame
    side = SceneObject("red", "circle", (0.0, 40.0, 20.0, 60.0))
    frame = (0.0, 0.0, 160.0, 120.0)
    assert train.crop_content(train.seen_area(frame, "letterbox"),
                              [side])[0] == (("red", "circle"),)
    assert train.crop_content(train.seen_area(frame, "center"), [side])[0] == ()
