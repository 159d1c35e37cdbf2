"""OWLv2 and OWL-ViT image preprocessing with torch ops on the model's device.

Each class reproduces one transformers image processor (the torchvision backend, the one
``Owlv2Processor`` / ``OwlViTProcessor`` load by default) on uint8 frames uploaded to the device:

* :class:`Owlv2Preprocessor` – rescale to [0, 1], pad to a square at the bottom and right with 0,
  Gaussian anti-aliasing blur when shrinking (sigma ``(factor - 1) / 2``), bilinear resize,
  normalise (pad, blur and resize as two matrix products); boxes come back relative to the padded
  square;
* :class:`OwlViTPreprocessor` – bicubic anti-aliased resize of the uint8 frame to the model's size
  (aspect not kept), optional centre crop, rescale and normalise; boxes come back relative to the
  frame.

Settings (size, mean, std, flags) are read from the processor, so a checkpoint with other values is
reproduced too.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ros_mm_perception.core.imaging.preprocess import upload


def _size(value, fallback) -> Tuple[int, int]:
    value = value if value is not None else fallback
    get = value.get if hasattr(value, "get") else (lambda k: getattr(value, k, None))
    return int(get("height")), int(get("width"))


class _OwlPreprocessor:
    def __init__(self, image_processor, device: torch.device, dtype: torch.dtype = torch.float32):
        ip = image_processor
        self.size = _size(ip.size, {"height": 768, "width": 768})
        self.do_resize = bool(ip.do_resize)
        self.do_rescale = bool(ip.do_rescale)
        self.rescale_factor = float(ip.rescale_factor)
        self.do_normalize = bool(ip.do_normalize)
        self.mean = [float(v) for v in ip.image_mean]
        self.std = [float(v) for v in ip.image_std]
        self.device = device
        self.dtype = dtype

    @property
    def image_size(self) -> int:
        """Side of the square model input."""
        return self.size[0]

    def frames(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """HxWx3 uint8 RGB numpy frames → model-ready ``N x 3 x S x S`` batch."""
        return self([upload(f, self.device) for f in frames])

    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 3xHxW tensors (any sizes) → normalised batch in the model's dtype."""
        return torch.stack([self._one(img[None])[0] for img in images]).to(self.dtype)

    def box_scale(self, height: int, width: int) -> Tuple[float, float]:
        """(x scale, y scale) from the model's relative box coordinates to the frame's pixels."""
        raise NotImplementedError

    def _normalize(self, x: torch.Tensor, mean, std) -> torch.Tensor:
        import torchvision.transforms.v2.functional as tvF

        return tvF.normalize(x, mean, std)


def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """``n x n`` float64 matrix of torchvision's 1D Gaussian blur (kernel ``2 ceil(3 sigma) + 1``,
    reflect border)."""
    size = 2 * math.ceil(3 * sigma) + 1
    half = (size - 1) / 2
    taps = torch.exp(-0.5 * (torch.linspace(-half, half, size, dtype=torch.float64) / sigma) ** 2)
    taps = taps / taps.sum()
    out = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)
    for t, weight in enumerate(taps):
        src = rows + t - int(half)
        # reflect (edge not repeated), as torch.pad
        src = torch.where(src < 0, -src, src)
        src = torch.where(src > n - 1, 2 * (n - 1) - src, src)
        out.index_put_((rows, src), weight.expand(n), accumulate=True)
    return out


