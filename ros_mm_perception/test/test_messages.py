"""FrameResult ↔ ROS messages, checked field by field on the rosbags classes (Humble and Jazzy)."""

import numpy as np
import pytest

from ros_mm_perception.core.errors import ImageFormatError
from ros_mm_perception.core.imaging.image_codec import numpy_to_image, rgb_to_compressed
from ros_mm_perception.core.results import Detection, FrameResult, Label, Stamp
from ros_mm_perception.messages import convert
from ros_mm_perception.messages.definitions import VISION_MSGS
from ros_mm_perception.messages.frames import attach_depth, frame_from_messages
from ros_mm_perception.messages.names import OUTPUT_TYPES, TYPE_NAMES
from ros_mm_perception.messages.typestore import rosbags_types, schema_text, typestore


@pytest.fixture(scope="module", params=["humble", "jazzy"])
def store(request):
    return typestore(request.param)


@pytest.fixture(scope="module")
def types(store):
    return rosbags_types(store)


@pytest.fixture
def result():
    return FrameResult(
        camera="front", frame_id="front_optical", stamp=Stamp(12, 345), width=640, height=480,
        labels=[Label("door", 0.7), Label("chair", 0.2)],
        detections=[
            Detection("red mug", 0.9, (10.0, 20.0, 50.0, 100.0), track_id=7, xyz=(0.1, -0.2, 1.5),
                      size_xyz=(0.08, 0.12, 0.05)),
            Detection("open door", 0.4, (100.0, 0.0, 300.0, 480.0)),
        ],
        labels_ran=True, detections_ran=True,
    )


def roundtrip(store, msg):
    data = store.serialize_cdr(msg, msg.__msgtype__)
    return store.deserialize_cdr(data, msg.__msgtype__)


def check_header(h, result):
    assert (h.frame_id, h.stamp.sec, h.stamp.nanosec) == ("front_optical", 12, 345)


def test_every_type_name_exists_in_the_store(store):
    for name in TYPE_NAMES.values():
        assert name in store.types
    assert set(VISION_MSGS) <= set(store.types)


def test_detection_2d_array_fields(store, types, result):
    msg = roundtrip(store, convert.detection_2d_array(types, result))
    check_header(msg.header, result)
    assert len(msg.detections) == 2
    mug, door = msg.detections
    check_header(mug.header, result)
    assert mug.results[0].hypothesis.class_id == "red mug"
    assert mug.results[0].hypothesis.score == pytest.approx(0.9)
    assert (mug.bbox.center.position.x, mug.bbox.center.position.y) == (30.0, 60.0)
    assert (mug.bbox.size_x, mug.bbox.size_y, mug.bbox.center.theta) == (40.0, 80.0, 0.0)
    assert mug.id == "7"
    pose = mug.results[0].pose.pose
    assert (pose.position.x, pose.position.y, pose.position.z) == (0.1, -0.2, 1.5)
    assert pose.orientation.w == 1.0
    assert door.id == ""
    assert door.results[0].hypothesis.class_id == "open door"
    assert (door.bbox.center.position.x, door.bbox.size_y) == (200.0, 480.0)


def test_empty_detections_still_make_a_message(store, types, result):
    result.detections = []
    msg = roundtrip(store, convert.detection_2d_array(types, result))
    check_header(msg.header, result)
    assert msg.detections == []


def test_detection_3d_array_keeps_only_located(store, types, result):
    msg = roundtrip(store, convert.detection_3d_array(types, result))
    check_header(msg.header, result)
    assert len(msg.detections) == 1
    det = msg.detections[0]
    assert det.id == "7" and det.results[0].hypothesis.class_id == "red mug"
    c, s = det.bbox.center, det.bbox.size
    assert (c.position.x, c.position.y, c.position.z, c.orientation.w) == (0.1, -0.2, 1.5, 1.0)
    assert (s.x, s.y, s.z) == (0.08, 0.12, 0.05)
    with pytest.raises(ValueError, match="open door"):
        convert.detection_3d(types, result.detections[1], msg.header)


def test_a_rotated_3d_box_and_its_hypothesis_pose_agree(store, types, result):
    quat = (0.5, -0.5, 0.5, -0.5)            # optical -> map, as transform_3d sets it
    result.detections[0].orientation = quat
    det = roundtrip(store, convert.detection_3d_array(types, result)).detections[0]
    for pose in (det.bbox.center, det.results[0].pose.pose):
        q = pose.orientation
        assert (q.x, q.y, q.z, q.w) == quat


def test_classification_fields(store, types, result):
    msg = roundtrip(store, convert.classification(types, result))
    check_header(msg.header, result)
    assert [(r.class_id, r.score) for r in msg.results] == [("door", 0.7), ("chair", 0.2)]


def test_label_info_fields(store, types):
    msg = roundtrip(store,
                    convert.label_info(types, convert.header(types, "", Stamp(1, 2)), ["a", "b c"],
                                       0.25))
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [(0, "a"), (1, "b c")]
    assert msg.threshold == pytest.approx(0.25)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1, 2)


