"""The object memory: association and fusion, confirmation, negative evidence, queries.

A camera looks along a room's +x axis from slightly different places; objects stand 1.5-3 m away.
Detections carry Gaussian noise; depth images are a wall behind everything, or an occluder.
"""

import numpy as np
import pytest

from memory_helpers import camera_pose, frame, unit, view, wall
from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.memory.objects import GONE, MATCH_THRESHOLD, PRESENT, ObjectMemory
from ros_mm_perception.core.memory.views import HIDDEN, OUTSIDE, VISIBLE, visibility

OBJECTS = [
    ("red mug", (2.0, 0.3, 0.4)),
    ("blue box", (2.5, -0.4, 0.6)),
    ("green cup", (3.0, 0.0, 0.3)),
]
PHRASES = [p for p, _ in OBJECTS]
S = 1_000_000_000


def drive(
    memory, objects, n, rng, start=0, noise=0.02, depth=None, phrases=PHRASES, embeddings=None
):
    """``n`` frames, one per second, from poses that wander around the origin."""
    reports = []
    for i in range(start, start + n):
        pose = camera_pose((0.1 * np.sin(i), 0.1 * np.cos(i), 0.5), yaw=0.05 * np.sin(0.7 * i))
        result = frame(pose, objects, i * S, rng, noise, embeddings)
        reports.append(memory.update(result, view(pose, i * S, phrases, depth)))
    return reports


def test_noisy_views_of_three_objects_fuse_into_three_records(rng):
    memory = ObjectMemory("map")
    drive(memory, OBJECTS, 20, rng, noise=0.02)
    records = memory.objects()
    assert sorted(r.phrase for r in records) == sorted(PHRASES)
    for record in records:
        truth = dict(OBJECTS)[record.phrase]
        assert np.linalg.norm(record.mean - truth) < 0.02  # 2 cm noise per view, fused over 20
        assert record.observations == 20 and record.state == PRESENT
        assert (record.first_seen_ns, record.last_seen_ns) == (0, 19 * S)
        assert np.all(np.linalg.eigvalsh(record.covariance) < 0.02**2)
        assert record.confidence > 0.95


def test_a_one_frame_detection_is_never_reported(rng):
    memory = ObjectMemory("map")
    drive(memory, OBJECTS, 3, rng)
    pose = camera_pose()
    memory.update(
        frame(pose, [("ghost", (2.0, 0.7, 0.5))], 3 * S), view(pose, 3 * S, PHRASES + ["ghost"])
    )
    assert "ghost" not in [r.phrase for r in memory.objects()]
    assert "ghost" in [r.phrase for r in memory.objects(include_unconfirmed=True)]
    assert memory.query("ghost") == []
    # seen missing (the wall behind its place) it is dropped, as it never was reported
    drive(memory, OBJECTS, 4, rng, start=4, depth=wall(), phrases=PHRASES + ["ghost"])
    assert "ghost" not in [r.phrase for r in memory.objects(include_unconfirmed=True)]


def test_confirmation_needs_two_frames_not_two_boxes_in_one_frame():
    memory = ObjectMemory("map")
    pose = camera_pose()
    twice = [("red mug", (2.0, 0.3, 0.4)), ("red mug", (2.0, 0.31, 0.4))]
    memory.update(frame(pose, twice, 0), view(pose, 0, ["red mug"]))
    assert memory.objects() == [] and len(memory.objects(include_unconfirmed=True)) == 1
    memory.update(frame(pose, twice[:1], S), view(pose, S, ["red mug"]))
    assert [r.observations for r in memory.objects()] == [2]


def test_a_record_seen_only_cut_by_the_image_border_is_confirmed_once_wholly_in_view():
    memory = ObjectMemory("map")
    edge = [("red mug", (2.0, 0.95, 0.4))]  # 16 px from the left border: partly outside
    pose = camera_pose()
    for i in range(3):
        memory.update(frame(pose, edge, i * S), view(pose, i * S, ["red mug"]))
    assert memory.objects() == [] and len(memory.objects(include_unconfirmed=True)) == 1
    turned = camera_pose(yaw=0.45)
    memory.update(frame(turned, edge, 3 * S), view(turned, 3 * S, ["red mug"]))
    assert [r.observations for r in memory.objects()] == [4]


