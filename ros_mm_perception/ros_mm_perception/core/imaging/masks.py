"""Instance masks: checks, COCO run-length encoding, the instance label image and overlays.

A detection's mask is an ``H x W`` bool array in original-image pixels. Offline outputs store it as
COCO compressed RLE (``{"size": [height, width], "counts": "..."}``, as ``pycocotools.mask.encode``
writes it, ``counts`` decoded to text). The ROS ``instance_mask`` image is ``mono16``: pixel value
= 1 + the index of the detection in that frame's Detection2DArray, 0 = no detection. Where masks
overlap, the detection listed first (the lower index: the pipeline lists detections by score,
highest first) owns the pixel.
"""

from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence

import numpy as np

from ros_mm_perception.core.errors import ImageFormatError

MAX_INSTANCES = 65535
"""The most detections one ``mono16`` instance image can number."""
OVERLAY_ALPHA = 0.45
"""Weight of a mask's colour over the image in overlays."""


def check_mask(mask, shape: Sequence[int]) -> np.ndarray:
    """``mask`` as an ``H x W`` bool array of the image size ``shape`` (H, W, ...); an error
    otherwise."""
    mask = np.asarray(mask)
    h, w = int(shape[0]), int(shape[1])
    if mask.shape != (h, w):
        raise ImageFormatError(f"a mask must be {h}x{w} (the image's height x width), got shape "
                               f"{mask.shape}")
    if mask.dtype != bool:
        if not (np.issubdtype(mask.dtype, np.number) and np.isfinite(mask).all()):
            raise ImageFormatError(f"a mask must be bool or finite numbers, got {mask.dtype}")
        mask = mask > 0.5 if np.issubdtype(mask.dtype, np.floating) else mask != 0
    return mask


def encode_rle(mask: np.ndarray) -> Dict[str, object]:
    """COCO compressed RLE of an ``H x W`` mask: ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as coco_mask

    if np.ndim(mask) != 2:
        raise ImageFormatError(f"a mask must be an H x W array, got shape {np.shape(mask)}")
    mask = check_mask(mask, np.shape(mask))
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Dict[str, object]) -> np.ndarray:
    """The ``H x W`` bool mask of a COCO compressed RLE (``counts`` as text or bytes)."""
    from pycocotools import mask as coco_mask

    try:
        size = [int(v) for v in rle["size"]]
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a COCO RLE (needs size [h, w] and counts): {err}") from None
    if len(size) != 2 or min(size) < 0:
        raise ValueError(f"COCO RLE size must be [height, width], got {rle['size']!r}")
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    # pycocotools 2.0.x under numpy 2: a DeprecationWarning per call
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode({"size": size, "counts": counts}).astype(bool)


def mask_area(rle: Dict[str, object]) -> int:
    """Number of pixels in a COCO compressed RLE."""
    from pycocotools import mask as coco_mask

    counts = rle["counts"]
    return int(coco_mask.area({"size": list(rle["size"]),
                               "counts": counts.encode("ascii") if isinstance(counts, str)
                               else counts}))


def instance_image(masks: Sequence[Optional[np.ndarray]], shape: Sequence[int]) -> np.ndarray:
    """The ``H x W`` uint16 label image: 1 + index of the mask's detection, 0 = none.

    ``masks[i]`` is detection ``i``'s mask or None (a detection without a mask owns no pixel).
    Where masks overlap, the lowest index wins.
    """
    h, w = int(shape[0]), int(shape[1])
    if len(masks) > MAX_INSTANCES:
        raise ValueError(f"{len(masks)} detections do not fit a mono16 instance image (at most "
                         f"{MAX_INSTANCES})")
    out = np.zeros((h, w), np.uint16)
    for i in range(len(masks) - 1, -1, -1):   # paint the last first, so lower indices end on top
        if masks[i] is not None:
            out[check_mask(masks[i], (h, w))] = i + 1
    return out


def overlay_masks(image: np.ndarray, masks: Sequence[Optional[np.ndarray]], colours) -> np.ndarray:
    """A copy of the RGB ``image`` with each mask tinted in its colour (RGB 0..255), first on
    top."""
    out = np.ascontiguousarray(image).astype(np.float32)
    labels = instance_image(masks, image.shape)
    for i, colour in enumerate(colours):
        where = labels == i + 1
        if where.any():
            out[where] = out[where] * (1 - OVERLAY_ALPHA) + np.asarray(colour,
                                                                       np.float32) * OVERLAY_ALPHA
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
