"""Static-buffer calls captured once into CUDA graphs and replayed.

A :class:`CapturedCall` wraps a function that reads fixed input tensors and returns (or writes) fixed
output tensors. On CUDA it is warmed up on a side stream, captured into a ``torch.cuda.CUDAGraph``
and then replayed: one launch instead of hundreds of kernel launches. On the CPU it simply calls the
function, so the same static-buffer code runs (and is tested) everywhere.

Every call of one owner shares one memory pool: graphs are replayed one at a time on one stream and
their results are written into buffers outside the pool or copied out right after the replay, so
their scratch memory can be shared.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch

from ros_mm_perception.core.config import FAST_PATHS


def resolve_mode(mode: str, device: torch.device, *, choices: Tuple[str, ...] = FAST_PATHS,
                 cpu_auto: str = "off") -> str:
    """A fast path name (one of ``choices``, default :data:`~ros_mm_perception.core.config.FAST_PATHS`) for ``device``.

    ``off``: the library's own code; ``static``: fixed shapes and buffers without graphs; ``graph``: the
    same captured into CUDA graphs; ``compile``: torch.compile'd code captured into CUDA graphs;
    ``auto``: ``graph`` on CUDA and ``cpu_auto`` on the CPU.
    """
    if mode not in choices:
        raise ValueError(f"unknown fast path {mode!r}: use {', '.join(choices)}")
    if mode == "auto":
        return "graph" if device.type == "cuda" else cpu_auto
    return mode


def compiled(fn: Callable, backend: str = "inductor") -> Callable:
    """``torch.compile`` with fixed shapes (one compilation per bucket); graphs are captured by the caller."""
    return torch.compile(fn, backend=backend, dynamic=False, fullgraph=False)


class CapturedCall:
    """``fn()`` captured into a CUDA graph on ``device`` (replayed by calling), or called directly on the CPU.

    ``fn`` must read its inputs from tensors whose storage never changes and must not synchronise with
    the host. The value it returned at capture time is returned by every replay: its tensors are
    overwritten by the next replay of any graph sharing the pool, so copy what must be kept.
    """

    WARMUP_RUNS = 2

    def __init__(self, fn: Callable[[], Any], device: torch.device, pool: Optional[Tuple[int, int]] = None):
        self.fn = fn
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.output: Any = None
        if device.type != "cuda":
            return
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_RUNS):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (e.g. a ROS executor) may use the GPU while this thread captures.
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
            self.output = fn()

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self) -> Any:
        if self.graph is None:
            return self.fn()
        self.graph.replay()
        return self.output


def new_pool(device: torch.device):
    """A memory pool handle for graphs on ``device`` (``None`` on the CPU)."""
    return torch.cuda.graph_pool_handle() if device.type == "cuda" else None


def bucket_for(n: int, buckets) -> Optional[int]:
    """The smallest bucket holding ``n`` (``buckets`` sorted ascending), ``None`` above the largest."""
    return next((b for b in buckets if n <= b), None)
