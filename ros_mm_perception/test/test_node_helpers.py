"""The node's ROS-free helpers: topic naming, depth pairing by stamp, diagnostics figures."""

import numpy as np
import pytest

from ros_mm_perception.core.imaging.image_codec import numpy_to_image
from ros_mm_perception.core.results import Stamp
from ros_mm_perception.core.perception.scheduler import CameraStats
from ros_mm_perception.messages import convert
from ros_mm_perception.messages.typestore import rosbags_types, typestore
from ros_mm_perception.ros.camera_state import CameraState, topic_prefix
from ros_mm_perception.ros.stats import StatsBook


@pytest.fixture(scope="module")
def store():
    return typestore("jazzy")


@pytest.fixture(scope="module")
def types(store):
    return rosbags_types(store)


def image_msg(types, ns, array=None, encoding="rgb8"):
    array = np.zeros((4, 6, 3), np.uint8) if array is None else array
    return numpy_to_image(array, encoding, header=convert.header(types, "optical", Stamp.from_ns(ns)),
                          msg_factory=types.Image, data_as="numpy")


def camera_info(store, types):
    roi = store.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types.CameraInfo(header=convert.header(types, "optical", Stamp()), height=4, width=6,
                            distortion_model="plumb_bob", d=np.zeros(5), k=np.array([50.0, 0, 3, 0, 50.0, 2, 0, 0, 1]),
                            r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0, binning_y=0, roi=roi)


def test_topic_names_single_and_several_cameras():
    assert topic_prefix(["camera"], "camera") == ""
    assert topic_prefix(["front", "rear"], "rear") == "rear/"
    single, several = CameraState("camera", ["camera"]), CameraState("front", ["front", "rear"], compressed=True)
    assert (single.topic("detections"), single.image_topic) == ("detections", "image")
    assert (several.topic("detections"), several.image_topic) == ("front/detections", "front/image/compressed")


def test_depth_pairs_by_nearest_stamp_within_tolerance(types):
    cam = CameraState("camera", ["camera"])
    for ms in (0, 100, 200):
        cam.on_depth(image_msg(types, ms * 1_000_000, np.full((4, 6), ms + 1, np.uint16), "16UC1"))
    picked = cam.depth_for(image_msg(types, 130_000_000), tolerance_s=0.05)
    assert convert.stamp_of(picked.header) == Stamp.from_ns(100_000_000)
    assert cam.depth_for(image_msg(types, 350_000_000), tolerance_s=0.05) is None


def test_frame_uses_depth_only_with_camera_info(store, types):
    cam = CameraState("camera", ["camera"])
    cam.on_depth(image_msg(types, 0, np.full((4, 6), 2000, np.uint16), "16UC1"))
    img = image_msg(types, 10_000_000)
    assert cam.frame(img, tolerance_s=0.05).depth is None
    cam.on_camera_info(camera_info(store, types))
    frame = cam.frame(img, tolerance_s=0.05)
    assert np.allclose(frame.depth, 2.0) and frame.intrinsics.fx == 50.0
    assert cam.frame(img).depth is None  # without a tolerance the node does not use depth
    cam.on_image(img)
    assert cam.latest is img


def test_stats_rates_latency_and_restart():
    book = StatsBook(["front"], now=0.0)
    book.image_received("front", 1.5)
    book.published("front", 0.010)
    book.published("front", 0.030)
    first = book.report({"front": CameraStats(received=20, processed=10, dropped=10)}, now=2.0)["front"]
    assert (first.received_hz, first.processed_hz, first.dropped_total) == (10.0, 5.0, 10)
    assert first.latency_mean_ms == pytest.approx(20.0) and first.latency_max_ms == pytest.approx(30.0)
    assert first.seconds_since_image == pytest.approx(0.5)
    # a re-activated node has a new scheduler whose counts start again at zero
    second = book.report({"front": CameraStats(received=4, processed=4, dropped=0)}, now=4.0)["front"]
    assert (second.received_hz, second.processed_hz, second.latency_mean_ms) == (2.0, 2.0, 0.0)
    assert StatsBook(["rear"], 0.0).report({}, 1.0)["rear"].values()["seconds_since_image"] == "never"
