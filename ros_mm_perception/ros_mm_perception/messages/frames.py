"""Image messages (rclpy or rosbags) → the core :class:`Frame`."""

from __future__ import annotations

from ros_mm_perception.core.config import DEFAULT_MAX_IMAGE_PIXELS
from ros_mm_perception.core.errors import ImageFormatError
from ros_mm_perception.core.imaging.image_codec import (compressed_to_rgb, depth_to_metres,
                                                        image_to_rgb)
from ros_mm_perception.core.perception.geometry import check_depth, depth_scale
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


def frame_from_messages(image, camera: str,
                        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Frame:
    """A :class:`Frame` from an Image/CompressedImage.

    The frame keeps the image header's ``frame_id`` and stamp, so every output can carry the input
    header.
    """
    return Frame(
        image=rgb_of(image, max_pixels),
        camera=camera,
        frame_id=str(image.header.frame_id),
        stamp=stamp_of(image.header),
    )


def attach_depth(frame: Frame, depth, camera_info,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Give ``frame`` its aligned depth (float32 metres, NaN = invalid) and intrinsics.

    Depth is used only together with ``camera_info`` (without intrinsics a depth image cannot
    place anything in 3D). Unusable depth or camera_info (undecodable, uncalibrated, not aligned
    to the image) raises :class:`ImageFormatError` and leaves ``frame`` as it was.
    """
    metres = depth_to_metres(depth, max_pixels=max_pixels)
    intrinsics = intrinsics_of(camera_info)
    depth_scale(frame.image.shape, check_depth(metres).shape)
    frame.depth, frame.intrinsics = metres, intrinsics
