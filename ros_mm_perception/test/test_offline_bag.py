"""``ros-mm-perception bag`` end to end on small bags, folders and videos with the tiny random
CLIP.

Outputs are read back with mcap_ros2 (as Foxglove does) and with rosbags (as rosbag2 does): topics,
types, one detections message per input image, headers equal to the inputs, skipped messages
counted, and no output file at all after an interrupted run.
"""

import contextlib
import importlib.util
import io
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from ros_mm_perception.cli import main
from ros_mm_perception.core.results import Stamp
from ros_mm_perception.offline.recording import START_NS, CameraRecording, write_recording
from offline_helpers import K, rendered_images, tiny_clip_options

PHRASES = ["red circle", "blue square"]


@pytest.fixture(scope="module")
def clip_args(tiny_clip_dir):
    return tiny_clip_options(tiny_clip_dir, ",".join(PHRASES), "red circle,blue square,green star",
                             threshold=0)


def write_two_camera_bag(path):
    """/front: 3 raw images + depth + camera_info; /rear: 2 JPEG images."""
    depths = [np.full((48, 64), 1200, np.uint16)] * 3
    return write_recording(path, [
        CameraRecording("/front", rendered_images(3), depths=depths, k=K,
                        frame_id="front_optical"),
        CameraRecording("/rear", rendered_images(2, seed=1), compressed=True,
                        frame_id="rear_optical"),
    ])


@pytest.fixture
def two_camera_bag(tmp_path):
    return write_two_camera_bag(tmp_path / "in.mcap")


@pytest.fixture(scope="module")
def processed(tmp_path_factory, clip_args):
    """The two-camera bag processed once with debug images: (summary, output MCAP)."""
    folder = tmp_path_factory.mktemp("processed")
    out = folder / "out.mcap"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["bag", str(write_two_camera_bag(folder / "in.mcap")), "--out", str(out),
                     "--debug-images", "--json", *clip_args]) == 0
    lines = stdout.getvalue().strip().splitlines()
    assert len(lines) == 1, lines  # exactly one JSON object on stdout
    return json.loads(lines[0]), out


def run_json(capsys, argv):
    """Run the CLI with ``--json``; return (the JSON object, stderr)."""
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    assert len(out) == 1, out  # exactly one JSON object on stdout
    return json.loads(out[0]), captured.err


