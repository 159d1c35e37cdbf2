"""Streaming nearest-stamp pairing of camera images with depth images.

Messages arrive in recording order, and a depth image can be recorded a little before or after the
colour image it belongs to. :class:`NearestStampPairer` holds images back until the depth stream
has passed their stamp, then pairs each with the depth whose header stamp is nearest, if it lies
within ``tolerance_ns``. Images leave in the order they came in. At most ``max_pending`` images
wait (a depth stream that stops never holds images forever) and at most twice that many depth
images are kept.

Stamps normally increase. When a stream's stamps go backwards by more than the tolerance (a clock
reset, a restarted driver, a replayed log), a new *epoch* starts on it: images are paired only with
depth images of the same epoch, so the images after the jump wait for the depth stream to jump too.
:attr:`jumps` counts the backward jumps seen.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, List, Optional, Tuple


class NearestStampPairer:
    """Pair items (stamp_ns, payload) of an image stream with the nearest-stamped depth payload."""

    def __init__(self, tolerance_ns: int, max_pending: int = 32):
        self.tolerance_ns = int(tolerance_ns)
        self.max_pending = int(max_pending)
        self.jumps = 0
        self._images: Deque[Tuple[int, int, Any]] = deque()
        self._depths: Deque[Tuple[int, int, Any]] = deque(maxlen=2 * self.max_pending)
        self._epoch = {"image": 0, "depth": 0}
        self._last = {"image": None, "depth": None}

    def _stamp_epoch(self, stream: str, stamp_ns: int) -> int:
        last = self._last[stream]
        # not just two messages out of order
        if last is not None and stamp_ns < last - self.tolerance_ns:
            self._epoch[stream] += 1
            self.jumps += 1
        self._last[stream] = stamp_ns
        return self._epoch[stream]

    def add_image(self, stamp_ns: int, item: Any) -> List[Tuple[Any, Optional[Any]]]:
        """Queue an image; return the (item, depth or None) pairs that are now decided."""
        self._images.append((self._stamp_epoch("image", stamp_ns), stamp_ns, item))
        return self._release()

    def add_depth(self, stamp_ns: int, depth: Any) -> List[Tuple[Any, Optional[Any]]]:
        """Remember a depth image; return the (item, depth or None) pairs that are now decided."""
        self._depths.append((self._stamp_epoch("depth", stamp_ns), stamp_ns, depth))
        return self._release()

    def flush(self) -> List[Tuple[Any, Optional[Any]]]:
        """Decide every waiting image with the depth seen so far (end of the recording)."""
        out = []
        while self._images:
            out.append(self._pop())
        return out

    def _release(self) -> List[Tuple[Any, Optional[Any]]]:
        out = []
        while self._images and (
            self._depth_passed(*self._images[0][:2]) or len(self._images) > self.max_pending
        ):
            out.append(self._pop())
        return out

    def _depth_passed(self, epoch: int, stamp_ns: int) -> bool:
        if not self._depths:
            return False
        last_epoch, last_stamp, _ = self._depths[-1]
        return last_epoch > epoch or (last_epoch == epoch and last_stamp >= stamp_ns)

    def _pop(self) -> Tuple[Any, Optional[Any]]:
        epoch, stamp, item = self._images.popleft()
        same = [d for d in self._depths if d[0] == epoch]
        best = min(same, key=lambda d: abs(d[1] - stamp), default=None)
        # Depths of earlier epochs, and those older than the one chosen, can never be nearest for a
        # later image.
        while self._depths and (
            self._depths[0][0] < epoch
            or (best is not None and self._depths[0][0] == epoch and self._depths[0][1] < best[1])
        ):
            self._depths.popleft()
        if best is None or abs(best[1] - stamp) > self.tolerance_ns:
            return item, None
        return item, best[2]
