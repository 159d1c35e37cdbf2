"""FrameResult → standard ROS messages, written against an injected ``types`` namespace.

``types`` has the attributes of :data:`ros_mm_perception.messages.names.TYPE_NAMES`: the node
passes real rclpy classes, the offline tools pass rosbags classes. Every constructor gets every
field as a keyword argument (rosbags dataclasses require it; rclpy classes accept it), and values
are plain Python ``int``/``float``/``str`` as rclpy's field setters demand.

Semantics (DESIGN.md section 3): ``class_id`` is the phrase text, ``score`` in [0, 1], the 2D box
centre and size are in pixels of the original image, ``id`` is the track id as a string ("" when
untracked), and every header is the input image's header.
"""

from __future__ import annotations

import array
import dataclasses
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from ros_mm_perception.core.imaging.drawing import phrase_colour
from ros_mm_perception.core.results import Detection, FrameResult, Stamp

ORIGIN = (0.0, 0.0, 0.0)
MARKER_MIN_SIZE = 0.05
"""Edge length in metres of a marker cube when the detection has no 3D size."""
DIAGNOSTIC_LEVELS = ("OK", "WARN", "ERROR", "STALE")


def _is_dataclass_type(cls) -> bool:
    return dataclasses.is_dataclass(cls)


def byte_array(types, data: bytes, cls_name: str = "Image"):
    """``data`` as the value of a ``uint8[]`` field: numpy for rosbags, ``array('B')`` for rclpy.

    rclpy accepts ``array.array('B')`` without checking each byte; rosbags serializes numpy arrays.
    """
    if _is_dataclass_type(getattr(types, cls_name)):
        return np.frombuffer(data, dtype=np.uint8).copy()
    return array.array("B", data)


def stamp_of(header) -> Stamp:
    """The core :class:`Stamp` of a ``std_msgs/Header``."""
    return Stamp(int(header.stamp.sec), int(header.stamp.nanosec))


def header(types, frame_id: str, stamp: Stamp):
    """A ``std_msgs/Header`` (the input's frame id and stamp)."""
    return types.Header(stamp=types.Time(sec=int(stamp.sec), nanosec=int(stamp.nanosec)),
                        frame_id=str(frame_id))


def result_header(types, result: FrameResult):
    """The header of the input frame that produced ``result``."""
    return header(types, result.frame_id, result.stamp)


def _point(types, xyz: Sequence[float]):
    return types.Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def _pose(types, xyz: Sequence[float] = ORIGIN, quat_xyzw: Optional[Sequence[float]] = None):
    x, y, z, w = (0.0, 0.0, 0.0, 1.0) if quat_xyzw is None else (float(v) for v in quat_xyzw)
    return types.Pose(position=_point(types, xyz),
                      orientation=types.Quaternion(x=x, y=y, z=z, w=w))


def _hypothesis(types, detection: Detection, xyz: Sequence[float] = ORIGIN):
    """The detection's phrase and score with its pose: the position and the box orientation, so
    ``results[0].pose`` agrees with a 3D box's ``bbox.center``."""
    return types.ObjectHypothesisWithPose(
        hypothesis=types.ObjectHypothesis(class_id=str(detection.phrase),
                                          score=float(detection.score)),
        pose=types.PoseWithCovariance(pose=_pose(types, xyz, detection.orientation),
                                      covariance=np.zeros(36, dtype=np.float64)),
    )


def track_id_text(detection: Detection) -> str:
    """The ``id`` field: the track id as text, empty when the detection is not tracked."""
    return "" if detection.track_id is None else str(detection.track_id)


