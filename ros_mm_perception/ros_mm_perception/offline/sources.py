"""Image folders and video files as frame sources, and :func:`open_input`, which picks the source.

rosbag2 inputs live in :mod:`.bag_source`; what every source yields is in :mod:`.input_frame`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, List

from ros_mm_perception.core.config import DEFAULT_MAX_IMAGE_PIXELS
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.results import Frame, Stamp
from ros_mm_perception.offline.bag_source import BagSource
from ros_mm_perception.offline.storage_reading import split_files
from ros_mm_perception.offline.input_frame import DEFAULT_NAMESPACE, InputFrame, camera_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
BAG_SUFFIXES = (".mcap", ".db3")
DEFAULT_FPS = 10.0
"""Frame rate that stamps the frames of an image folder (frame i has stamp i / fps)."""
MAX_STAMP_S = 2**31 - 1
"""The largest stamp a message header holds (``builtin_interfaces/Time.sec`` is an int32)."""


def frame_period_ns(fps: float, frames: int, what: str = "--fps") -> int:
    """Nanoseconds between frames at ``fps``; a :class:`UserError` if ``fps`` is not a positive
    number or the last of ``frames`` stamps would not fit a message header."""
    if not (math.isfinite(fps) and fps > 0):
        raise UserError(f"{what} must be a positive number of frames per second, got {fps}")
    if max(frames - 1, 0) / fps > MAX_STAMP_S:
        raise UserError(f"{what} {fps} is too small: the stamp of frame {frames - 1} would pass "
                        f"{MAX_STAMP_S} s, the largest a message header holds")
    return int(round(1e9 / fps))


class FolderSource:
    """The image files of a folder (not recursive), in name order; unreadable files are skipped."""

    def __init__(self, folder, fps: float = DEFAULT_FPS, namespace: str = DEFAULT_NAMESPACE,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        self.folder = Path(folder)
        self.max_pixels = max_pixels
        self.files = sorted(p
                            for p in self.folder.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        self.period_ns = frame_period_ns(fps, len(self.files))
        self.namespace = namespace
        self.paths: List[Path] = list(self.files)
        """The files the source reads."""

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[InputFrame]:
        from ros_mm_perception.core.imaging.image_io import read_rgb

        for index, path in enumerate(self.files):
            stamp = Stamp.from_ns(index * self.period_ns)
            item = InputFrame(index, path.name, self.namespace, stamp.to_ns())
            try:
                image = read_rgb(path, self.max_pixels)
            except UserError as err:
                item.error = str(err)
            else:
                item.frame = Frame(image, camera=camera_name(self.namespace),
                                   frame_id=camera_name(self.namespace), stamp=stamp)
            yield item

    def close(self) -> None:
        """Nothing to release (files are opened one at a time)."""


class VideoSource:
    """The frames of a video file (OpenCV); frame i is stamped i / (the video's frame rate).

    A frame that does not decode (a damaged or cut-off file) is yielded as an error and reading
    goes on with the next one, up to the frame count the container declares.
    """

    def __init__(self, path, namespace: str = DEFAULT_NAMESPACE,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        import cv2

        from ros_mm_perception.core.imaging.image_codec import check_pixels

        self.path = Path(path)
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise UserError(f"cannot open video {self.path}: not a video OpenCV can read")
        try:
            check_pixels(int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), max_pixels,
                         f"video {self.path}")
        except UserError:
            self.capture.release()
            raise
        self.frame_count = max(int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.period_ns = frame_period_ns(fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS,
                                         self.frame_count, f"the frame rate of {self.path}")
        self.namespace = namespace
        self.paths: List[Path] = [self.path]

    def __len__(self) -> int:
        """The frame count the container declares (some formats only estimate it)."""
        return self.frame_count

    def __iter__(self) -> Iterator[InputFrame]:
        import cv2

        index = 0
        name = camera_name(self.namespace)
        while True:
            ok, bgr = self.capture.read()
            if not ok and index >= self.frame_count:
                return
            stamp = Stamp.from_ns(index * self.period_ns)
            item = InputFrame(index, f"{self.path.name}#{index}", self.namespace, stamp.to_ns())
            if ok:
                item.frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), camera=name,
                                   frame_id=name, stamp=stamp)
            else:
                item.error = "unreadable video frame (damaged or cut-off file)"
                self.capture.set(cv2.CAP_PROP_POS_FRAMES, index + 1)
            yield item
            index += 1

    def close(self) -> None:
        self.capture.release()


def open_input(path, *, fps: float = DEFAULT_FPS, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               **bag_options):
    """Open ``path`` as a rosbag2 (folder with metadata.yaml, or with the split files a recorder
    that did not finish left; .mcap or .db3), an image folder or a video.

    ``fps`` stamps the frames of an image folder; an image above ``max_pixels`` is skipped without
    being decoded (a video of such frames is refused); ``bag_options`` go to
    :class:`~.bag_source.BagSource` (camera and depth topic selection).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"input not found: {path}")
    if path.is_dir() or path.suffix.lower() in BAG_SUFFIXES:
        if path.is_file() or (path / "metadata.yaml").is_file() or split_files(path):
            return BagSource(path, max_pixels=max_pixels, **bag_options)
    if bag_options.get("camera_topics") or bag_options.get("depth_topics"):
        raise UserError(f"{path} is not a rosbag2 recording, so camera and depth topics do not "
                        "apply")
    if path.is_dir():
        return FolderSource(path, fps=fps, max_pixels=max_pixels)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoSource(path, max_pixels=max_pixels)
    raise UserError(
        f"cannot tell what {path} is: expected a rosbag2 folder, a .mcap or .db3 file, a folder "
        f"of images or a video ({', '.join(VIDEO_SUFFIXES)})"
    )
