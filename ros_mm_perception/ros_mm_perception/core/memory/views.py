"""What one camera view tells the memory: observations with their uncertainty, and visibility.

An :class:`Observation` is one 3D detection moved into the memory frame with a covariance from the
camera's noise model: along the viewing ray the depth noise (``0.005 m + depth_noise * z^2``, the
quadratic growth of stereo and structured-light sensors) plus a quarter of the object's depth
extent (the box centre lies behind the visible surface); across the ray :data:`LATERAL_PIXELS`
pixels at that range plus 5 % of the object's width. :func:`visibility` says whether a
remembered position was in view, within range and not hidden behind something nearer in the
measured depth, which is what negative evidence needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ros_mm_perception.core.perception.geometry import check_depth, depth_scale
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.perception.transforms import RigidTransform, TransformTree, frame_name
from ros_mm_perception.core.results import FrameResult, Intrinsics

DEPTH_NOISE_AT_0_M = 0.005
"""Depth noise (standard deviation, metres) of a reading at zero range."""
LATERAL_PIXELS = 3.0
"""Standard deviation of a box centre across the viewing ray, in pixels."""
NEAREST_M = 0.1
"""Positions nearer to the camera than this are not judged (behind or at the lens)."""
FARTHEST_M = 1000.0
"""Detections farther from the camera than this are not placed: no depth camera measures them,
and their variance would swamp the fusion's arithmetic."""
HIDDEN_SHARE = 0.5
"""A place is hidden when more than this share of its valid depths lies in front of it."""
VISIBLE, HIDDEN, OUTSIDE, UNKNOWN = "visible", "hidden", "outside", "unknown"


def depth_sigma(z, depth_noise: float):
    """Standard deviation of a depth reading at range ``z`` metres."""
    return DEPTH_NOISE_AT_0_M + depth_noise * np.square(z)


@dataclass
class CameraView:
    """One processed frame as the memory sees it.

    ``camera_to_memory`` maps points of the camera's optical frame into the memory frame at the
    frame's stamp; ``depth`` (optional, aligned to the image, uint16 mm or float m) tells hidden
    from absent; ``phrases`` are what the detector looked for in this frame (absence of anything
    else says nothing).
    """

    camera_to_memory: RigidTransform
    intrinsics: Intrinsics
    image_hw: Tuple[int, int]
    stamp_ns: int
    phrases: Sequence[str]
    depth: Optional[np.ndarray] = None


@dataclass
class Observation:
    """One 3D detection in the memory frame."""

    phrase: str
    score: float
    xyz: np.ndarray
    covariance: np.ndarray
    size: np.ndarray
    """Axis-aligned extent in the memory frame (metres)."""
    embedding: Optional[np.ndarray] = None


def _camera_covariance(
    xyz: np.ndarray, size: np.ndarray, k: Intrinsics, depth_noise: float
) -> np.ndarray:
    ray = xyz / np.linalg.norm(xyz)
    z = float(xyz[2])
    along = depth_sigma(z, depth_noise) * np.linalg.norm(xyz) / z + 0.25 * float(size[2])
    across = LATERAL_PIXELS * z / min(k.fx, k.fy) + 0.05 * float(max(size[0], size[1]))
    outer = np.outer(ray, ray)
    return along**2 * outer + across**2 * (np.eye(3) - outer)


def observations(result: FrameResult, view: CameraView, depth_noise: float) -> List[Observation]:
    """The located detections of ``result`` (camera optical frame) as memory-frame observations."""
    out = []
    rotation = view.camera_to_memory.rotation.as_matrix()
    for det in result.detections:
        if det.xyz is None:
            continue
        xyz = np.asarray(det.xyz, dtype=np.float64)
        if not (np.isfinite(xyz).all() and xyz[2] > NEAREST_M
                and np.linalg.norm(xyz) <= FARTHEST_M):
            continue
        size = np.abs(
            np.asarray(det.size_xyz if det.size_xyz is not None else (0.0, 0.0, 0.0), np.float64)
        )
        covariance = (
            rotation @ _camera_covariance(xyz, size, view.intrinsics, depth_noise) @ rotation.T
        )
        embedding = getattr(det, "embedding", None)
        out.append(
            Observation(
                phrase=det.phrase,
                score=float(det.score),
                xyz=view.camera_to_memory.apply(xyz),
                covariance=covariance,
                size=np.abs(rotation) @ size,
                embedding=None if embedding is None else np.asarray(embedding, np.float32),
            )
        )
    return out


def visibility(
    xyz: np.ndarray, size: np.ndarray, view: CameraView, depth_noise: float, max_range_m: float
) -> str:
    """Whether the place ``xyz`` (memory frame) with extent ``size`` was seen in ``view``.

    ``outside``: behind the camera, beyond ``max_range_m`` or not wholly in the image; ``unknown``:
    no depth there to judge; ``hidden``: most valid depths around its projection are in front of it
    (by more than three depth sigmas plus half its extent); else ``visible``.
    """
    p = view.camera_to_memory.inverse().apply(np.asarray(xyz, np.float64))
    z = float(p[2])
    if not NEAREST_M < z <= max_range_m:
        return OUTSIDE
    k, (h, w) = view.intrinsics, view.image_hw
    u, v = k.fx * p[0] / z + k.cx + 0.5, k.fy * p[1] / z + k.cy + 0.5  # corner coordinates
    radius = max(0.5 * float(np.max(size)), 0.02)
    ru, rv = k.fx * radius / z, k.fy * radius / z
    if u - ru < 0 or v - rv < 0 or u + ru > w or v + rv > h:
        return OUTSIDE
    if view.depth is None:
        return UNKNOWN
    depth = check_depth(view.depth)
    sx, sy = depth_scale((h, w), depth.shape)
    hu, hv = max(1.0, 0.5 * ru), max(1.0, 0.5 * rv)  # the central half
    x0, x1 = int(np.floor((u - hu) * sx)), int(np.ceil((u + hu) * sx))
    y0, y1 = int(np.floor((v - hv) * sy)), int(np.ceil((v + hv) * sy))
    patch = depth[max(y0, 0):min(y1, depth.shape[0]), max(x0, 0):min(x1, depth.shape[1])]
    values = patch.astype(np.float32).ravel()
    if depth.dtype == np.uint16:
        values *= np.float32(0.001)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return UNKNOWN
    margin = 3.0 * depth_sigma(z, depth_noise) + radius
    in_front = float(np.mean(values < z - margin))
    return HIDDEN if in_front > HIDDEN_SHARE else VISIBLE


def check_memory_frame(memory_frame: str, camera_frame: str,
                       tree: Optional[TransformTree] = None) -> None:
    """A one-line :class:`UserError` when ``memory_frame`` moves with the camera: it is the
    camera's own frame or, in ``tree``, a frame below it (remembered places must stay put)."""
    memory, camera = frame_name(memory_frame), frame_name(camera_frame)
    if not memory:
        raise UserError("the object memory needs a fixed frame (map, odom): set memory_frame or "
                        "target_frame")
    if memory == camera or (tree is not None and camera in tree.ancestors(memory)):
        raise UserError(f"memory_frame {memory!r} moves with the camera {camera!r}; the object "
                        "memory needs a fixed frame such as map or odom")
