"""Plain result and input types shared by the pipeline, the ROS node and the offline tools."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

Box = Tuple[float, float, float, float]
"""An axis-aligned box ``(x0, y0, x1, y1)`` in pixels of the original image (x right, y down)."""


@dataclass(frozen=True)
class Stamp:
    """A ROS-style time stamp (``builtin_interfaces/Time`` fields)."""

    sec: int = 0
    nanosec: int = 0

    @classmethod
    def from_ns(cls, ns: int) -> "Stamp":
        return cls(int(ns) // 1_000_000_000, int(ns) % 1_000_000_000)

    def to_ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (the ``K`` matrix of ``sensor_msgs/CameraInfo``)."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_k(cls, k) -> "Intrinsics":
        """Build from a row-major 3x3 ``K`` (9 numbers, as in CameraInfo.k)."""
        k = [float(v) for v in k]
        if len(k) != 9:
            raise ValueError(f"K must have 9 elements, got {len(k)}")
        if not all(math.isfinite(v) for v in (k[0], k[2], k[4], k[5])):
            raise ValueError(f"K has values that are not finite: fx={k[0]} fy={k[4]} cx={k[2]} "
                             f"cy={k[5]}")
        if k[0] <= 0 or k[4] <= 0:
            raise ValueError(f"K has non-positive focal lengths fx={k[0]} fy={k[4]}")
        return cls(fx=k[0], fy=k[4], cx=k[2], cy=k[5])


@dataclass
class Frame:
    """One camera frame entering the pipeline.

    ``image`` is HxWx3 uint8 RGB. ``depth`` (optional) is aligned with the image: uint16
    millimetres (16UC1) or float32 metres (32FC1).
    """

    image: np.ndarray
    camera: str = "camera"
    frame_id: str = ""
    stamp: Stamp = field(default_factory=Stamp)
    depth: Optional[np.ndarray] = None
    intrinsics: Optional[Intrinsics] = None


@dataclass(frozen=True)
class Label:
    """A whole-frame zero-shot label: a vocabulary phrase and its probability."""

    phrase: str
    score: float


@dataclass
class Detection:
    """A language-grounded detection: the user's phrase with a box in original-image pixels."""

    phrase: str
    score: float
    box: Box
    track_id: Optional[int] = None
    source: str = ""
    xyz: Optional[Tuple[float, float, float]] = None
    """Centre in metres in the result's frame: the camera optical frame (REP 103: x right, y down,
    z forward) as the pipeline makes it, the target frame after
    :func:`~.perception.transforms.transform_3d`."""
    size_xyz: Optional[Tuple[float, float, float]] = None
    """3D box size in metres along the box's own axes."""
    orientation: Optional[Tuple[float, float, float, float]] = None
    """Box orientation in the result's frame as a quaternion (x, y, z, w); None = aligned with the
    frame."""
    mask: Optional[np.ndarray] = None
    """HxW bool mask in original-image pixels, when a mask source (``mask_model``, SAM 3,
    PaliGemma's ``segment``) produced one."""
    embedding: Optional[np.ndarray] = None
    """Normalised CLIP image embedding (float32, D) of the detection's crop (object memory on)."""


@dataclass
class FrameResult:
    """Everything the pipeline produced for one frame."""

    camera: str
    frame_id: str
    stamp: Stamp
    width: int
    height: int
    labels: list = field(default_factory=list)
    detections: list = field(default_factory=list)
    labels_ran: bool = False
    detections_ran: bool = False
    masks_ran: bool = False
    """Whether detection ran with a mask source: each detection then has a mask (it may be
    empty)."""
