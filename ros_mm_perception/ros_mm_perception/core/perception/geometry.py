"""3D positions of detections from an aligned depth image and pinhole intrinsics.

Method, per detection:

* depth is read in metres: ``uint16`` images are millimetres (16UC1), float images are metres
  (32FC1, or the output of a depth decoder); zero, negative, NaN and infinite values are invalid
  (REP 118) and ignored;
* the object's depths are the **nearest dominant depth mode** of the valid depths in the box (or in
  the mask, when the detection has one): the depths are binned (:func:`nearest_mode`), runs of
  occupied bins are the modes, and the nearest mode holding at least :data:`MODE_MIN_FRACTION` of
  the depths is the object's. A ring or a cross before a wall keeps its own depth, where a median
  over the box would land on the wall seen through its hole or around its arms; no valid depth at
  all gives no 3D;
* without a mask, ``z`` is the median of the mode, the centre is the box centre back-projected at
  ``z`` (``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``, camera optical frame, REP 103: x right,
  y down, z forward; boxes have corner coordinates, pixel ``i`` spans ``[i, i + 1)``, while
  ``cx, cy`` index pixel centres, so ``u = (x0 + x1) / 2 - 0.5``) and the size is the box extent
  at ``z`` plus, for depth, the spread of the mode (:data:`SPREAD_PERCENTILES`);
* with a mask, ``z`` is the median depth of the mask pixels in the mode, and the centre and size
  come from the robust extents (:data:`EXTENT_PERCENTILES`) of those pixels back-projected to 3D;
  a mask with no valid depth (an empty one too) falls back to the box.

A depth image with another resolution than the colour image is accepted when it has the same aspect
ratio (boxes and masks are scaled onto it); any other shape is an :class:`ImageFormatError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from ros_mm_perception.core.errors import ImageFormatError
from ros_mm_perception.core.results import Box, Detection, Intrinsics

MODE_MIN_FRACTION = 0.08
"""Least share of a box's (or mask's) valid depths that a depth mode needs to be the object's."""
MODE_BIN_M = 0.02
"""Depth bin width in metres at 0 m; bins widen by :data:`MODE_BIN_PER_M` per metre of depth."""
MODE_BIN_PER_M = 0.02
"""Growth of the depth bin width per metre of the depths' median (depth noise grows with range)."""
MODE_EMPTY_FRACTION = 0.005
"""A bin with no more than this share of the depths (a few flying pixels) separates two modes."""
MAX_MODE_BINS = 4096
SPREAD_PERCENTILES = (10.0, 90.0)
"""Percentiles of the mode's depths whose difference is the object's depth extent."""
EXTENT_PERCENTILES = (0.5, 99.5)
"""Percentiles of a mask's back-projected points whose differences are its width and height."""
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
        raise ImageFormatError(
            f"depth must be uint16 millimetres (16UC1) or float metres (32FC1), got {depth.dtype}"
        )
    return depth


def depth_scale(image_shape: Sequence[int], depth_shape: Sequence[int]) -> Tuple[float, float]:
    """Factors (sx, sy) mapping image pixels onto depth pixels; an error unless aspects match."""
    h, w = int(image_shape[0]), int(image_shape[1])
    dh, dw = int(depth_shape[0]), int(depth_shape[1])
    if (dh, dw) == (h, w):
        return 1.0, 1.0
    sx, sy = dw / w, dh / h
    if abs(sx - sy) > ASPECT_TOLERANCE * max(sx, sy):
        raise ImageFormatError(
            f"depth image is {dw}x{dh} but the colour image is {w}x{h}; the depth must be aligned "
            "to the colour image (same size, or the same aspect ratio at another resolution)"
        )
    return sx, sy


def _metres(patch: np.ndarray) -> np.ndarray:
    """Depths of ``patch`` in metres (float32), invalid readings as NaN."""
    values = patch.astype(np.float32)
    if patch.dtype == np.uint16:
        values *= np.float32(0.001)
    values[~(np.isfinite(values) & (values > 0))] = np.nan
    return values


