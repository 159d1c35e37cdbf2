"""FrameResult → foxglove_msgs overlays: ImageAnnotations for Foxglove's Image panel and
SceneUpdate for its 3D panel, written against an injected ``types`` namespace.

``types`` has the attributes of :data:`ros_mm_perception.messages.names.FOXGLOVE_TYPE_NAMES`: the
node passes the installed foxglove_msgs classes, the offline tools pass rosbags classes built from
the official definitions bundled in the package. Fields a class lacks are left out (foxglove_msgs
releases before 3.3 have no ``timestamp`` and ``metadata`` in ``ImageAnnotations``), so either
release works on a graph.

Semantics: one ``ImageAnnotations`` per processed frame, stamped with the input image's stamp (the
Image panel pairs annotations with the image of the same stamp): per detection its box as a closed
polyline in the phrase's colour, a text ``phrase score #track`` and, with a mask, the mask's
outlines. One ``SceneUpdate`` per frame with 3D detections, in the frame of ``detections_3d``: it
deletes the previous frame's entities, then adds a cube and a label per 3D detection.
:func:`object_scene` draws the object memory's records the same way, in its fixed frame;
:func:`memory_scene` is the node's ``object_scene`` topic (and ``/object_scene`` offline): every
confirmed record of a memory, so an update replaces the previous one whole and a forgotten
object's entity goes with the deletion.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from ros_mm_perception.core.imaging.drawing import detection_text, phrase_colour
from ros_mm_perception.core.results import Detection, FrameResult, Stamp
from ros_mm_perception.messages.convert import (MARKER_MIN_SIZE, ORIGIN, label_anchor,
                                                track_id_text)

MASK_FILL_ALPHA = 0.3
CUBE_ALPHA = 0.5
LABEL_FONT_PX = 14.0
"""Height of a 3D label in screen pixels (it keeps its size at any distance)."""
OUTLINE_TOLERANCE_PX = 1.0
"""Largest distance of a simplified mask outline from the mask's boundary."""


def build(cls, **fields):
    """``cls(**fields)`` without the fields ``cls`` lacks (rclpy classes of an older release).

    rosbags classes (dataclasses, built from the bundled definitions) take every field.
    """
    if dataclasses.is_dataclass(cls):
        return cls(**fields)
    known = cls.get_fields_and_field_types()
    return cls(**{name: value for name, value in fields.items() if name in known})


def _time(types, stamp: Stamp):
    return types.Time(sec=int(stamp.sec), nanosec=int(stamp.nanosec))


def _colour(types, rgb: Sequence[float], alpha: float = 1.0):
    return types.Color(r=float(rgb[0]), g=float(rgb[1]), b=float(rgb[2]), a=float(alpha))


def _metadata(types, detection: Detection):
    values = {"phrase": detection.phrase, "score": f"{detection.score:.3f}",
              "track_id": track_id_text(detection)}
    return [types.KeyValuePair(key=k, value=str(v)) for k, v in values.items()]


def _polyline(types, stamp: Stamp, points, rgb, thickness: float, fill_alpha: float, metadata):
    return build(
        types.PointsAnnotation, timestamp=_time(types, stamp),
        type=types.PointsAnnotation.LINE_LOOP,
        points=[types.Point2(x=float(x), y=float(y)) for x, y in points],
        outline_color=_colour(types, rgb), outline_colors=[],
        fill_color=_colour(types, rgb, fill_alpha),
        thickness=float(thickness), metadata=metadata)


def mask_outlines(mask: np.ndarray) -> list:
    """The outer outlines of a HxW mask's regions, each a list of (x, y) image coordinates (pixel
    centres, origin at the top-left corner of the top-left pixel), simplified to within a pixel."""
    import cv2

    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    outlines = []
    for contour in contours:
        simple = cv2.approxPolyDP(contour, OUTLINE_TOLERANCE_PX, True).reshape(-1, 2) + 0.5
        if len(simple) >= 3:
            outlines.append([(float(x), float(y)) for x, y in simple])
    return outlines


def image_annotations(types, result: FrameResult):
    """``foxglove_msgs/ImageAnnotations`` of ``result``'s detections (empty lists without any).

    A mask must be the image's size (``result.height`` x ``result.width``); otherwise ValueError.
    """
    stamp = result.stamp
    scale = max(result.width, result.height) / 640.0  # as thick and large as on the debug image
    thickness, font = max(1.0, round(2 * scale)), max(12.0, 14.0 * scale)
    points, texts = [], []
    for det in result.detections:
        rgb, meta = phrase_colour(det.phrase), _metadata(types, det)
        x0, y0, x1, y1 = (float(v) for v in det.box)
        points.append(_polyline(types, stamp, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], rgb,
                                thickness, 0.0, meta))
        mask = getattr(det, "mask", None)
        if mask is not None:
            if mask.shape[:2] != (result.height, result.width):
                raise ValueError(f"mask of {det.phrase!r} is {mask.shape[1]}x{mask.shape[0]}, "
                                 f"the image {result.width}x{result.height}")
            for outline in mask_outlines(mask):
                points.append(_polyline(types, stamp, outline, rgb, 1.0, MASK_FILL_ALPHA, meta))
        # The text's origin is its bottom-left corner: above the box, or below it at the top edge.
        ty = y0 - 2.0 if y0 - font - 2.0 >= 0 else min(y1 + font + 2.0, result.height - 1.0)
        texts.append(build(
            types.TextAnnotation, timestamp=_time(types, stamp),
            position=types.Point2(x=max(0.0, x0), y=ty),
            text=detection_text(det.phrase, det.score, det.track_id), font_size=font,
            text_color=_colour(types, (0.0, 0.0, 0.0)), background_color=_colour(types, rgb),
            metadata=meta))
    return build(types.ImageAnnotations, timestamp=_time(types, stamp), circles=[], points=points,
                 texts=texts, metadata=[])


