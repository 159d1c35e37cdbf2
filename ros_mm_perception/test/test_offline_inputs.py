"""Offline inputs: topic choice, depth pairing, rosbag2 reading (MCAP, sqlite3), folders and
videos."""


import numpy as np
import pytest

from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.imaging.image_codec import numpy_to_image
from ros_mm_perception.core.results import Stamp
from ros_mm_perception.messages.convert import header
from ros_mm_perception.messages.typestore import rosbags_types, schema_text, typestore
from ros_mm_perception.offline.bag_source import BagSource, output_namespace, plan_cameras
from ros_mm_perception.offline.pairing import NearestStampPairer
from ros_mm_perception.offline.recording import START_NS, CameraRecording, write_recording
from ros_mm_perception.offline.sources import FolderSource, VideoSource, open_input

IMAGE, COMPRESSED, INFO = (
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/CameraInfo",
)
K = [60.0, 0.0, 32.0, 0.0, 60.0, 24.0, 0.0, 0.0, 1.0]


def frames(rng, n, h=48, w=64):
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def jpeg_roundtrip(image):
    """What a JPEG CompressedImage of ``image`` decodes to (the recording writes JPEG)."""
    from types import SimpleNamespace

    from ros_mm_perception.core.imaging.image_codec import compressed_to_rgb, rgb_to_compressed

    fmt, data = rgb_to_compressed(image, "jpeg")
    return compressed_to_rgb(SimpleNamespace(format=fmt, data=data))


# ------------------------------------------------------------------------------------------ topic
# choice

def test_output_namespace():
    assert output_namespace("/front/color/image_raw") == "/front/color"
    assert output_namespace("/cam/image_raw/compressed") == "/cam"
    assert output_namespace("/image") == ""


def test_plan_picks_cameras_depth_and_info_by_namespace():
    topics = {
        "/front/color/image_raw": IMAGE, "/front/color/image_raw/compressed": COMPRESSED,
        "/front/color/camera_info": INFO, "/front/aligned_depth_to_color/image_raw": IMAGE,
        "/front/depth/image_rect_raw": IMAGE, "/front/depth/camera_info": INFO,
        "/rear/image_raw/compressed": COMPRESSED, "/rear/camera_info": INFO,
        "/odom": "nav_msgs/msg/Odometry",
    }
    plans = {p.image_topic: p for p in plan_cameras(topics)}
    # raw wins over compressed
    assert set(plans) == {"/front/color/image_raw", "/rear/image_raw/compressed"}
    front, rear = plans["/front/color/image_raw"], plans["/rear/image_raw/compressed"]
    assert (front.namespace, front.info_topic) == ("/front/color", "/front/color/camera_info")
    # same prefix: aligned preferred
    assert front.depth_topic == "/front/aligned_depth_to_color/image_raw"
    assert (rear.namespace, rear.info_topic, rear.depth_topic) == ("/rear", "/rear/camera_info",
                                                                   None)


def test_plan_single_camera_takes_the_only_depth_and_info():
    plan, = plan_cameras({"/image": IMAGE, "/depth/image_raw": IMAGE, "/info": INFO})
    assert (plan.depth_topic, plan.info_topic, plan.namespace) == ("/depth/image_raw", "/info", "")


def test_plan_explicit_topics_and_no_depth():
    topics = {"/a/image_raw": IMAGE, "/a/image_raw/compressed": COMPRESSED,
              "/a/depth/image_raw": IMAGE}
    plan, = plan_cameras(topics, camera_topics=["/a/image_raw/compressed"], depth_topics=[])
    assert (plan.image_topic, plan.depth_topic) == ("/a/image_raw/compressed", None)


@pytest.mark.parametrize("topics, cameras, message", [
    ({"/a/image_raw": IMAGE}, ["/b/image_raw"], "not in the bag"),
    ({"/a/image_raw": IMAGE, "/a/camera_info": INFO}, ["/a/camera_info"], "not an image type"),
    ({"/a/depth/image_raw": IMAGE, "/a/camera_info": INFO}, [], "no camera image topics"),
    ({"/a/image_raw": IMAGE, "/a/image_rect": IMAGE}, [], "both publish under /a"),
])
def test_plan_errors_name_the_problem(topics, cameras, message):
    with pytest.raises(UserError, match=message):
        plan_cameras(topics, camera_topics=cameras)


# ------------------------------------------------------------------------------------------ depth
# pairing

def test_pairer_takes_the_nearest_depth_on_either_side_and_keeps_order():
    pairer = NearestStampPairer(tolerance_ns=30)
    out = pairer.add_image(100, "a") + pairer.add_image(200, "b")
    assert out == []  # no depth at or after 100 seen yet
    out += pairer.add_depth(90, "d90")  # before a: a still waits for a later, maybe nearer depth
    assert out == []
    out += pairer.add_depth(105, "d105")  # passes a: nearest of 90 and 105 is 105
    assert out == [("a", "d105")]
    out += pairer.add_depth(215, "d215")
    assert out[-1] == ("b", "d215")


