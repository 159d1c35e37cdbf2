"""Per-camera state of the node (ROS-free): topic names, newest image, recent depth, camera_info.

Topic naming: with one camera the node uses plain relative names (``image``, ``depth``,
``camera_info``, ``detections``, ...); with several, each camera's topics sit under its name
(``front/image``, ``front/detections``, ...). Relative names follow the node's namespace and
launch remappings. With the compressed transport the image subscription is the resolved image
topic plus ``/compressed`` (``image:=/camera/image_raw`` → ``/camera/image_raw/compressed``).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Deque, List, Optional, Sequence, Tuple

from ros_mm_perception.core.config import DEFAULT_MAX_IMAGE_PIXELS
from ros_mm_perception.core.errors import ImageFormatError
from ros_mm_perception.core.results import Frame
from ros_mm_perception.messages.convert import stamp_of
from ros_mm_perception.messages.frames import attach_depth, frame_from_messages

DEPTH_HISTORY = 8
"""Depth images kept per camera for pairing with colour images by stamp."""


def topic_prefix(cameras: Sequence[str], camera: str) -> str:
    """``""`` for a single camera, ``"<camera>/"`` when the node serves several."""
    return "" if len(cameras) == 1 else f"{camera}/"


class CameraState:
    """What the node knows about one camera; callbacks write, the worker and services read."""

    def __init__(self, name: str, cameras: Sequence[str], compressed: bool = False):
        self.name = name
        self.prefix = topic_prefix(cameras, name)
        self.compressed = compressed
        self._lock = threading.Lock()
        self._latest = None
        self._depths: Deque = deque(maxlen=DEPTH_HISTORY)
        self._info = None

    def topic(self, base: str) -> str:
        """The relative topic name of ``base`` (``image``, ``detections``, ...) for this camera."""
        return self.prefix + base

    @property
    def image_topic(self) -> str:
        """The relative name of the image topic, the one launch files remap (``image``,
        ``front/image``)."""
        return self.topic("image")

    def subscription_topic(self, resolve: Callable[[str], str]) -> str:
        """The topic the node subscribes: ``resolve(image_topic)`` (namespace and remappings
        applied), plus ``/compressed`` for the compressed transport, as image_transport subscribers
        do."""
        base = resolve(self.image_topic)
        return base.rstrip("/") + "/compressed" if self.compressed else base

    def on_image(self, msg) -> None:
        with self._lock:
            self._latest = msg

    def on_depth(self, msg) -> None:
        with self._lock:
            self._depths.append(msg)

    def on_camera_info(self, msg) -> None:
        with self._lock:
            self._info = msg

    @property
    def latest(self):
        """The newest image message received, or None."""
        with self._lock:
            return self._latest

    def depth_for(self, image, tolerance_s: float):
        """The kept depth message nearest in stamp to ``image``, if within ``tolerance_s``; else
        None."""
        target = stamp_of(image.header).to_ns()
        with self._lock:
            depths: List = list(self._depths)
        best = min(depths, key=lambda d: abs(stamp_of(d.header).to_ns() - target), default=None)
        if best is None or abs(stamp_of(best.header).to_ns() - target) > tolerance_s * 1e9:
            return None
        return best

    def frame(self, image, tolerance_s: Optional[float] = None,
              max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Tuple[Frame, Optional[str]]:
        """A core :class:`Frame` of ``image`` and why its depth was left out (else ``None``);
        with ``tolerance_s``, paired with depth + camera_info. Unusable depth or camera_info
        costs the frame its 3D, not its detections; an image above ``max_pixels`` is refused
        undecoded (an ``ImageFormatError``)."""
        frame = frame_from_messages(image, self.name, max_pixels)
        if tolerance_s is None:
            return frame, None
        depth = self.depth_for(image, tolerance_s)
        with self._lock:
            info = self._info
        if depth is None or info is None:
            return frame, None
        try:
            attach_depth(frame, depth, info, max_pixels)
        except ImageFormatError as err:
            return frame, str(err)
        return frame, None