def detection_2d(types, detection: Detection, msg_header):
    """One ``vision_msgs/Detection2D``; the box centre and size are in original-image pixels."""
    x0, y0, x1, y1 = (float(v) for v in detection.box)
    centre = types.Pose2D(position=types.Point2D(x=(x0 + x1) / 2.0, y=(y0 + y1) / 2.0), theta=0.0)
    return types.Detection2D(
        header=msg_header,
        results=[_hypothesis(types, detection, detection.xyz or ORIGIN)],
        bbox=types.BoundingBox2D(center=centre, size_x=x1 - x0, size_y=y1 - y0),
        id=track_id_text(detection),
    )


def detection_2d_array(types, result: FrameResult):
    """``vision_msgs/Detection2DArray`` of all detections (an empty array when there are none)."""
    msg_header = result_header(types, result)
    return types.Detection2DArray(
        header=msg_header,
        detections=[detection_2d(types, d, msg_header) for d in result.detections]
    )


def instance_mask(types, result: FrameResult, data_as: str = "numpy"):
    """``sensor_msgs/Image`` ``mono16`` of the result's masks, with the input image's header.

    Pixel value = 1 + the index of the detection in the frame's Detection2DArray, 0 = none; where
    masks overlap, the lower index wins
    (:func:`~ros_mm_perception.core.imaging.masks.instance_image`). ``data_as`` is ``"numpy"`` for
    rosbags classes, ``"array"`` for rclpy.
    """
    from ros_mm_perception.core.imaging.image_codec import numpy_to_image
    from ros_mm_perception.core.imaging.masks import instance_image

    labels = instance_image([d.mask for d in result.detections], (result.height, result.width))
    return numpy_to_image(labels, "mono16", data_as=data_as, header=result_header(types, result),
                          msg_factory=types.Image)


def detection_3d(types, detection: Detection, msg_header):
    """One ``vision_msgs/Detection3D`` (metres, in the header's frame); needs ``detection.xyz``."""
    if detection.xyz is None:
        raise ValueError(f"detection {detection.phrase!r} has no 3D position")
    size = detection.size_xyz or ORIGIN
    return types.Detection3D(
        header=msg_header,
        results=[_hypothesis(types, detection, detection.xyz)],
        bbox=types.BoundingBox3D(
            center=_pose(types, detection.xyz, detection.orientation),
            size=types.Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2])),
        ),
        id=track_id_text(detection),
    )


def detection_3d_array(types, result: FrameResult):
    """``vision_msgs/Detection3DArray`` of the detections that have a 3D position.

    The header's ``frame_id`` is the result's: the camera frame, or the target frame of a result
    moved by :func:`~ros_mm_perception.core.perception.transforms.transform_3d`.
    """
    msg_header = result_header(types, result)
    located = [d for d in result.detections if d.xyz is not None]
    return types.Detection3DArray(header=msg_header,
                                  detections=[detection_3d(types, d, msg_header) for d in located])


def classification(types, result: FrameResult):
    """``vision_msgs/Classification`` of the whole-frame labels, in the pipeline's (score)
    order."""
    return types.Classification(
        header=result_header(types, result),
        results=[types.ObjectHypothesis(class_id=str(lab.phrase), score=float(lab.score))
                 for lab in result.labels],
    )


def label_info(types, msg_header, phrases: Iterable[str], threshold: float):
    """``vision_msgs/LabelInfo``: ``class_id`` i ↔ ``phrases[i]``, with the detection threshold."""
    class_map = [types.VisionClass(class_id=i, class_name=str(p)) for i, p in enumerate(phrases)]
    return types.LabelInfo(header=msg_header, class_map=class_map, threshold=float(threshold))


