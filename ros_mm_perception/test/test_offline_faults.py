"""``bag`` and ``detect`` under faults: transforms tf2 refuses, giant images, what a crashed
recorder leaves, and small input mistakes. Each is a one-line error or a counted skip, never a
traceback, never a NaN in an output, and every readable frame is processed."""

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
    """A tf2_msgs/TFMessage of (parent, child, stamp ns, xyz, quaternion xyzw) (rosbags
    classes)."""
    from ros_mm_perception.messages.typestore import typestore

    t = typestore().types
    return t["tf2_msgs/msg/TFMessage"](transforms=[t["geometry_msgs/msg/TransformStamped"](
        header=t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
            frame_id=parent),
        child_frame_id=child,
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=xyz[0], y=xyz[1], z=xyz[2]),
            rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))
        for parent, child, ns, xyz, q in entries])


def located_bag(path, extra):
    depths = [np.full((48, 64), 1200, np.uint16)] * 3
    return write_recording(path, [CameraRecording("/front", rendered_images(3), depths=depths, k=K,
                                                  frame_id="front_optical")], extra=extra)


def test_transforms_tf2_refuses_are_rejected_counted_and_never_reach_the_output(tmp_path,
                                                                                clip_args):
    good = ("base_link", "front_optical", 0, (0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 1.0))
    extra = [
        (
            "/tf_static",
            tf_message(
                [
                    ("base_link", "front_optical", 0, (math.nan, 0.0, 1.0), (0.0, 0.0, 0.0, 1.0)),
                    ("odom", "odom", 0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)),
                    ("", "x", 0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)),
                ]
            ),
            START_NS - 2,
        ),
        (
            "/tf",
            tf_message(
                [
                    (
                        "base_link",
                        "front_optical",
                        START_NS,
                        (0.0, 0.0, 1.0),
                        (0.0, 0.0, math.inf, 1.0),
                    ),
                    (
                        "base_link",
                        "front_optical",
                        START_NS,
                        (0.0, 0.0, 1.0),
                        (0.0, 0.0, 0.0, 0.0),
                    ),
                ]
            ),
            START_NS,
        ),
    ]
    # nothing usable: one line naming what was rejected, not "no transforms"
    bag = located_bag(tmp_path / "bad.mcap", extra)
    code, _, err = run(["bag", str(bag), "--out", str(tmp_path / "bad_out.mcap"), "--target-frame",
                        "base_link", *clip_args])
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert (
        "every transform on /tf and /tf_static was rejected" in last
        and "no transforms" not in last
    )
    assert "2 NaN or infinite value" in last and "1 quaternion not of unit length" in last
    assert not (tmp_path / "bad_out.mcap").exists()

    # with one good static transform too: processed; the rejected ones counted in the note and JSON
    bag = located_bag(tmp_path / "mixed.mcap",
                      [*extra, ("/tf_static", tf_message([good]), START_NS - 1)])
    out = tmp_path / "out.mcap"
    code, stdout, err = run(["bag", str(bag), "--out", str(out), "--target-frame", "base_link",
                             "--json", *clip_args])
    assert code == 0 and "Traceback" not in err, err
    summary = json.loads(stdout)
    assert summary["frames"] == 3
    assert summary["transforms_rejected"] == {"NaN or infinite value": 2,
                                              "quaternion not of unit length": 1,
                                              "frame is its own parent": 1, "empty frame id": 1}
    assert "5 transform(s) on /tf or /tf_static rejected" in err
    values = floats_of(out, "/detections_3d")
    assert values and all(math.isfinite(v) for v in values)


def giant_png(path, width=20_000, height=20_000):
    """A valid 1-bit grey PNG of ``width x height`` pixels, a few kB on disk (4.7 GB as RGB)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I",
                                                                        zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def giant(tmp_path_factory):
    return giant_png(tmp_path_factory.mktemp("giant") / "giant.png")


@pytest.fixture
def no_decoding(monkeypatch):
    """OpenCV's decoder made to fail the test when it is given an image of more than 10 MP."""
    import cv2

    decode = cv2.imdecode

    def checked(data, flags):
        from ros_mm_perception.core.imaging.image_codec import encoded_size

        width, height = encoded_size(data) or (0, 0)
        assert width * height < 10_000_000, "an image above max_image_pixels reached the decoder"
        return decode(data, flags)

    monkeypatch.setattr(cv2, "imdecode", checked)


