"""Static-buffer calls captured once into CUDA graphs and replayed.

A :class:`CapturedCall` wraps a function that reads fixed input tensors and returns (or writes)
fixed output tensors. On CUDA it is warmed up on a side stream, captured into a
``torch.cuda.CUDAGraph`` and then replayed: one launch instead of hundreds of kernel launches. On
the CPU it simply calls the function, so the same static-buffer code runs (and is tested)
everywhere.

Every call of one owner shares one memory pool: graphs are replayed one at a time on one stream and
their results are written into buffers outside the pool or copied out right after the replay, so
their scratch memory can be shared.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch

from ros_mm_perception.core.config import FAST_PATHS

log = logging.getLogger(__name__)


def resolve_mode(mode: str, device: torch.device, *, choices: Tuple[str, ...] = FAST_PATHS,
                 cpu_auto: str = "off") -> str:
    """A fast path name (one of ``choices``, default
    :data:`~ros_mm_perception.core.config.FAST_PATHS`) for ``device``.

    ``off``: the library's own code; ``static``: fixed shapes and buffers without graphs;
    ``graph``: the same captured into CUDA graphs; ``compile``: torch.compile'd code captured into
    CUDA graphs; ``auto``: ``graph`` on CUDA and ``cpu_auto`` on the CPU.
    """
    if mode not in choices:
        raise ValueError(f"unknown fast path {mode!r}: use {', '.join(choices)}")
    if mode == "auto":
        return "graph" if device.type == "cuda" else cpu_auto
    return mode


def compiled(fn: Callable, backend: str = "inductor") -> Callable:
    """``torch.compile`` with fixed shapes (one compilation per bucket); graphs are captured by the
    caller."""
    return torch.compile(fn, backend=backend, dynamic=False, fullgraph=False)


class CapturedCall:
    """``fn()`` captured into a CUDA graph on ``device`` (replayed by calling), or called directly
    on the CPU.

    ``fn`` must read its inputs from tensors whose storage never changes and must not synchronise
    with the host. The value it returned at capture time is returned by every replay: its tensors
    are overwritten by the next replay of any graph sharing the pool, so copy what must be kept.
    """

    WARMUP_RUNS = 2

    def __init__(self, fn: Callable[[], Any], device: torch.device,
                 pool: Optional[Tuple[int, int]] = None):
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
        # thread_local: other threads (e.g. a ROS executor) may use the GPU while this thread
        # captures.
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
    """The smallest bucket holding ``n`` (``buckets`` sorted ascending), ``None`` above the
    largest."""
    return next((b for b in buckets if n <= b), None)


class BucketedEncoder:
    """Base of the image encoders that run at fixed batch buckets, each bucket one
    :class:`CapturedCall`.

    A batch is split into chunks of at most the largest bucket; each chunk is copied into the
    static input of the smallest bucket that holds it. Subclasses say how a bucket is prepared
    (:meth:`_capture`).
    """

    def __init__(self, image_size: int, device: torch.device, dtype: torch.dtype, mode: str,
                 buckets: Iterable[int]):
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        if not self.buckets or self.buckets[0] < 1:
            raise ValueError(f"batch buckets must be positive integers, got {buckets!r}")
        self.mode = mode
        self.image_size = int(image_size)
        self.device = device
        self.dtype = dtype
        self._calls: Dict[int, Tuple[torch.Tensor, CapturedCall]] = {}

    @property
    def captured_buckets(self) -> Tuple[int, ...]:
        return tuple(sorted(self._calls))

    @torch.inference_mode()
    def warm_up(self, batch_sizes: Iterable[int] = (1,)) -> None:
        """Prepare (compile and capture) the buckets that hold ``batch_sizes`` now rather than on
        first use."""
        for n in batch_sizes:
            self._call(bucket_for(int(n), self.buckets) or self.buckets[-1])

    def _check(self, pixels: torch.Tensor) -> None:
        size = self.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(f"expected N x 3 x {size} x {size} pixels, got {tuple(pixels.shape)}")

    def _chunks(self, pixels: torch.Tensor):
        """``(n, output)`` per chunk of ``pixels``: the bucket's static output, of which the first
        n rows count."""
        for chunk in pixels.split(self.buckets[-1]):
            n = chunk.shape[0]
            inputs, call = self._call(bucket_for(n, self.buckets))
            inputs[:n].copy_(chunk)
            yield n, call()

    def _call(self, bucket: int) -> Tuple[torch.Tensor, CapturedCall]:
        if bucket not in self._calls:
            self._calls[bucket] = self._capture(bucket)
        return self._calls[bucket]

    def _capture(self, bucket: int) -> Tuple[torch.Tensor, CapturedCall]:
        """The static input of ``bucket`` and the call that encodes it."""
        raise NotImplementedError


def install_encoder(engine, encoder_class, mode: str, *, buckets: Iterable[int],
                    warm_up: Iterable[int], compile_backend: str, name: str, plain: str):
    """Set ``engine.fast_encoder`` to an ``encoder_class`` for the engine's model, prepared for the
    ``warm_up`` batch sizes, and return it; ``None`` for mode ``off`` and when preparing fails
    (logged with ``name`` and ``plain``, the encoder that stays in use)."""
    if mode == "off":
        engine.fast_encoder = None
        return None
    encoder = encoder_class(engine.model, engine.image_size, engine.device, engine.dtype,
                            mode=mode, buckets=buckets, compile_backend=compile_backend)
    try:
        encoder.warm_up(warm_up)
    # a failed capture or compile must not stop the robot: keep the plain encoder
    except Exception:
        log.exception("%s fast path %r failed to prepare; using %s", name, mode, plain)
        engine.fast_encoder = None
        return None
    engine.fast_encoder = encoder
    return encoder