def test_one_frame_is_one_look_at_what_an_object_is(rng):
    """Three boxes of one frame on one object (the whole as "red mug", a lesser "red mug" box and
    a "red cup" box of a part): all three positions fuse, but each phrase gains its best score of
    the frame once, and the look (crop embedding) is the best box's."""
    whole, part = unit(rng.normal(size=16)), unit(rng.normal(size=16))
    mug = (2.0, 0.3, 0.4)
    boxes = [
        ("red cup", (2.0, 0.34, 0.4)),
        ("red mug", (2.0, 0.3, 0.4)),
        ("red mug", (2.0, 0.32, 0.4)),
    ]
    memory = ObjectMemory("map", PerceptionConfig(memory_embedding_threshold=-1.0))
    for i in range(3):
        pose = camera_pose((0.0, 0.05 * i, 0.5))
        result = frame(pose, boxes, i * S, embeddings=[part, whole, part])
        for det, score in zip(result.detections, (0.5, 0.9, 0.6)):
            det.score = score
        memory.update(result, view(pose, i * S, ["red mug", "red cup"]))
    (record,) = memory.objects()
    assert record.observations == 3
    assert record.phrases == pytest.approx({"red mug": 3 * 0.9, "red cup": 3 * 0.5})
    assert np.allclose(record.embedding, whole, atol=1e-6)
    assert record.mean[1] == pytest.approx(0.32, abs=0.005)  # between the three boxes
    assert np.linalg.norm(record.mean - mug) < 0.03


def test_objects_near_each_other_with_other_phrases_stay_apart(rng):
    close = [("red mug", (2.0, 0.0, 0.4)), ("blue mug", (2.0, 0.12, 0.4))]
    memory = ObjectMemory("map")
    drive(memory, close, 10, rng, noise=0.01, phrases=["red mug", "blue mug"])
    assert sorted(r.phrase for r in memory.objects()) == ["blue mug", "red mug"]


def test_another_phrase_joins_an_object_only_when_its_crop_looks_the_same(rng):
    memory = ObjectMemory("map")
    red = unit(rng.normal(size=16))
    drive(
        memory,
        [("red circle", (2.0, 0.0, 0.4))],
        3,
        rng,
        embeddings=[red],
        phrases=["red circle", "red ring"],
    )
    alike = unit(red + 0.1 * unit(rng.normal(size=16)))
    drive(
        memory,
        [("red ring", (2.0, 0.0, 0.4))],
        3,
        rng,
        start=3,
        embeddings=[alike],
        phrases=["red circle", "red ring"],
    )
    (record,) = memory.objects()
    assert set(record.phrases) == {"red circle", "red ring"} and record.observations == 6
    other = unit(rng.normal(size=16))
    drive(
        memory,
        [("blue star", (2.0, 0.0, 0.4))],
        2,
        rng,
        start=6,
        embeddings=[other],
        phrases=["red circle", "red ring", "blue star"],
    )
    assert sorted(sorted(r.phrases) for r in memory.objects()) == [
        ["blue star"],
        ["red circle", "red ring"],
    ]


def test_a_removed_object_is_marked_gone_after_the_configured_views_and_kept(rng):
    memory = ObjectMemory("map")
    drive(memory, OBJECTS, 5, rng, depth=wall())
    reports = drive(memory, OBJECTS[1:], 6, rng, start=5, depth=wall())
    mug = next(r for r in memory.objects(include_unconfirmed=True) if r.phrase == "red mug")
    gone_at = next(i for i, rep in enumerate(reports) if mug.id in rep.gone)
    assert gone_at + 1 == PerceptionConfig().memory_gone_views
    assert mug.state == GONE and mug.last_seen_ns == 4 * S and mug.confidence < 0.5
    assert [r.state for r in memory.objects() if r.phrase != "red mug"] == [PRESENT, PRESENT]
    assert memory.query("red mug") == []
    assert [m.record.id for m in memory.query("red mug", states=(GONE,))] == [mug.id]
    # it comes back: the record is present again
    drive(memory, OBJECTS, 1, rng, start=11, depth=wall())
    assert memory.get(mug.id).state == PRESENT


