"""The object memory on a live graph (skipped where ROS 2 is not installed).

A still camera (cam_optical, placed in odom by /tf_static) sees a red box before a wall; the node
runs with memory_enabled in odom and a memory file. Checked: ``objects`` (transient local) holds
the remembered objects in odom, ``~/find_objects`` answers with their fields,
``~/forget_objects`` deletes, and cleanup closes the file while configure reopens it; where
foxglove_msgs is installed, ``object_scene`` is rendered only while someone subscribes and drops a
forgotten object.
"""


import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("tf2_ros")
pytest.importorskip("vision_msgs")
pytest.importorskip("ros_mm_perception_interfaces")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import TransformStamped  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from tf2_ros import StaticTransformBroadcaster  # noqa: E402
from vision_msgs.msg import Detection2DArray, Detection3DArray  # noqa: E402

from ros_mm_perception.core.imaging.image_codec import numpy_to_image  # noqa: E402
from ros_mm_perception.ros import memory_glue  # noqa: E402
from ros_mm_perception_interfaces.srv import FindObjects, ForgetObjects  # noqa: E402
from rclpy_helpers import LIMIT_S, Inbox, call, perception_graph  # noqa: E402

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def graph(tiny_clip_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("memory") / "objects.db"
    with perception_graph(tiny_clip_dir, "memory_probe", use_depth=True, memory_enabled=True,
                          memory_frame="odom", memory_path=str(path),
                          transform_timeout_s=0.2) as (node, probe):
        static = StaticTransformBroadcaster(probe)
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = "odom", "cam_optical"
        t.transform.translation.z = 1.0
        t.transform.rotation.w = 1.0
        static.sendTransform([t])
        yield node, probe, path


def frame_messages(i):
    header = Header(stamp=Time(sec=100 + i, nanosec=0), frame_id="cam_optical")
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[12:36, 16:48] = (200, 30, 30)
    depth = np.full((48, 64), 3000, np.uint16)
    depth[12:36, 16:48] = 2000
    image = numpy_to_image(rgb, "rgb8", header=header, msg_factory=Image, data_as="array")
    depth = numpy_to_image(depth, "16UC1", header=header, msg_factory=Image, data_as="array")
    info = CameraInfo(header=header, height=48, width=64, distortion_model="plumb_bob",
                      k=[60.0, 0.0, 32.0, 0.0, 60.0, 24.0, 0.0, 0.0, 1.0])
    return image, depth, info


def stream_until_remembered(probe, objects):
    pubs = [probe.create_publisher(t, topic, 1)
            for t, topic in ((Image, "/image"), (Image, "/depth"), (CameraInfo, "/camera_info"))]
    for i in range(int(LIMIT_S / 0.5)):
        image, depth, info = frame_messages(i)
        pubs[2].publish(info)
        pubs[1].publish(depth)
        pubs[0].publish(image)
        with objects.cond:
            if objects.cond.wait_for(lambda: any(m.detections for m in objects.messages), 0.5):
                return
    pytest.fail("the memory published no object")


def test_object_scene_only_while_subscribed_and_without_forgotten_objects(graph, monkeypatch):
    """Runs before the lifecycle test below (file order), while the node is active."""
    pytest.importorskip("foxglove_msgs")
    from foxglove_msgs.msg import SceneUpdate

    node, probe, _ = graph
    rendered = []
    real = memory_glue.foxglove.memory_scene
    monkeypatch.setattr(memory_glue.foxglove, "memory_scene",
                        lambda *a: rendered.append(1) or real(*a))
    objects = Inbox()
    probe.create_subscription(Detection3DArray, "/objects", objects, LATCHED)
    stream_until_remembered(probe, objects)
    assert rendered == []  # the memory changed, but nobody subscribes to object_scene
    remembered = [m for m in objects.messages if m.detections][-1].detections[0].id
    scenes = Inbox()
    probe.create_subscription(SceneUpdate, "/object_scene", scenes, LATCHED)
    scene = scenes.wait_for(lambda m: f"objects/{remembered}" in [e.id for e in m.entities])
    assert rendered and [d.type for d in scene.deletions] == [1]  # ALL, then every object
    assert {e.frame_id for e in scene.entities} == {"odom"}
    assert all(e.id.startswith("objects/") and e.cubes and e.texts for e in scene.entities)

    start = len(scenes.messages)
    forgotten = call(probe, ForgetObjects, "/perception/forget_objects",
                     ForgetObjects.Request(ids=[int(remembered)]))
    assert forgotten.success and list(forgotten.forgotten) == [int(remembered)]
    after = scenes.wait_for(
        lambda m: f"objects/{remembered}" not in [e.id for e in m.entities], start)
    assert [d.type for d in after.deletions] == [1]


def test_bad_depth_and_camera_info_leave_the_memory_and_the_node_working(graph, monkeypatch):
    """Runs while the node is active: a tilted camera sends depth of 1e30 m, NaN, a depth image
    not aligned to the colour image and a camera_info with K all zeros: each frame still gets its
    detections (the last two without 3D) and nothing fails; then a good frame."""
    from scipy.spatial.transform import Rotation

    node, probe, _ = graph
    failures = []
    monkeypatch.setattr(node, "_log_failure", lambda what, err, throttle=False:
                        failures.append(f"{what}: {err!r}"))
    tilted = TransformStamped()
    tilted.header.frame_id, tilted.child_frame_id = "odom", "cam_tilted"
    tilted.transform.translation.z = 1.0
    (tilted.transform.rotation.x, tilted.transform.rotation.y, tilted.transform.rotation.z,
     tilted.transform.rotation.w) = Rotation.from_euler("xyz", [0.3, 0.4, 0.5]).as_quat()
    StaticTransformBroadcaster(probe).sendTransform([tilted])
    detections = Inbox()
    probe.create_subscription(Detection2DArray, "/detections", detections, 10)
    pubs = {topic: probe.create_publisher(t, topic, 10)
            for t, topic in ((Image, "/image"), (Image, "/depth"), (CameraInfo, "/camera_info"))}

    def send(i, encoding, depth, k=None):
        image, _, info = frame_messages(i)
        for msg in (image, info):
            msg.header.frame_id = "cam_tilted"
        if k is not None:
            info.k = k
        pubs["/camera_info"].publish(info)
        pubs["/depth"].publish(numpy_to_image(depth, encoding, header=image.header,
                                              msg_factory=Image, data_as="array"))
        pubs["/image"].publish(image)

    def detected(sec, start):
        with detections.cond:
            return detections.cond.wait_for(
                lambda: any(m.header.stamp.sec == sec for m in detections.messages[start:]),
                LIMIT_S)

    good = np.full((48, 64), 2000, np.uint16)
    bad = [("32FC1", np.full((48, 64), 1e30, np.float32), None),
           ("32FC1", np.full((48, 64), np.nan, np.float32), None),
           ("16UC1", np.full((30, 64), 2000, np.uint16), None),
           ("16UC1", good, [0.0] * 9)]
    for i, (encoding, depth, k) in enumerate(bad + bad):
        start = len(detections.messages)
        send(200 + i, encoding, depth, k)
        assert detected(300 + i, start), f"no detections for bad frame {i}: {failures}"
    start = len(detections.messages)
    send(211, "16UC1", good)
    assert detected(311, start) and failures == []


def test_objects_services_and_lifecycle(graph):
    node, probe, path = graph
    objects = Inbox()
    probe.create_subscription(Detection3DArray, "/objects", objects, LATCHED)
    stream_until_remembered(probe, objects)
    msg = objects.wait_for(lambda m: m.detections)
    assert msg.header.frame_id == "odom"
    det = msg.detections[0]
    assert det.id and det.results[0].hypothesis.class_id == "red box"
    assert 0.0 < det.results[0].hypothesis.score <= 1.0
    assert 2.5 < det.bbox.center.position.z < 4.5   # 1 m up + 2 m (box) or 3 m (wall) ahead

    found = call(probe, FindObjects, "/perception/find_objects", FindObjects.Request())
    assert found.success and found.header.frame_id == "odom" and found.objects
    first = found.objects[0]
    assert first.phrase == "red box" and first.state == "present" and first.observations >= 2
    assert str(first.id) in {d.id for d in msg.detections}

    bad = FindObjects.Request(max_results=5000)
    answer = call(probe, FindObjects, "/perception/find_objects", bad)
    assert not answer.success and "max_results" in answer.message

    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node.memory.memory is None and path.exists()
    closed = call(probe, FindObjects, "/perception/find_objects", FindObjects.Request())
    assert not closed.success and "closed" in closed.message
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    again = call(probe, FindObjects, "/perception/find_objects", FindObjects.Request())
    assert again.success and first.id in [o.id for o in again.objects]

    gone = call(probe, ForgetObjects, "/perception/forget_objects",
                ForgetObjects.Request(all=True))
    assert gone.success and first.id in list(gone.forgotten)
    empty = call(probe, FindObjects, "/perception/find_objects", FindObjects.Request())
    assert empty.success and not empty.objects