def test_pairer_leaves_images_without_near_depth_unpaired():
    pairer = NearestStampPairer(tolerance_ns=10)
    assert pairer.add_image(100, "a") == []
    assert pairer.add_depth(150, "far") == [("a", None)]
    assert pairer.add_image(300, "b") == []
    assert pairer.flush() == [("b", None)]  # end of recording: decided with what was seen


def test_pairer_bounds_waiting_images():
    pairer = NearestStampPairer(tolerance_ns=10, max_pending=3)
    out = []
    for i in range(5):
        out += pairer.add_image(i * 100, i)  # the depth stream never arrives
    assert out == [(0, None), (1, None)]


# ------------------------------------------------------------------------------------------ bag
# reading

def test_bag_source_reads_raw_compressed_depth_and_info(tmp_path, rng):
    images, depths = frames(rng, 4), [np.full((48, 64), 1000 + 100 * i, np.uint16)
                                      for i in range(4)]
    path = write_recording(tmp_path / "in.mcap", [
        CameraRecording("/front", images, depths=depths, k=K, frame_id="front_optical"),
        CameraRecording("/rear", images[:3], compressed=True, frame_id="rear_optical"),
    ])
    source = open_input(path)
    assert isinstance(source, BagSource) and len(source) == 7
    items = list(source)
    source.close()
    assert sorted(it.index for it in items) == list(range(7)) and not any(it.error for it in items)
    front = [it for it in items if it.namespace == "/front"]
    rear = [it for it in items if it.namespace == "/rear"]
    assert [it.frame.stamp for it in front] == [Stamp.from_ns(START_NS + i * 100_000_000)
                                                for i in range(4)]
    for i, it in enumerate(front):
        assert it.frame.camera == "front" and it.frame.frame_id == "front_optical"
        np.testing.assert_array_equal(it.frame.image, images[i])  # raw: exact
        # paired with its own stamp
        np.testing.assert_allclose(it.frame.depth, (1000 + 100 * i) / 1000.0)
        assert it.frame.intrinsics.fx == 60.0
    for i, it in enumerate(rear):
        assert (
            it.frame.frame_id == "rear_optical"
            and it.frame.depth is None
            and it.frame.intrinsics is None
        )
        np.testing.assert_array_equal(it.frame.image, jpeg_roundtrip(images[i]))


