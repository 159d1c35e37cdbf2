"""Rigid transforms, a ROS-free transform tree (tf semantics), and 3D results moved into a target
frame.

:class:`TransformTree` holds what ``/tf`` and ``/tf_static`` say: each child frame has one parent;
static edges hold at every time, time-stamped edges are interpolated between their stamps
(translation linearly, rotation by spherical interpolation, SciPy's
:class:`~scipy.spatial.transform.Slerp`). A lookup chains edges through the common ancestor of the
two frames. A frame that is not in the tree, two frames that are not connected, or a time outside
an edge's recorded span (beyond ``tolerance_ns``) is a :class:`TransformLookup` with ``missing``
naming the link; nothing is guessed.

:func:`transform_3d` moves the 3D part of a :class:`FrameResult` (positions and box orientations;
sizes are unchanged) into another frame; its ``frame_id`` becomes that frame.
"""

from __future__ import annotations

import dataclasses
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from ros_mm_perception.core.results import FrameResult

QUATERNION_TOLERANCE = 0.01
"""How far a rotation's squared quaternion length may lie from 1 (tf2's own tolerance)."""
EMPTY_FRAME = "empty frame id"
OWN_PARENT = "frame is its own parent"
NOT_FINITE = "NaN or infinite value"
NOT_UNIT = "quaternion not of unit length"
REJECTION_REASONS = (EMPTY_FRAME, OWN_PARENT, NOT_FINITE, NOT_UNIT)
"""Why a transform is rejected, as counted and reported (the checks of tf2's ``setTransform``)."""

EXTRAPOLATION_TOLERANCE_NS = 50_000_000
"""How far (50 ms) before the first or after the last stamp of a time-stamped edge a lookup may go;
the nearest recorded value is used there. Further out the transform is missing."""


def frame_name(frame_id: str) -> str:
    """A frame id as tf2 keys it (no leading ``/``)."""
    return str(frame_id).lstrip("/")


class TransformRejected(ValueError):
    """A transform that cannot enter a tree; ``reason`` is one of :data:`REJECTION_REASONS`."""

    def __init__(self, reason: str, parent: str, child: str):
        super().__init__(f"transform {parent!r} -> {child!r} rejected: {reason}")
        self.reason = reason


def check_transform(parent: str, child: str, xyz: Sequence[float],
                    quat_xyzw: Sequence[float]) -> None:
    """Raise :class:`TransformRejected` for what tf2 refuses: an empty frame id, a frame
    parented to itself, a NaN or infinite value, a quaternion far from unit length (zero too)."""
    parent_name, child_name = frame_name(parent), frame_name(child)
    if not parent_name or not child_name:
        raise TransformRejected(EMPTY_FRAME, parent, child)
    if parent_name == child_name:
        raise TransformRejected(OWN_PARENT, parent, child)
    values = np.asarray([*xyz, *quat_xyzw], dtype=np.float64)
    if values.shape != (7,) or not np.isfinite(values).all():
        raise TransformRejected(NOT_FINITE, parent, child)
    with np.errstate(over="ignore"):  # a huge component overflows to infinity: not unit length
        squared = float(np.dot(values[3:], values[3:]))
    if abs(squared - 1.0) > QUATERNION_TOLERANCE:
        raise TransformRejected(NOT_UNIT, parent, child)