def test_marker_array_clears_then_draws_each_located_detection(store, types, result):
    msg = roundtrip(store, convert.marker_array(types, result))
    M = types.Marker
    assert [m.action for m in msg.markers] == [M.DELETEALL, M.ADD, M.ADD]
    cube, text = msg.markers[1:]
    assert cube.type == M.CUBE and text.type == M.TEXT_VIEW_FACING
    assert cube.ns == "front" and cube.id != text.id
    check_header(cube.header, result)
    assert (cube.pose.position.x, cube.pose.position.z) == (0.1, 1.5)
    assert cube.scale.x == pytest.approx(0.08) and cube.scale.z == pytest.approx(
        convert.MARKER_MIN_SIZE
    )
    assert text.text.startswith("red mug 0.90") and "#7" in text.text
    assert (cube.color.r, cube.color.g,
            cube.color.b) == pytest.approx(convert.phrase_colour("red mug"))


def test_phrase_colour_is_stable_and_distinguishes_phrases():
    assert convert.phrase_colour("cup") == convert.phrase_colour("cup")
    assert convert.phrase_colour("cup") != convert.phrase_colour("person")
    assert all(0.0 <= c <= 1.0 for c in convert.phrase_colour("cup"))


def test_diagnostics_fields(store, types):
    status = convert.diagnostic_status(types, "perception: front", "WARN", "slow",
                                       {"rate_hz": 2.5, "drops": 3})
    msg = roundtrip(store, convert.diagnostic_array(types, Stamp(5, 0), [status]))
    st = msg.status[0]
    assert st.level == types.DiagnosticStatus.WARN
    assert (st.name, st.message) == ("perception: front", "slow")
    assert [(kv.key, kv.value) for kv in st.values] == [("rate_hz", "2.5"), ("drops", "3")]
    with pytest.raises(ValueError, match="level"):
        convert.diagnostic_status(types, "x", "BAD", "", {})


@pytest.mark.parametrize("topic", sorted(t for t, name in OUTPUT_TYPES.items()
                                         # test_foxglove.py
                                         if not name.startswith("foxglove_msgs/")))
def test_schema_text_decodes_our_cdr_with_mcap_ros2(store, types, result, topic):
    from mcap_ros2._dynamic import generate_dynamic

    typename = OUTPUT_TYPES[topic]
    builders = {
        "detections": lambda: convert.detection_2d_array(types, result),
        "detections_3d": lambda: convert.detection_3d_array(types, result),
        "labels": lambda: convert.classification(types, result),
        "label_info": lambda: convert.label_info(types, convert.result_header(types, result),
                                                 ["a"], 0.3),
        "debug_image": lambda: numpy_to_image(np.zeros((2, 4, 3), np.uint8), "rgb8",
                                              data_as="numpy",
                                              header=convert.result_header(types, result),
                                              msg_factory=types.Image),
        "markers": lambda: convert.marker_array(types, result),
        "instance_mask": lambda: convert.instance_mask(types, result),
    }
    msg = builders[topic]()
    text = schema_text(store, typename)
    assert text.count("MSG: std_msgs/Header") == 1
    decoded = generate_dynamic(typename, text)[typename](bytes(store.serialize_cdr(msg, typename)))
    header = decoded.markers[-1].header if topic == "markers" else decoded.header
    assert header.frame_id == "front_optical"


def test_frame_from_messages_keeps_header_and_builds_3d_inputs(store, types):
    hdr = convert.header(types, "cam_optical", Stamp(9, 10))
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    image = numpy_to_image(rgb[..., ::-1], "bgr8", header=hdr, msg_factory=types.Image,
                           data_as="numpy")
    depth = numpy_to_image(np.full((4, 6), 1500, np.uint16), "16UC1", header=hdr,
                           msg_factory=types.Image, data_as="numpy")
    k = np.array([500.0, 0, 3, 0, 500.0, 2, 0, 0, 1])
    roi = store.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                          width=0, do_rectify=False)
    info = types.CameraInfo(header=hdr, height=4, width=6, distortion_model="plumb_bob",
                            d=np.zeros(5), k=k, r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0,
                            binning_y=0, roi=roi)
    frame = frame_from_messages(image, "front")
    assert frame.depth is None and frame.intrinsics is None
    attach_depth(frame, depth, info)
    assert np.array_equal(frame.image, rgb)
    assert (frame.camera, frame.frame_id, frame.stamp) == ("front", "cam_optical", Stamp(9, 10))
    assert frame.depth.dtype == np.float32 and np.allclose(frame.depth, 1.5)
    assert (frame.intrinsics.fx, frame.intrinsics.cx, frame.intrinsics.cy) == (500.0, 3.0, 2.0)
    unaligned = numpy_to_image(np.full((3, 6), 1500, np.uint16), "16UC1", header=hdr,
                               msg_factory=types.Image, data_as="numpy")
    bare = frame_from_messages(image, "front")
    with pytest.raises(ImageFormatError, match="aligned"):
        attach_depth(bare, unaligned, info)
    info.k = np.zeros(9)
    with pytest.raises(ImageFormatError, match="camera_info"):
        attach_depth(bare, depth, info)
    assert bare.depth is None and bare.intrinsics is None


def test_frame_from_compressed_image(types):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :, 0] = 200
    fmt, data = rgb_to_compressed(rgb, "png")
    msg = types.CompressedImage(header=convert.header(types, "f", Stamp(1, 0)), format=fmt,
                                data=np.frombuffer(data, np.uint8))
    frame = frame_from_messages(msg, "cam")
    assert np.array_equal(frame.image, rgb) and frame.frame_id == "f"
