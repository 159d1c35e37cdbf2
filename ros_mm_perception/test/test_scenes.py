"""The procedural scene generator: determinism, boxes that match the pixels, captions,
sequences."""

import cv2
import numpy as np
import pytest

from ros_mm_perception.core.perception.boxes import box_iou
from ros_mm_perception.synthetic.scenes import (BACKGROUNDS, COLOURS, SHAPES, VARIED_BACKGROUNDS,
                                                VIVID_HUE_GAP, all_combos, all_phrases, caption,
                                                render_background, render_scene, render_sequence,
                                                shape_mask, varied_rgb, vivid_colour)


def _hue_degrees(rgb) -> float:
    return 2.0 * float(cv2.cvtColor(np.uint8([[rgb]]), cv2.COLOR_RGB2HSV)[0, 0, 0])


def _hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def test_vocabulary_has_at_least_8_colours_and_6_shapes():
    assert len(COLOURS) >= 8 and len(SHAPES) >= 6
    phrases = all_phrases()
    assert len(phrases) == len(set(phrases)) == len(COLOURS) * len(SHAPES)
    assert "red circle" in phrases
    assert all_combos()[0] == (next(iter(COLOURS)), SHAPES[0])


def test_same_seed_same_scene_and_different_seed_different_scene():
    a = render_scene(7, n_objects=3, size=(96, 128))
    b = render_scene(7, n_objects=3, size=(96, 128))
    c = render_scene(8, n_objects=3, size=(96, 128))
    assert np.array_equal(a.image, b.image) and a.objects == b.objects
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (96, 128, 3) and a.image.dtype == np.uint8


@pytest.mark.parametrize("colour,shape",
                         [("red", "circle"), ("blue", "star"), ("yellow", "cross"),
                          ("pink", "ring")])
def test_box_bounds_the_object_pixels_and_they_have_its_colour(colour, shape):
    scene = render_scene(3, objects=[(colour, shape)], size=(120, 160), background="flat",
                         lighting=False, blur=False)
    (obj,) = scene.objects
    background = scene.image[0, 0].astype(int)  # objects never touch the corners at these sizes
    differs = np.abs(scene.image.astype(int) - background).max(axis=2) > 40
    ys, xs = np.nonzero(differs)
    pixel_box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert box_iou([obj.box], [pixel_box])[0, 0] > 0.9
    hue = _hue_degrees(np.median(scene.image[differs], axis=0).astype(np.uint8))
    assert _hue_distance(hue, _hue_degrees(COLOURS[colour])) < 15
    assert obj.phrase == f"{colour} {shape}" and scene.caption == caption([(colour, shape)])


def test_ring_has_a_hole_and_a_circle_does_not():
    ring = shape_mask("ring", (32, 32), 20, 0.0, (64, 64))
    circle = shape_mask("circle", (32, 32), 20, 0.0, (64, 64))
    assert ring[32, 32] == 0 and circle[32, 32] == 1
    assert 0.5 < ring.sum() / circle.sum() < 0.8


def test_every_shape_draws_a_distinct_mask():
    masks = [shape_mask(s, (32, 32), 24, 0.3, (64, 64)) > 0.5 for s in SHAPES]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert (masks[i] != masks[j]).sum() > 40, (SHAPES[i], SHAPES[j])


def test_multi_object_scene_has_distinct_objects_named_in_the_caption():
    scene = render_scene(np.random.default_rng(1), n_objects=4, size=(240, 320))
    assert len({o.phrase for o in scene.objects}) == 4
    assert [o.object_id for o in scene.objects] == [0, 1, 2, 3]
    for obj in scene.objects:
        assert obj.phrase in scene.caption
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240


def test_occluded_objects_stay_mostly_visible_and_no_occlusion_means_fully_visible():
    rng = np.random.default_rng(2)
    for _ in range(5):
        crowded = render_scene(rng, n_objects=4, size=(120, 120), size_range=(0.4, 0.5),
                               min_visible=0.7)
        assert all(o.visible_fraction >= 0.7 - 1e-6 for o in crowded.objects)
        apart = render_scene(rng, n_objects=3, size=(150, 150), size_range=(0.3, 0.4),
                             occlusion=False)
        assert all(o.visible_fraction > 0.999 for o in apart.objects)


def test_allowed_combos_are_respected():
    allowed = [("green", "square"), ("cyan", "triangle")]
    for seed in range(4):
        scene = render_scene(seed, n_objects=2, combos=allowed, size=(100, 100))
        assert {(o.colour, o.shape) for o in scene.objects} == set(allowed)


def test_backgrounds_differ_in_texture():
    rng = np.random.default_rng(0)
    spread = {k: float(render_background(rng, (64, 64), k).std(axis=(0, 1)).mean())
              for k in BACKGROUNDS}
    assert spread["flat"] < 1e-3
    assert spread["noise"] > 3 and spread["floor"] > 3 and spread["gradient"] > 0.5


