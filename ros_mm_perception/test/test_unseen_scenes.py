"""The unseen-style renderer: the same world and ground truth, drawn in ways training never saw."""

import sys

import numpy as np
import pytest

from ros_mm_perception.synthetic.evaluation import centre_share
from ros_mm_perception.synthetic.scenes import (TRAINING_PHOTOS, all_phrases, photo,
                                                photo_background, render_scene)
from ros_mm_perception.synthetic.unseen import (UNSEEN_BACKGROUNDS, UNSEEN_PHOTOS,
                                                render_unseen_scene, render_unseen_sequence)


@pytest.mark.parametrize("background", UNSEEN_BACKGROUNDS)
def test_scenes_are_repeatable_and_name_world_objects(background):
    a = render_unseen_scene(7, n_objects=3, size=(120, 160), background=background)
    b = render_unseen_scene(7, n_objects=3, size=(120, 160), background=background)
    assert (
        a.image.dtype == np.uint8
        and a.image.shape == (120, 160, 3)
        and np.array_equal(a.image, b.image)
    )
    assert a.background == background and len(a.objects) == 3
    for obj in a.objects:
        assert obj.phrase in all_phrases()
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120 and obj.visible_fraction >= 0.6


def test_the_box_is_the_object_not_its_shadow_or_outline_band():
    scene = render_unseen_scene(3, objects=[("red", "square")], size=(120, 160),
                                background="checker", distractors=0, jpeg=False,
                                size_range=(0.4, 0.4))
    x0, y0, x1, y1 = (int(v) for v in scene.objects[0].box)
    assert 40 <= x1 - x0 <= 56 and 40 <= y1 - y0 <= 56  # diameter 48 px, turned up to 30 degrees
    inside = scene.image[y0 + 8:y1 - 8, x0 + 8:x1 - 8].reshape(-1, 3).astype(int)
    assert np.median(inside[:, 0] - inside[:, 1]) > 60  # red dominates inside the box


def test_side_band_objects_lie_mostly_outside_the_centre_square():
    rng = np.random.default_rng(0)
    for _ in range(10):
        scene = render_unseen_scene(rng, size=(240, 320), size_range=(0.1, 0.2), side_band=True)
        # centred in a band: at most half inside
        assert centre_share(scene.objects[0].box, 240, 320) <= 0.5


def test_sequences_move_the_same_objects_smoothly():
    frames = render_unseen_sequence(2, 6, n_objects=2, size=(96, 128))
    assert [o.phrase for o in frames[0].objects] == [o.phrase for o in frames[-1].objects]
    for a, b in zip(frames, frames[1:]):
        for oa, ob in zip(a.objects, b.objects):
            assert oa.object_id == ob.object_id
            if oa.visible_fraction > 0.9 and ob.visible_fraction > 0.9:
                assert abs(oa.box[0] - ob.box[0]) <= 6 and abs(oa.box[1] - ob.box[1]) <= 6


def test_photographs_of_training_and_of_the_unseen_style_are_disjoint_and_load():
    assert not set(TRAINING_PHOTOS) & set(UNSEEN_PHOTOS)
    for name in TRAINING_PHOTOS + UNSEEN_PHOTOS:
        image = photo(name)
        assert (
            image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and min(image.shape[:2]) >= 300
        )
    with pytest.raises(ValueError, match="unknown photo"):
        photo("sunset")


def test_a_photo_background_is_a_crop_of_the_picture_at_the_frame_size():
    rng = np.random.default_rng(4)
    for hw in ((48, 64), (90, 60), (480, 640)):
        bg = photo_background(rng, hw, ["coffee"])
        assert (
            bg.shape == (*hw, 3) and bg.dtype == np.float32 and 0 <= bg.min() and bg.max() <= 255
        )
        assert bg.std() > 10  # a picture, not a flat fill
    # Training's varied scenes stand on a photograph now and then; plain scenes never do.
    kinds = [render_scene(seed, size=(48, 64), size_range=(0.3, 0.4), varied=varied).background
             for varied in (False, True) for seed in range(30)]
    assert "photo" not in kinds[:30] and 2 <= kinds[30:].count("photo") <= 14


def test_without_scikit_image_the_unseen_style_names_the_photos_extra(monkeypatch, capsys):
    from ros_mm_perception import cli
    from ros_mm_perception.core.errors import UserError

    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage fails
    photo.cache_clear()
    try:
        with pytest.raises(UserError, match=r"ros_mm_perception\[photos\]"):
            render_unseen_scene(0, size=(48, 64), background="wood")
        with pytest.raises(UserError, match=r"ros_mm_perception\[photos\]"):
            photo("coffee")
        render_scene(0, size=(48, 64))  # the training style without photographs needs none
        for command in (["eval-grounding", "--sets", "unseen"], ["eval-embedded", "--n", "1"]):
            assert cli.main([*command, "--scenes", "1"]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "ros_mm_perception[photos]" in err[0]
    finally:
        photo.cache_clear()
