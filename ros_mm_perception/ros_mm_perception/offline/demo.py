"""The demo: a sample recording of rendered scenes, processed like any bag, checked against the
truth.

Two cameras watch coloured shapes move
(:func:`~ros_mm_perception.synthetic.scenes.render_sequence`): ``/front`` records raw rgb8 images
with camera_info and a registered 16UC1 depth image (the background 3 m away, each object's box at
its own distance), ``/overhead`` records JPEG CompressedImages. The detection phrases are the six
objects plus one that never appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ros_mm_perception.core.perception.boxes import box_iou
from ros_mm_perception.core.results import FrameResult
from ros_mm_perception.synthetic.scenes import Scene, phrase, render_sequence
from ros_mm_perception.offline.recording import START_NS, CameraRecording

CAMERAS = {
    "/front": (("red", "circle"), ("blue", "square"), ("yellow", "star")),
    "/overhead": (("green", "triangle"), ("purple", "ring"), ("orange", "cross")),
}
"""Output namespace → the objects that camera sees."""
ABSENT = ("pink", "cross")
"""An object no camera sees: its phrase should find nothing."""
BACKGROUND_M = 3.0
PERIOD_NS = 100_000_000


def demo_phrases() -> List[str]:
    """The detection phrases: every object of :data:`CAMERAS`, then the absent one."""
    return [phrase(*o) for objects in CAMERAS.values() for o in objects] + [phrase(*ABSENT)]


def demo_scenes(n_frames: int, size: Tuple[int, int], seed: int = 0) -> Dict[str, List[Scene]]:
    """``n_frames`` scenes per camera of :data:`CAMERAS` (``size`` = height, width)."""
    return {ns: render_sequence(seed + i, n_frames, size=size, objects=list(objects))
            for i, (ns, objects) in enumerate(CAMERAS.items())}


def object_depth_m(object_id: int) -> float:
    return 1.0 + 0.5 * object_id


def synthetic_depth(scene: Scene) -> np.ndarray:
    """A 16UC1 (millimetre) depth image: the background at 3 m, each object's box at its own
    distance."""
    depth = np.full(scene.image.shape[:2], int(BACKGROUND_M * 1000), np.uint16)
    for obj in scene.objects:  # bottom to top, so occluders win
        x0, y0, x1, y1 = (int(round(v)) for v in obj.box)
        depth[y0:y1, x0:x1] = int(object_depth_m(obj.object_id) * 1000)
    return depth


def intrinsics_k(size: Tuple[int, int]) -> List[float]:
    """A pinhole K for a ``size`` (height, width) image with a 64 degree horizontal field of
    view."""
    h, w = size
    f = 0.8 * w
    return [f, 0.0, w / 2.0, 0.0, f, h / 2.0, 0.0, 0.0, 1.0]


def demo_recordings(scenes: Dict[str, List[Scene]]) -> List[CameraRecording]:
    """The sample bag's cameras: ``/front`` raw + depth + camera_info, ``/overhead`` compressed."""
    front, overhead = scenes["/front"], scenes["/overhead"]
    size = front[0].image.shape[:2]
    return [
        CameraRecording("/front", [s.image for s in front],
                        depths=[synthetic_depth(s) for s in front], k=intrinsics_k(size),
                        frame_id="front_camera_optical_frame", period_ns=PERIOD_NS),
        CameraRecording("/overhead", [s.image for s in overhead], compressed=True,
                        k=intrinsics_k(size), frame_id="overhead_camera_optical_frame",
                        period_ns=PERIOD_NS),
    ]


@dataclass
class GroundTruthCheck:
    """An offline output that scores results against the scenes.

    An object is *found* when a detection of its phrase overlaps its true box with IoU of at least
    ``iou``; a detection is *correct* when it overlaps so an object of its phrase in that frame.
    """

    scenes: Dict[str, Sequence[Scene]]
    iou: float = 0.5
    found: int = 0
    objects: int = 0
    correct: int = 0
    detections: int = 0

    def add(self, item, result: FrameResult) -> None:
        scene = self.scenes[item.namespace][(result.stamp.to_ns() - START_NS) // PERIOD_NS]
        self.objects += len(scene.objects)
        self.detections += len(result.detections)
        if not scene.objects or not result.detections:
            return
        overlap = box_iou([o.box for o in scene.objects],
                          [d.box for d in result.detections]) >= self.iou
        same = np.array([[o.phrase == d.phrase for d in result.detections] for o in scene.objects])
        hits = overlap & same
        self.found += int(hits.any(axis=1).sum())
        self.correct += int(hits.any(axis=0).sum())

    @property
    def recall(self) -> Optional[float]:
        return self.found / self.objects if self.objects else None

    @property
    def precision(self) -> Optional[float]:
        return self.correct / self.detections if self.detections else None

    def finish(self) -> None:
        """Nothing to write."""
