"""Streaming nearest-stamp pairing of camera images with depth images.

Messages arrive in recording order, and a depth image can be recorded a little before or after the
colour image it belongs to. :class:`NearestStampPairer` holds images back until the depth stream has
passed their stamp, then pairs each with the depth whose header stamp is nearest, if it lies within
``tolerance_ns``. Images leave in the order they came in. Stamps of each stream are assumed to
increase; at most ``max_pending`` images wait (a depth stream that stops never holds images forever)
and at most twice that many depth images are kept.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, List, Optional, Tuple


class NearestStampPairer:
    """Pair items (stamp_ns, payload) of an image stream with the nearest-stamped depth payload."""

    def __init__(self, tolerance_ns: int, max_pending: int = 32):
        self.tolerance_ns = int(tolerance_ns)
        self.max_pending = int(max_pending)
        self._images: Deque[Tuple[int, Any]] = deque()
        self._depths: Deque[Tuple[int, Any]] = deque(maxlen=2 * self.max_pending)

    def add_image(self, stamp_ns: int, item: Any) -> List[Tuple[Any, Optional[Any]]]:
        """Queue an image; return the (item, depth or None) pairs that are now decided."""
        self._images.append((stamp_ns, item))
        return self._release()

    def add_depth(self, stamp_ns: int, depth: Any) -> List[Tuple[Any, Optional[Any]]]:
        """Remember a depth image; return the (item, depth or None) pairs that are now decided."""
        self._depths.append((stamp_ns, depth))
        return self._release()

    def flush(self) -> List[Tuple[Any, Optional[Any]]]:
        """Decide every waiting image with the depth seen so far (end of the recording)."""
        out = []
        while self._images:
            out.append(self._pop())
        return out

    def _release(self) -> List[Tuple[Any, Optional[Any]]]:
        out = []
        while self._images and (self._depth_passed(self._images[0][0]) or len(self._images) > self.max_pending):
            out.append(self._pop())
        return out

    def _depth_passed(self, stamp_ns: int) -> bool:
        return bool(self._depths) and self._depths[-1][0] >= stamp_ns

    def _pop(self) -> Tuple[Any, Optional[Any]]:
        stamp, item = self._images.popleft()
        best = min(self._depths, key=lambda d: abs(d[0] - stamp), default=None)
        # Depths older than the one chosen can never be nearest for a later image.
        while self._depths and best is not None and self._depths[0][0] < best[0]:
            self._depths.popleft()
        if best is None or abs(best[0] - stamp) > self.tolerance_ns:
            return item, None
        return item, best[1]
