"""Image preprocessing with torch ops on the model's device.

Frames are uploaded as uint8 and resized, cropped and normalised where the model runs, matching
open_clip's inference transform (resize the shortest side with bicubic antialiasing, centre crop,
normalise). Uploading uint8 moves 4x fewer bytes than float and keeps the work on the GPU. On the
CPU the resize runs on the uint8 pixels in channels-last order, torch's vectorised kernel that
follows PIL's resampling (within one grey level of PIL, ~5x faster than PIL on a 640x480 frame);
on CUDA it runs in float.

Two crop modes (:data:`CROP_MODES`):

* ``center`` – open_clip's transform, bit for bit: the short side is resized to the model's size
  and the centre square kept. Fills the model's input with the frame, but a 4:3 frame loses its
  side bands (1/8 of the width each side), and anything standing there is never seen.
* ``letterbox`` – the whole frame, its long side resized to the model's size, padded to a square
  with the model's mean colour (zero after normalisation). Sees everything, at a lower resolution
  (a 4:3 frame fills 3/4 of the input).
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ros_mm_perception.core.config import CROP_MODES
from ros_mm_perception.core.errors import ImageFormatError


def check_rgb(image: np.ndarray) -> np.ndarray:
    """Validate an HxWx3 uint8 RGB frame and return it."""
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
    ):
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ImageFormatError(f"expected an HxWx3 uint8 RGB image, got shape {shape} dtype "
                               f"{dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageFormatError(f"image is empty: shape {image.shape}")
    return image


def upload(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 numpy → 3xHxW uint8 tensor on ``device`` (one copy, non-blocking where
    pinned)."""
    check_rgb(image)
    return (
        torch.from_numpy(np.ascontiguousarray(image))
        .to(device, non_blocking=True)
        .permute(2, 0, 1)
    )