def test_a_hidden_object_is_never_marked_gone(rng):
    memory = ObjectMemory("map")
    drive(memory, OBJECTS, 5, rng, depth=wall())
    occluder = wall(1.0)  # something 1 m from the camera covers the whole view
    reports = drive(memory, [], 20, rng, start=5, depth=occluder)
    assert all(r.state == PRESENT for r in memory.objects())
    assert all(len(rep.hidden) == 3 and not rep.missed for rep in reports)


def test_without_depth_or_out_of_view_or_not_looked_for_nothing_is_concluded(rng):
    memory = ObjectMemory("map")
    drive(memory, OBJECTS, 5, rng, depth=wall())
    drive(memory, [], 10, rng, start=5, depth=None)  # no depth: cannot tell
    drive(memory, [], 10, rng, start=15, depth=wall(), phrases=["person"])  # not looked for
    away = camera_pose(yaw=np.pi)  # looking the other way
    for i in range(25, 35):
        memory.update(frame(away, [], i * S), view(away, i * S, PHRASES, wall()))
    assert all(r.state == PRESENT and r.misses == 0 for r in memory.objects())


def test_visibility_of_a_place():
    pose = camera_pose()
    size = np.array([0.1, 0.1, 0.1])
    place = np.array([2.0, 0.0, 0.5])
    v = view(pose, 0, [], wall())
    assert visibility(place, size, v, 0.005, 5.0) == VISIBLE
    assert visibility(place, size, view(pose, 0, [], wall(1.0)), 0.005, 5.0) == HIDDEN
    assert visibility(place, size, v, 0.005, 1.5) == OUTSIDE  # beyond the range
    assert visibility(np.array([-2.0, 0.0, 0.5]), size, v, 0.005, 5.0) == OUTSIDE  # behind
    assert visibility(np.array([2.0, 3.0, 0.5]), size, v, 0.005, 5.0) == OUTSIDE  # beside
    # the place's own surface (depth about its range) counts as seen, not hidden
    assert visibility(place, size, view(pose, 0, [], wall(2.0)), 0.005, 5.0) == VISIBLE


def test_a_moved_object_leaves_a_gone_record_and_gets_a_new_one(rng):
    memory = ObjectMemory("map")
    drive(memory, OBJECTS, 5, rng, depth=wall())
    moved = [("red mug", (2.2, -0.8, 0.4)), *OBJECTS[1:]]
    drive(memory, moved, 6, rng, start=5, depth=wall())
    mugs = sorted(
        (r.state, tuple(np.round(r.mean, 1))) for r in memory.objects() if r.phrase == "red mug"
    )
    assert mugs == [("gone", (2.0, 0.3, 0.4)), ("present", (2.2, -0.8, 0.4))]


def test_query_ranks_by_phrase_evidence_and_filters(rng):
    memory = ObjectMemory("map")
    two_mugs = OBJECTS + [("red mug", (1.5, -0.6, 0.4))]
    drive(memory, two_mugs, 4, rng)
    found = memory.query("Red  Mug")
    assert [m.record.phrase for m in found] == ["red mug", "red mug"] and found[0].match == 1.0
    near = memory.query("red mug", near=(1.5, -0.6, 0.4), radius=0.5)
    assert len(near) == 1 and near[0].distance_m < 0.05
    assert memory.query("red mug", max_results=1)[0].record.id in {m.record.id for m in found}
    assert memory.query("yellow duck") == []
    assert len(memory.query(None)) == 4
    assert memory.query("red mug", min_confidence=0.99) == []
    drive(memory, OBJECTS[:1], 2, rng, start=10)
    assert len(memory.query("red mug", max_age_s=5.0)) == 1  # the other mug was seen 8 s before