def _resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``n_out x n_in`` float64 matrix of a 1D bilinear resize (``align_corners=False``, no
    antialias)."""
    eye = torch.eye(n_in, dtype=torch.float64)[None, None]
    return F.interpolate(eye, size=(n_out, n_in), mode="bilinear", align_corners=False)[0, 0]


class Owlv2Preprocessor(_OwlPreprocessor):
    """``Owlv2ImageProcessor`` on the device: pad to a square, blur, resize, normalise.

    When the frame shrinks, padding, blur and bilinear resize are linear and act on rows and
    columns separately, so for a frame of ``H x W`` they are applied as one matrix product per
    side: ``A @ frame @ B.T`` with ``A`` (``S x H``) and ``B`` (``S x W``) built once per frame
    size. The result equals the processor's to float rounding at a fraction of the work of a full
    2D blur of the padded square. A frame that is enlarged is not blurred and goes through the
    processor's own pad and resize.
    """

    MAX_CACHED_SIZES = 8

    def __init__(self, image_processor, device: torch.device, dtype: torch.dtype = torch.float32):
        super().__init__(image_processor, device, dtype)
        self.do_pad = bool(getattr(image_processor, "do_pad", True))
        self._operators: Dict[Tuple[int, int], Tuple[torch.Tensor, torch.Tensor]] = {}

    def _side_operator(self, n: int, padded: int, out: int, sigma: float,
                       blur: bool) -> torch.Tensor:
        op = torch.eye(padded, dtype=torch.float64)
        if blur:
            op = _blur_matrix(padded, sigma) @ op
        op = _resize_matrix(padded, out) @ op if self.do_resize else op
        # the padded part is zero: drop its columns
        return op[:, :n]

    def operators(self, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(rows ``S x H``, columns ``S x W``) float32 operators on the device for a frame size."""
        key = (height, width)
        if key not in self._operators:
            padded = (max(height, width),) * 2 if self.do_pad else (height, width)
            factor = torch.tensor(padded, dtype=torch.float32) / torch.tensor(self.size,
                                                                              dtype=torch.float32)
            sigma = ((factor - 1) / 2).clamp(min=0)
            blur = bool(self.do_resize and not torch.any(sigma == 0))
            out = self.size if self.do_resize else padded
            rows = self._side_operator(height, padded[0], out[0], float(sigma[0]), blur)
            cols = self._side_operator(width, padded[1], out[1], float(sigma[1]), blur)
            if len(self._operators) >= self.MAX_CACHED_SIZES:
                self._operators.clear()
            self._operators[key] = (rows.to(self.device, torch.float32),
                                    cols.to(self.device, torch.float32))
        return self._operators[key]

    def _blurs(self, height: int, width: int) -> bool:
        side = max(height, width) if self.do_pad else None
        padded = (side, side) if side else (height, width)
        return self.do_resize and all(p > s for p, s in zip(padded, self.size))

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.v2.functional as tvF

        x = x.to(torch.float32)
        if self.do_rescale:
            x = x * self.rescale_factor
        if self._blurs(*x.shape[-2:]):
            rows, cols = self.operators(*x.shape[-2:])
            x = rows @ x @ cols.T
        else:  # no blur when enlarging: the processor's own pad and bilinear resize, exactly
            h, w = x.shape[-2:]
            if self.do_pad:
                x = tvF.pad(x, (0, 0, max(h, w) - w, max(h, w) - h), fill=0.0)
            if self.do_resize:
                x = tvF.resize(x, list(self.size), interpolation=tvF.InterpolationMode.BILINEAR,
                               antialias=False)
        if self.do_normalize:
            x = self._normalize(x, self.mean, self.std)
        return x

    def box_scale(self, height: int, width: int) -> Tuple[float, float]:
        side = float(max(height, width)) if self.do_pad else None
        return (side, side) if side else (float(width), float(height))


class OwlViTPreprocessor(_OwlPreprocessor):
    """``OwlViTImageProcessor`` on the device: bicubic resize (aspect not kept), crop,
    normalise."""

    def __init__(self, image_processor, device: torch.device, dtype: torch.dtype = torch.float32):
        super().__init__(image_processor, device, dtype)
        self.do_center_crop = bool(image_processor.do_center_crop)
        self.crop_size = _size(image_processor.crop_size,
                               {"height": self.size[0], "width": self.size[1]})

    @property
    def image_size(self) -> int:
        return self.crop_size[0] if self.do_center_crop else self.size[0]

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.v2.functional as tvF

        if self.do_resize:
            x = tvF.resize(x, list(self.size), interpolation=tvF.InterpolationMode.BICUBIC,
                           antialias=True)
        if self.do_center_crop:
            (ch, cw), (h, w) = self.crop_size, x.shape[-2:]
            if ch > h or cw > w:
                raise ValueError(
                    f"OWL-ViT crop {ch}x{cw} is larger than the resized {h}x{w} image"
                )
            x = x[..., int((h - ch) / 2.0):int((h - ch) / 2.0) + ch,
                  int((w - cw) / 2.0):int((w - cw) / 2.0) + cw]
        if self.do_normalize:
            mean, std = torch.tensor(self.mean, device=x.device), torch.tensor(self.std,
                                                                               device=x.device)
            if self.do_rescale:  # the processor folds the rescale into the mean and std (float32)
                mean, std = mean * (1.0 / self.rescale_factor), std * (1.0 / self.rescale_factor)
            return self._normalize(x.to(torch.float32), mean, std)
        x = x.to(torch.float32)
        return x * self.rescale_factor if self.do_rescale else x

    def box_scale(self, height: int, width: int) -> Tuple[float, float]:
        return float(width), float(height)
