"""How well the object memory knows a rendered room (``ros-mm-perception eval-memory``).

Per style (:data:`~ros_mm_perception.synthetic.world3d.STYLES`), a room of 8 shapes at known places
(:func:`~ros_mm_perception.synthetic.world3d.build_world`) with a grey panel standing before one of
them, is driven through twice by a camera circling its middle (objects leave and re-enter view):

* **pass 1** builds the memory with the default pipeline settings (embedded OWL and CLIP, depth,
  the camera's pose as /tf would give it; the detector looks for the room's 8 phrases and 4 it
  does not hold). Reported: objects recorded exactly once, duplicates and false objects per true
  object, the median and 90th percentile of the position error (objects 1-3 m from the camera),
  and queries (``query_top1``: the object's record comes first with a match of at least
  :data:`~ros_mm_perception.core.memory.objects.MATCH_THRESHOLD`; ``query_top1_ranked``: it comes
  first whatever its match; absent phrases answered above the threshold). A missed object whose
  place holds a record of other phrases only (the detector named it wrongly) is listed in
  ``missed_but_recorded_as_other_phrases``. Breakdowns: ``recorded_once_any_phrase`` (exactly one
  record at the object's place, whatever its phrase: association alone),
  ``false_objects_at_an_object`` (false records at the place of an object in the room: named
  wrongly, not phantoms), ``position_errors_m`` per object, ``query_least_right_match`` (the
  smallest match of a right top-1 answer: the margin above the threshold) and
  ``never_wholly_in_view`` (objects in view in at least two frames but always cut by the image's
  border, whose box centres are then biased inwards) and ``position_error_median_wholly_seen_m``
  (the median over the other objects);
* **pass 2**, later: two objects are taken away, one is moved, and a second panel hides another;
  after the lap the robot stops before each removed object's place and looks at it from
  :data:`REVISIT_VIEWS` spots (the lap alone shows a place wholly in view once or never, and the
  goal is about views of the place). Reported: removed objects marked gone and after how many
  views of their place, the moved object recorded at its new place, and objects wrongly marked
  gone (hidden or still there).

A record belongs to an object when it holds the object's phrase and lies within
:data:`MATCH_RADIUS_M` of it. Recorded-once and query figures count the objects in view (at least
:data:`SEEN_PIXELS` pixels) in at least two frames of pass 1 (``objects_seen``): the others cannot
be recorded. False objects are counted per object in the room.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, List, Optional

import numpy as np

from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.memory.objects import GONE, MATCH_THRESHOLD, PRESENT, ObjectMemory
from ros_mm_perception.core.memory.text import embedding_model_id, labeler_text_encoder
from ros_mm_perception.core.memory.views import VISIBLE, CameraView, visibility
from ros_mm_perception.core.results import Frame, Intrinsics, Stamp
from ros_mm_perception.synthetic.scenes import COLOURS, SHAPES
from ros_mm_perception.synthetic.world3d import (
    STYLES,
    Panel,
    World,
    build_world,
    drive,
    look_at,
    render,
)

K = Intrinsics(300.0, 300.0, 159.5, 119.5)
HW = (240, 320)
SEEN_PIXELS = 50
"""An object is in view in a frame when at least this many pixels show it."""
FRAMES_PER_PASS = 96
MATCH_RADIUS_M = 0.3
ABSENT_DETECTED = 4
"""Phrases the detector looks for that the room does not hold."""
EVAL_SEED = 20261206
REVISIT_VIEWS = 6
"""Spots from which pass 2 looks at each removed object's place after its lap."""


def eval_config(**changes) -> PerceptionConfig:
    """The pipeline of the evaluation: the defaults with the embedded OWL and the memory on."""
    return PerceptionConfig(
        owl_model="embedded", enable_labels=False, memory_enabled=True, memory_frame="map"
    ).replace(**changes)


def _phrases(world: World, rng) -> tuple:
    held = [o.phrase for o in world.objects]
    others = [f"{c} {s}" for c in COLOURS for s in SHAPES if f"{c} {s}" not in held]
    chosen = [others[i] for i in rng.choice(len(others), 2 * ABSENT_DETECTED, replace=False)]
    return held, chosen[:ABSENT_DETECTED], chosen[ABSENT_DETECTED:]


def _records_of(memory: ObjectMemory, obj, states=(PRESENT,)) -> list:
    return [
        r
        for r in memory.objects()
        if r.state in states
        and obj.phrase in r.phrases
        and _near(r, obj)
    ]


def _near(record, obj) -> bool:
    return bool(np.linalg.norm(record.mean - np.asarray(obj.position)) <= MATCH_RADIUS_M)


def _hiding_panel(world: World, obj, centre) -> Panel:
    """A panel 1 m before ``obj`` on the line to the room's middle, wide enough to hide it."""
    pos = np.asarray(obj.position)
    towards = centre - pos[:2]
    towards /= np.linalg.norm(towards)
    at = pos[:2] + 0.8 * towards
    return Panel(
        (float(at[0]), float(at[1]), float(pos[2])),
        1.6,
        1.4,
        float(np.arctan2(towards[1], towards[0])),
    )