def test_query_by_embedding_finds_unseen_phrases_and_not_absent_ones(rng):
    names = ["red circle", "blue square", "green star"]
    vectors = {n: unit(rng.normal(size=32)) for n in names}
    vectors["red thing"] = unit(vectors["red circle"] + 0.1 * unit(rng.normal(size=32)))
    vectors["yellow cross"] = unit(rng.normal(size=32))
    vectors.update({p: unit(rng.normal(size=32)) for p in ("background", "an object")})

    def encode(phrases):
        return np.stack([vectors[p] for p in phrases])

    memory = ObjectMemory("map")
    objects = [(n, xyz) for n, (_, xyz) in zip(names[:2], OBJECTS)]
    crops = [unit(vectors[n] + 0.3 * unit(rng.normal(size=32))) for n in names[:2]]
    drive(memory, objects, 3, rng, embeddings=crops, phrases=names[:2])
    top = memory.query("red thing", encode_text=encode)
    assert top[0].record.phrase == "red circle" and top[0].match >= MATCH_THRESHOLD
    assert memory.query("yellow cross", encode_text=encode) == []
    assert memory.query("green star", encode_text=encode) == []
    assert memory.query("blue square", encode_text=encode)[0].match == 1.0


def test_an_object_named_by_several_phrases_is_found_by_the_one_its_crops_show(rng):
    """The blue triangle is called "blue circle" twice as often; the blue ring is also called
    "blue triangle" half the time. CLIP's view of the crops decides which is the blue triangle,
    even where every crop is nearer to "an object" than to any phrase (a small CLIP)."""
    names = ["blue triangle", "blue circle", "blue ring", "background"]
    vectors = {n: unit(rng.normal(size=64)) for n in names}
    vectors["an object"] = common = unit(rng.normal(size=64))

    def encode(phrases):
        return np.stack([vectors[p] for p in phrases])

    triangle, ring = (2.0, 0.3, 0.4), (2.5, -0.4, 0.6)
    crops = {triangle: unit(common + 0.6 * vectors["blue triangle"]),
             ring: unit(common + 0.6 * vectors["blue ring"])}
    memory = ObjectMemory("map")
    for i in range(6):
        pose = camera_pose((0.1 * np.sin(i), 0.1 * np.cos(i), 0.5))
        seen = [("blue circle", triangle), ("blue ring", ring), ("blue triangle", ring)]
        if i % 2:
            seen.append(("blue triangle", triangle))
        result = frame(pose, seen, i * S, embeddings=[crops[xyz] for _, xyz in seen])
        memory.update(result, view(pose, i * S, names[:3]))
    found = memory.query("blue triangle", encode_text=encode, logit_scale=20.0)
    assert np.linalg.norm(found[0].record.mean - triangle) < 0.05
    assert found[0].match >= MATCH_THRESHOLD
    assert memory.query("blue circle", encode_text=encode, logit_scale=20.0) == []
    # without CLIP, the phrase evidence share alone ranks
    shares = memory.query("blue triangle", min_match=0.0)
    assert np.linalg.norm(shares[0].record.mean - ring) < 0.05


@pytest.mark.parametrize(
    "kwargs",
    [
        {"phrase": ""},
        {"phrase": "x" * 201},
        {"phrase": "a", "near": (1, 2)},
        {"phrase": "a", "radius": 1.0},
        {"phrase": "a", "near": (0, 0, float("nan")), "radius": 1.0},
        {"phrase": "a", "min_confidence": 2.0},
        {"phrase": "a", "max_age_s": -1.0},
        {"phrase": "a", "states": ("lost",)},
        {"phrase": "a", "max_results": 0},
        {"phrase": "a", "min_match": float("nan")},
        {"phrase": "a", "min_match": -3.0},
        {"phrase": "a", "min_match": 1.5},
    ],
)
def test_bad_queries_are_one_line_errors(kwargs):
    with pytest.raises(UserError) as err:
        ObjectMemory("map").query(**kwargs)
    assert "\n" not in str(err.value)


