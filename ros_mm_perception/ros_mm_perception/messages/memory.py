"""The object memory as ROS messages: ``objects``, ``object_markers`` and the two services.

Written against an injected ``types`` namespace as :mod:`.convert` is (rclpy classes in the node,
rosbags classes offline and in tests). ``objects`` is a ``vision_msgs/Detection3DArray`` in the
memory frame: ``id`` the object id, ``results[0].hypothesis.class_id`` its best phrase, ``score``
its confidence, ``results[0].pose`` its position with the covariance, ``bbox`` its position and
size.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence

import numpy as np

from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.imaging.drawing import phrase_colour
from ros_mm_perception.core.memory.objects import GONE, PRESENT, Match, ObjectRecord
from ros_mm_perception.core.results import Stamp
from ros_mm_perception.messages.convert import MARKER_MIN_SIZE, _marker, _pose, header

MAX_FIND_PHRASES = 16
MAX_FIND_RESULTS = 1000
DEFAULT_FIND_RESULTS = 10


def pose_covariance(record: ObjectRecord) -> np.ndarray:
    """The 6x6 row-major covariance of ``PoseWithCovariance``: the position block, no rotation."""
    full = np.zeros((6, 6))
    full[:3, :3] = record.covariance
    return full.ravel()


def _time(types, ns: int):
    stamp = Stamp.from_ns(ns)
    return types.Time(sec=int(stamp.sec), nanosec=int(stamp.nanosec))


def object_3d(types, record: ObjectRecord, msg_header):
    """One remembered object as a ``vision_msgs/Detection3D``."""
    size = [float(v) for v in record.size]
    hypothesis = types.ObjectHypothesisWithPose(
        hypothesis=types.ObjectHypothesis(class_id=record.phrase, score=float(record.confidence)),
        pose=types.PoseWithCovariance(
            pose=_pose(types, record.mean), covariance=pose_covariance(record)
        ),
    )
    return types.Detection3D(
        header=msg_header,
        results=[hypothesis],
        bbox=types.BoundingBox3D(
            center=_pose(types, record.mean), size=types.Vector3(x=size[0], y=size[1], z=size[2])
        ),
        id=str(record.id),
    )


def objects_array(types, records: Iterable[ObjectRecord], frame: str, stamp: Stamp):
    """The ``objects`` topic: every record given (the present ones, as the node publishes)."""
    msg_header = header(types, frame, stamp)
    return types.Detection3DArray(
        header=msg_header, detections=[object_3d(types, r, msg_header) for r in records]
    )


def object_markers(types, records: Sequence[ObjectRecord], frame: str, stamp: Stamp, now_ns: int):
    """``object_markers``: a DELETEALL, then per object a cube (faded when gone) and its phrase
    with the time since it was last seen, above it (the memory frame's z is up)."""
    M = types.Marker
    msg_header = header(types, frame, stamp)
    markers = [
        _marker(types, msg_header, ns="objects", marker_id=0, kind=M.CUBE, action=M.DELETEALL)
    ]
    for record in records:
        size = [max(float(s), MARKER_MIN_SIZE) for s in record.size]
        rgb = phrase_colour(record.phrase)
        if record.state == GONE:
            rgb = tuple(0.5 + 0.5 * c for c in rgb)
        age = max(0.0, (now_ns - record.last_seen_ns) / 1e9)
        text = f"{record.phrase} ({record.state}, seen {age:.0f} s ago)"
        above = np.asarray(record.mean, np.float64) + [0.0, 0.0, size[2] / 2 + 0.08]
        markers.append(
            _marker(
                types,
                msg_header,
                ns="objects",
                marker_id=2 * record.id - 1,
                kind=M.CUBE,
                action=M.ADD,
                xyz=record.mean,
                scale=size,
                rgb=rgb,
            )
        )
        markers.append(
            _marker(
                types,
                msg_header,
                ns="objects",
                marker_id=2 * record.id,
                kind=M.TEXT_VIEW_FACING,
                action=M.ADD,
                xyz=above,
                scale=(0.0, 0.0, 0.08),
                rgb=rgb,
                text=text,
            )
        )
    return types.MarkerArray(markers=markers)


def remembered_object(types, match: Match):
    """A ``ros_mm_perception_interfaces/RememberedObject`` (``types.RememberedObject``)."""
    r = match.record
    size = [float(v) for v in r.size]
    return types.RememberedObject(
        id=int(r.id),
        phrase=r.phrase,
        match=float(match.match),
        pose=types.PoseWithCovariance(pose=_pose(types, r.mean), covariance=pose_covariance(r)),
        size=types.Vector3(x=size[0], y=size[1], z=size[2]),
        first_seen=_time(types, r.first_seen_ns),
        last_seen=_time(types, r.last_seen_ns),
        observations=int(r.observations),
        confidence=float(r.confidence),
        state=r.state,
    )


def find_query(request) -> dict:
    """The :meth:`~ros_mm_perception.core.memory.objects.ObjectMemory.query` filters of a
    ``FindObjects`` request, bounded and checked; a :class:`UserError` names a bad field."""
    phrases = [str(p) for p in request.phrases]
    if len(phrases) > MAX_FIND_PHRASES:
        raise UserError(
            f"phrases has {len(phrases)} entries; at most {MAX_FIND_PHRASES} are allowed"
        )
    max_results = int(request.max_results) or DEFAULT_FIND_RESULTS
    if max_results > MAX_FIND_RESULTS:
        raise UserError(f"max_results={max_results} is above {MAX_FIND_RESULTS}")
    numbers = {
        "min_confidence": float(request.min_confidence),
        "max_age_s": float(request.max_age_s),
        "radius": float(request.radius),
    }
    for name, value in numbers.items():
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{name}={value} must be a finite number >= 0")
    point = (float(request.point.x), float(request.point.y), float(request.point.z))
    return {
        "phrases": phrases,
        "max_results": max_results,
        "min_confidence": numbers["min_confidence"],
        "max_age_s": numbers["max_age_s"] or None,
        "near": point if numbers["radius"] > 0 else None,
        "radius": numbers["radius"] or None,
        "states": (PRESENT, GONE) if request.include_gone else (PRESENT,),
    }


def answer_find(memory, query: dict, encode_text=None, logit_scale: float = 100.0) -> List[Match]:
    """Every phrase of ``query`` asked on its own, the answers merged (best match per object), best
    first, at most ``max_results``."""
    filters = {k: v for k, v in query.items() if k != "phrases"}
    best = {}
    for phrase in query["phrases"] or [None]:
        for m in memory.query(phrase, encode_text=encode_text, logit_scale=logit_scale, **filters):
            if m.record.id not in best or m.match > best[m.record.id].match:
                best[m.record.id] = m
    ranked = sorted(best.values(), key=lambda m: (-m.match, -m.record.confidence, m.record.id))
    return ranked[: query["max_results"]]


def forget_ids(request) -> Optional[List[int]]:
    """The ids a ``ForgetObjects`` request names, or None for all."""
    return None if request.all else [int(i) for i in request.ids]