def write_rosbag2(path, storage, msgs):
    """A rosbag2 folder (metadata.yaml) written by rosbags: ``msgs`` = [(topic, type, msg or raw
    bytes, t)]."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore()
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for topic, typ, msg, t in msgs:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, typ, typestore=store)
            data = msg if isinstance(msg, bytes) else store.serialize_cdr(msg, typ)
            writer.write(conns[topic], t, data)
    return path


def image_msg(types, image, stamp_ns, frame_id="cam"):
    return numpy_to_image(image, "rgb8", header=header(types, frame_id, Stamp.from_ns(stamp_ns)),
                          msg_factory=types.Image, data_as="numpy")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_rosbag2_folders_and_corrupt_messages(tmp_path, rng, storage):
    types = rosbags_types(typestore())
    images = frames(rng, 4)
    bad_pixels = image_msg(types, images[0], 3)
    bad_pixels.step = 1  # inconsistent with width x 3 bytes
    msgs = [("/cam/image_raw", IMAGE, image_msg(types, images[0], 1), 1),
            ("/cam/image_raw", IMAGE, b"\x00\x01\x00\x00\xff", 2),  # undecodable CDR
            ("/cam/image_raw", IMAGE, bad_pixels, 3),
            ("/cam/image_raw", IMAGE, image_msg(types, images[3], 4), 4)]
    path = write_rosbag2(tmp_path / "bag", storage, msgs)
    source = open_input(path)
    items = list(source)
    source.close()
    assert len(items) == 4 == len(source)
    assert [bool(it.error) for it in items] == [False, True, True, False]
    assert "undecodable" in items[1].error and "bad image data" in items[2].error
    np.testing.assert_array_equal(items[3].frame.image, images[3])


def test_mcap_written_by_mcap_ros2_is_read_with_its_own_schemas(tmp_path, rng):
    from mcap_ros2.writer import Writer

    store = typestore()
    image = frames(rng, 1)[0]
    path = tmp_path / "other.mcap"
    with open(path, "wb") as f:
        writer = Writer(f)
        schema = writer.register_msgdef(IMAGE, schema_text(store, IMAGE))
        for i in range(3):
            writer.write_message("/camera/image_raw", schema, {
                "header": {"stamp": {"sec": 5, "nanosec": i}, "frame_id": "optical"},
                "height": 48, "width": 64, "encoding": "rgb8", "is_bigendian": 0, "step": 64 * 3,
                "data": image.tobytes()}, log_time=i + 1)
        writer.finish()
    items = list(open_input(path))
    assert [it.frame.stamp for it in items] == [Stamp(5, i) for i in range(3)]
    np.testing.assert_array_equal(items[0].frame.image, image)


def test_bad_depth_and_camera_info_are_reported_but_the_image_is_kept(tmp_path, rng):
    store = typestore()
    types = rosbags_types(store)
    from ros_mm_perception.offline.recording import camera_info

    image = frames(rng, 1)[0]
    h = header(types, "cam", Stamp.from_ns(10))
    msgs = [("/cam/camera_info", INFO, camera_info(store, types, h, [0.0] * 9, 64, 48), 1),
            ("/cam/image_raw", IMAGE, image_msg(types, image, 10), 2),
            ("/cam/depth/image_raw", IMAGE, b"\x00\x01\x00\x00", 3)]
    warnings = []
    source = BagSource(write_rosbag2(tmp_path / "bag", "mcap", msgs), warn=warnings.append)
    items = list(source)
    assert len(items) == 1 and items[0].frame is not None and items[0].frame.depth is None
    assert source.aux_skipped == 2 and len(warnings) == 2
    assert any("camera_info" in w for w in warnings) and any("depth" in w for w in warnings)


def test_unreadable_bag_is_a_user_error(tmp_path):
    path = tmp_path / "broken.mcap"
    path.write_bytes(b"not an mcap file")
    with pytest.raises(UserError, match="cannot read bag"):
        open_input(path)


# ------------------------------------------------------------------------------------------
# folders, videos

def test_folder_source_reads_images_in_name_order_and_skips_broken_files(tmp_path, rng):
    from ros_mm_perception.core.imaging.image_io import write_rgb

    images = frames(rng, 3)
    for i, image in enumerate(images):
        write_rgb(tmp_path / f"img_{i}.png", image)
    (tmp_path / "img_1b.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_input(tmp_path, fps=4.0)
    assert isinstance(source, FolderSource) and len(source) == 4
    items = list(source)
    assert [it.name for it in items] == ["img_0.png", "img_1.png", "img_1b.jpg", "img_2.png"]
    assert [bool(it.error) for it in items] == [False, False, True, False]
    np.testing.assert_array_equal(items[3].frame.image, images[2])
    assert items[3].frame.stamp == Stamp.from_ns(750_000_000)  # index 3 at 4 frames/s


def test_video_source_yields_every_frame(tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for i in range(6):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    source = open_input(path)
    assert isinstance(source, VideoSource)
    items = list(source)
    source.close()
    assert len(items) == 6 == len(source)
    assert [it.frame.stamp.to_ns() for it in items] == [i * 200_000_000 for i in range(6)]
    np.testing.assert_allclose([it.frame.image.mean() for it in items], [40 * i for i in range(6)],
                               atol=2)


@pytest.mark.parametrize("name", ["missing.mcap", "data.csv"])
def test_unknown_inputs_are_user_errors(tmp_path, name):
    if name.endswith(".csv"):
        (tmp_path / name).write_text("a,b\n")
    with pytest.raises(UserError):
        open_input(tmp_path / name)


def test_topics_do_not_apply_to_folders(tmp_path):
    with pytest.raises(UserError, match="not a rosbag2 recording"):
        open_input(tmp_path, camera_topics=["/cam/image_raw"])


def test_ground_truth_check_counts_found_objects_and_correct_detections():
    from ros_mm_perception.core.results import Detection, FrameResult
    from ros_mm_perception.synthetic.scenes import Scene, SceneObject
    from ros_mm_perception.offline.demo import PERIOD_NS, GroundTruthCheck
    from ros_mm_perception.offline.input_frame import InputFrame

    scene = Scene(np.zeros((100, 100, 3), np.uint8),
                  [SceneObject("red", "circle", (10, 10, 40, 40)),
                   SceneObject("blue", "square", (50, 50, 90, 90))])
    check = GroundTruthCheck({"/cam": [scene, scene]})
    detections = [Detection("red circle", 0.9, (12, 12, 40, 42)),   # right place, right phrase
                  # a real box, but the wrong object
                  Detection("blue square", 0.8, (10, 10, 40, 40)),
                  Detection("red circle", 0.5, (60, 0, 99, 30))]    # nothing there
    stamp = Stamp.from_ns(START_NS + PERIOD_NS)  # the second scene
    check.add(InputFrame(0, "x", "/cam", 0),
              FrameResult("cam", "f", stamp, 100, 100, detections=detections))
    assert (check.found, check.objects, check.correct, check.detections) == (1, 2, 1, 3)
    assert check.recall == 0.5 and check.precision == 1 / 3