@dataclass(frozen=True)
class RigidTransform:
    """Maps points of a child frame into its parent: ``p_parent = rotation · p_child +
    translation``."""

    translation: np.ndarray
    rotation: Rotation

    @classmethod
    def from_xyz_quat(cls, xyz: Sequence[float], quat_xyzw: Sequence[float]) -> "RigidTransform":
        """From a translation and a quaternion (x, y, z, w), as in ``geometry_msgs/Transform``."""
        return cls(np.asarray(xyz, dtype=np.float64).reshape(3),
                   Rotation.from_quat(np.asarray(quat_xyzw, float)))

    @classmethod
    def identity(cls) -> "RigidTransform":
        return cls(np.zeros(3), Rotation.identity())

    def __mul__(self, other: "RigidTransform") -> "RigidTransform":
        """``a * b`` applies ``b`` first, then ``a``."""
        return RigidTransform(self.rotation.apply(other.translation) + self.translation,
                              self.rotation * other.rotation)

    def inverse(self) -> "RigidTransform":
        inv = self.rotation.inv()
        return RigidTransform(-inv.apply(self.translation), inv)

    def apply(self, points) -> np.ndarray:
        """Points (3,) or (N, 3) of the child frame in the parent frame."""
        return self.rotation.apply(np.asarray(points, dtype=np.float64)) + self.translation


@dataclass(frozen=True)
class TransformLookup:
    """The result of a lookup: ``transform`` (source → target), or ``missing`` saying which link is
    absent."""

    transform: Optional[RigidTransform] = None
    missing: str = ""

    @property
    def found(self) -> bool:
        return self.transform is not None


class _Edge:
    """One child → parent link: static, or samples (stamp, x, y, z, qx, qy, qz, qw) kept compactly.

    Samples are appended as they come (a long recording holds many) and sorted by stamp at the next
    lookup; of samples with equal stamps the last one added counts.
    """

    def __init__(self, parent: str):
        self.parent = parent
        self.static: Optional[RigidTransform] = None
        self._stamps = array("q")
        self._values = array("d")
        self._sorted: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def add(self, stamp_ns: int, transform: RigidTransform) -> None:
        self._stamps.append(int(stamp_ns))
        self._values.extend([*transform.translation, *transform.rotation.as_quat()])
        self._sorted = None

    def _samples(self) -> Tuple[np.ndarray, np.ndarray]:
        if self._sorted is None:
            stamps = np.array(self._stamps, dtype=np.int64)
            values = np.array(self._values, dtype=np.float64).reshape(-1, 7)
            order = np.argsort(stamps, kind="stable")
            stamps, values = stamps[order], values[order]
            last_of_each = np.append(stamps[1:] != stamps[:-1], True)
            self._sorted = (stamps[last_of_each], values[last_of_each])
        return self._sorted

    def at(self, stamp_ns: int, tolerance_ns: int) -> Tuple[Optional[RigidTransform], str]:
        if self.static is not None:
            return self.static, ""
        stamps, values = self._samples()
        first, last = int(stamps[0]), int(stamps[-1])
        if stamp_ns < first - tolerance_ns or stamp_ns > last + tolerance_ns:
            return None, f"recorded from {first / 1e9:.3f} s to {last / 1e9:.3f} s"
        i = int(np.searchsorted(stamps, stamp_ns, side="right"))
        # at or outside the ends, or on a sample
        if i == 0 or i == len(stamps) or stamps[i - 1] == stamp_ns:
            v = values[max(i - 1, 0)]
            return RigidTransform.from_xyz_quat(v[:3], v[3:]), ""
        t0, t1 = int(stamps[i - 1]), int(stamps[i])
        f = (stamp_ns - t0) / (t1 - t0)
        a, b = values[i - 1], values[i]
        rotation = Slerp([0.0, 1.0], Rotation.from_quat(np.stack([a[3:], b[3:]])))([f])[0]
        return RigidTransform((1.0 - f) * a[:3] + f * b[:3], rotation), ""