def test_header_sizes_of_every_image_format(tmp_path):
    from ros_mm_perception.core.imaging.image_codec import encoded_size
    from ros_mm_perception.core.imaging.image_io import write_rgb

    image = np.zeros((37, 53, 3), np.uint8)
    for suffix in (".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm"):
        data = write_rgb(tmp_path / f"x{suffix}", image).read_bytes()
        assert encoded_size(data) == (53, 37), suffix
    grey = tmp_path / "x.pgm"
    grey.write_bytes(b"P5\n# a comment\n53 37\n255\n" + bytes(53 * 37))
    assert encoded_size(grey.read_bytes()) == (53, 37)
    assert encoded_size(b"not an image") is None and encoded_size(b"\x89PNG\r\n\x1a\n") is None


def test_detect_refuses_a_giant_image_in_one_line_without_decoding(giant, clip_args, no_decoding):
    code, out, err = run(["detect", str(giant), "red circle", "--clip-model", clip_args[1],
                          "--device", "cpu"])
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "20000 x 20000 pixels" in err and "max_image_pixels" in err


def test_giant_images_are_skipped_and_the_rest_processed(giant, clip_args, tmp_path, no_decoding):
    """An image folder, and a bag with a giant CompressedImage and a giant raw Image."""
    from ros_mm_perception.core.imaging.image_io import write_rgb
    from ros_mm_perception.messages.convert import byte_array, header
    from ros_mm_perception.messages.typestore import rosbags_types, typestore
    from ros_mm_perception.core.results import Stamp

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(rendered_images(2)):
        write_rgb(folder / f"frame_{i}.jpg", image)
    (folder / "frame_1b.png").write_bytes(giant.read_bytes())
    code, stdout, err = run(["bag", str(folder), "--jsonl", str(tmp_path / "f.jsonl"), "--json",
                             *clip_args])
    summary = json.loads(stdout)
    assert code == 0 and (summary["frames"], summary["skipped"]) == (2, 1), err
    assert "frame_1b.png" in err and "max_image_pixels" in err and "Traceback" not in err

    types = rosbags_types(typestore())
    stamp = Stamp.from_ns(START_NS + 250_000_000)
    huge_raw = types.Image(header=header(types, "front_optical", stamp), height=20_000,
                           width=20_000, encoding="rgb8", is_bigendian=0, step=60_000,
                           data=np.zeros(3, np.uint8))
    huge_jpeg = types.CompressedImage(header=header(types, "rear_optical", stamp), format="png",
                                      data=byte_array(types, giant.read_bytes(),
                                                      "CompressedImage"))
    bag = write_recording(tmp_path / "giant.mcap", [
        CameraRecording("/front", rendered_images(2), frame_id="front_optical"),
        CameraRecording("/rear", rendered_images(2, seed=1), compressed=True,
                        frame_id="rear_optical")],
        extra=[("/front/image_raw", huge_raw, START_NS + 250_000_000),
               ("/rear/image_raw/compressed", huge_jpeg, START_NS + 250_000_000)])
    code, stdout, err = run(["bag", str(bag), "--out", str(tmp_path / "o.mcap"), "--json",
                             *clip_args])
    summary = json.loads(stdout)
    assert code == 0 and (summary["frames"], summary["skipped"]) == (4, 2), err
    assert err.count("max_image_pixels") == 2 and "Traceback" not in err


def test_service_requests_are_bounded_before_any_model_runs():
    from types import SimpleNamespace as N

    from ros_mm_perception.core.errors import UserError
    from ros_mm_perception.messages.requests import MAX_QUESTION_CHARS, check_request

    limit = 100_000_000
    check_request(limit, N(height=0, width=0), phrases=["red mug"], question="is the door open?",
                  score_threshold=-1.0, top_k=3)  # within bounds: nothing raised
    cases = [(dict(image=N(height=20_000, width=20_000)), "20000 x 20000 pixels"),
             (dict(phrases=[f"thing {i}" for i in range(300)]), "at most 256"),
             (dict(labels=["x" * 300]), "at most 200"),
             (dict(phrases=[","]), "needs a letter or digit"),
             (dict(question="why " * MAX_QUESTION_CHARS), f"at most {MAX_QUESTION_CHARS}"),
             (dict(score_threshold=math.nan), "score_threshold"),
             (dict(score_threshold=3.0), "score_threshold"),
             (dict(top_k=60_000), "top_k")]
    for fields, message in cases:
        with pytest.raises(UserError, match=message):
            check_request(limit, **fields)


