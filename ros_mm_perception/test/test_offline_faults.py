"""``bag`` and ``detect`` under faults: transforms tf2 refuses, giant images, what a crashed recorder
leaves, and small input mistakes. Each is a one-line error or a counted skip, never a traceback,
never a NaN in an output, and every readable frame is processed."""

import contextlib
import io
import json
import math

import numpy as np
import pytest

from ros_mm_perception.cli import main
from ros_mm_perception.offline.recording import START_NS, CameraRecording, write_recording
from offline_helpers import K, rendered_images, tiny_clip_options

PHRASES = ["red circle", "blue square"]


@pytest.fixture(scope="module")
def clip_args(tiny_clip_dir):
    return tiny_clip_options(tiny_clip_dir, ",".join(PHRASES), "red circle,blue square,green star",
                             threshold=0)


def run(argv):
    """(exit status, stdout, stderr) of the command line ``argv``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def floats_of(path, topic_suffix):
    """Every float field of the messages on topics ending with ``topic_suffix`` (mcap_ros2)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    values = []

    def walk(obj):
        if isinstance(obj, float):
            values.append(obj)
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item)
        elif hasattr(obj, "__slots__") or hasattr(obj, "__dict__"):
            for name in getattr(obj, "__slots__", None) or vars(obj):
                walk(getattr(obj, name))

    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _, channel, _, msg in reader.iter_decoded_messages():
            if channel.topic.endswith(topic_suffix):
                walk(msg)
    return values


def tf_message(entries):
    """A tf2_msgs/TFMessage of (parent, child, stamp ns, xyz, quaternion xyzw) (rosbags classes)."""
    from ros_mm_perception.messages.typestore import typestore

    t = typestore().types
    return t["tf2_msgs/msg/TFMessage"](transforms=[t["geometry_msgs/msg/TransformStamped"](
        header=t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id=parent),
        child_frame_id=child,
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=xyz[0], y=xyz[1], z=xyz[2]),
            rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))
        for parent, child, ns, xyz, q in entries])


def located_bag(path, extra):
    depths = [np.full((48, 64), 1200, np.uint16)] * 3
    return write_recording(path, [CameraRecording("/front", rendered_images(3), depths=depths, k=K,
                                                  frame_id="front_optical")], extra=extra)


def test_transforms_tf2_refuses_are_rejected_counted_and_never_reach_the_output(tmp_path, clip_args):
    good = ("base_link", "front_optical", 0, (0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 1.0))
    extra = [("/tf_static", tf_message([("base_link", "front_optical", 0, (math.nan, 0.0, 1.0),
                                          (0.0, 0.0, 0.0, 1.0)),
                                         ("odom", "odom", 0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)),
                                         ("", "x", 0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))]),
              START_NS - 2),
             ("/tf", tf_message([("base_link", "front_optical", START_NS, (0.0, 0.0, 1.0),
                                  (0.0, 0.0, math.inf, 1.0)),
                                 ("base_link", "front_optical", START_NS, (0.0, 0.0, 1.0),
                                  (0.0, 0.0, 0.0, 0.0))]), START_NS)]
    # nothing usable: one line naming what was rejected, not "no transforms"
    bag = located_bag(tmp_path / "bad.mcap", extra)
    code, _, err = run(["bag", str(bag), "--out", str(tmp_path / "bad_out.mcap"), "--target-frame",
                        "base_link", *clip_args])
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "every transform on /tf and /tf_static was rejected" in last and "no transforms" not in last
    assert "2 NaN or infinite value" in last and "1 quaternion not of unit length" in last
    assert not (tmp_path / "bad_out.mcap").exists()

    # with one good static transform too: processed; the rejected ones counted in the note and JSON
    bag = located_bag(tmp_path / "mixed.mcap", [*extra, ("/tf_static", tf_message([good]), START_NS - 1)])
    out = tmp_path / "out.mcap"
    code, stdout, err = run(["bag", str(bag), "--out", str(out), "--target-frame", "base_link", "--json",
                             *clip_args])
    assert code == 0 and "Traceback" not in err, err
    summary = json.loads(stdout)
    assert summary["frames"] == 3
    assert summary["transforms_rejected"] == {"NaN or infinite value": 2, "quaternion not of unit length": 1,
                                              "frame is its own parent": 1, "empty frame id": 1}
    assert "5 transform(s) on /tf or /tf_static rejected" in err
    values = floats_of(out, "/detections_3d")
    assert values and all(math.isfinite(v) for v in values)