def test_varied_backgrounds_are_textured_and_stay_in_range():
    rng = np.random.default_rng(1)
    for kind in VARIED_BACKGROUNDS[len(BACKGROUNDS):]:
        bg = render_background(rng, (64, 96), kind)
        assert bg.shape == (64, 96, 3) and np.isfinite(bg).all()
        assert float(bg.std(axis=(0, 1)).mean()) > 3, kind


def test_varied_scenes_keep_the_objects_boxes_and_are_deterministic():
    """Edges, shadows, clutter and JPEG change the look of a varied scene but not what it
    contains."""
    a = render_scene(5, n_objects=3, size=(120, 160), varied=True)
    b = render_scene(5, n_objects=3, size=(120, 160), varied=True)
    assert np.array_equal(a.image, b.image) and a.objects == b.objects
    assert a.background in VARIED_BACKGROUNDS
    # the object's pixels still span its box on a flat background with clutter
    for seed in range(6):
        scene = render_scene(seed, objects=[("blue", "square")], size=(120, 160),
                             background="flat", varied=True, lighting=False, blur=False)
        (obj,) = scene.objects
        x0, y0, x1, y1 = (int(round(v)) for v in obj.box)
        inside = scene.image[y0 + 2:y1 - 2, x0 + 2:x1 - 2].reshape(-1, 3).astype(int)
        assert (inside[:, 2] - inside[:, 0] > 40).mean() > 0.5  # mostly blue inside its box


def _saturation(rgb) -> int:
    return int(cv2.cvtColor(np.uint8([[np.round(rgb)]]), cv2.COLOR_RGB2HSV)[0, 0, 1])


def test_vivid_backgrounds_are_saturated_and_keep_away_from_the_objects_hues():
    rng = np.random.default_rng(3)
    for avoid in (["orange"], ["red", "blue", "green"], ["yellow", "cyan", "purple", "pink"]):
        for _ in range(30):
            rgb = vivid_colour(rng, avoid)
            assert _saturation(rgb) >= 75
            gap = min(_hue_distance(_hue_degrees(np.uint8(rgb)), _hue_degrees(COLOURS[c]))
                      for c in avoid)
            assert gap >= 2 * VIVID_HUE_GAP - 2, (avoid, rgb)  # OpenCV hue units are 2 degrees
    bg = render_background(rng, (32, 48), "floor", lambda r: vivid_colour(r, ["red"]))
    assert _saturation(bg.mean(axis=(0, 1))) > 60
    # Some varied scenes stand on a saturated ground, plain scenes never do.
    corner = [_saturation(render_scene(seed, objects=[("blue", "star")], size=(64, 96),
                                       size_range=(0.2, 0.3), background="flat", varied=varied,
                                       lighting=False, blur=False).image[1, 1])
              for varied in (False, True) for seed in range(40)]
    assert max(corner[:40]) < 75 and 4 <= sum(s >= 75 for s in corner[40:]) <= 25


def test_varied_shades_stay_nearer_their_colour_than_any_other():
    rng = np.random.default_rng(2)
    names = list(COLOURS)
    for colour in names:
        for _ in range(20):
            hue = _hue_degrees(np.uint8(varied_rgb(rng, colour)))
            nearest = min(names, key=lambda n: _hue_distance(hue, _hue_degrees(COLOURS[n])))
            assert nearest == colour, (colour, hue)


def test_bad_requests_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown object"):
        render_scene(0, objects=[("mauve", "circle")])
    with pytest.raises(ValueError, match="distinct objects"):
        render_scene(0, n_objects=3, combos=[("red", "circle")])
    with pytest.raises(ValueError, match="unknown background"):
        render_scene(0, background="sky")
    with pytest.raises(ValueError, match="too small"):
        render_scene(0, size=(4, 4))


def test_sequence_keeps_identities_and_moves_smoothly():
    frames = render_sequence(seed=5, n_frames=12, n_objects=3, size=(120, 160), speed=0.03)
    again = render_sequence(seed=5, n_frames=12, n_objects=3, size=(120, 160), speed=0.03)
    assert len(frames) == 12 and np.array_equal(frames[-1].image, again[-1].image)
    ids = [[(o.object_id, o.phrase) for o in f.objects] for f in frames]
    assert all(i == ids[0] for i in ids)

    def centres(f):
        return np.array([((o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2)
                         for o in f.objects])

    steps = [np.linalg.norm(centres(b) - centres(a), axis=1) for a, b in zip(frames, frames[1:])]
    moved = np.linalg.norm(centres(frames[-1]) - centres(frames[0]), axis=1)
    assert max(s.max() for s in steps) < 0.03 * 120 * 2 + 4  # visible-box jitter under occlusion
    assert (moved > 3).all()
