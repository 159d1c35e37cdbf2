"""Image messages (rclpy or rosbags) → the core :class:`Frame`."""

from __future__ import annotations

from ros_mm_perception.core.config import DEFAULT_MAX_IMAGE_PIXELS
from ros_mm_perception.core.errors import ImageFormatError
from ros_mm_perception.core.imaging.image_codec import (compressed_to_rgb, depth_to_metres,
                                                        image_to_rgb)
from ros_mm_perception.core.results import Frame, Intrinsics
from ros_mm_perception.messages.convert import stamp_of


def is_compressed(msg) -> bool:
    """Whether ``msg`` is a ``sensor_msgs/CompressedImage`` (it has ``format`` instead of
    ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def rgb_of(msg, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
    """HxWx3 uint8 RGB pixels of an Image or CompressedImage message; one above ``max_pixels``
    is refused (:class:`~ros_mm_perception.core.imaging.image_codec.ImageTooLarge`) undecoded."""
    return (
        compressed_to_rgb(msg, max_pixels) if is_compressed(msg) else image_to_rgb(msg, max_pixels)
    )


def intrinsics_of(camera_info) -> Intrinsics:
    """Pinhole intrinsics from ``sensor_msgs/CameraInfo.k``; :class:`ImageFormatError` if
    uncalibrated."""
    try:
        return Intrinsics.from_k(camera_info.k)
    except ValueError as exc:
        raise ImageFormatError(f"camera_info of frame {camera_info.header.frame_id!r} is "
                               f"unusable: {exc}") from None


def frame_from_messages(image, camera: str, depth=None, camera_info=None,
                        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Frame:
    """A :class:`Frame` from an Image/CompressedImage and optional aligned depth + CameraInfo.

    The frame keeps the image header's ``frame_id`` and stamp, so every output can carry the input
    header. Depth becomes float32 metres (NaN = invalid); it is used only together with
    ``camera_info`` (without intrinsics a depth image cannot place anything in 3D).
    """
    frame = Frame(
        image=rgb_of(image, max_pixels),
        camera=camera,
        frame_id=str(image.header.frame_id),
        stamp=stamp_of(image.header),
    )
    if depth is not None and camera_info is not None:
        frame.depth = depth_to_metres(depth, max_pixels=max_pixels)
        frame.intrinsics = intrinsics_of(camera_info)
    return frame