def _window(box: Box, sx: float, sy: float, shape) -> Tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    h, w = shape
    ix0 = int(np.clip(np.floor(x0 * sx), 0, w - 1))
    iy0 = int(np.clip(np.floor(y0 * sy), 0, h - 1))
    ix1 = int(np.clip(np.ceil(x1 * sx), ix0 + 1, w))
    iy1 = int(np.clip(np.ceil(y1 * sy), iy0 + 1, h))
    return ix0, iy0, ix1, iy1


def nearest_mode(values: np.ndarray) -> Tuple[float, float]:
    """``(near, far)`` metres: the span of the nearest depth mode holding at least
    :data:`MODE_MIN_FRACTION` of ``values`` (finite depths, at least one); the largest mode when
    none does."""
    lo, hi = float(values.min()), float(values.max())
    width = MODE_BIN_M + MODE_BIN_PER_M * float(np.median(values))
    bins = int(np.ceil((hi - lo) / width)) + 1
    if bins > MAX_MODE_BINS:
        bins, width = MAX_MODE_BINS, (hi - lo) / (MAX_MODE_BINS - 1)
    if bins <= 2:
        return lo, hi
    counts, edges = np.histogram(values, bins=bins, range=(lo, lo + bins * width))
    occupied = counts > max(1.0, MODE_EMPTY_FRACTION * values.size)
    modes, start = [], None
    for i, full in enumerate(np.append(occupied, False)):
        if full and start is None:
            start = i
        elif not full and start is not None:
            modes.append((start, i))
            start = None
    if not modes:
        return lo, hi
    masses = [int(counts[a:b].sum()) for a, b in modes]
    chosen = next(
        (m for m, n in zip(modes, masses) if n >= MODE_MIN_FRACTION * values.size),
        modes[int(np.argmax(masses))],
    )
    return float(edges[chosen[0]]), float(edges[chosen[1]])


def _mask_on_depth(
    mask: np.ndarray, image_hw: Tuple[int, int], depth_hw: Tuple[int, int]
) -> np.ndarray:
    """An HxW mask of the colour image, sampled (nearest pixel) onto the depth image's grid."""
    mask = np.asarray(mask)
    if mask.shape != tuple(image_hw):
        raise ImageFormatError(
            f"mask has shape {mask.shape} but the image is {image_hw[1]}x{image_hw[0]}"
        )
    mask = mask.astype(bool)
    if tuple(depth_hw) == tuple(image_hw):
        return mask
    rows = np.minimum(
        ((np.arange(depth_hw[0]) + 0.5) * image_hw[0] / depth_hw[0]).astype(int), image_hw[0] - 1
    )
    cols = np.minimum(
        ((np.arange(depth_hw[1]) + 0.5) * image_hw[1] / depth_hw[1]).astype(int), image_hw[1] - 1
    )
    return mask[np.ix_(rows, cols)]