def evaluate_style(
    pipeline,
    style: str,
    seed: int = EVAL_SEED,
    frames: int = FRAMES_PER_PASS,
    progress: Callable[[str], None] = lambda _m: None,
    clip_check: bool = False,
) -> Dict:
    """The figures of one style (module docstring); ``pipeline`` has the memory settings on.
    With ``clip_check``, a record is confirmed only where CLIP prefers its phrase to "background"
    on its crops (:meth:`ObjectMemory._agrees`)."""
    rng = np.random.default_rng(seed)
    world = build_world(seed, 8, style)
    centre = np.array(world.size[:2]) / 2
    held, absent_detected, absent_asked = _phrases(world, rng)
    config = pipeline.config.replace(detect_phrases=held + absent_detected)
    pipeline.update_config(config)
    pipeline.reset(restart_ids=True)
    encode, scale = labeler_text_encoder(pipeline.labeler)
    memory = ObjectMemory(
        "map",
        config,
        embedding_model=embedding_model_id(config),
        encode_text=encode if clip_check else None,
        logit_scale=scale,
    )
    # pass 1: a panel stands before object 0 the whole time (it is seen from the side only)
    world.panels = [_hiding_panel(world, world.objects[0], centre)]
    world.panels[0] = replace(world.panels[0], width=0.5)
    poses = drive(world, frames)
    distances: Dict[int, List[float]] = {i: [] for i in range(len(world.objects))}
    seen_in = {i: 0 for i in range(len(world.objects))}
    wholly_in = {i: 0 for i in range(len(world.objects))}

    def run_pass(pass_no: int, poses, removed=(), watch=()):
        views_until_gone = {i: None for i in watch}
        views = {i: 0 for i in watch}
        for f, pose in enumerate(poses):
            stamp = (pass_no * 1000 + f) * 100_000_000
            image, depth, index = render(
                world, pose, K, HW, np.random.default_rng(seed + 17 * f + pass_no), removed
            )
            frame = Frame(
                image,
                camera="cam",
                frame_id="cam_optical",
                stamp=Stamp.from_ns(stamp),
                depth=depth,
                intrinsics=K,
            )
            result = pipeline.process(frame)
            for i in set(np.unique(index)) - {-1}:
                if pass_no == 1 and (index == i).sum() >= SEEN_PIXELS:
                    seen_in[int(i)] += 1
                    wholly_in[int(i)] += not _touches_border(index == i)
                distances[int(i)].append(
                    float(np.linalg.norm(np.asarray(world.objects[i].position) - pose.translation))
                )
            view = CameraView(pose, K, HW, stamp, config.detect_phrases, depth)
            for i in watch:
                record = watch[i]
                if (
                    views_until_gone[i] is None
                    and visibility(
                        record.mean,
                        record.size,
                        view,
                        config.memory_depth_noise,
                        config.memory_max_range_m,
                    )
                    == VISIBLE
                ):
                    views[i] += 1
            report = memory.update(result, view)
            for i in watch:
                if watch[i].id in report.gone and views_until_gone[i] is None:
                    views_until_gone[i] = views[i]
            progress(f"{style} pass {pass_no} frame {f + 1}/{len(poses)}")
        return views_until_gone, views

    run_pass(1, poses)
    figures = {"frames_per_pass": len(poses)}
    seen = [obj for i, obj in enumerate(world.objects) if seen_in[i] >= 2]
    figures.update(_pass_one(memory, world, seen, absent_detected, absent_asked, encode, scale))
    cut = [o.phrase for i, o in enumerate(world.objects) if seen_in[i] >= 2 and not wholly_in[i]]
    whole = [e for p, e in figures["position_errors_m"].items() if p not in cut]
    figures["never_wholly_in_view"] = cut
    figures["position_error_median_wholly_seen_m"] = (
        round(float(np.median(whole)), 4) if whole else None
    )
    # pass 2: objects 1 and 2 are gone, object 3 moved 1 m along its wall, a panel hides object 4
    removed, moved_index, hidden_index = (1, 2), 3, 4
    watch = {}
    for i in removed:
        found = _records_of(memory, world.objects[i])
        if found:
            watch[i] = found[0]
    old = world.objects[moved_index]
    along = np.array([-np.sin(old.yaw), np.cos(old.yaw), 0.0])
    new_position = np.asarray(old.position) + 0.8 * along
    new_position[:2] = np.clip(new_position[:2], 0.4, np.array(world.size[:2]) - 0.4)
    world.objects[moved_index] = replace(old, position=tuple(float(v) for v in new_position))
    world.panels.append(_hiding_panel(world, world.objects[hidden_index], centre))
    hidden_before = _records_of(memory, world.objects[hidden_index])
    revisits = [
        pose
        for i in removed
        for pose in look_at(world, world.objects[i].position, REVISIT_VIEWS)
    ]
    views, seen = run_pass(2, poses + revisits, removed, watch)
    kept = [i for i in range(len(world.objects)) if i not in removed and i != moved_index]
    wrongly_gone = [
        world.objects[i].phrase
        for i in kept
        if _records_of(memory, world.objects[i], (GONE,))
        and not _records_of(memory, world.objects[i])
    ]
    figures.update(
        {
            "removed": len(removed),
            "removed_recorded": len(watch),
            "revisit_views": REVISIT_VIEWS,
            "removed_marked_gone": sum(v is not None for v in views.values()),
            "views_until_gone": sorted(v for v in views.values() if v is not None),
            "removed_views_not_gone": sorted(seen[i] for i, v in views.items() if v is None),
            "removed_misses_not_gone": sorted(
                watch[i].misses for i, v in views.items() if v is None
            ),
            "moved_recorded_at_new_place": bool(_records_of(memory, world.objects[moved_index])),
            "moved_old_record_gone": bool(_records_of(memory, old, (GONE,))),
            "hidden_object_recorded": bool(hidden_before),
            "hidden_object_marked_gone": bool(hidden_before) and hidden_before[0].state == GONE,
            "wrongly_gone": wrongly_gone,
            "camera_distance_m": [
                round(min(min(d) for d in distances.values() if d), 2),
                round(max(max(d) for d in distances.values() if d), 2),
            ],
        }
    )
    return figures


