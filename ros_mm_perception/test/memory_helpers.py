"""A camera in a room for the object memory's tests: poses, detections, depth images."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from ros_mm_perception.core.memory.views import CameraView
from ros_mm_perception.core.perception.transforms import RigidTransform
from ros_mm_perception.core.results import Detection, FrameResult, Intrinsics, Stamp

K = Intrinsics(fx=320.0, fy=320.0, cx=159.5, cy=119.5)
HW = (240, 320)
# optical axes (x right, y down, z forward) in a z-up map frame for a camera looking along +x
LOOK_X = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_pose(position=(0.0, 0.0, 0.5), yaw=0.0) -> RigidTransform:
    """The optical frame of a camera at ``position`` turned ``yaw`` radians about the map's z."""
    rotation = Rotation.from_euler("z", yaw) * Rotation.from_matrix(LOOK_X)
    return RigidTransform(np.asarray(position, float), rotation)


def frame(
    pose: RigidTransform,
    objects,
    stamp_ns: int,
    rng=None,
    noise=0.0,
    embeddings=None,
    size=(0.2, 0.2, 0.05),
) -> FrameResult:
    """Detections of ``objects`` ((phrase, map xyz) pairs) seen from ``pose``, with noise."""
    dets = []
    for i, (phrase, xyz) in enumerate(objects):
        p = pose.inverse().apply(np.asarray(xyz, float))
        if rng is not None and noise:
            p = p + rng.normal(0.0, noise, 3)
        u, v = K.fx * p[0] / p[2] + K.cx, K.fy * p[1] / p[2] + K.cy
        det = Detection(phrase, 0.9, (u - 10, v - 10, u + 10, v + 10), xyz=tuple(p), size_xyz=size)
        if embeddings is not None:
            det.embedding = embeddings[i]
        dets.append(det)
    return FrameResult(
        "cam",
        "cam_optical",
        Stamp.from_ns(stamp_ns),
        HW[1],
        HW[0],
        detections=dets,
        detections_ran=True,
    )


def view(pose: RigidTransform, stamp_ns: int, phrases, depth=None) -> CameraView:
    return CameraView(
        camera_to_memory=pose,
        intrinsics=K,
        image_hw=HW,
        stamp_ns=stamp_ns,
        phrases=phrases,
        depth=depth,
    )


def wall(distance=4.0) -> np.ndarray:
    """A depth image of a wall behind everything (float metres)."""
    return np.full(HW, distance, np.float32)


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)
