"""Writing camera recordings as rosbag2 MCAP files (the demo's sample bag, test inputs).

Per camera namespace ``ns``: ``ns/image_raw`` (sensor_msgs/Image rgb8) or, for a compressed camera,
``ns/image_raw/compressed`` (CompressedImage, JPEG); ``ns/camera_info`` before every image when
``k`` is given; ``ns/depth/image_raw`` (16UC1 millimetres, registered to the image, same stamp)
when depths are given. The file is a single ``.mcap`` with the ``ros2`` profile, which
``ros2 bag play``/``info`` and Foxglove open directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ros_mm_perception.core.imaging.image_codec import numpy_to_image, rgb_to_compressed
from ros_mm_perception.core.results import Stamp
from ros_mm_perception.messages.convert import byte_array, header
from ros_mm_perception.messages.typestore import rosbags_types, typestore
from ros_mm_perception.offline.atomic import OutputStaging
from ros_mm_perception.offline.mcap_output import RosMcapFile

START_NS = 1_700_000_000_000_000_000
"""Stamp of the first frame of a recording (an arbitrary fixed time, so recordings are
reproducible)."""


@dataclass
class CameraRecording:
    """The frames of one camera: RGB images, optional depth (uint16 mm) and intrinsics ``k`` (9
    numbers)."""

    namespace: str
    images: Sequence[np.ndarray]
    compressed: bool = False
    depths: Optional[Sequence[np.ndarray]] = None
    k: Optional[Sequence[float]] = None
    frame_id: str = "camera_optical_frame"
    period_ns: int = 100_000_000
    """Time between frames (10 Hz)."""

    def image_topic(self) -> str:
        return f"{self.namespace}/image_raw" + ("/compressed" if self.compressed else "")


def camera_info(store, types, msg_header, k: Sequence[float], width: int, height: int):
    """A ``sensor_msgs/CameraInfo`` for an undistorted pinhole camera with intrinsics ``k``."""
    k = np.asarray(k, np.float64)
    p = np.array([k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0])
    roi = store.types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return types.CameraInfo(header=msg_header, height=height, width=width,
                            distortion_model="plumb_bob", d=np.zeros(5), k=k,
                            r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0, roi=roi)


def write_recording(path, cameras: Sequence[CameraRecording], start_ns: int = START_NS,
                    extra: Sequence[Tuple[str, Any, int]] = ()) -> Path:
    """Write ``cameras`` (and ``extra``) to the MCAP file ``path`` atomically; see
    :func:`record`."""
    with OutputStaging() as staging:
        record(staging.stage(path).file, cameras, start_ns, extra)
        staging.commit()
    return Path(path)


def record(stream, cameras: Sequence[CameraRecording], start_ns: int = START_NS,
           extra: Sequence[Tuple[str, Any, int]] = ()) -> None:
    """Write ``cameras`` as MCAP to the binary ``stream``, in recording order.

    Frame i has the stamp ``start_ns + i * period_ns``; camera_info, image and depth are recorded
    1, 5 and 8 ms after it. ``extra`` holds more ``(topic, message, log time in ns)`` to record
    (e.g. ``/tf``), messages of the type store of
    :func:`~ros_mm_perception.messages.typestore.typestore`.
    """
    store = typestore()
    types = rosbags_types(store)
    out = RosMcapFile(stream, store)
    for i in range(max(len(cam.images) for cam in cameras)):
        for cam in (c for c in cameras if i < len(c.images)):
            image = cam.images[i]
            stamp_ns = start_ns + i * cam.period_ns
            msg_header = header(types, cam.frame_id, Stamp.from_ns(stamp_ns))
            height, width = image.shape[:2]
            if cam.k is not None:
                out.write(f"{cam.namespace}/camera_info",
                          camera_info(store, types, msg_header, cam.k, width, height),
                          stamp_ns + 1_000_000)
            if cam.compressed:
                fmt, data = rgb_to_compressed(image, "jpeg")
                msg = types.CompressedImage(header=msg_header, format=fmt,
                                            data=byte_array(types, data, "CompressedImage"))
            else:
                msg = numpy_to_image(image, "rgb8", header=msg_header, msg_factory=types.Image,
                                     data_as="numpy")
            out.write(cam.image_topic(), msg, stamp_ns + 5_000_000)
            if cam.depths is not None:
                depth = numpy_to_image(cam.depths[i], "16UC1", header=msg_header,
                                       msg_factory=types.Image, data_as="numpy")
                out.write(f"{cam.namespace}/depth/image_raw", depth, stamp_ns + 8_000_000)
    for topic, msg, log_time_ns in extra:
        out.write(topic, msg, log_time_ns)
    out.finish()