def _touches_border(pixels: np.ndarray) -> bool:
    """Whether an object's pixels reach the image's border (it is cut by it)."""
    return bool(pixels[0].any() or pixels[-1].any() or pixels[:, 0].any() or pixels[:, -1].any())


def _pass_one(memory, world, seen, absent_detected, absent_asked, encode, scale) -> Dict:
    """Lap 1's figures; ``seen`` are the objects in view in at least two frames (the others cannot
    be recorded: they count neither as missed nor in the query figure)."""
    records = memory.objects()
    counts, errors, matched, placed = [], {}, set(), []
    for obj in world.objects:
        mine = _records_of(memory, obj)
        if obj not in seen:
            matched.update(r.id for r in mine)
            continue
        counts.append(len(mine))
        placed.append(sum(_near(r, obj) for r in records))
        matched.update(r.id for r in mine)
        if mine:
            best = min(mine, key=lambda r: np.linalg.norm(r.mean - np.asarray(obj.position)))
            errors[obj.phrase] = float(np.linalg.norm(best.mean - np.asarray(obj.position)))
    false = [r for r in records if r.id not in matched]
    misnamed = [r for r in false if any(_near(r, obj) for obj in world.objects)]
    right = ranked = 0
    right_matches = []
    for obj in seen:
        mine = {r.id for r in _records_of(memory, obj)}
        found = memory.query(
            obj.phrase, encode_text=encode, logit_scale=scale, max_results=1, min_match=0.0
        )
        ranked += bool(found) and found[0].record.id in mine
        if bool(found) and found[0].record.id in mine and found[0].match >= MATCH_THRESHOLD:
            right += 1
            right_matches.append(found[0].match)
    elsewhere = [
        obj.phrase
        for obj in seen
        if not _records_of(memory, obj) and any(_near(r, obj) for r in records)
    ]
    answered_absent = [
        p
        for p in absent_detected + absent_asked
        if memory.query(p, encode_text=encode, logit_scale=scale)
    ]
    n = len(seen)
    return {
        "objects": len(world.objects),
        "objects_seen": n,
        "recorded_once": round(sum(c == 1 for c in counts) / max(n, 1), 3),
        "recorded_once_any_phrase": round(sum(c == 1 for c in placed) / max(n, 1), 3),
        "missed": sum(c == 0 for c in counts),
        "missed_but_recorded_as_other_phrases": elsewhere,
        "duplicates": sum(max(c - 1, 0) for c in counts),
        "false_objects_per_object": round(len(false) / len(world.objects), 3),
        "false_objects": sorted(r.phrase for r in false),
        "false_objects_at_an_object": sorted(r.phrase for r in misnamed),
        "position_error_median_m": (
            round(float(np.median(list(errors.values()))), 4) if errors else None
        ),
        "position_error_p90_m": (
            round(float(np.percentile(list(errors.values()), 90)), 4) if errors else None
        ),
        "position_errors_m": {p: round(e, 4) for p, e in sorted(errors.items())},
        "query_top1": round(right / max(n, 1), 3),
        "query_top1_ranked": round(ranked / max(n, 1), 3),
        "query_least_right_match": round(min(right_matches), 3) if right_matches else None,
        "absent_phrases_asked": len(absent_detected) + len(absent_asked),
        "absent_phrases_answered": answered_absent,
        "match_threshold": MATCH_THRESHOLD,
    }


def evaluate(
    pipeline,
    styles=STYLES,
    seed: int = EVAL_SEED,
    frames: int = FRAMES_PER_PASS,
    progress: Optional[Callable[[str], None]] = None,
    clip_check: bool = False,
) -> Dict:
    """``{style: figures}`` (see :func:`evaluate_style`); ``clip_check`` gives the memory the
    running CLIP's text encoder, so records are confirmed only where CLIP agrees."""
    return {
        style: evaluate_style(
            pipeline, style, seed, frames, progress or (lambda _m: None), clip_check
        )
        for style in styles
    }
