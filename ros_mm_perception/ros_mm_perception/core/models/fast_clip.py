"""Fast CLIP image encoding at fixed batch buckets.

A batch of N preprocessed images is copied into the static input of the smallest bucket that holds
it (1, 2, 4, ... 64 by default; larger batches are split), encoded by that bucket's captured call
and the first N rows are returned. Images do not interact inside the encoder, so the padding rows
change nothing. Modes (see :data:`~ros_mm_perception.core.models.cuda_graphs.FAST_PATH_MODES`):
``graph`` replays a CUDA graph of open_clip's own ``encode_image``; ``compile`` captures the
torch.compile'd encoder; ``static`` runs the buckets without graphs (the CPU behaviour of the other
two); ``freeze``, the CPU fast path, runs each bucket as frozen TorchScript
(:func:`frozen_encoder`).

Enable it with :func:`enable_fast_clip`; :meth:`ClipModel.encode_image` then routes through it.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Callable, Iterable, Tuple

import torch

from ros_mm_perception.core.config import CLIP_FAST_PATHS
from ros_mm_perception.core.models.cuda_graphs import (BucketedEncoder, CapturedCall, compiled,
                                                       install_encoder, new_pool, resolve_mode)


DEFAULT_BUCKETS: Tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
MODES = ("static", "graph", "compile", "freeze")
ONEDNN_FROM_BATCH = 16
"""Buckets from this size up of convolutional image towers also get oneDNN's inference rewrite
(``torch.jit.optimize_for_inference``).

Measured on one CPU thread with the embedded model (a ResNet): from batch 16 up the rewrite runs
1.4-1.9x faster than the frozen graph alone; below, converting to and from oneDNN's layout costs
more than it saves. Vision transformers (one convolution, the patch embedding) gain nothing from it
and lose at small widths.
"""


class _EncodeImage(torch.nn.Module):
    """``model.encode_image`` as a module, so it can be traced."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


def is_convolutional(model) -> bool:
    """Whether open_clip's image tower is a convolutional network (more than a patch-embedding
    convolution)."""
    return sum(isinstance(m, torch.nn.Conv2d) for m in model.visual.modules()) > 1


@torch.no_grad()
def frozen_encoder(model, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """open_clip's ``encode_image`` scripted (traced at ``example``'s shape when it does not
    script) and frozen (weights folded in as constants).

    Freezing folds batch norms into convolutions and fuses operators. Convolutional towers are
    frozen on a channels-last copy (oneDNN's convolutions then need no reordering: 15-20 % faster
    measured on the embedded model; pass channels-last pixels), and their buckets of
    :data:`ONEDNN_FROM_BATCH` and more are also rewritten for oneDNN. TorchScript warns that it is
    deprecated in favour of torch.compile, which here needs ~10 s per batch size to prepare and ran
    no faster: the warning is silenced.
    """
    convolutional = is_convolutional(model)
    if convolutional:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        example = example.contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # shapes are fixed per bucket on purpose
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:  # scripted, its types are shared by every load of the same architecture
            module = torch.jit.script(_EncodeImage(model).eval())
        except Exception:  # a tower TorchScript cannot compile: traced at this bucket's shape
            module = torch.jit.trace(_EncodeImage(model).eval(), example, check_trace=False)
        frozen = torch.jit.freeze(_own_unit(module).eval())
        if convolutional and example.shape[0] >= ONEDNN_FROM_BATCH:
            frozen = torch.jit.optimize_for_inference(frozen)
    return frozen


def _own_unit(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """``module`` reloaded from its serialised form, so that its types live in a compilation unit
    of its own, freed with it.

    TorchScript keeps module types in its global compilation unit for the life of the process; a
    frozen type holds the weights folded into its graph, so freezing the module itself left a copy
    of them behind at every load of the model (a lifecycle cleanup and configure): 80 MB per cycle
    with the embedded model. Frozen after the round trip, the graph lives in the private unit.
    Scripting (rather than tracing, whose types are new at every trace) keeps the global unit from
    growing as well; a traced tower still leaves a few MB of graph per bucket and load.
    """
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer, map_location="cpu")


class FastClipEncoder(BucketedEncoder):
    """``encode_image`` of an open_clip model at fixed batch buckets (see the module docstring)."""

    def __init__(self, model, image_size: int, device: torch.device, dtype: torch.dtype, *,
                 mode: str = "graph", buckets: Iterable[int] = DEFAULT_BUCKETS,
                 compile_backend: str = "inductor"):
        if mode not in MODES:
            raise ValueError(f"FastClipEncoder mode must be one of {', '.join(MODES)}, got "
                             f"{mode!r}")
        super().__init__(image_size, device, dtype, mode, buckets)
        self.model = model
        self._channels_last = mode == "freeze" and is_convolutional(model)
        self._encode = (
            compiled(model.encode_image, compile_backend)
            if mode == "compile"
            else model.encode_image
        )
        self._pool = new_pool(device) if mode in ("graph", "compile") else None

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image embeddings (``N x D`` in the model's dtype, not normalised) of an ``N x 3 x S x
        S`` batch."""
        self._check(pixels)
        chunks = [out[:n].clone() for n, out in self._chunks(pixels)]
        if not chunks:
            return self._encode(pixels.to(self.dtype))
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]

    def _capture(self, bucket: int) -> Tuple[torch.Tensor, CapturedCall]:
        inputs = torch.zeros(bucket, 3, self.image_size, self.image_size, device=self.device,
                             dtype=self.dtype)
        if self._channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        device = self.device if self.mode in ("graph", "compile") else torch.device("cpu")
        encode = frozen_encoder(self.model, inputs) if self.mode == "freeze" else self._encode
        return inputs, CapturedCall(lambda: encode(inputs), device, self._pool)


def enable_fast_clip(clip, mode: str = "auto", *, buckets: Iterable[int] = DEFAULT_BUCKETS,
                     warm_up: Iterable[int] = (), compile_backend: str = "inductor"):
    """Route ``clip.encode_image`` through a :class:`FastClipEncoder` (``mode`` auto: graph on
    CUDA, freeze on CPU).

    ``off`` restores open_clip's own path. ``warm_up`` lists batch sizes to prepare now (the node
    does this when it configures). Returns the encoder, or ``None`` for ``off`` and when preparing
    failed (logged; open_clip's encoder stays in use).
    """
    mode = resolve_mode(mode, clip.device, choices=CLIP_FAST_PATHS, cpu_auto="freeze")
    return install_encoder(clip, FastClipEncoder, mode, buckets=buckets, warm_up=warm_up,
                           compile_backend=compile_backend, name="CLIP",
                           plain="open_clip's encoder")
