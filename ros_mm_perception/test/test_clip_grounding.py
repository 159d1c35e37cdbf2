"""CLIP-only grounding plumbing: proposals, the score rule, thresholding, one box per object, one
batch per frame."""

import numpy as np
import pytest

from ros_mm_perception.core.perception.boxes import box_iou
from ros_mm_perception.core.perception.clip_grounding import (NULL_PROMPTS, Proposals,
                                                              context_squares, ground_with_clip,
                                                              one_box_per_object, phrase_scores,
                                                              propose_regions, sliding_windows)
from ros_mm_perception.core.errors import ImageFormatError
from ros_mm_perception.core.perception.labeler import ClipLabeler
from ros_mm_perception.synthetic.scenes import render_scene


class ScriptedLabeler:
    """Stands in for ClipLabeler: logits come from a function of (crop box, phrase); calls are
    recorded."""

    def __init__(self, logit):
        self.logit = logit
        self.calls = []

    def region_logits(self, image, boxes, phrases, margin=0.0):
        self.calls.append((len(boxes), list(phrases)))
        return np.array([[self.logit(b, p) for p in phrases] for b in boxes], dtype=np.float32)


@pytest.fixture(scope="module")
def labeler(tiny_clip):
    return ClipLabeler(tiny_clip)


@pytest.fixture(scope="module")
def frame():
    return render_scene(11, n_objects=3, size=(96, 128)).image


def test_detections_are_valid_sorted_and_above_threshold(labeler, frame):
    dets = ground_with_clip(labeler, frame, ["red circle", "blue star"], score_threshold=0.0)
    assert dets, "threshold 0 keeps at least the best region of each phrase"
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    for d in dets:
        x0, y0, x1, y1 = d.box
        assert d.source == "clip" and d.phrase in ("red circle", "blue star")
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 96
        assert 0.0 <= d.score <= 1.0
    high = ground_with_clip(labeler, frame, ["red circle", "blue star"], score_threshold=0.4)
    assert all(d.score >= 0.4 for d in high) and len(high) <= len(dets)


def test_no_two_boxes_of_a_phrase_overlap(labeler, frame):
    dets = ground_with_clip(labeler, frame, ["green ring", "red circle"], score_threshold=0.0)
    for phrase in ("green ring", "red circle"):
        boxes = [d.box for d in dets if d.phrase == phrase]
        assert boxes and (box_iou(boxes, boxes) - np.eye(len(boxes))).max() == 0


def test_max_detections_and_empty_phrases(labeler, frame):
    assert len(ground_with_clip(labeler, frame, ["a", "b"], score_threshold=0.0,
                                max_detections=3)) == 3
    before = labeler.text_encodes
    assert ground_with_clip(labeler, frame, []) == []
    assert labeler.text_encodes == before


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 7, 3), (7, 300, 3)])
def test_tiny_and_thin_images_work(labeler, shape):
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    dets = ground_with_clip(labeler, image, ["red circle"], score_threshold=0.0)
    assert dets
    for d in dets:
        assert 0 <= d.box[0] < d.box[2] <= shape[1] and 0 <= d.box[1] < d.box[3] <= shape[0]


def test_bad_input_is_rejected(labeler, frame):
    with pytest.raises(ImageFormatError):
        ground_with_clip(labeler, frame.astype(np.float32), ["red circle"])
    with pytest.raises(ValueError, match="duplicates"):
        ground_with_clip(labeler, frame, ["red circle", "red circle"])


def test_all_regions_are_scored_in_one_batch_with_the_null_prompts(frame):
    spy = ScriptedLabeler(lambda box, phrase: 0.0)
    ground_with_clip(spy, frame, ["red circle", "background"])
    assert len(spy.calls) == 1
    n, phrases = spy.calls[0]
    assert n == len(propose_regions(frame).boxes)
    assert phrases[:2] == ["red circle", "background"] and set(NULL_PROMPTS) <= set(phrases)
    assert len(phrases) == len(set(phrases))


def test_a_phrase_losing_to_the_null_prompts_scores_low_everywhere(frame):
    absent = ScriptedLabeler(lambda box, phrase: 5.0 if phrase == "an object" else 0.0)
    scores = phrase_scores(absent, frame, propose_regions(frame).boxes, ["red circle"])
    assert scores.max() < 0.01
    assert ground_with_clip(absent, frame, ["red circle"]) == []


def test_the_region_a_phrase_fits_best_wins_and_keeps_its_box(frame, monkeypatch):
    import ros_mm_perception.core.perception.clip_grounding as grounding

    target = (40.0, 30.0, 70.0, 60.0)
    square = context_squares(np.array([target]), *frame.shape[:2])[0]
    found = propose_regions(frame)
    proposals = Proposals(np.concatenate([[target], found.boxes]),
                          np.concatenate([[True], found.fitted]))
    monkeypatch.setattr(grounding, "propose_regions", lambda image: proposals)

    def logit(box, phrase):
        return 10.0 * float(box_iou([box], [square])[0, 0]) if phrase == "red circle" else 2.0

    dets = ground_with_clip(ScriptedLabeler(logit), frame, ["red circle"])
    assert dets[0].box == target and dets[0].score > 0.9
    overlap = box_iou([d.box for d in dets], [target])[:, 0]
    assert (overlap[1:] == 0).all()


