"""target_frame on a live graph with tf2 (skipped where ROS 2 is not installed).

A camera 1 m up pitched 30 degrees down on a base that moves along odom's x: /tf_static carries
base_link → cam_link → cam_optical, /tf carries odom → base_link at two stamps 1 s apart, and the
image is stamped between them, so tf2 interpolates. The node's detections_3d must be in odom and
equal the camera-frame positions (carried by the 2D detections) moved by the known transform; a
frame whose camera has no transform gets its 2D outputs and no 3D, and diagnostics name the link.
"""

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("tf2_ros")
pytest.importorskip("vision_msgs")
pytest.importorskip("ros_mm_perception_interfaces")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import TransformStamped  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster  # noqa: E402
from vision_msgs.msg import Detection2DArray, Detection3DArray  # noqa: E402

from ros_mm_perception.core.imaging.image_codec import numpy_to_image  # noqa: E402
from rclpy_helpers import LIMIT_S, Inbox, perception_graph  # noqa: E402

T0 = 1000
PITCH = Rotation.from_euler("y", 30, degrees=True)
OPTICAL = Rotation.from_euler("xyz", [-np.pi / 2, 0, -np.pi / 2])


def stamped(parent, child, sec, nanosec, xyz, rotation):
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = parent, child
    t.header.stamp = Time(sec=sec, nanosec=nanosec)
    (t.transform.translation.x, t.transform.translation.y,
     t.transform.translation.z) = (float(v) for v in xyz)
    q = rotation.as_quat()
    (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
     t.transform.rotation.w) = (float(v) for v in q)
    return t


def frame_messages(frame_id, sec, nanosec):
    header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[12:36, 16:48] = (200, 30, 30)
    image = numpy_to_image(rgb, "rgb8", header=header, msg_factory=Image, data_as="array")
    depth = numpy_to_image(np.full((48, 64), 2000, np.uint16), "16UC1", header=header,
                           msg_factory=Image, data_as="array")
    info = CameraInfo(header=header, height=48, width=64, distortion_model="plumb_bob",
                      k=[60.0, 0.0, 32.0, 0.0, 60.0, 24.0, 0.0, 0.0, 1.0])
    return image, depth, info


@pytest.fixture(scope="module")
def graph(tiny_clip_dir):
    with perception_graph(tiny_clip_dir, "tf_probe", use_depth=True, target_frame="odom",
                          transform_timeout_s=0.2, diagnostics_period_s=0.2) as (node, probe):
        static = StaticTransformBroadcaster(probe)
        static.sendTransform([stamped("base_link", "cam_link", 0, 0, (0, 0, 1.0), PITCH),
                              stamped("cam_link", "cam_optical", 0, 0, (0, 0, 0), OPTICAL)])
        yield node, probe, TransformBroadcaster(probe)


def stream_until(probe, moving, inbox, predicate, frame_id):
    pubs = [probe.create_publisher(Image, "/image", 1), probe.create_publisher(Image, "/depth", 1),
            probe.create_publisher(CameraInfo, "/camera_info", 1)]
    for i in range(int(LIMIT_S / 0.5)):
        moving.sendTransform([stamped("odom", "base_link", T0, 0, (0, 0, 0), Rotation.identity()),
                              stamped("odom", "base_link", T0 + 1, 0, (1.0, 0, 0),
                                      Rotation.identity())])
        info_pub = pubs[2]
        # Half a second after T0, one nanosecond more per frame: a 2D and a 3D message of the same
        # frame share their stamp, and no other frame's.
        image, depth, info = frame_messages(frame_id, T0, 500_000_000 + i)
        info_pub.publish(info)
        pubs[1].publish(depth)
        pubs[0].publish(image)
        with inbox.cond:
            if inbox.cond.wait_for(lambda: any(predicate(m) for m in inbox.messages), 0.5):
                return
    pytest.fail("nothing matching came back")


def test_detections_3d_are_in_the_target_frame_at_the_image_stamp(graph):
    node, probe, moving = graph
    flat, located = Inbox(), Inbox()
    probe.create_subscription(Detection2DArray, "/detections", flat, 10)
    probe.create_subscription(Detection3DArray, "/detections_3d", located, 10)
    stream_until(probe, moving, located, lambda m: m.detections, "cam_optical")
    msg = located.wait_for(lambda m: m.detections)
    assert msg.header.frame_id == "odom" and msg.header.stamp.sec == T0
    assert 500_000_000 <= msg.header.stamp.nanosec < 500_000_000 + int(LIMIT_S / 0.5)
    camera_frame = flat.wait_for(lambda m: m.header.stamp == msg.header.stamp and m.detections)
    assert camera_frame.header.frame_id == "cam_optical"  # 2D stays in the camera frame
    rotation = PITCH * OPTICAL
    for d3, d2 in zip(msg.detections, camera_frame.detections):
        p = d2.results[0].pose.pose.position
        # odom → base_link interpolated at +0.5 s
        want = rotation.apply([p.x, p.y, p.z]) + [0.5, 0.0, 1.0]
        c = d3.bbox.center
        assert np.allclose([c.position.x, c.position.y, c.position.z], want, atol=1e-4)
        q = c.orientation
        assert np.allclose(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(),
                           rotation.as_matrix(), atol=1e-6)


def test_missing_transform_publishes_2d_only_and_diagnostics_name_it(graph):
    node, probe, moving = graph
    flat, located, diagnostics = Inbox(), Inbox(), Inbox()
    probe.create_subscription(Detection2DArray, "/detections", flat, 10)
    probe.create_subscription(Detection3DArray, "/detections_3d", located, 10)
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, 10)
    stream_until(probe, moving, flat, lambda m: m.header.frame_id == "lost_optical",
                 "lost_optical")

    def names_the_link(m):
        return any(kv.key == "missing_transform" and kv.value == "lost_optical -> odom"
                   for s in m.status for kv in s.values)

    warned = diagnostics.wait_for(names_the_link)
    assert any(s.level == s.WARN and "no 3D output" in s.message for s in warned.status)
    # never a 3D output in a wrong frame
    assert all(m.header.frame_id == "odom" for m in located.messages)
