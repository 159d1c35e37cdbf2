"""The node's Foxglove overlays on a real ROS 2 graph (skipped where ROS 2 or foxglove_msgs is not
installed): ``annotations`` carries the input image's stamp and is rendered only while someone
subscribes."""

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs")
pytest.importorskip("foxglove_msgs")
pytest.importorskip("ros_mm_perception_interfaces")

from builtin_interfaces.msg import Time  # noqa: E402
from foxglove_msgs.msg import ImageAnnotations  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from ros_mm_perception.core.imaging.image_codec import numpy_to_image  # noqa: E402
from ros_mm_perception.messages.names import FOXGLOVE_TYPE_NAMES  # noqa: E402
from ros_mm_perception.ros import perception_node  # noqa: E402
from ros_mm_perception.ros.msg_types import foxglove_rclpy_types  # noqa: E402
from rclpy_helpers import LIMIT_S, Inbox, perception_graph  # noqa: E402

STAMP = Time(sec=4321, nanosec=8765)


def image():
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[16:48, 24:72] = (200, 30, 30)
    return numpy_to_image(rgb, "rgb8", header=Header(stamp=STAMP, frame_id="cam_optical"),
                          msg_factory=Image, data_as="array")


@pytest.fixture(scope="module")
def graph(tiny_clip_dir):
    with perception_graph(tiny_clip_dir, "foxglove_probe") as (node, probe):
        yield node, probe


def publish_until(probe, inbox):
    pub = probe.create_publisher(Image, "/image", 1)
    for _ in range(int(LIMIT_S / 0.5)):
        pub.publish(image())
        if inbox.event.wait(0.5):
            return
    pytest.fail("nothing came back")


def test_foxglove_rclpy_types_cover_every_name():
    types = foxglove_rclpy_types()
    for attr, full_name in FOXGLOVE_TYPE_NAMES.items():
        cls = getattr(types, attr)
        assert f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}" == full_name


def test_annotations_only_while_subscribed_with_the_image_stamp(graph, monkeypatch):
    node, probe = graph
    rendered = []
    real = perception_node.foxglove.image_annotations
    monkeypatch.setattr(perception_node.foxglove, "image_annotations",
                        lambda *a: rendered.append(1) or real(*a))
    detections = Inbox()
    probe.create_subscription(Detection2DArray, "/detections", detections, 10)
    publish_until(probe, detections)
    assert rendered == []  # nobody subscribes to annotations: nothing rendered
    annotations = Inbox()
    probe.create_subscription(ImageAnnotations, "/annotations", annotations, 10)
    publish_until(probe, annotations)
    msg = annotations.messages[-1]
    assert rendered
    if hasattr(msg, "timestamp"):  # foxglove_msgs 3.3 and newer
        assert (msg.timestamp.sec, msg.timestamp.nanosec) == (4321, 8765)
    assert len(msg.points) == len(msg.texts) >= 0
    for text in msg.texts:
        assert text.text.startswith("red box ")
        assert (text.timestamp.sec, text.timestamp.nanosec) == (4321, 8765)


def test_without_foxglove_msgs_the_node_has_no_overlays(tiny_clip_dir, monkeypatch):
    monkeypatch.setattr(perception_node, "foxglove_rclpy_types", lambda: None)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = perception_node.PerceptionNode(
            node_name="no_foxglove", context=context, parameter_overrides=[
                Parameter("clip_model", value=str(tiny_clip_dir)),
                Parameter("device", value="cpu"), Parameter("precision", value="fp32"),
                Parameter("autostart", value=False)])
        assert node.overlay_types is None
        assert node.start()
        assert "detections" in node._publishers_made
        assert not any(topic.endswith(("annotations", "scene")) for topic in node._publishers_made)
        node.release()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
