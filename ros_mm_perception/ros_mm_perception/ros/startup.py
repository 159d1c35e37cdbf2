"""Start-up honesty of the node (ROS-free): latched messages stamped before the clock runs are sent
again."""

from __future__ import annotations


class StampWhenClockRuns:
    """Tracks a latched message (``label_info``) published with stamp 0.

    Under ``use_sim_time`` the node clock reads 0 until the first ``/clock`` message, so a message
    published at start-up carries stamp 0. :meth:`due` says when to publish it again: once the
    clock runs (the caller publishes with the current time and calls :meth:`published` again).
    """

    def __init__(self):
        self._unstamped = False

    def published(self, stamp_ns: int) -> None:
        self._unstamped = int(stamp_ns) == 0

    def due(self, now_ns: int) -> bool:
        return self._unstamped and int(now_ns) > 0