def test_forget_some_or_all(rng):
    memory = ObjectMemory("map")
    drive(memory, OBJECTS, 3, rng)
    ids = [r.id for r in memory.objects()]
    revision = memory.revision
    assert memory.forget([ids[0], 999]) == [ids[0]]
    assert memory.revision == revision + 1
    assert [r.id for r in memory.objects()] == ids[1:]
    assert memory.forget() == ids[1:] and memory.objects() == []
    drive(memory, OBJECTS[:1], 2, rng, start=3)
    assert memory.objects()[0].id > max(ids)  # ids are not reused


def test_a_memory_needs_a_frame():
    with pytest.raises(UserError, match="memory_frame"):
        ObjectMemory("")


def test_with_a_text_encoder_clip_must_prefer_the_phrase_to_background(rng):
    vectors = {p: unit(rng.normal(size=16)) for p in ("red mug", "blue box", "background")}

    def encode(phrases):
        return np.stack([vectors[p] for p in phrases])

    memory = ObjectMemory("map", encode_text=encode)
    crops = [unit(vectors["red mug"] + 0.2 * vectors["background"]),    # looks like a mug
             unit(vectors["background"] + 0.2 * vectors["blue box"])]   # looks like the wall
    drive(memory, OBJECTS[:2], 3, rng, embeddings=crops, phrases=["red mug", "blue box"])
    assert [r.phrase for r in memory.objects()] == ["red mug"]
    assert len(memory.objects(include_unconfirmed=True)) == 2


def test_query_scores_kept_between_queries_follow_every_change(rng):
    names = [f"thing {i}" for i in range(6)]
    vectors = {n: unit(rng.normal(size=16)) for n in [*names, "background", "an object", "asked"]}

    def encode(phrases):
        return np.stack([vectors[p] for p in phrases])

    memory = ObjectMemory("map")
    places = [(n, (2.0 + 0.3 * i, 0.5 - 0.2 * i, 0.4)) for i, n in enumerate(names)]
    # the same objects seen with other crops (changed rows), then a new object (a new phrase)
    for step, count in enumerate((3, 3, 4)):
        crops = [unit(vectors[n] + 0.6 * unit(rng.normal(size=16))) for n in names[:count]]
        drive(memory, places[:count], 2, rng, start=10 * step, embeddings=crops, phrases=names)
        for asked in ("asked", names[0], names[2]):
            kept = memory.query(asked, encode_text=encode, min_match=0.0)
            memory._logit_cache = None                            # computed afresh
            fresh = memory.query(asked, encode_text=encode, min_match=0.0)
            assert [(m.record.id, round(m.match, 6)) for m in kept] == \
                [(m.record.id, round(m.match, 6)) for m in fresh]


def test_two_records_that_drift_onto_one_object_are_merged(rng):
    memory = ObjectMemory("map")
    drive(memory, [("red mug", (2.0, 0.0, 0.4))], 3, rng, noise=0.0)
    drive(memory, [("red mug", (2.0, 0.36, 0.4))], 2, rng, start=3, noise=0.0)
    first, second = memory.objects()
    assert np.linalg.norm(first.mean - second.mean) > 0.3            # two records, apart
    reports = drive(memory, [("red mug", (2.0, 0.18, 0.4))], 4, rng, start=5, noise=0.0)
    (record,) = memory.objects()
    assert record.id == first.id and record.observations == 9
    assert second.id in [i for rep in reports for i in rep.merged]
    assert 0.0 < record.mean[1] < 0.18


def test_detections_beyond_any_depth_camera_are_not_placed():
    memory = ObjectMemory("map")
    pose = camera_pose(yaw=0.3)
    far, near = pose.apply(np.array([0.0, 0.0, 1e30])), pose.apply(np.array([0.0, 0.0, 50.0]))
    for i in range(3):
        memory.update(
            frame(pose, [("red circle", far), ("blue square", near)], i * 10**8),
            view(pose, i * 10**8, ["red circle", "blue square"]),
        )
    (record,) = memory.objects(include_unconfirmed=True)
    assert record.phrase == "blue square" and np.allclose(record.mean, near, atol=1.0)