def _marker(types, msg_header, *, ns: str, marker_id: int, kind: int, action: int,
            xyz: Sequence[float] = ORIGIN, quat_xyzw: Optional[Sequence[float]] = None,
            scale: Sequence[float] = ORIGIN,
            rgb: Sequence[float] = (1.0, 1.0, 1.0), text: str = ""):
    M = types.Marker
    return M(
        header=msg_header, ns=ns, id=int(marker_id), type=int(kind), action=int(action),
        pose=_pose(types, xyz, quat_xyzw),
        scale=types.Vector3(x=float(scale[0]), y=float(scale[1]), z=float(scale[2])),
        color=types.ColorRGBA(r=float(rgb[0]), g=float(rgb[1]), b=float(rgb[2]), a=0.8),
        lifetime=types.Duration(sec=0, nanosec=0), frame_locked=False, points=[], colors=[],
        texture_resource="",
        texture=types.CompressedImage(header=msg_header, format="",
                                      data=byte_array(types, b"", "CompressedImage")),
        uv_coordinates=[], text=text, mesh_resource="",
        mesh_file=types.MeshFile(filename="", data=byte_array(types, b"", "MeshFile")),
        mesh_use_embedded_materials=False,
    )


def label_anchor(xyz: Sequence[float], size: Sequence[float],
                 orientation: Optional[Sequence[float]] = None) -> np.ndarray:
    """Where the label of a 3D box centred at ``xyz`` goes: 5 cm above the box of ``size``, along
    the box's -y (up in the camera optical frame), turned with its ``orientation`` (x, y, z, w)."""
    lift = np.array([0.0, -float(size[1]) / 2.0 - 0.05, 0.0])
    if orientation is not None:
        lift = Rotation.from_quat(orientation).apply(lift)
    return np.asarray(xyz, dtype=np.float64) + lift


def marker_array(types, result: FrameResult, ns: Optional[str] = None):
    """``visualization_msgs/MarkerArray`` for RViz: a DELETEALL, then a cube and a label per 3D
    detection.

    The leading DELETEALL clears the previous frame's markers, so objects that vanish leave no
    ghosts.
    """
    M = types.Marker
    ns = ns if ns is not None else result.camera
    msg_header = result_header(types, result)
    markers = [_marker(types, msg_header, ns=ns, marker_id=0, kind=M.CUBE, action=M.DELETEALL)]
    for i, det in enumerate(d for d in result.detections if d.xyz is not None):
        size = [max(float(s), MARKER_MIN_SIZE) for s in (det.size_xyz or ORIGIN)]
        rgb = phrase_colour(det.phrase)
        label = f"{det.phrase} {det.score:.2f}" + (f" #{det.track_id}" if det.track_id is not None
                                                   else "")
        above = label_anchor(det.xyz, size, det.orientation)
        markers.append(_marker(types, msg_header, ns=ns, marker_id=2 * i + 1, kind=M.CUBE,
                               action=M.ADD, xyz=det.xyz, quat_xyzw=det.orientation, scale=size,
                               rgb=rgb))
        markers.append(_marker(types, msg_header, ns=ns, marker_id=2 * i + 2,
                               kind=M.TEXT_VIEW_FACING, action=M.ADD, xyz=above,
                               scale=(0.0, 0.0, 0.08), rgb=rgb, text=label))
    return types.MarkerArray(markers=markers)


def diagnostic_status(types, name: str, level: str, message: str, values: Mapping[str, object],
                      hardware_id: str = ""):
    """One ``diagnostic_msgs/DiagnosticStatus``; ``level`` is "OK", "WARN", "ERROR" or "STALE"."""
    if level not in DIAGNOSTIC_LEVELS:
        raise ValueError(
            f"diagnostic level {level!r} is not one of {', '.join(DIAGNOSTIC_LEVELS)}"
        )
    S = types.DiagnosticStatus
    return S(
        level=getattr(S, level), name=str(name), message=str(message),
        hardware_id=str(hardware_id),
        values=[types.KeyValue(key=str(k), value=str(v)) for k, v in values.items()],
    )


def diagnostic_array(types, stamp: Stamp, statuses: Sequence):
    """``diagnostic_msgs/DiagnosticArray`` stamped with ``stamp`` (the node clock, sim time
    aware)."""
    return types.DiagnosticArray(header=header(types, "", stamp), status=list(statuses))
