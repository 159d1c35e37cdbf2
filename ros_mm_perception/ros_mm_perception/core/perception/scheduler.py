"""Newest-frame scheduling between camera callbacks and one inference worker.

Each camera has one waiting slot. :meth:`FrameScheduler.put` (called from subscription callbacks)
fills it; a frame arriving while the slot is full replaces the waiting one, which is counted as
dropped. :meth:`FrameScheduler.take` (called by the worker) blocks until frames wait and returns up
to ``max_batch`` of them, one per camera, longest-waiting camera first, for one batched model call.
So the queue never holds more than one frame per camera and latency does not grow with the input
rate.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ros_mm_perception.core.config import PerceptionConfig

_DEFAULTS = PerceptionConfig()


@dataclass
class CameraStats:
    """Frame counts of one camera: ``received = processed + dropped + (1 if a frame waits)``."""

    received: int = 0
    processed: int = 0
    dropped: int = 0


class FrameScheduler:
    """Thread-safe newest-frame-per-camera queue, bounded by ``max_cameras`` slots."""

    def __init__(self, max_batch: int = _DEFAULTS.max_batch, max_cameras: int = 64):
        if max_batch < 1 or max_cameras < 1:
            raise ValueError(f"max_batch ({max_batch}) and max_cameras ({max_cameras}) must be "
                             "at least 1")
        self.max_batch = int(max_batch)
        self.max_cameras = int(max_cameras)
        self._waiting: Dict[str, Any] = {}    # insertion order = waiting order
        self._stats: Dict[str, CameraStats] = {}
        self._closed = False
        self._cond = threading.Condition()

    def put(self, frame: Any, camera: Optional[str] = None) -> bool:
        """Queue ``frame`` for ``camera`` (default ``frame.camera``); True when it replaced a
        waiting frame.

        Frames put after :meth:`close` are ignored (returns False).
        """
        camera = frame.camera if camera is None else camera
        with self._cond:
            if self._closed:
                return False
            stats = self._stats.get(camera)
            if stats is None:
                if len(self._stats) >= self.max_cameras:
                    raise ValueError(f"camera {camera!r} exceeds the limit of {self.max_cameras} "
                                     "cameras")
                stats = self._stats[camera] = CameraStats()
            stats.received += 1
            replaced = camera in self._waiting
            # a replacement keeps the camera's place in the order
            self._waiting[camera] = frame
            if replaced:
                stats.dropped += 1
            else:
                self._cond.notify()
            return replaced

    def take(self, timeout: Optional[float] = None, max_frames: Optional[int] = None) -> List[Any]:
        """Up to ``max_frames`` (default ``max_batch``) waiting frames, one per camera,
        longest-waiting first.

        Blocks until a frame waits, ``timeout`` seconds pass (returns ``[]``) or :meth:`close` is
        called (returns ``[]`` at once; frames still waiting are discarded and not counted as
        processed).
        """
        limit = self.max_batch if max_frames is None else max(1, int(max_frames))
        with self._cond:
            if not self._cond.wait_for(lambda: self._waiting or self._closed, timeout):
                return []
            if self._closed:
                return []
            cameras = list(self._waiting)[:limit]
            frames = [self._waiting.pop(c) for c in cameras]
            for c in cameras:
                self._stats[c].processed += 1
            return frames

    def close(self) -> None:
        """Wake every waiting :meth:`take` (which returns ``[]``) and refuse further frames."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> int:
        """How many frames wait now (at most one per camera)."""
        with self._cond:
            return len(self._waiting)

    def stats(self) -> Dict[str, CameraStats]:
        """A snapshot of the per-camera counts."""
        with self._cond:
            return {c: CameraStats(s.received, s.processed, s.dropped)
                    for c, s in self._stats.items()}
