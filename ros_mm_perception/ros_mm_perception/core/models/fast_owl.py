"""Fast OWL image encoding at fixed batch buckets: the same switch and buckets as CLIP's.

A batch of N preprocessed frames is copied into the static input of the smallest bucket that holds
it (1, 2, 4, ... 64 by default; larger batches are split), the image tower and per-patch heads
(:func:`~ros_mm_perception.core.models.owl.image_heads`) run as that bucket's captured call, and
the first N rows of every output are returned. Frames do not interact inside the tower, so the
padding rows change nothing. Modes as for CLIP (:mod:`.fast_clip`): ``graph`` replays a CUDA graph,
``compile`` captures the torch.compile'd tower and heads, ``static`` runs the buckets without
graphs (the CPU behaviour of the other two).

Enable it with :func:`enable_fast_owl`; :meth:`OwlEngine.encode_image` then routes through it.
"""

from __future__ import annotations

from typing import Iterable, Tuple

import torch

from ros_mm_perception.core.models.cuda_graphs import (BucketedEncoder, CapturedCall, compiled,
                                                       install_encoder, new_pool, resolve_mode)
from ros_mm_perception.core.models.fast_clip import DEFAULT_BUCKETS
from ros_mm_perception.core.models.owl import OwlImageEncoding, image_heads


class FastOwlEncoder(BucketedEncoder):
    """:func:`image_heads` of an OWL model at fixed batch buckets (see the module docstring)."""

    def __init__(self, model, image_size: int, device: torch.device, dtype: torch.dtype, *,
                 mode: str = "graph", buckets: Iterable[int] = DEFAULT_BUCKETS,
                 compile_backend: str = "inductor"):
        if mode not in ("static", "graph", "compile"):
            raise ValueError(f"FastOwlEncoder mode must be static, graph or compile, got {mode!r}")
        super().__init__(image_size, device, dtype, mode, buckets)

        def encode(pixels):
            return image_heads(model, pixels).tensors()

        self._encode = compiled(encode, compile_backend) if mode == "compile" else encode
        self._pool = new_pool(device) if mode != "static" else None

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> OwlImageEncoding:
        """Per-patch outputs of an ``N x 3 x S x S`` batch (rows of the bucket's static outputs,
        copied)."""
        self._check(pixels)
        if not pixels.shape[0]:
            return OwlImageEncoding.from_tensors(self._encode(pixels.to(self.dtype)))
        chunks = [[t[:n].clone() for t in out] for n, out in self._chunks(pixels)]
        return OwlImageEncoding.from_tensors([torch.cat(parts) for parts in zip(*chunks)])

    def _capture(self, bucket: int) -> Tuple[torch.Tensor, CapturedCall]:
        size = self.image_size
        inputs = torch.zeros(bucket, 3, size, size, device=self.device, dtype=self.dtype)
        device = self.device if self.mode != "static" else torch.device("cpu")
        return inputs, CapturedCall(lambda: self._encode(inputs), device, self._pool)


def enable_fast_owl(owl, mode: str = "auto", *, buckets: Iterable[int] = DEFAULT_BUCKETS,
                    warm_up: Iterable[int] = (), compile_backend: str = "inductor"):
    """Route ``owl.encode_image`` through a :class:`FastOwlEncoder` (``mode`` auto: graph on CUDA,
    off on CPU).

    ``off`` restores the plain path. ``warm_up`` lists batch sizes to prepare now. Returns the
    encoder, or ``None`` for ``off`` and when preparing failed (logged; the plain encoder stays in
    use).
    """
    mode = resolve_mode(mode, owl.device)
    return install_encoder(owl, FastOwlEncoder, mode, buckets=buckets, warm_up=warm_up,
                           compile_backend=compile_backend, name="OWL", plain="the plain encoder")