def box_position(
    depth: np.ndarray,
    intrinsics: Intrinsics,
    box: Box,
    image_shape: Optional[Sequence[int]] = None,
    mask: Optional[np.ndarray] = None,
) -> Optional[Tuple[Vector3, Vector3]]:
    """``(centre xyz, size xyz)`` in metres for one detection, or ``None`` without valid depth.

    ``box`` is in colour-image pixels; ``image_shape`` (H, W) is the colour image's size when the
    depth image has another resolution (default: the depth image's size); ``mask`` (HxW bool,
    colour-image pixels) gives the object's own pixels.
    """
    depth = check_depth(depth)
    image_hw = tuple(int(v) for v in (image_shape or depth.shape)[:2])
    sx, sy = depth_scale(image_hw, depth.shape)
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise ValueError(f"box {box} has non-finite coordinates")
    k = intrinsics
    if mask is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            found = _mask_position(depth, k, _mask_on_depth(mask, image_hw, depth.shape), sx, sy)
        if found is not None:   # an empty mask, or one without valid depth: the box window
            return _finite(found)
    bx0, by0, bx1, by1 = _window((x0, y0, x1, y1), sx, sy, depth.shape)
    values = _metres(depth[by0:by1, bx0:bx1]).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    near, far = nearest_mode(values)
    values = values[(values >= near) & (values <= far)]
    z = float(np.median(values))
    lo, hi = np.percentile(values, SPREAD_PERCENTILES)
    u, v = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5
    centre = ((u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z)
    size = ((x1 - x0) * z / k.fx, (y1 - y0) * z / k.fy, float(hi - lo))
    return _finite((centre, size))


def _finite(found):
    """``found`` (centre, size), or ``None`` where a value overflowed (a depth and intrinsics so
    extreme that the position is no number)."""
    return found if np.isfinite(np.concatenate(found)).all() else None


def _mask_position(depth: np.ndarray, k: Intrinsics, mask: np.ndarray, sx: float, sy: float):
    """Centre and size from the mask's pixels in their nearest depth mode, back-projected."""
    rows, cols = np.nonzero(mask)
    d = _metres(depth[rows, cols])
    keep = np.isfinite(d)
    if not keep.any():
        return None
    rows, cols, d = rows[keep], cols[keep], d[keep]
    near, far = nearest_mode(d)
    keep = (d >= near) & (d <= far)
    rows, cols, d = rows[keep], cols[keep], d[keep].astype(np.float64)
    z = float(np.median(d))
    # depth pixel centres in colour-image pixel coordinates (the intrinsics are the colour image's)
    u, v = (cols + 0.5) / sx - 0.5, (rows + 0.5) / sy - 0.5
    x, y = (u - k.cx) * d / k.fx, (v - k.cy) * d / k.fy
    (x_lo, x_hi), (y_lo, y_hi) = (
        np.percentile(x, EXTENT_PERCENTILES),
        np.percentile(y, EXTENT_PERCENTILES),
    )
    d_lo, d_hi = np.percentile(d, SPREAD_PERCENTILES)
    pixel_x, pixel_y = z / (k.fx * sx), z / (k.fy * sy)  # one depth pixel's footprint at z
    centre = (float(x_lo + x_hi) / 2, float(y_lo + y_hi) / 2, z)
    size = (float(x_hi - x_lo) + pixel_x, float(y_hi - y_lo) + pixel_y, float(d_hi - d_lo))
    return centre, size


def locate(
    detections: Sequence[Detection],
    depth: Optional[np.ndarray],
    intrinsics: Optional[Intrinsics],
    image_shape: Sequence[int],
) -> None:
    """Set ``xyz`` and ``size_xyz`` of each detection in place (from its mask when it has one);
    without depth or intrinsics nothing changes."""
    if depth is None or intrinsics is None or not detections:
        return
    for det in detections:
        found = box_position(depth, intrinsics, det.box, image_shape, det.mask)
        det.xyz, det.size_xyz = found if found is not None else (None, None)


def read_depth(path) -> np.ndarray:
    """Read a depth image: 16-bit PNG/TIFF (millimetres), float32 TIFF (metres) or ``.npy``."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageFormatError(f"depth image {str(path)!r} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (
            ValueError,
            OSError,
            EOFError,
        ) as err:  # objects, a damaged header, not a .npy at all
            raise ImageFormatError(
                f"depth file {str(path)!r} is not a plain numeric .npy array "
                f"({' '.join(str(err).split())})"
            ) from None
        if not isinstance(depth, np.ndarray):
            raise ImageFormatError(
                f"depth file {str(path)!r} holds several arrays (.npz); save one with np.save"
            )
    else:
        depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise ImageFormatError(f"cannot decode depth image {str(path)!r}")
    if depth.dtype not in (np.uint16, np.float32, np.float64):
        raise ImageFormatError(
            f"depth image {str(path)!r} is {depth.dtype} with shape {depth.shape}; "
            "expected 16-bit millimetres or 32-bit float metres"
        )
    return check_depth(depth)