def _pose(types, xyz: Sequence[float], quat_xyzw=None):
    x, y, z, w = (0.0, 0.0, 0.0, 1.0) if quat_xyzw is None else (float(v) for v in quat_xyzw)
    return types.Pose(position=types.Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
                      orientation=types.Quaternion(x=x, y=y, z=z, w=w))


def _entity(types, stamp: Stamp, frame_id: str, entity_id: str, metadata, cubes, texts):
    return build(
        types.SceneEntity, timestamp=_time(types, stamp), frame_id=str(frame_id),
        id=entity_id, lifetime=types.Duration(sec=0, nanosec=0), frame_locked=False,
        metadata=metadata, arrows=[], cubes=cubes, spheres=[], cylinders=[], lines=[],
        triangles=[], texts=texts, models=[])


def scene_update(types, result: FrameResult, ns: str = ""):
    """``foxglove_msgs/SceneUpdate``: delete every earlier entity, then a cube and a label per 3D
    detection, in ``result``'s frame (the camera frame, or the target frame of a moved result).

    Entity ids are ``<ns>/track/<id>`` for tracked detections and ``<ns>/<index>`` otherwise, so
    an object keeps its entity from frame to frame. ``ns`` defaults to the result's camera.
    """
    ns = result.camera if not ns else ns
    stamp = result.stamp
    deletion = types.SceneEntityDeletion(timestamp=_time(types, stamp),
                                         type=types.SceneEntityDeletion.ALL, id="")
    entities = []
    for i, det in enumerate(d for d in result.detections if d.xyz is not None):
        size = [max(float(s), MARKER_MIN_SIZE) for s in (det.size_xyz or ORIGIN)]
        rgb = phrase_colour(det.phrase)
        cube = types.CubePrimitive(
            pose=_pose(types, det.xyz, det.orientation),
            size=types.Vector3(x=size[0], y=size[1], z=size[2]),
            color=_colour(types, rgb, CUBE_ALPHA))
        label = types.TextPrimitive(
            pose=_pose(types, label_anchor(det.xyz, size, det.orientation)), billboard=True,
            font_size=LABEL_FONT_PX, scale_invariant=True, color=_colour(types, rgb),
            text=detection_text(det.phrase, det.score, det.track_id))
        entity_id = f"{ns}/track/{det.track_id}" if det.track_id is not None else f"{ns}/{i}"
        entities.append(_entity(types, stamp, result.frame_id, entity_id, _metadata(types, det),
                                [cube], [label]))
    return types.SceneUpdate(deletions=[deletion], entities=entities)


GONE_ALPHA = 0.15
"""Opacity of a remembered object marked gone (faded, kept in view)."""


def object_scene(types, records: Iterable, frame_id: str, stamp: Stamp, ns: str = "objects"):
    """``foxglove_msgs/SceneUpdate`` of remembered objects in the memory's fixed frame
    ``frame_id`` (z up, as ``map`` and ``odom`` are): delete every earlier entity, then a cube and
    a label above it per record.

    A record needs ``id``, ``phrase``, ``confidence``, ``mean`` (x, y, z in metres), ``size`` and
    ``state``, as :class:`~ros_mm_perception.core.memory.objects.ObjectRecord` has; one whose
    state is ``"gone"`` is drawn faded, ``(gone)`` in its label. Entity ids are ``<ns>/<id>``.
    """
    deletion = types.SceneEntityDeletion(timestamp=_time(types, stamp),
                                         type=types.SceneEntityDeletion.ALL, id="")
    entities = []
    for record in records:
        gone = record.state == "gone"
        x, y, z = (float(v) for v in record.mean)
        size = [max(float(s), MARKER_MIN_SIZE) for s in record.size]
        rgb = phrase_colour(record.phrase)
        alpha = GONE_ALPHA if gone else CUBE_ALPHA
        text = f"{record.phrase} {record.confidence:.2f} #{record.id}{' (gone)' if gone else ''}"
        cube = types.CubePrimitive(pose=_pose(types, (x, y, z)),
                                   size=types.Vector3(x=size[0], y=size[1], z=size[2]),
                                   color=_colour(types, rgb, alpha))
        label = types.TextPrimitive(
            pose=_pose(types, (x, y, z + size[2] / 2.0 + 0.05)), billboard=True,
            font_size=LABEL_FONT_PX, scale_invariant=True,
            color=_colour(types, rgb, 2 * GONE_ALPHA if gone else 1.0), text=text)
        metadata = [types.KeyValuePair(key=k, value=v) for k, v in (
            ("phrase", record.phrase), ("confidence", f"{record.confidence:.3f}"),
            ("state", record.state))]
        entities.append(_entity(types, stamp, frame_id, f"{ns}/{record.id}", metadata, [cube],
                                [label]))
    return types.SceneUpdate(deletions=[deletion], entities=entities)


def memory_scene(types, memory):
    """``object_scene``: :func:`object_scene` of every confirmed record of ``memory`` (an
    :class:`~ros_mm_perception.core.memory.objects.ObjectMemory`), present and gone, in its frame,
    stamped with the newest observation it holds (as ``objects`` is)."""
    return object_scene(types, memory.objects(), memory.frame, Stamp.from_ns(memory.latest_ns))
