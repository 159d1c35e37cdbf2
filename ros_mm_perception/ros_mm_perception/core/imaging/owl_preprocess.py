"""OWLv2 and OWL-ViT image preprocessing with torch ops on the model's device.

Each class reproduces one transformers image processor (the torchvision backend, the one
``Owlv2Processor`` / ``OwlViTProcessor`` load by default) on uint8 frames uploaded to the device:

* :class:`Owlv2Preprocessor` – rescale to [0, 1], pad to a square at the bottom and right with 0,
  Gaussian anti-aliasing blur when shrinking (sigma ``(factor - 1) / 2``), bilinear resize, normalise;
  boxes come back relative to the padded square;
* :class:`OwlViTPreprocessor` – bicubic anti-aliased resize of the uint8 frame to the model's size
  (aspect not kept), optional centre crop, rescale and normalise; boxes come back relative to the frame.

Settings (size, mean, std, flags) are read from the processor, so a checkpoint with other values is
reproduced too.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import torch

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


class Owlv2Preprocessor(_OwlPreprocessor):
    """``Owlv2ImageProcessor`` on the device: pad to a square, blur, resize, normalise."""

    def __init__(self, image_processor, device: torch.device, dtype: torch.dtype = torch.float32):
        super().__init__(image_processor, device, dtype)
        self.do_pad = bool(getattr(image_processor, "do_pad", True))

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.v2.functional as tvF

        x = x.to(torch.float32)
        if self.do_rescale:
            x = x * self.rescale_factor
        if self.do_pad:
            h, w = x.shape[-2:]
            side = max(h, w)
            x = tvF.pad(x, (0, 0, side - w, side - h), fill=0.0)
        if self.do_resize:
            factor = torch.tensor(x.shape[-2:], dtype=torch.float32) / torch.tensor(self.size, dtype=torch.float32)
            sigma = ((factor - 1) / 2).clamp(min=0)
            if not torch.any(sigma == 0):
                kernel = [2 * math.ceil(3 * float(s)) + 1 for s in sigma]
                x = tvF.gaussian_blur(x, kernel, sigma=sigma.tolist())
            x = tvF.resize(x, list(self.size), interpolation=tvF.InterpolationMode.BILINEAR, antialias=False)
        if self.do_normalize:
            x = self._normalize(x, self.mean, self.std)
        return x

    def box_scale(self, height: int, width: int) -> Tuple[float, float]:
        side = float(max(height, width)) if self.do_pad else None
        return (side, side) if side else (float(width), float(height))


class OwlViTPreprocessor(_OwlPreprocessor):
    """``OwlViTImageProcessor`` on the device: bicubic resize (aspect not kept), crop, normalise."""

    def __init__(self, image_processor, device: torch.device, dtype: torch.dtype = torch.float32):
        super().__init__(image_processor, device, dtype)
        self.do_center_crop = bool(image_processor.do_center_crop)
        self.crop_size = _size(image_processor.crop_size, {"height": self.size[0], "width": self.size[1]})

    @property
    def image_size(self) -> int:
        return self.crop_size[0] if self.do_center_crop else self.size[0]

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.v2.functional as tvF

        if self.do_resize:
            x = tvF.resize(x, list(self.size), interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        if self.do_center_crop:
            (ch, cw), (h, w) = self.crop_size, x.shape[-2:]
            if ch > h or cw > w:
                raise ValueError(f"OWL-ViT crop {ch}x{cw} is larger than the resized {h}x{w} image")
            x = x[..., int((h - ch) / 2.0):int((h - ch) / 2.0) + ch, int((w - cw) / 2.0):int((w - cw) / 2.0) + cw]
        if self.do_normalize:
            mean, std = torch.tensor(self.mean, device=x.device), torch.tensor(self.std, device=x.device)
            if self.do_rescale:  # the processor folds the rescale into the mean and std (float32)
                mean, std = mean * (1.0 / self.rescale_factor), std * (1.0 / self.rescale_factor)
            return self._normalize(x.to(torch.float32), mean, std)
        x = x.to(torch.float32)
        return x * self.rescale_factor if self.do_rescale else x

    def box_scale(self, height: int, width: int) -> Tuple[float, float]:
        return float(width), float(height)