def test_detect_rejects_a_phrase_without_a_letter_or_digit(clip_args):
    code, out, err = run(["detect", "unused.png", " ; , ;", "--clip-model", clip_args[1]])
    assert (
        code == 2 and out == "" and err.count("\n") == 1 and "needs a letter or digit" in err
    ), err


def test_a_nan_camera_info_is_reported_as_such(tmp_path, clip_args):
    depths = [np.full((48, 64), 1200, np.uint16)] * 2
    bag = write_recording(tmp_path / "nan_k.mcap", [
        CameraRecording("/front", rendered_images(2), depths=depths,
                        k=[math.nan, 0, 32, 0, 60, 24, 0, 0, 1], frame_id="front_optical")])
    code, stdout, err = run(["bag", str(bag), "--out", str(tmp_path / "o.mcap"), "--json",
                             *clip_args])
    assert code == 0 and json.loads(stdout)["frames"] == 2
    assert "camera_info is unusable" in err and "not finite" in err, err
    assert "depth without camera_info" not in err


def split_recording(folder, splits, per=1):
    """A rosbag2 folder as a recorder that split every ``per`` images writes it:
    ``<folder>_<N>.mcap`` and a metadata.yaml listing them (``splits x per`` images on
    /cam/image_raw)."""
    import shutil

    import yaml
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ros_mm_perception.core.imaging.image_codec import numpy_to_image
    from ros_mm_perception.core.results import Stamp
    from ros_mm_perception.messages.convert import header
    from ros_mm_perception.messages.typestore import rosbags_types, typestore

    store = typestore()
    types = rosbags_types(store)
    images = rendered_images(splits * per)
    folder.mkdir()
    names, meta = [], None
    for k in range(splits):
        part = folder.parent / f"{folder.name}.part{k}"
        with Writer(part, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            conn = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image",
                                         typestore=store)
            for n in range(k * per, (k + 1) * per):
                t = START_NS + n * 100_000_000
                msg = numpy_to_image(images[n], "rgb8",
                                     header=header(types, "cam", Stamp.from_ns(t)),
                                     msg_factory=types.Image, data_as="numpy")
                writer.write(conn, t, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
        meta = meta or yaml.safe_load((part / "metadata.yaml").read_text())
        names.append(f"{folder.name}_{k}.mcap")
        shutil.move(next(part.glob("*.mcap")), folder / names[-1])
        shutil.rmtree(part)
    info = meta["rosbag2_bagfile_information"]
    info["relative_file_paths"] = names
    info["files"] = []
    info["message_count"] = info["topics_with_message_count"][0]["message_count"] = splits * per
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return folder


def jsonl_stamps(path):
    """Stamps in ns of the frames of a JSON Lines output, in file order."""
    stamps = [json.loads(line)["stamp"] for line in path.read_text().splitlines()]
    return [s["sec"] * 10**9 + s["nanosec"] for s in stamps]


def test_what_a_crashed_recorder_leaves_is_read(tmp_path, clip_args):
    # run_0 ... run_10: split order is not name order
    whole = split_recording(tmp_path / "run", 11)
    code, stdout, err = run(["bag", str(whole), "--jsonl", str(tmp_path / "whole.jsonl"), "--json",
                             *clip_args])
    assert code == 0 and json.loads(stdout)["frames"] == 11 and json.loads(stdout)["damaged"] == []
    stamps = jsonl_stamps(tmp_path / "whole.jsonl")
    assert stamps == [START_NS + n * 100_000_000 for n in range(11)]

    (whole / "metadata.yaml").unlink()  # the recorder died before writing it
    code, stdout, err = run(["bag", str(whole), "--jsonl", str(tmp_path / "no_meta.jsonl"),
                             "--json", *clip_args])
    summary = json.loads(stdout)
    assert code == 0 and summary["frames"] == 11 and "Traceback" not in err
    assert (
        "no metadata.yaml" in summary["damaged"][0]
        and "11 storage file(s)" in summary["damaged"][0]
    )
    assert jsonl_stamps(tmp_path / "no_meta.jsonl") == stamps

    missing = split_recording(tmp_path / "cut", 4)
    (missing / "cut_2.mcap").unlink()
    code, stdout, err = run(["bag", str(missing), "--jsonl", str(tmp_path / "cut.jsonl"), "--json",
                             *clip_args])
    summary = json.loads(stdout)
    assert code == 0 and (summary["frames"], summary["skipped"]) == (3, 1), err
    assert "cut_2.mcap listed in metadata.yaml is missing" in summary["damaged"][0]

    other = split_recording(tmp_path / "other", 2)
    meta = other / "metadata.yaml"
    meta.write_text(meta.read_text().replace("/cam/image_raw", "/front/image_raw"))
    code, stdout, err = run(["bag", str(other), "--jsonl", str(tmp_path / "other.jsonl"), "--json",
                             *clip_args])
    summary = json.loads(stdout)
    assert code == 0 and (summary["frames"], summary["skipped"]) == (2, 0), err
    assert "metadata.yaml lists topics its storage files do not hold" in summary["damaged"][0]
    assert (
        "/front/image_raw" in summary["damaged"][0] and "/cam/image_raw" in summary["damaged"][0]
    )


def test_a_folder_of_separate_recordings_is_not_taken_for_splits(tmp_path):
    from ros_mm_perception.offline.storage_reading import split_files

    (tmp_path / "a.mcap").write_bytes(b"")
    (tmp_path / "b_1.mcap").write_bytes(b"")
    assert split_files(tmp_path) == []
    (tmp_path / "a.mcap").unlink()
    (tmp_path / "b_0.db3").write_bytes(b"")
    (tmp_path / "b_10.mcap").write_bytes(b"")
    assert [p.name for p in split_files(tmp_path)] == ["b_0.db3", "b_1.mcap", "b_10.mcap"]


def test_an_empty_model_option_is_an_error(clip_args):
    code, out, err = run(["detect", "unused.png", "red circle", "--owl-model", "", "--clip-model",
                          clip_args[1]])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--owl-model is empty" in err, err


def test_a_non_ros_channel_is_left_aside_not_called_damage(tmp_path, clip_args, monkeypatch):
    """An MCAP with a JSON (jsonschema) channel beside the cameras, as Foxglove's tools write."""
    from ros_mm_perception.offline import recording
    from ros_mm_perception.offline.mcap_output import RosMcapFile

    class WithJsonChannel(RosMcapFile):
        def __init__(self, stream, store, **kwargs):
            super().__init__(stream, store, **kwargs)
            schema = self.writer.register_schema(name="Note", encoding="jsonschema",
                                                 data=json.dumps({"type": "object"}).encode())
            channel = self.writer.register_channel(topic="/notes", message_encoding="json",
                                                   schema_id=schema)
            self.writer.add_message(channel_id=channel, log_time=START_NS, publish_time=START_NS,
                                    data=b'{"note": "door open"}')

    monkeypatch.setattr(recording, "RosMcapFile", WithJsonChannel)
    camera = CameraRecording("/front", rendered_images(3), frame_id="front_optical")
    path = write_recording(tmp_path / "with_json.mcap", [camera])
    code, stdout, err = run(["bag", str(path), "--jsonl", str(tmp_path / "o.jsonl"), "--json",
                             *clip_args])
    summary = json.loads(stdout)
    assert code == 0 and summary["frames"] == 3 and summary["damaged"] == [], err
    assert "/notes (jsonschema)" in err and "left aside" in err


def test_the_outside_world_warning_names_each_phrase_once():
    from ros_mm_perception.core.models.embedded import outside_world_message

    message = outside_world_message(["person", "chair", "red circle", "person", "chair"],
                                    "--clip-model")
    assert message.count("person") == 1 and message.count("chair") == 1
    assert "red circle" not in message
