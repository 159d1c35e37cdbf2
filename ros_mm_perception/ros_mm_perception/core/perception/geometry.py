"""3D positions of detections from an aligned depth image and pinhole intrinsics.

Method, per detection box:

* depth is read in metres: ``uint16`` images are millimetres (16UC1), float images are metres
  (32FC1, or the output of a depth decoder); zero, negative, NaN and infinite values are invalid
  (REP 118) and ignored;
* the box depth ``z`` is the median of the valid depths in the central region of the box (the middle
  :data:`CENTRAL_FRACTION` of its width and height), which keeps background at the box edges out;
  if that region has no valid depth, the whole box is used; no valid depth at all → no 3D;
* the centre is the box centre back-projected at ``z``: ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``
  in the camera optical frame (REP 103: x right, y down, z forward). Boxes have corner coordinates
  (pixel ``i`` spans ``[i, i + 1)``) while ``cx, cy`` index pixel centres, so ``u = (x0 + x1) / 2 - 0.5``;
* the size is the box extent at ``z``: ``(x1 - x0) z / fx``, ``(y1 - y0) z / fy``, and for depth the
  spread of the visible surface, the 10th to 90th percentile of the central region's valid depths.

A depth image with another resolution than the colour image is accepted when it has the same aspect
ratio (boxes are scaled onto it); any other shape is an :class:`ImageFormatError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from ros_mm_perception.core.errors import ImageFormatError
from ros_mm_perception.core.results import Box, Detection, Intrinsics

CENTRAL_FRACTION = 0.5
"""Fraction of the box width and height, around its centre, whose depths give the box depth."""
SPREAD_PERCENTILES = (10.0, 90.0)
"""Percentiles of the central depths whose difference is the box's depth extent."""
ASPECT_TOLERANCE = 0.01

Vector3 = Tuple[float, float, float]


def check_depth(depth: np.ndarray) -> np.ndarray:
    """Validate an HxW depth image (uint16 millimetres or float metres) and return it as HxW."""
    if not isinstance(depth, np.ndarray):
        raise ImageFormatError(f"depth must be a numpy array, got {type(depth).__name__}")
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2 or depth.size == 0:
        raise ImageFormatError(f"depth must be an HxW image, got shape {depth.shape}")
    if depth.dtype != np.uint16 and not np.issubdtype(depth.dtype, np.floating):
        raise ImageFormatError(f"depth must be uint16 millimetres (16UC1) or float metres (32FC1), got {depth.dtype}")
    return depth


def depth_scale(image_shape: Sequence[int], depth_shape: Sequence[int]) -> Tuple[float, float]:
    """Factors (sx, sy) mapping image pixels onto depth pixels; an error unless the aspect ratios match."""
    h, w = int(image_shape[0]), int(image_shape[1])
    dh, dw = int(depth_shape[0]), int(depth_shape[1])
    if (dh, dw) == (h, w):
        return 1.0, 1.0
    sx, sy = dw / w, dh / h
    if abs(sx - sy) > ASPECT_TOLERANCE * max(sx, sy):
        raise ImageFormatError(
            f"depth image is {dw}x{dh} but the colour image is {w}x{h}; the depth must be aligned to the "
            "colour image (same size, or the same aspect ratio at another resolution)")
    return sx, sy


def _valid_metres(patch: np.ndarray) -> np.ndarray:
    values = patch.astype(np.float32).ravel()
    if patch.dtype == np.uint16:
        values *= np.float32(0.001)
    return values[np.isfinite(values) & (values > 0)]


def _window(box: Box, sx: float, sy: float, shape, fraction: float) -> Tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * (1 - fraction) / 2, (y1 - y0) * (1 - fraction) / 2
    h, w = shape
    ix0 = int(np.clip(np.floor((x0 + mx) * sx), 0, w - 1))
    iy0 = int(np.clip(np.floor((y0 + my) * sy), 0, h - 1))
    ix1 = int(np.clip(np.ceil((x1 - mx) * sx), ix0 + 1, w))
    iy1 = int(np.clip(np.ceil((y1 - my) * sy), iy0 + 1, h))
    return ix0, iy0, ix1, iy1


def box_position(depth: np.ndarray, intrinsics: Intrinsics, box: Box,
                 image_shape: Optional[Sequence[int]] = None) -> Optional[Tuple[Vector3, Vector3]]:
    """``(centre xyz, size xyz)`` in metres for one box, or ``None`` when the box has no valid depth.

    ``box`` is in colour-image pixels; ``image_shape`` (H, W) is the colour image's size when the depth
    image has another resolution (default: the depth image's size).
    """
    depth = check_depth(depth)
    sx, sy = depth_scale(image_shape or depth.shape, depth.shape)
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise ValueError(f"box {box} has non-finite coordinates")
    cx0, cy0, cx1, cy1 = _window((x0, y0, x1, y1), sx, sy, depth.shape, CENTRAL_FRACTION)
    values = _valid_metres(depth[cy0:cy1, cx0:cx1])
    if values.size == 0:
        bx0, by0, bx1, by1 = _window((x0, y0, x1, y1), sx, sy, depth.shape, 1.0)
        values = _valid_metres(depth[by0:by1, bx0:bx1])
        if values.size == 0:
            return None
    z = float(np.median(values))
    lo, hi = np.percentile(values, SPREAD_PERCENTILES)
    u, v = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5
    k = intrinsics
    centre = ((u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z)
    size = ((x1 - x0) * z / k.fx, (y1 - y0) * z / k.fy, float(hi - lo))
    return centre, size


def locate(detections: Sequence[Detection], depth: Optional[np.ndarray], intrinsics: Optional[Intrinsics],
           image_shape: Sequence[int]) -> None:
    """Set ``xyz`` and ``size_xyz`` of each detection in place; without depth or intrinsics nothing changes."""
    if depth is None or intrinsics is None or not detections:
        return
    for det in detections:
        found = box_position(depth, intrinsics, det.box, image_shape)
        det.xyz, det.size_xyz = found if found is not None else (None, None)


def read_depth(path) -> np.ndarray:
    """Read a depth image file: 16-bit PNG/TIFF (millimetres), 32-bit float TIFF (metres) or ``.npy``."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageFormatError(f"depth image {str(path)!r} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:  # objects, a damaged header, not a .npy at all
            raise ImageFormatError(f"depth file {str(path)!r} is not a plain numeric .npy array "
                                   f"({' '.join(str(err).split())})") from None
        if not isinstance(depth, np.ndarray):
            raise ImageFormatError(f"depth file {str(path)!r} holds several arrays (.npz); save one with np.save")
    else:
        depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise ImageFormatError(f"cannot decode depth image {str(path)!r}")
    if depth.dtype not in (np.uint16, np.float32, np.float64):
        raise ImageFormatError(
            f"depth image {str(path)!r} is {depth.dtype} with shape {depth.shape}; expected 16-bit millimetres "
            "or 32-bit float metres")
    return check_depth(depth)