class TransformTree:
    """Frames linked child → parent by static and time-stamped transforms, looked up as tf2
    does."""

    def __init__(self, tolerance_ns: int = EXTRAPOLATION_TOLERANCE_NS):
        self.tolerance_ns = int(tolerance_ns)
        self._edges: Dict[str, _Edge] = {}
        self.rejected: Counter = Counter()
        """Transforms that were offered and rejected, per reason (:data:`REJECTION_REASONS`)."""

    def set_transform(self, parent: str, child: str, transform: RigidTransform, stamp_ns: int = 0,
                      static: bool = False) -> None:
        """Record ``child``'s pose in ``parent`` (at ``stamp_ns``, or at every time when
        ``static``).

        A child has one parent (tf's rule); a new parent replaces the old link and its samples.
        """
        check_transform(parent, child, transform.translation, transform.rotation.as_quat())
        parent, child = frame_name(parent), frame_name(child)
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent:
            edge = self._edges[child] = _Edge(parent)
        if static:
            edge.static = transform
        else:
            edge.add(int(stamp_ns), transform)

    def frames(self) -> List[str]:
        """Every frame id the tree knows, sorted."""
        return sorted(set(self._edges) | {e.parent for e in self._edges.values()})

    def ancestors(self, frame: str) -> List[str]:
        """``frame``'s parent, its parent's parent, ... up to the root of its tree."""
        return self._chain(frame_name(frame))[1:]

    def _chain(self, frame: str) -> List[str]:
        chain, seen = [frame], {frame}
        while chain[-1] in self._edges:
            parent = self._edges[chain[-1]].parent
            if parent in seen:  # a loop in the recorded links: stop at it
                break
            chain.append(parent)
            seen.add(parent)
        return chain

    def _to_ancestor(self, chain: List[str], ancestor: str, stamp_ns: int) -> TransformLookup:
        """``chain[0]`` → ``ancestor`` along ``chain``."""
        total = RigidTransform.identity()
        for child in chain[: chain.index(ancestor)]:
            edge = self._edges[child]
            transform, why = edge.at(stamp_ns, self.tolerance_ns)
            if transform is None:
                return TransformLookup(missing=f"transform {edge.parent} -> {child} at "
                                               f"{stamp_ns / 1e9:.3f} s is not available ({why})")
            total = transform * total
        return TransformLookup(total)

    def lookup(self, target: str, source: str, stamp_ns: int) -> TransformLookup:
        """The transform taking points of ``source`` into ``target`` at ``stamp_ns``."""
        target, source = frame_name(target), frame_name(source)
        if target == source:
            return TransformLookup(RigidTransform.identity())
        known = set(self.frames())
        for frame in (source, target):
            if frame not in known:
                listing = ", ".join(sorted(known)) or "none"
                return TransformLookup(missing=f"frame {frame!r} is not in the transform tree "
                                               f"(frames: {listing})")
        up_source, up_target = self._chain(source), self._chain(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            return TransformLookup(missing=f"frames {source!r} and {target!r} are not connected "
                                           f"(their roots are {up_source[-1]!r} and "
                                           f"{up_target[-1]!r})")
        to_common = self._to_ancestor(up_source, common, stamp_ns)
        if not to_common.found:
            return to_common
        target_to_common = self._to_ancestor(up_target, common, stamp_ns)
        if not target_to_common.found:
            return target_to_common
        return TransformLookup(target_to_common.transform.inverse() * to_common.transform)


def transform_3d(result: FrameResult, transform: RigidTransform, target_frame: str) -> FrameResult:
    """The 3D part of ``result`` in ``target_frame``: its located detections with position and box
    orientation moved by ``transform`` (sizes unchanged); ``frame_id`` is ``target_frame``.

    ``transform`` takes points of ``result.frame_id`` (the camera's frame) into ``target_frame``.
    ``result`` itself is not changed.
    """
    moved = []
    for det in result.detections:
        if det.xyz is None:
            continue
        own = (
            Rotation.identity() if det.orientation is None else Rotation.from_quat(det.orientation)
        )
        xyz = transform.apply(det.xyz)
        quat = (transform.rotation * own).as_quat()
        moved.append(dataclasses.replace(det, xyz=tuple(float(v) for v in xyz),
                                         orientation=tuple(float(v) for v in quat)))
    return dataclasses.replace(result, frame_id=frame_name(target_frame), detections=moved,
                               labels=[], labels_ran=False)
