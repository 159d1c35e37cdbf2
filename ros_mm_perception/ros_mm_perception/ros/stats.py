"""Diagnostics bookkeeping of the node (ROS-free): rates, latency, drops, GPU memory."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Dict, List

from ros_mm_perception.core.perception.scheduler import CameraStats


@dataclass
class CameraReport:
    """One camera's figures over the last diagnostics period."""

    received_hz: float
    processed_hz: float
    dropped_total: int
    latency_mean_ms: float
    latency_max_ms: float
    seconds_since_image: float

    def values(self) -> Dict[str, str]:
        return {
            "received_hz": f"{self.received_hz:.2f}",
            "processed_hz": f"{self.processed_hz:.2f}",
            "dropped_total": str(self.dropped_total),
            "latency_mean_ms": f"{self.latency_mean_ms:.1f}",
            "latency_max_ms": f"{self.latency_max_ms:.1f}",
            "seconds_since_image": "never" if self.seconds_since_image < 0 else f"{self.seconds_since_image:.1f}",
        }


@dataclass
class _Window:
    latencies: List[float] = field(default_factory=list)
    last_counts: CameraStats = field(default_factory=CameraStats)
    last_image_at: float = -1.0


class StatsBook:
    """Latencies (receipt → publish) and receipt times per camera; rates from count differences.

    Times are monotonic seconds supplied by the caller, so the figures describe real compute even
    under ``use_sim_time``.
    """

    def __init__(self, cameras, now: float):
        self._lock = threading.Lock()
        self._windows = {c: _Window() for c in cameras}
        self._since = now

    def image_received(self, camera: str, now: float) -> None:
        with self._lock:
            self._windows[camera].last_image_at = now

    def published(self, camera: str, latency_s: float) -> None:
        with self._lock:
            self._windows[camera].latencies.append(latency_s)

    def report(self, counts: Dict[str, CameraStats], now: float) -> Dict[str, CameraReport]:
        """Figures since the previous report (rates, latency) or in total (drops); starts a new period."""
        with self._lock:
            dt = max(now - self._since, 1e-9)
            self._since = now
            out = {}
            for camera, win in self._windows.items():
                c = counts.get(camera, CameraStats())
                prev = win.last_counts
                # A new scheduler (re-activation) restarts its counts: measure from zero then.
                if c.received < prev.received:
                    prev = CameraStats()
                lat = win.latencies
                out[camera] = CameraReport(
                    received_hz=(c.received - prev.received) / dt,
                    processed_hz=(c.processed - prev.processed) / dt,
                    dropped_total=c.dropped,
                    latency_mean_ms=1e3 * sum(lat) / len(lat) if lat else 0.0,
                    latency_max_ms=1e3 * max(lat) if lat else 0.0,
                    seconds_since_image=-1.0 if win.last_image_at < 0 else now - win.last_image_at,
                )
                win.latencies = []
                win.last_counts = CameraStats(c.received, c.processed, c.dropped)
            return out


def gpu_memory() -> Dict[str, str]:
    """Allocated and reserved CUDA memory in MiB, when torch is loaded and CUDA is in use; else {}."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    mib = 1024.0 * 1024.0
    return {
        "gpu_allocated_mib": f"{torch.cuda.memory_allocated() / mib:.0f}",
        "gpu_reserved_mib": f"{torch.cuda.memory_reserved() / mib:.0f}",
    }