def _resize(chw: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
    """Bicubic, antialiased resize of a uint8 3xHxW tensor (values not yet rounded on CUDA)."""
    if (new_h, new_w) == tuple(chw.shape[1:]):
        return chw
    if chw.device.type == "cpu":
        # uint8 in, uint8 out (rounded and clamped as PIL does); channels-last selects the fast
        # kernel.
        pixels = chw[None].contiguous(memory_format=torch.channels_last)
        return F.interpolate(pixels, size=(new_h, new_w), mode="bicubic", align_corners=False,
                             antialias=True)[0]
    return F.interpolate(chw[None].float(), size=(new_h, new_w), mode="bicubic",
                         align_corners=False, antialias=True)[0]


class ClipPreprocessor:
    """open_clip's 'shortest side + centre crop' inference transform, or a letterbox, on
    tensors."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float],
                 device: torch.device, dtype: torch.dtype = torch.float32):
        self.size = int(size)
        self.device = device
        self.dtype = dtype
        self.mean = torch.tensor(mean, device=device, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, device=device, dtype=torch.float32).view(3, 1, 1)

    def _resize_crop(self, chw: torch.Tensor) -> torch.Tensor:
        _, h, w = chw.shape
        # Same output size rule as torchvision's Resize(int): the long side is truncated.
        if h <= w:
            new_h, new_w = self.size, max(self.size, int(self.size * w / h))
        else:
            new_h, new_w = max(self.size, int(self.size * h / w)), self.size
        resized = _resize(chw, new_h, new_w)
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        return resized[:, top:top + self.size, left:left + self.size].float()

    def _letterbox(self, chw: torch.Tensor) -> torch.Tensor:
        _, h, w = chw.shape
        scale = self.size / max(h, w)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        canvas = (self.mean * 255.0).expand(3, self.size, self.size).clone()
        top, left = (self.size - new_h) // 2, (self.size - new_w) // 2
        canvas[:, top:top + new_h, left:left + new_w] = _resize(chw, new_h, new_w)
        return canvas

    def __call__(self, images: Sequence[torch.Tensor], crop: str = "center") -> torch.Tensor:
        """uint8 3xHxW tensors (any sizes) → normalised Nx3xSxS batch in the model's dtype.

        ``crop`` is one of :data:`CROP_MODES` (see the module docstring).
        """
        if crop not in CROP_MODES:
            raise ValueError(f"crop mode {crop!r} is not one of {', '.join(CROP_MODES)}")
        fit = self._letterbox if crop == "letterbox" else self._resize_crop
        batch = torch.stack([fit(img) for img in images])
        # PIL (open_clip's reference) rounds and clamps to uint8 after resizing; once for the
        # batch.
        batch = (batch.round_().clamp_(0, 255) / 255.0 - self.mean) / self.std
        return batch.to(self.dtype)

    def frames(self, frames: Sequence[np.ndarray], crop: str = "center") -> torch.Tensor:
        """HxWx3 uint8 RGB numpy frames → model-ready batch."""
        return self([upload(f, self.device) for f in frames], crop)

    def regions(self, image: np.ndarray, boxes: Sequence[Tuple[float, float, float, float]],
                margin: float = 0.0, crop: str = "center") -> torch.Tensor:
        """Crop ``boxes`` (x0, y0, x1, y1 pixels) from one frame, each grown by ``margin`` of its
        size."""
        chw = upload(image, self.device)
        return self(
            [chw[:, y0:y1, x0:x1] for x0, y0, x1, y1 in crop_windows(image.shape, boxes, margin)],
            crop,
        )


def crop_windows(shape, boxes, margin: float = 0.0):
    """Integer crop windows for ``boxes`` clamped to the image, at least 1 pixel each."""
    h, w = shape[:2]
    out = []
    for box in boxes:
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(np.isfinite([x0, y0, x1, y1])):
            raise ValueError(f"box {box} has non-finite coordinates")
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        ix0 = int(np.clip(np.floor(x0 - mx), 0, w - 1))
        iy0 = int(np.clip(np.floor(y0 - my), 0, h - 1))
        ix1 = int(np.clip(np.ceil(x1 + mx), ix0 + 1, w))
        iy1 = int(np.clip(np.ceil(y1 + my), iy0 + 1, h))
        out.append((ix0, iy0, ix1, iy1))
    return out


MIN_TILE_SIDE = 16
"""Smallest tile side, in frame pixels, that :func:`tile_windows` makes."""
TILE_STEP = 0.6
"""Longest step between neighbouring tiles, as a share of a tile's side: every object up to
``1 - TILE_STEP`` of a tile's side lies whole in one tile."""


def tile_windows(height: int, width: int, rows: int) -> List[Tuple[int, int, int, int]]:
    """Square windows (x0, y0, x1, y1) on a grid over a frame, ``rows`` of them down its short
    side.

    Down the short side the windows overlap by half; along the long side by at least
    ``1 - TILE_STEP``. ``rows`` 0 gives none; 1 gives squares as tall as a landscape frame; a frame
    too small for windows of :data:`MIN_TILE_SIDE` pixels gets none, and no window is the whole
    frame.
    """
    short = min(height, width)
    side = round(2 * short / (rows + 1)) if rows > 0 else 0
    if side < MIN_TILE_SIDE:
        return []

    def starts(length: int) -> np.ndarray:
        count = rows if length == short else math.ceil((length - side) / (TILE_STEP * side)) + 1
        return np.linspace(0, length - side, count).round().astype(int)

    windows = [(int(x), int(y), int(x) + side, int(y) + side) for y in starts(height)
               for x in starts(width)]
    return [] if windows == [(0, 0, width, height)] else windows


def label_windows(height: int, width: int, rows: int) -> List[Tuple[int, int, int, int]]:
    """The windows whole-frame labels look at besides the frame, at two scales: squares as tall as
    the frame's short side along its long side (:func:`tile_windows` with one row), which see an
    object too large for a tile whole and larger than the letterboxed frame shows it, then ``rows``
    rows of tiles. ``rows`` 0 gives none."""
    if rows == 0:
        return []
    return list(dict.fromkeys(tile_windows(height, width, 1) + tile_windows(height, width, rows)))