def read_mcap(path):
    """[(topic, schema name, message, log time)] decoded by mcap_ros2 (the decoder Foxglove's
    tooling uses)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [(c.topic, s.name, m, r.log_time) for s, c, r, m in reader.iter_decoded_messages()]


def stamps(msgs, topic):
    return [(Stamp(m.header.stamp.sec, m.header.stamp.nanosec), m.header.frame_id)
            for t, _, m, _ in msgs if t == topic]


def test_bag_writes_the_node_topics_with_input_headers(processed):
    summary, out = processed
    assert set(summary) == {"frames", "detections", "skipped", "per_label", "seconds", "damaged",
                            "transforms_rejected"}
    assert summary["transforms_rejected"] == {}
    assert summary["damaged"] == []
    assert (summary["frames"], summary["skipped"]) == (5, 0)

    msgs = read_mcap(out)
    types = {(t, s) for t, s, _, _ in msgs}
    assert types == {
        ("/front/detections", "vision_msgs/msg/Detection2DArray"),
        ("/front/detections_3d", "vision_msgs/msg/Detection3DArray"),
        ("/front/labels", "vision_msgs/msg/Classification"),
        ("/front/label_info", "vision_msgs/msg/LabelInfo"),
        ("/front/debug_image", "sensor_msgs/msg/Image"),
        ("/front/annotations", "foxglove_msgs/msg/ImageAnnotations"),
        ("/front/scene", "foxglove_msgs/msg/SceneUpdate"),
        ("/rear/detections", "vision_msgs/msg/Detection2DArray"),
        ("/rear/labels", "vision_msgs/msg/Classification"),
        ("/rear/label_info", "vision_msgs/msg/LabelInfo"),
        ("/rear/debug_image", "sensor_msgs/msg/Image"),
        ("/rear/annotations", "foxglove_msgs/msg/ImageAnnotations"),
    }  # no depth on /rear, so no detections_3d (nor scene) there
    front = [(Stamp.from_ns(START_NS + i * 100_000_000), "front_optical") for i in range(3)]
    rear = [(Stamp.from_ns(START_NS + i * 100_000_000), "rear_optical") for i in range(2)]
    for topic in ("detections", "detections_3d", "labels", "debug_image"):
        assert stamps(msgs, f"/front/{topic}") == front
    for topic in ("detections", "labels", "debug_image"):
        assert stamps(msgs, f"/rear/{topic}") == rear

    detections = [d for t, _, m, _ in msgs if t.endswith("/detections") for d in m.detections]
    assert len(detections) == summary["detections"]
    assert Counter(d.results[0].hypothesis.class_id for d in detections) == Counter(
        {p: n for p, n in summary["per_label"].items() if n})
    for det in detections:  # pixels of the 64x48 image, class id = the phrase
        assert 0 <= det.bbox.center.position.x <= 64 and 0 <= det.bbox.center.position.y <= 48
        assert (
            det.results[0].hypothesis.class_id in PHRASES
            and 0 <= det.results[0].hypothesis.score <= 1
        )
    for _, _, m, _ in msgs:
        if hasattr(m, "class_map"):
            # detect, then labels
            assert [c.class_name for c in m.class_map] == [*PHRASES, "green star"]
    debug = next(m for t, _, m, _ in msgs if t == "/front/debug_image")
    assert (debug.width, debug.height, debug.encoding) == (64, 48, "rgb8")


def test_output_reads_back_through_rosbags_with_its_own_schemas(processed):
    from rosbags.highlevel import AnyReader

    _, out = processed
    per_topic = defaultdict(list)
    with AnyReader([out]) as reader:  # no default type store: the file's schemas must be complete
        for connection, log_time, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            if hasattr(msg, "header"):  # Foxglove's overlays have none (test_foxglove.py)
                per_topic[connection.topic].append((msg.header.stamp.sec, msg.header.stamp.nanosec,
                                                    log_time))
    assert len(per_topic["/front/detections"]) == 3 and len(per_topic["/rear/detections"]) == 2
    # log time = the input image's recording time (5 ms after its stamp in these recordings)
    for sec, nanosec, log_time in per_topic["/front/detections"]:
        assert log_time == Stamp(sec, nanosec).to_ns() + 5_000_000


def test_corrupt_messages_are_skipped_and_counted(tmp_path, capsys, clip_args):
    from mcap.writer import Writer

    from ros_mm_perception.core.imaging.image_codec import numpy_to_image
    from ros_mm_perception.messages.convert import header
    from ros_mm_perception.messages.typestore import rosbags_types, schema_text, typestore

    store = typestore()
    types = rosbags_types(store)
    images = rendered_images(5)
    path = tmp_path / "corrupt.mcap"
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start(profile="ros2", library="test")
        schema = writer.register_schema("sensor_msgs/msg/Image", "ros2msg",
                                        schema_text(store, "sensor_msgs/msg/Image").encode())
        channel = writer.register_channel("/cam/image_raw", "cdr", schema)
        for i, image in enumerate(images):
            msg = numpy_to_image(image, "rgb8", header=header(types, "cam", Stamp(1, i)),
                                 msg_factory=types.Image, data_as="numpy")
            if i == 3:
                msg.encoding = "rgb42"  # bad image data
            data = bytes(store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            if i == 1:
                data = data[:20]  # truncated: undecodable CDR
            writer.add_message(channel, log_time=i + 1, publish_time=i + 1, data=data)
        writer.finish()
    out = tmp_path / "out.mcap"
    summary, err = run_json(capsys, ["bag", str(path), "--out", str(out), "--json", *clip_args])
    assert (summary["frames"], summary["skipped"]) == (3, 2)
    assert "/cam/image_raw#1" in err and "/cam/image_raw#3" in err
    assert [s for s, _ in stamps(read_mcap(out), "/cam/detections")] == [Stamp(1, 0), Stamp(1, 2),
                                                                         Stamp(1, 4)]


class Interrupting:
    """A pipeline that works for ``after`` frames, then raises ``error`` (Ctrl-C or a crash)."""

    def __init__(self, pipeline, after, error):
        self.pipeline, self.after, self.error, self.calls = pipeline, after, error, 0

    def process(self, frame):
        self.calls += 1
        if self.calls > self.after:
            raise self.error
        return self.pipeline.process(frame)

    def close(self):
        self.pipeline.close()


@pytest.mark.parametrize("error, code",
                         [(KeyboardInterrupt(), 130), (RuntimeError("model crashed"), None)])
def test_interrupted_run_leaves_no_output_file(tmp_path, capsys, clip_args, two_camera_bag,
                                               monkeypatch, error, code):
    from ros_mm_perception.commands import bag

    real = bag.build_pipeline
    monkeypatch.setattr(bag, "build_pipeline", lambda config: Interrupting(real(config), 2, error))
    before = set(tmp_path.iterdir())
    argv = ["bag", str(two_camera_bag), "--out", str(tmp_path / "out.mcap"), "--jsonl",
            str(tmp_path / "out.jsonl"), "--coco", str(tmp_path / "coco.json"), *clip_args]
    if code is None:
        with pytest.raises(RuntimeError, match="model crashed"):
            main(argv)
    else:
        assert main(argv) == code
    assert set(tmp_path.iterdir()) == before  # neither the outputs nor their temporary files


def test_image_folder_to_jsonl_and_coco(tmp_path, capsys, clip_args):
    from ros_mm_perception.core.imaging.image_io import write_rgb

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(rendered_images(2)):
        write_rgb(folder / f"frame_{i:02d}.png", image)
    (folder / "frame_01b.png").write_bytes(b"\x89PNG broken")
    jsonl, coco = tmp_path / "frames.jsonl", tmp_path / "coco.json"
    summary, _ = run_json(capsys,
                          ["bag", str(folder), "--jsonl", str(jsonl), "--coco", str(coco),
                           "--json", *clip_args])
    assert (summary["frames"], summary["skipped"]) == (2, 1)
    # no MCAP unless asked when exports are given
    assert not list(Path.cwd().glob("images_perception.mcap"))

    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["name"] for r in lines] == ["frame_00.png", "frame_01.png"]
    assert all((r["width"], r["height"]) == (64, 48) and len(r["labels"]) >= 1 for r in lines)
    assert sum(len(r["detections"]) for r in lines) == summary["detections"]

    data = json.loads(coco.read_text())
    assert [c["name"] for c in data["categories"]] == PHRASES
    assert [im["file_name"] for im in data["images"]] == [r["name"] for r in lines]
    assert len(data["annotations"]) == summary["detections"]
    ids = {im["id"] for im in data["images"]}
    by_name = {c["id"]: c["name"] for c in data["categories"]}
    flat = [(r["name"], d["label"], d["box"]) for r in lines for d in r["detections"]]
    names = {im["id"]: im["file_name"] for im in data["images"]}
    for ann, (name, label, (x0, y0, x1, y1)) in zip(data["annotations"], flat):
        assert (
            ann["image_id"] in ids
            and names[ann["image_id"]] == name
            and by_name[ann["category_id"]] == label
        )
        assert ann["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0]) and ann["area"] >= 0


def test_video_input_every_frame_once(tmp_path, capsys, clip_args):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for image in rendered_images(3):
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "video.mcap"
    summary, _ = run_json(capsys, ["bag", str(video), "--out", str(out), "--json", *clip_args])
    assert (summary["frames"], summary["skipped"]) == (3, 0)
    assert [s for s, _ in stamps(read_mcap(out), "/camera/detections")] == [
        Stamp.from_ns(i * 100_000_000) for i in range(3)
    ]


def test_sqlite3_bag_and_camera_topic_choice(tmp_path, capsys, clip_args):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ros_mm_perception.core.imaging.image_codec import numpy_to_image
    from ros_mm_perception.messages.convert import header
    from ros_mm_perception.messages.typestore import rosbags_types, typestore

    store = typestore("humble")
    types = rosbags_types(store)
    bag = tmp_path / "db3_bag"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns = {t: writer.add_connection(t, "sensor_msgs/msg/Image", typestore=store)
                 for t in ("/a/image", "/b/image")}
        for i, image in enumerate(rendered_images(2)):
            msg = numpy_to_image(image, "rgb8", header=header(types, "a", Stamp(2, i)),
                                 msg_factory=types.Image, data_as="numpy")
            for conn in conns.values():
                writer.write(conn, i + 1, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    out = tmp_path / "out.mcap"
    summary, _ = run_json(capsys,
                          ["bag", str(bag), "--out", str(out), "--camera-topic", "/b/image",
                           "--json", *clip_args])
    assert summary["frames"] == 2
    assert {t for t, _, _, _ in read_mcap(out) if t.endswith("detections")} == {"/b/detections"}


def test_bag_errors_are_one_line(tmp_path, capsys, clip_args, two_camera_bag):
    assert main(["bag", str(two_camera_bag), "--camera-topic", "/nope", *clip_args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "/nope is not in the bag" in err and "/front/image_raw" in err
    assert main(["bag", str(two_camera_bag), "--out", str(two_camera_bag), *clip_args]) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert main(["bag", str(two_camera_bag), "--threads", "-1", *clip_args]) == 2
    assert "--threads" in capsys.readouterr().err


def test_demo_smoke(tmp_path, capsys, tiny_clip_dir, monkeypatch):
    import cv2
    import torch

    threads = []
    # the demo's choice, not this process's
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    out = tmp_path / "demo"
    summary, _ = run_json(capsys,
                          ["demo", "--out", str(out), "--frames", "1", "--size", "48x64",
                           "--clip-model", str(tiny_clip_dir), "--device", "cpu", "--json",
                           "--no-progress"])
    assert (summary["frames"], summary["skipped"]) == (2, 0)  # two cameras
    assert 0.0 <= summary["ground_truth_recall"] <= 1.0
    assert (
        summary["ground_truth_precision"] is None
        or 0.0 <= summary["ground_truth_precision"] <= 1.0
    )
    assert sorted(p.name for p in out.iterdir()) == ["contact_sheet.png", "detections.jsonl",
                                                     "perception.mcap", "sample_scenes.mcap"]
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 48 and sheet.shape[1] > 64
    topics = Counter(t for t, _, _, _ in read_mcap(out / "perception.mcap"))
    assert (
        topics["/front/detections"]
        == topics["/overhead/detections"]
        == topics["/front/detections_3d"]
        == 1
    )
    assert main(["demo", "--out", str(out), "--frames", "1", "--size", "48x64", "--clip-model",
                 str(tiny_clip_dir), "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"outputs in {out.resolve()}" in printed and "contact_sheet.png" in printed
    assert threads == [1, 1]


def test_outputs_deserialize_as_real_ros_messages(processed):
    """With ROS 2 sourced: every output message's bytes decode with rclpy into the real message
    classes, as ``ros2 bag play`` would deliver them to a node."""
    pytest.importorskip("rclpy")
    pytest.importorskip("vision_msgs")
    from mcap.reader import make_reader
    from rclpy.serialization import deserialize_message
    from rosidl_runtime_py.utilities import get_message

    _, out = processed
    seen = Counter()
    with open(out, "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            if (
                schema.name.startswith("foxglove_msgs/")
                and importlib.util.find_spec("foxglove_msgs") is None
            ):
                continue  # an optional run dependency of the node
            msg = deserialize_message(message.data, get_message(schema.name))
            seen[schema.name] += 1
            if schema.name == "vision_msgs/msg/Detection2DArray":
                assert msg.header.frame_id in ("front_optical", "rear_optical")
                assert all(d.results[0].hypothesis.class_id in PHRASES for d in msg.detections)
            if schema.name == "sensor_msgs/msg/Image":
                assert (msg.width, msg.height, msg.encoding, len(msg.data)) == (64, 48, "rgb8",
                                                                                64 * 48 * 3)
    assert (
        seen["vision_msgs/msg/Detection2DArray"] == 5
        and seen["vision_msgs/msg/Detection3DArray"] == 3
    )


def tf_message(store, transforms):
    """A tf2_msgs/TFMessage of (parent, child, stamp ns, xyz, quaternion xyzw) entries (rosbags
    classes)."""
    t = store.types
    stamped = [
        t["geometry_msgs/msg/TransformStamped"](
            header=t["std_msgs/msg/Header"](
                stamp=t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                frame_id=parent,
            ),
            child_frame_id=child,
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=xyz[0], y=xyz[1], z=xyz[2]),
                rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
            ),
        )
        for parent, child, ns, xyz, q in transforms
    ]
    return t["tf2_msgs/msg/TFMessage"](transforms=stamped)


def test_target_frame_uses_the_recorded_tf_interpolated_and_never_guesses(tmp_path, capsys,
                                                                          clip_args):
    """A camera 1 m up pitched 30 degrees down on a base that drives 1 m along odom's x while
    turning 90 degrees, recorded at 0 and 0.2 s only: the frame at 0.1 s is interpolated, the one
    at 0.3 s has none."""
    from scipy.spatial.transform import Rotation

    from ros_mm_perception.messages.typestore import typestore

    store = typestore()
    pitch = Rotation.from_euler("y", 30, degrees=True)
    optical = Rotation.from_euler("xyz", [-np.pi / 2, 0, -np.pi / 2])
    static = tf_message(store, [("base_link", "front_link", 0, (0.0, 0.0, 1.0), pitch.as_quat()),
                                ("front_link", "front_optical", 0, (0.0, 0.0, 0.0),
                                 optical.as_quat())])
    period = 100_000_000
    moving = [tf_message(store,
                         [("odom", "base_link", START_NS + 2 * i * period, (1.0 * i, 0.0, 0.0),
                           Rotation.from_euler("z", 90 * i, degrees=True).as_quat())])
              for i in range(2)]
    bag = write_recording(tmp_path / "tf.mcap", [
        CameraRecording("/front", rendered_images(4),
                        depths=[np.full((48, 64), 1200, np.uint16)] * 4, k=K,
                        frame_id="front_optical")],
        extra=[("/tf_static", static, START_NS - 1), ("/tf", moving[0], START_NS),
               ("/tf", moving[1], START_NS + 2 * period)])
    out = tmp_path / "out.mcap"
    summary, err = run_json(capsys,
                            ["bag", str(bag), "--out", str(out), "--json", "--target-frame",
                             "odom", *clip_args])
    assert summary["frames"] == 4
    assert "odom -> base_link" in err and "no detections_3d in odom" in err and "(1 frames)" in err
    msgs = read_mcap(out)
    # 2D stays in the camera frame for every frame; 3D is in odom for the frames that have the
    # transform
    assert [f for _, f in stamps(msgs, "/front/detections")] == ["front_optical"] * 4
    assert stamps(msgs, "/front/detections_3d") == [(Stamp.from_ns(START_NS + i * period), "odom")
                                                    for i in range(3)]
    flat = {m.header.stamp.nanosec: m for t, _, m, _ in msgs if t == "/front/detections"}
    checked = set()
    for t, _, m, _ in msgs:
        if t != "/front/detections_3d":
            continue
        i = round((m.header.stamp.sec * 10**9 + m.header.stamp.nanosec - START_NS) / period)
        # 0, 45 (interpolated), 90 degrees
        base_rotation = Rotation.from_euler("z", 45 * i, degrees=True)
        rotation = base_rotation * pitch * optical
        for d3, d2 in zip(m.detections, flat[m.header.stamp.nanosec].detections):
            # the camera-frame position the 2D message carries
            p = d2.results[0].pose.pose.position
            want = (
                rotation.apply([p.x, p.y, p.z])
                + base_rotation.apply([0.0, 0.0, 1.0])
                + [0.5 * i, 0.0, 0.0]
            )
            c = d3.bbox.center
            assert np.allclose([c.position.x, c.position.y, c.position.z], want, atol=1e-6)
            q = c.orientation
            assert np.allclose(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(),
                               rotation.as_matrix())
            assert d3.bbox.size.x > 0 and d3.id == d2.id
            checked.add(i)
    assert 1 in checked  # the interpolated frame had detections to check


def test_target_frame_needs_recorded_transforms(tmp_path, capsys, clip_args, two_camera_bag):
    assert main(["bag", str(two_camera_bag), "--out", str(tmp_path / "o.mcap"), "--target-frame",
                 "base_link", *clip_args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no transforms on /tf or /tf_static" in err[0]
    assert not (tmp_path / "o.mcap").exists()
    from ros_mm_perception.core.imaging.image_io import write_rgb

    folder = tmp_path / "images"
    folder.mkdir()
    write_rgb(folder / "frame.png", rendered_images(1)[0])
    assert main(["bag", str(folder), "--jsonl", str(tmp_path / "f.jsonl"), "--target-frame",
                 "base_link", *clip_args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a rosbag2 recording" in err[0]
    assert not (tmp_path / "f.jsonl").exists()
