"""Reading image files as HxWx3 uint8 RGB frames (OpenCV decoding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ros_mm_perception.core.config import DEFAULT_MAX_IMAGE_PIXELS
from ros_mm_perception.core.errors import ImageFormatError, UserError
from ros_mm_perception.core.imaging.image_codec import check_pixels, encoded_size


def read_rgb(path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file (PNG, JPEG, ...) to HxWx3 uint8 RGB; grey and alpha are converted.

    A file whose header says it has more than ``max_pixels`` pixels is
    :class:`~.image_codec.ImageTooLarge`, never decoded.
    """
    import cv2

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise UserError(f"image file not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    size = encoded_size(data) if data.size else None
    if size is not None:
        check_pixels(*size, max_pixels, str(path))
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageFormatError(f"cannot decode {path}: not an image OpenCV can read, or truncated")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_rgb(path, image: np.ndarray) -> Path:
    """Encode an HxWx3 uint8 RGB frame to ``path`` (format from the suffix)."""
    import cv2

    path = Path(path)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise UserError(f"cannot write image {path}")
    return path
