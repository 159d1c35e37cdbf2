"""Diagnostics bookkeeping of the node (ROS-free): rates, latency, drops, skipped frames, GPU
memory."""

from __future__ import annotations

import sys
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional

from ros_mm_perception.core.perception.scheduler import CameraStats

RATE_WINDOW_S = 5.0
"""Rates and recent skips are measured over this sliding window (seconds)."""


def prune(times: Deque[float], now: float, window_s: float = RATE_WINDOW_S) -> int:
    """Drop the events older than ``window_s`` from ``times`` (ascending seconds); the count
    left."""
    while times and times[0] <= now - window_s:
        times.popleft()
    return len(times)


def window_rate(times: Deque[float], now: float, window_s: float = RATE_WINDOW_S) -> float:
    """Events per second from the spacing of the events in the last ``window_s`` seconds (0 with
    fewer than 2).

    Old events are removed from ``times`` (ascending monotonic seconds).
    """
    if prune(times, now, window_s) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


@dataclass
class CameraReport:
    """One camera's figures: rates over the sliding window, latency since the last report,
    totals."""

    received_hz: float
    processed_hz: float
    dropped_total: int
    latency_mean_ms: float
    latency_max_ms: float
    seconds_since_image: float
    skipped_total: Dict[str, int] = field(default_factory=dict)
    """Frames skipped since activation, by reason."""
    skipped_recent: int = 0
    """Frames skipped within the rate window."""
    missing_transform: str = ""
    """The missing transform, when frames within the rate window had no 3D output for it."""

    @property
    def healthy(self) -> bool:
        """False while frames are being skipped or their 3D output lacks a transform."""
        return self.skipped_recent == 0 and not self.missing_transform

    def values(self) -> Dict[str, str]:
        out = {
            "received_hz": f"{self.received_hz:.2f}",
            "processed_hz": f"{self.processed_hz:.2f}",
            "dropped_total": str(self.dropped_total),
            "skipped_total": str(sum(self.skipped_total.values())),
            "skipped_last_window": str(self.skipped_recent),
            "latency_mean_ms": f"{self.latency_mean_ms:.1f}",
            "latency_max_ms": f"{self.latency_max_ms:.1f}",
            "seconds_since_image": "never" if self.seconds_since_image < 0
            else f"{self.seconds_since_image:.1f}",
        }
        out.update({f"skipped_{reason}": str(n)
                    for reason, n in sorted(self.skipped_total.items())})
        if self.missing_transform:
            out["missing_transform"] = self.missing_transform
        return out

    def summary(self) -> str:
        """The one-line status message: the processed rate, and what goes wrong when something
        does."""
        text = f"{self.processed_hz:.1f} Hz processed"
        if self.skipped_recent:
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.skipped_total.items()))
            text += (f"; {self.skipped_recent} frames skipped in the last {RATE_WINDOW_S:.0f} s "
                     f"(total: {reasons})")
        if self.missing_transform:
            text += f"; no 3D output: {self.missing_transform}"
        return text


@dataclass
class _Window:
    received: Deque[float] = field(default_factory=deque)
    published: Deque[float] = field(default_factory=deque)
    skipped: Deque[float] = field(default_factory=deque)
    skipped_total: Counter = field(default_factory=Counter)
    latencies: List[float] = field(default_factory=list)
    last_image_at: float = -1.0
    missing_transform: str = ""
    missing_at: float = -1.0


class StatsBook:
    """Receipts, publications, skips and latencies (receipt → publish) per camera, since
    activation.

    Times are monotonic seconds supplied by the caller, so the figures describe real compute even
    under ``use_sim_time``. :attr:`first_output_s` is the time from the book's start (activation)
    to the first published result.
    """

    def __init__(self, cameras, now: float):
        self._lock = threading.Lock()
        self._windows = {c: _Window() for c in cameras}
        self._started = now
        self.first_output_s: Optional[float] = None

    def image_received(self, camera: str, now: float) -> None:
        with self._lock:
            win = self._windows[camera]
            win.last_image_at = now
            win.received.append(now)

    def published(self, camera: str, latency_s: float, now: float) -> bool:
        """Count a published result; True for the first one since the book started."""
        with self._lock:
            win = self._windows[camera]
            win.latencies.append(latency_s)
            win.published.append(now)
            if self.first_output_s is None:
                self.first_output_s = now - self._started
                return True
            return False

    def skipped(self, camera: str, reason: str, now: float) -> None:
        """Count a frame of ``camera`` that was not processed, by ``reason`` (a short key)."""
        with self._lock:
            win = self._windows[camera]
            win.skipped.append(now)
            win.skipped_total[reason] += 1

    def transform_missing(self, camera: str, what: str, now: float) -> None:
        """Note that a frame of ``camera`` had no 3D output because ``what`` (a transform) was
        missing."""
        with self._lock:
            win = self._windows[camera]
            win.missing_transform, win.missing_at = what, now
            win.skipped_total["no_transform_3d"] += 1

    def report(self, counts: Dict[str, CameraStats], now: float) -> Dict[str, CameraReport]:
        """Each camera's figures; latency covers the time since the previous report."""
        with self._lock:
            out = {}
            for camera, win in self._windows.items():
                c = counts.get(camera, CameraStats())
                lat = win.latencies
                recent_missing = win.missing_at > now - RATE_WINDOW_S
                out[camera] = CameraReport(
                    received_hz=window_rate(win.received, now),
                    processed_hz=window_rate(win.published, now),
                    dropped_total=c.dropped,
                    latency_mean_ms=1e3 * sum(lat) / len(lat) if lat else 0.0,
                    latency_max_ms=1e3 * max(lat) if lat else 0.0,
                    seconds_since_image=-1.0 if win.last_image_at < 0 else now - win.last_image_at,
                    skipped_total=dict(win.skipped_total),
                    skipped_recent=prune(win.skipped, now),
                    missing_transform=win.missing_transform if recent_missing else "",
                )
                win.latencies = []
            return out


def gpu_memory() -> Dict[str, str]:
    """Allocated and reserved CUDA memory in MiB, when torch is loaded and CUDA is in use; else
    {}."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    mib = 1024.0 * 1024.0
    return {
        "gpu_allocated_mib": f"{torch.cuda.memory_allocated() / mib:.0f}",
        "gpu_reserved_mib": f"{torch.cuda.memory_reserved() / mib:.0f}",
    }
