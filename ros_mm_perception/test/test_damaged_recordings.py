"""Damaged recordings give every frame that can still be read (docs/offline.md, "Guarantees").

Files are cut at 10, 50 and 90 % (as a power loss or a full disk leaves them), get random bytes in
the middle of a chunk, or a damaged sqlite3 page. Which frames are still readable is worked out
from the intact file (its chunk index, or the row that was damaged), independently of the reader
under test; the outputs must hold exactly those frames, the rest counted in ``skipped`` and the
damage named in one line and in the ``--json`` object.
"""

import json

import numpy as np
import pytest

from ros_mm_perception.cli import main
from ros_mm_perception.core.results import Stamp
from ros_mm_perception.offline.recording import START_NS
from offline_helpers import noise_images, tiny_clip_options

N = 10
IMAGE_DELAY_NS = 5_000_000
"""Images are recorded 5 ms after their stamp (as the demo's recordings are)."""


@pytest.fixture(scope="module")
def clip_args(tiny_clip_dir):
    return tiny_clip_options(tiny_clip_dir, "red circle", "red circle,blue square")


def run(capsys, argv):
    """(exit status, the --json object or None, stderr)."""
    status = main([*argv, "--json"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return status, json.loads(lines[-1]) if lines else None, captured.err


def jsonl_stamps(path):
    return [Stamp(**json.loads(line)["stamp"]).to_ns() for line in path.read_text().splitlines()]


def chunks(path):
    """The chunk index of an intact MCAP file: [(start, end, log times of its messages)]."""
    from mcap.reader import make_reader

    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        times = [m.log_time for _, _, m in reader.iter_messages()]
    out = []
    for ci in summary.chunk_indexes:
        inside = [t for t in times if ci.message_start_time <= t <= ci.message_end_time]
        out.append((ci.chunk_start_offset, ci.chunk_start_offset + ci.chunk_length, inside))
    return out


def write_chunked(path, frames, chunk_size):
    """An MCAP file of raw ``/cam/image_raw`` images (stamp i * 100 ms after START_NS),
    ``chunk_size`` bytes of messages per zstd chunk, written with the mcap library itself."""
    from mcap.writer import CompressionType, Writer

    from ros_mm_perception.core.imaging.image_codec import numpy_to_image
    from ros_mm_perception.messages.convert import header
    from ros_mm_perception.messages.typestore import rosbags_types, schema_text, typestore

    store = typestore()
    types = rosbags_types(store)
    with open(path, "wb") as f:
        writer = Writer(f, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        writer.start(profile="ros2", library="test")
        schema = writer.register_schema("sensor_msgs/msg/Image", "ros2msg",
                                        schema_text(store, "sensor_msgs/msg/Image").encode())
        channel = writer.register_channel("/cam/image_raw", "cdr", schema)
        for i, image in enumerate(frames):
            stamp = START_NS + i * 100_000_000
            msg = numpy_to_image(image, "rgb8", header=header(types, "cam", Stamp.from_ns(stamp)),
                                 msg_factory=types.Image, data_as="numpy")
            writer.add_message(channel, log_time=stamp + IMAGE_DELAY_NS,
                               publish_time=stamp + IMAGE_DELAY_NS,
                               data=bytes(store.serialize_cdr(msg, "sensor_msgs/msg/Image")))
        writer.finish()
    return path


@pytest.fixture(params=[1, 20_000], ids=["chunk-per-image", "two-images-per-chunk"])
def recording(request, tmp_path):
    path = write_chunked(tmp_path / "full.mcap", noise_images(N), request.param)
    return path, chunks(path)


def assert_outputs_hold(tmp_path, summary, expected_log_times):
    expected = [t - IMAGE_DELAY_NS for t in sorted(expected_log_times)]
    assert summary["frames"] == len(expected)
    assert jsonl_stamps(tmp_path / "out.jsonl") == expected
    from mcap.reader import make_reader

    with open(tmp_path / "out.mcap", "rb") as f:
        detections = [m.log_time
                      for _, c, m in make_reader(f).iter_messages()
                      if c.topic == "/cam/detections"]
    assert detections == sorted(expected_log_times)  # one detections message per readable image


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_a_cut_off_mcap_gives_every_complete_chunk(tmp_path, capsys, clip_args, recording,
                                                   fraction):
    full, index = recording
    data = full.read_bytes()
    cut = int(len(data) * fraction)
    path = tmp_path / "cut.mcap"
    path.write_bytes(data[:cut])
    readable = [t for start, end, times in index if end <= cut for t in times]
    status, summary, err = run(capsys,
                               ["bag", str(path), "--out", str(tmp_path / "out.mcap"), "--jsonl",
                                str(tmp_path / "out.jsonl"), *clip_args])
    if not readable:  # cut inside the first chunk, which also holds the topic's definition
        assert (
            status == 2 and "no message in it can be read" in err and err.strip().count("\n") == 0
        )
        assert not (tmp_path / "out.mcap").exists() and not (tmp_path / "out.jsonl").exists()
        return
    assert status == 0
    assert_outputs_hold(tmp_path, summary, readable)
    assert len(summary["damaged"]) == 1 and "cut off" in summary["damaged"][0]
    assert [line for line in err.splitlines() if "cut off" in line] == summary["damaged"]


def test_fractions_cover_both_outcomes(recording):
    """The cuts above do test reading: 50 % and 90 % of the file leave complete chunks."""
    full, index = recording
    size = full.stat().st_size
    assert [sum(end <= int(size * f) for _, end, _ in index) > 0 for f in (0.5, 0.9)] == [True,
                                                                                          True]


def test_a_mcap_without_its_summary_gives_every_frame(tmp_path, capsys, clip_args, recording):
    full, index = recording
    path = tmp_path / "nosummary.mcap"
    # up to the end of the last chunk and its indexes
    path.write_bytes(full.read_bytes()[:index[-1][1]])
    status, summary, err = run(capsys,
                               ["bag", str(path), "--out", str(tmp_path / "out.mcap"), "--jsonl",
                                str(tmp_path / "out.jsonl"), *clip_args])
    assert status == 0
    assert_outputs_hold(tmp_path, summary, [t for _, _, times in index for t in times])
    assert summary["skipped"] == 0 and len(summary["damaged"]) == 1


@pytest.mark.parametrize("which", ["first", "middle"])
def test_random_bytes_in_a_chunk_lose_only_that_chunk(tmp_path, capsys, clip_args, recording,
                                                      which):
    """Also the first chunk, which holds the topic's definition (the summary repeats it)."""
    full, index = recording
    data = bytearray(full.read_bytes())
    start, end, lost = index[0 if which == "first" else len(index) // 2]
    middle = (start + end) // 2
    data[middle:middle + 64] = np.random.default_rng(1).integers(0, 255, 64,
                                                                 dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.mcap"
    path.write_bytes(bytes(data))
    status, summary, err = run(capsys,
                               ["bag", str(path), "--out", str(tmp_path / "out.mcap"), "--jsonl",
                                str(tmp_path / "out.jsonl"), *clip_args])
    assert status == 0
    assert_outputs_hold(tmp_path, summary,
                        [t for s, _, times in index if s != start for t in times])
    assert summary["skipped"] == len(lost) > 0
    assert (
        len(summary["damaged"]) == 1 and f"damaged chunk at byte {start}" in summary["damaged"][0]
    )
    assert summary["damaged"][0] in err.splitlines()


@pytest.mark.parametrize("summary", [True, False], ids=["with-summary", "without-summary"])
def test_a_garbled_chunk_header_loses_only_that_chunk(tmp_path, capsys, clip_args, recording,
                                                      summary):
    """Random bytes over a chunk's record header (its length is lost): reading resumes at the next
    chunk, found from the summary's chunk index or, without one, by the next consistent chunk
    header."""
    full, index = recording
    data = bytearray(full.read_bytes() if summary else full.read_bytes()[:index[-1][1]])
    start, _, lost = index[len(index) // 2]
    data[start:start + 9] = np.random.default_rng(2).integers(0, 255, 9, dtype=np.uint8).tobytes()
    path = tmp_path / "garbled.mcap"
    path.write_bytes(bytes(data))
    status, summary_json, err = run(capsys,
                                    ["bag", str(path), "--out", str(tmp_path / "out.mcap"),
                                     "--jsonl", str(tmp_path / "out.jsonl"), *clip_args])
    assert status == 0
    assert_outputs_hold(tmp_path, summary_json,
                        [t for s, _, times in index if s != start for t in times])
    assert any(f"unreadable bytes {start}-" in note for note in summary_json["damaged"])
    if summary:  # the summary's counts tell how many images were lost
        assert summary_json["skipped"] == len(lost)


def test_a_cut_off_rosbag2_folder(tmp_path, capsys, clip_args):
    """A recording folder (metadata.yaml) whose storage file was cut off."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ros_mm_perception.messages.typestore import typestore

    bag = tmp_path / "run"
    # metadata.yaml for 4 images
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image",
                                     typestore=typestore())
        for i in range(4):
            writer.write(conn, i + 1, b"")
    storage = next(bag.glob("*.mcap"))  # the storage file, one chunk per image, cut off at 90 %
    write_chunked(storage, noise_images(4), chunk_size=1)
    index = chunks(storage)
    data = storage.read_bytes()
    cut = int(len(data) * 0.9)
    storage.write_bytes(data[:cut])
    readable = [t for _, end, times in index if end <= cut for t in times]
    status, summary, err = run(capsys,
                               ["bag", str(bag), "--jsonl", str(tmp_path / "out.jsonl"),
                                *clip_args])
    assert status == 0 and summary["frames"] == len(readable) >= 2 and len(summary["damaged"]) == 1
    # metadata.yaml says how many images were recorded
    assert summary["skipped"] == 4 - len(readable)
    assert jsonl_stamps(tmp_path / "out.jsonl") == [t - IMAGE_DELAY_NS for t in readable]


def write_db3(path, frames):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ros_mm_perception.core.imaging.image_codec import numpy_to_image
    from ros_mm_perception.messages.convert import header
    from ros_mm_perception.messages.typestore import rosbags_types, typestore

    store = typestore("humble")
    types = rosbags_types(store)
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for i, image in enumerate(frames):
            msg = numpy_to_image(image, "rgb8", header=header(types, "cam", Stamp(3, i)),
                                 msg_factory=types.Image, data_as="numpy")
            writer.write(conn, i + 1, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return next(path.glob("*.db3"))


def test_a_damaged_db3_page_loses_only_its_row(tmp_path, capsys, clip_args):
    frames = noise_images(5)
    db = write_db3(tmp_path / "db3_bag", frames)
    data = bytearray(db.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    # Row 2's image continues on overflow pages; break the link from its first one to the next.
    position = data.find(frames[2][24].tobytes())
    page = position // page_size * page_size
    # not the last page of the row
    assert position > 0 and int.from_bytes(data[page:page + 4], "big") != 0
    data[page:page + 4] = (0xFFFFFF00).to_bytes(4, "big")
    db.write_bytes(bytes(data))
    status, summary, err = run(capsys,
                               ["bag", str(db.parent), "--jsonl", str(tmp_path / "out.jsonl"),
                                *clip_args])
    assert status == 0
    assert jsonl_stamps(tmp_path / "out.jsonl") == [Stamp(3, i).to_ns() for i in (0, 1, 3, 4)]
    assert (summary["frames"], summary["skipped"]) == (4, 1)
    assert len(summary["damaged"]) == 1 and "db3" in summary["damaged"][0]


@pytest.mark.parametrize("fraction, readable", [(0.5, 2), (0.7, 4)])
def test_a_cut_off_video_counts_its_unreadable_frames(tmp_path, capsys, clip_args, fraction,
                                                      readable):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for image in noise_images(6):
        writer.write(image)
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[:int(len(data) * fraction)])
    capture = cv2.VideoCapture(str(video))  # plain OpenCV: the frames it decodes before the cut
    assert (capture.get(cv2.CAP_PROP_FRAME_COUNT),
            [capture.read()[0] for _ in range(readable + 1)]) == (
        6, [True] * readable + [False])
    capture.release()
    status, summary, err = run(capsys,
                               ["bag", str(video), "--jsonl", str(tmp_path / "out.jsonl"),
                                *clip_args])
    assert status == 0
    assert (summary["frames"], summary["skipped"]) == (readable, 6 - readable)
    assert jsonl_stamps(tmp_path / "out.jsonl") == [i * 100_000_000 for i in range(readable)]


# ------------------------------------------------------------------------------ garbled library
# input

def test_garbled_metadata_yaml_is_one_line_naming_the_file(tmp_path, capsys, clip_args):
    db = write_db3(tmp_path / "bag", noise_images(1))
    (db.parent
     / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  version: [9\n  : : :\n\tbad")
    status, _, err = run(capsys, ["bag", str(db.parent), *clip_args])
    assert status == 2 and err.strip().count("\n") == 0 and "metadata.yaml" in err


def test_garbled_schema_is_one_line_naming_the_file(tmp_path, capsys, clip_args):
    from mcap.writer import Writer

    path = tmp_path / "garbled.mcap"
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start(profile="ros2", library="test")
        schema = writer.register_schema("sensor_msgs/msg/Image", "ros2msg",
                                        b"std_msgs/Header header\nuint32 (\n{{{")
        channel = writer.register_channel("/cam/image_raw", "cdr", schema)
        writer.add_message(channel, log_time=1, publish_time=1, data=b"\x00\x01\x00\x00")
        writer.finish()
    status, _, err = run(capsys, ["bag", str(path), *clip_args])
    assert (
        status == 2 and err.strip().count("\n") == 0 and "garbled.mcap" in err and "Image" in err
    )


# ------------------------------------------------------------------------------------------------
# stamps

def test_stamps_going_backwards_keep_depth_pairing(tmp_path, capsys, clip_args):
    """The camera's clock jumps back 10 s halfway (a restarted driver): every image still gets its
    depth."""
    path = write_jumping(tmp_path / "jump.mcap", [START_NS + i * 100_000_000 for i in range(3)]
                         + [START_NS - 10_000_000_000 + i * 100_000_000 for i in range(3)])
    status, summary, err = run(capsys,
                               ["bag", str(path), "--jsonl", str(tmp_path / "out.jsonl"),
                                *clip_args, "--score-threshold", "0"])
    assert status == 0 and summary["frames"] == 6
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["stamp"]["sec"] for r in records] == [1_700_000_000] * 3 + [1_699_999_990] * 3
    assert all(r["detections"] for r in records)
    assert all(d.get("xyz") is not None for r in records for d in r["detections"])
    assert "backwards" in err


def test_nanosec_past_a_second_is_read_and_reported(tmp_path, capsys, clip_args):
    """Stamps written as (sec, nanosec >= 1e9) pair image and depth at the same instant."""
    path = write_jumping(tmp_path / "ns.mcap",
                         [Stamp(5, 1_000_000_000 + i * 100_000_000) for i in range(3)])
    status, summary, err = run(capsys,
                               ["bag", str(path), "--jsonl", str(tmp_path / "out.jsonl"),
                                *clip_args, "--score-threshold", "0"])
    assert status == 0 and summary["frames"] == 3
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (
        all(d.get("xyz") is not None for r in records for d in r["detections"])
        and records[0]["detections"]
    )
    assert sum("nanosec" in line for line in err.splitlines()) == 1


def write_jumping(path, stamps):
    """camera_info, an image and its depth (same stamp: ns or a Stamp) per entry of ``stamps``,
    recorded 100 ms apart."""
    from mcap.writer import Writer

    from ros_mm_perception.core.imaging.image_codec import numpy_to_image
    from ros_mm_perception.messages.convert import header
    from ros_mm_perception.messages.typestore import rosbags_types, schema_text, typestore
    from ros_mm_perception.offline.recording import camera_info

    store = typestore()
    types = rosbags_types(store)
    k = [60.0, 0.0, 32.0, 0.0, 60.0, 24.0, 0.0, 0.0, 1.0]
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start(profile="ros2", library="test")
        channels = {}
        for topic, typ in [("/cam/camera_info", "sensor_msgs/msg/CameraInfo"),
                           ("/cam/image_raw", "sensor_msgs/msg/Image"),
                           ("/cam/depth/image_raw", "sensor_msgs/msg/Image")]:
            schema = writer.register_schema(typ, "ros2msg", schema_text(store, typ).encode())
            channels[topic] = (writer.register_channel(topic, "cdr", schema), typ)
        for i, (stamp, image) in enumerate(zip(stamps, noise_images(len(stamps)))):
            h = header(types, "cam", stamp if isinstance(stamp, Stamp) else Stamp.from_ns(stamp))
            msgs = {
                "/cam/camera_info": camera_info(store, types, h, k, 64, 48),
                "/cam/image_raw": numpy_to_image(
                    image, "rgb8", header=h, msg_factory=types.Image, data_as="numpy"
                ),
                "/cam/depth/image_raw": numpy_to_image(
                    np.full((48, 64), 1500, np.uint16),
                    "16UC1",
                    header=h,
                    msg_factory=types.Image,
                    data_as="numpy",
                ),
            }
            for j, (topic, msg) in enumerate(msgs.items()):
                channel, typ = channels[topic]
                t = START_NS + i * 100_000_000 + j
                writer.add_message(channel, log_time=t, publish_time=t,
                                   data=bytes(store.serialize_cdr(msg, typ)))
        writer.finish()
    return path


def test_target_frame_on_a_recording_without_its_summary(tmp_path, capsys, clip_args):
    """The transforms of a cut-off recording are read past the damage too (``--target-frame``)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    from ros_mm_perception.messages.typestore import typestore
    from ros_mm_perception.offline.recording import CameraRecording, write_recording

    t = typestore().types
    static = t["tf2_msgs/msg/TFMessage"](
        transforms=[
            t["geometry_msgs/msg/TransformStamped"](
                header=t["std_msgs/msg/Header"](
                    stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="base_link"
                ),
                child_frame_id="cam_optical",
                transform=t["geometry_msgs/msg/Transform"](
                    translation=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=1.0),
                    rotation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
                ),
            )
        ]
    )
    full = write_recording(tmp_path / "tf.mcap", [CameraRecording(
        "/cam", noise_images(2), depths=[np.full((48, 64), 1500, np.uint16)] * 2,
        k=[60.0, 0.0, 32.0, 0.0, 60.0, 24.0, 0.0, 0.0, 1.0], frame_id="cam_optical")],
        extra=[("/tf_static", static, START_NS + 1)])
    path = tmp_path / "cut.mcap"
    path.write_bytes(full.read_bytes()[:chunks(full)[-1][1]])  # the summary is gone
    out = tmp_path / "out.mcap"
    status, summary, err = run(capsys,
                               ["bag", str(path), "--out", str(out), "--target-frame", "base_link",
                                *clip_args, "--score-threshold", "0"])
    assert status == 0 and summary["frames"] == 2 and len(summary["damaged"]) == 1
    with open(out, "rb") as f:
        decoded = [
            m
            for _, c, _, m in make_reader(
                f, decoder_factories=[DecoderFactory()]
            ).iter_decoded_messages()
            if c.topic == "/cam/detections_3d"
        ]
    assert [m.header.frame_id for m in decoded] == ["base_link"] * 2
