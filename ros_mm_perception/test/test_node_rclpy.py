"""The perception node on a real ROS 2 graph (skipped where ROS 2 is not installed).

A probe node publishes a synthetic image and calls the services; the perception node runs the tiny
random-weight CLIP on the CPU. Waits are on events with a generous limit, never sleeps.
"""


import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs")
pytest.importorskip("ros_mm_perception_interfaces")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import Classification, Detection2DArray, LabelInfo  # noqa: E402

from ros_mm_perception.core.imaging.image_codec import numpy_to_image  # noqa: E402
from ros_mm_perception.messages.names import TYPE_NAMES  # noqa: E402
from ros_mm_perception.ros.msg_types import rclpy_types  # noqa: E402
from ros_mm_perception_interfaces.srv import (AskQuestion, ClassifyImage,  # noqa: E402
                                              GroundPhrases)
from rclpy_helpers import LIMIT_S, Inbox, call, perception_graph  # noqa: E402

STAMP = Time(sec=1234, nanosec=5678)


def synthetic_image(frame_id="cam_optical"):
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[16:48, 24:72] = (200, 30, 30)
    return numpy_to_image(rgb, "rgb8", header=Header(stamp=STAMP, frame_id=frame_id),
                          msg_factory=Image, data_as="array")


@pytest.fixture(scope="module")
def graph(tiny_clip_dir):
    with perception_graph(tiny_clip_dir) as (node, probe):
        yield node, probe


def publish_until(probe, inbox, topic="/image"):
    pub = probe.create_publisher(Image, topic, 1)
    for _ in range(int(LIMIT_S / 0.5)):
        pub.publish(synthetic_image())
        if inbox.event.wait(0.5):
            return
    pytest.fail(f"nothing came back after publishing on {topic}")


def test_rclpy_types_cover_every_type_name():
    types = rclpy_types()
    for attr, full_name in TYPE_NAMES.items():
        cls = getattr(types, attr)
        assert f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}" == full_name


def test_detections_and_labels_carry_the_input_header(graph):
    node, probe = graph
    detections, labels = Inbox(), Inbox()
    probe.create_subscription(Detection2DArray, "/detections", detections, 10)
    probe.create_subscription(Classification, "/labels", labels, 10)
    publish_until(probe, detections)
    assert labels.event.wait(LIMIT_S)
    for msg in (detections.messages[-1], labels.messages[-1]):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
            1234,
            5678,
            "cam_optical",
        )
    for det in detections.messages[-1].detections:
        assert det.results[0].hypothesis.class_id == "red box"
        assert 0.0 <= det.results[0].hypothesis.score <= 1.0
    assert {r.class_id for r in labels.messages[-1].results} <= set(node.config.labels)


def test_label_info_is_latched_and_follows_parameter_changes(graph):
    node, probe = graph
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    info = Inbox()
    probe.create_subscription(LabelInfo, "/label_info", info, latched)
    assert info.event.wait(LIMIT_S), "a late subscriber must still get label_info"
    assert "red box" in [c.class_name for c in info.messages[-1].class_map]
    info.event.clear()
    assert node.set_parameters([Parameter("labels", value=["kitchen", "corridor"])])[0].successful
    assert info.event.wait(LIMIT_S)
    assert {"kitchen", "corridor"} <= {c.class_name for c in info.messages[-1].class_map}


def test_bad_parameter_is_rejected_with_a_reason_and_old_value_kept(graph):
    node, _ = graph
    before = node.get_parameter("detect_phrases").value
    result = node.set_parameters([Parameter("detect_phrases", value=["mug", "mug"])])[0]
    assert not result.successful and "duplicates" in result.reason
    assert (
        list(node.get_parameter("detect_phrases").value)
        == list(before)
        == node.config.detect_phrases
    )
    assert not node.set_parameters([Parameter("device", value="cuda")])[0].successful  # read-only


def test_classify_service_on_a_given_image(graph):
    _, probe = graph
    request = ClassifyImage.Request(labels=["red", "green", "blue"], top_k=2,
                                    image=synthetic_image("given"))
    response = call(probe, ClassifyImage, "/perception/classify", request)
    assert response.success, response.message
    assert response.classification.header.frame_id == "given"
    assert len(response.classification.results) == 2
    assert {r.class_id for r in response.classification.results} <= {"red", "green", "blue"}


def test_ground_service_on_the_newest_frame(graph):
    _, probe = graph
    response = call(probe, GroundPhrases, "/perception/ground",
                    GroundPhrases.Request(phrases=["red box"]))
    assert response.success, response.message
    assert response.detections.header.stamp.sec == 1234


def test_ask_service_answers_with_a_reason_without_paligemma(graph):
    _, probe = graph
    response = call(probe, AskQuestion, "/perception/ask",
                    AskQuestion.Request(question="is the door open?"))
    assert not response.success and "PaliGemma" in response.message


def test_unknown_camera_is_an_answer_not_an_exception(graph):
    _, probe = graph
    response = call(probe, ClassifyImage, "/perception/classify",
                    ClassifyImage.Request(camera="nope"))
    assert not response.success and "unknown camera" in response.message


def test_deactivate_keeps_the_models_and_activate_resumes_with_the_same_pipeline(graph):
    node, probe = graph
    pipeline = node.pipeline
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert (
        node.state_label == "inactive"
        and node.pipeline is pipeline
        and not node._subscriptions_made
    )
    response = call(probe, ClassifyImage, "/perception/classify",
                    ClassifyImage.Request(labels=["a", "b"]))
    assert response.success, response.message  # services still answer while inactive
    detections = Inbox()
    probe.create_subscription(Detection2DArray, "/detections", detections, 10)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.pipeline is pipeline  # nothing was loaded again
    publish_until(probe, detections)
    # a measurement, not an assertion
    print(f"activate -> first output: {node._stats.first_output_s:.3f} s")
    assert node._stats.first_output_s is not None


def test_lifecycle_cleanup_frees_models_and_services_say_so(graph):
    node, probe = graph
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert (
        node.pipeline is None and node.state_label == "unconfigured" and not node._publishers_made
    )
    response = call(probe, ClassifyImage, "/perception/classify",
                    ClassifyImage.Request(labels=["a", "b"]))
    assert (
        not response.success
        and "not loaded" in response.message
        and "configure" in response.message
    )
    assert node.start()
