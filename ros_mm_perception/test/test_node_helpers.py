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
    return numpy_to_image(array, encoding,
                          header=convert.header(types, "optical", Stamp.from_ns(ns)),
                          msg_factory=types.Image, data_as="numpy")


def camera_info(store, types):
    roi = store.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                          width=0, do_rectify=False)
    return types.CameraInfo(header=convert.header(types, "optical", Stamp()), height=4, width=6,
                            distortion_model="plumb_bob", d=np.zeros(5),
                            k=np.array([50.0, 0, 3, 0, 50.0, 2, 0, 0, 1]), r=np.eye(3).ravel(),
                            p=np.zeros(12), binning_x=0, binning_y=0, roi=roi)


def test_topic_names_single_and_several_cameras():
    assert topic_prefix(["camera"], "camera") == ""
    assert topic_prefix(["front", "rear"], "rear") == "rear/"
    single, several = CameraState("camera", ["camera"]), CameraState("front", ["front", "rear"],
                                                                     compressed=True)
    assert (single.topic("detections"), single.image_topic) == ("detections", "image")
    assert (several.topic("detections"), several.image_topic) == ("front/detections",
                                                                  "front/image")


def test_compressed_transport_subscribes_the_remapped_topic_plus_compressed():
    remapped = {"image": "/camera/image_raw", "front/image": "/front/color/image_raw"}.get
    raw, single = CameraState("camera", ["camera"]), CameraState("camera", ["camera"],
                                                                 compressed=True)
    several = CameraState("front", ["front", "rear"], compressed=True)
    assert raw.subscription_topic(remapped) == "/camera/image_raw"
    assert single.subscription_topic(remapped) == "/camera/image_raw/compressed"
    assert several.subscription_topic(remapped) == "/front/color/image_raw/compressed"
    assert single.subscription_topic(lambda name: "/robot1/" + name) == "/robot1/image/compressed"


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
    assert cam.frame(img, tolerance_s=0.05)[0].depth is None
    cam.on_camera_info(camera_info(store, types))
    frame, no_depth = cam.frame(img, tolerance_s=0.05)
    assert np.allclose(frame.depth, 2.0) and frame.intrinsics.fx == 50.0 and no_depth is None
    assert cam.frame(img)[0].depth is None  # without a tolerance the node does not use depth


def test_unusable_depth_costs_the_frame_its_3d_not_the_frame(store, types):
    cam = CameraState("camera", ["camera"])
    cam.on_camera_info(camera_info(store, types))
    cam.on_depth(image_msg(types, 0, np.full((3, 6), 2000, np.uint16), "16UC1"))
    img = image_msg(types, 10_000_000)
    frame, no_depth = cam.frame(img, tolerance_s=0.05)
    assert frame.image.shape[:2] == (4, 6) and frame.depth is None and frame.intrinsics is None
    assert "aligned" in no_depth
    cam.on_image(img)
    assert cam.latest is img


def test_stats_rates_over_a_sliding_window_with_a_decimal():
    book = StatsBook(["front"], now=0.0)
    for i in range(9):  # 1.6 Hz: every 0.625 s, from t=1.0 to t=6.0
        t = 1.0 + i * 0.625
        book.image_received("front", t)
        book.published("front", 0.010 if i % 2 else 0.030, t + 0.02)
    report = book.report({"front": CameraStats(received=9, processed=9, dropped=2)},
                         now=6.1)["front"]
    assert report.received_hz == pytest.approx(1.6) and report.processed_hz == pytest.approx(1.6)
    assert report.summary() == "1.6 Hz processed" and report.healthy
    assert report.dropped_total == 2 and report.seconds_since_image == pytest.approx(0.1)
    assert report.latency_mean_ms == pytest.approx(1e3 * (5 * 0.030 + 4 * 0.010) / 9)
    assert report.latency_max_ms == pytest.approx(30.0)
    # latency restarts per report; a stream that stops falls to 0 Hz once its frames leave the
    # window
    later = book.report({}, now=20.0)["front"]
    assert (later.received_hz, later.processed_hz, later.latency_mean_ms) == (0.0, 0.0, 0.0)
    assert StatsBook(["rear"], 0.0).report({},
                                           1.0)["rear"].values()["seconds_since_image"] == "never"


def test_skipped_frames_are_counted_by_reason_and_warn_while_recent():
    book = StatsBook(["front", "rear"], now=0.0)
    for i in range(10):
        book.image_received("front", i * 0.25)
        if i % 2:
            book.skipped("front", "undecodable", i * 0.25)
        else:
            book.published("front", 0.05, i * 0.25 + 0.05)
    book.skipped("front", "rejected", 2.3)
    reports = book.report({}, now=2.5)
    front, rear = reports["front"], reports["rear"]
    assert front.skipped_total == {"undecodable": 5, "rejected": 1} and front.skipped_recent == 6
    assert not front.healthy and rear.healthy
    assert (
        "6 frames skipped in the last 5 s" in front.summary()
        and "undecodable 5" in front.summary()
    )
    values = front.values()
    assert (values["skipped_total"], values["skipped_undecodable"],
            values["skipped_rejected"]) == ("6", "5", "1")
    # the totals stay; the warning ends once no frame was skipped within the window
    quiet = book.report({}, now=9.0)["front"]
    assert quiet.healthy and quiet.skipped_total == {"undecodable": 5, "rejected": 1}


def test_missing_transform_is_reported_while_recent_and_first_output_is_timed():
    book = StatsBook(["front"], now=10.0)
    assert book.first_output_s is None
    assert book.published("front", 0.1, 10.25) is True
    assert book.published("front", 0.1, 10.5) is False
    assert book.first_output_s == pytest.approx(0.25)
    book.transform_missing("front", "cam_optical -> base_link", 11.0)
    report = book.report({}, now=12.0)["front"]
    assert (
        not report.healthy and report.values()["missing_transform"] == "cam_optical -> base_link"
    )
    assert "no 3D output: cam_optical -> base_link" in report.summary()
    assert report.skipped_total == {"no_transform_3d": 1}
    assert book.report({}, now=17.0)["front"].healthy