def test_overlapping_boxes_of_a_phrase_publish_one_fitted_box_and_a_separate_one_stays(
    frame, monkeypatch
):
    import ros_mm_perception.core.perception.clip_grounding as grounding

    tight, loose, part, neighbour = ((40.0, 30.0, 60.0, 50.0), (20.0, 10.0, 90.0, 80.0),
                                     (45.0, 35.0, 55.0, 45.0), (95.0, 40.0, 120.0, 70.0))
    boxes = np.array([loose, tight, part, neighbour])
    # NMS keeps both
    assert box_iou([tight], [loose])[0, 0] < 0.5 and box_iou([tight], [part])[0, 0] < 0.5
    monkeypatch.setattr(grounding, "propose_regions",
                        lambda image: Proposals(boxes, np.array([False, True, True, True])))
    squares = context_squares(boxes, *frame.shape[:2])
    context_logit = {tuple(sq): s for sq, s in zip(squares.tolist(), (6.0, 4.0, 5.0, 3.0))}
    # the part's own pixels show less of the object
    own_logit = {tight: 5.0, part: 2.0, neighbour: 4.0}

    def logit(box, phrase):
        key = tuple(float(v) for v in box)
        return (context_logit.get(key) or own_logit[key]) if phrase == "red circle" else 0.0

    spy = ScriptedLabeler(logit)
    dets = ground_with_clip(spy, frame, ["red circle"], score_threshold=0.0)
    # The loose window scores best, but the group publishes the fitted box whose own pixels score
    # best: the tight box over the part, whose context crop scored higher; the neighbour overlaps
    # none of them and stays. The own-pixel scores are one second batch of the fitted boxes.
    assert [d.box for d in dets] == [tight, neighbour]
    assert [n for n, _ in spy.calls] == [4, 3]


def test_one_box_per_object_prefers_fitted_boxes_and_falls_back_to_windows():
    boxes = np.array([[0, 0, 10, 10], [2, 2, 9, 9], [20, 20, 30, 30], [40, 40, 50, 50]],
                     dtype=float)
    fitted = np.array([False, True, False, False])
    scores = np.array([0.9, 0.6, 0.7, 0.4])
    assert one_box_per_object(boxes, fitted, scores, 0.5) == [1, 2]
    assert one_box_per_object(boxes, fitted, scores, 0.0) == [1, 2, 3]
    assert one_box_per_object(boxes, np.zeros(4, bool), scores, 0.5) == [0, 2]
    both_fitted = np.array([True, True, False, False])
    assert one_box_per_object(boxes, both_fitted, scores, 0.5) == [0, 2]
    assert one_box_per_object(boxes, both_fitted, scores, 0.5,
                              np.array([0.1, 0.8, 0.0, 0.0])) == [1, 2]


def test_windows_cover_the_image_and_fitted_boxes_hug_an_object():
    windows = sliding_windows(90, 160)
    covered = np.zeros((90, 160), bool)
    for x0, y0, x1, y1 in windows.astype(int):
        covered[y0:y1 + 1, x0:x1 + 1] = True
    assert covered.all()
    assert (np.abs((windows[:, 2] - windows[:, 0]) - (windows[:, 3] - windows[:, 1])) < 1e-9).all()
    scene = render_scene(4, objects=[("blue", "triangle")], size=(120, 160), background="noise",
                         size_range=(0.3, 0.3))
    proposals, fitted = propose_regions(scene.image)
    assert box_iou([scene.objects[0].box], proposals[fitted]).max() > 0.8
    assert box_iou(proposals, proposals)[np.triu_indices(len(proposals), 1)].max() <= 0.9
    # fitted boxes first
    assert fitted.any() and not fitted.all() and (np.diff(fitted.astype(int)) <= 0).all()


def test_context_squares_are_square_centred_and_inside():
    sq = context_squares(np.array([[10, 10, 30, 20], [0, 0, 5, 50], [90, 40, 100, 60]]), 60, 100,
                         margin=0.1)
    sides = sq[:, 2:] - sq[:, :2]
    assert np.allclose(sides[:, 0], sides[:, 1])
    assert np.allclose(sides[:, 0], [24, 60, 24])
    assert (sq[:, :2] >= 0).all() and (sq[:, 2] <= 100).all() and (sq[:, 3] <= 60).all()
    assert np.allclose((sq[0, :2] + sq[0, 2:]) / 2, (20, 15))
