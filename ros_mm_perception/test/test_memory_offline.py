"""``bag --memory`` and ``find`` end to end on a small rendered room recorded with depth and /tf.

The tiny random CLIP grounds phrases at score threshold 0 (CLIP-only grounding), so detections are
arbitrary but the same in every frame of a still camera: each becomes an object seen again and
again. What is checked is the plumbing: the camera's pose from /tf, the memory file extended by a
second run, the JSON fields of ``find``, and the refusals.
"""

import json

import numpy as np
import pytest

from offline_helpers import tiny_clip_options
from ros_mm_perception.cli import main
from ros_mm_perception.core.memory.objects import ObjectMemory
from ros_mm_perception.messages.typestore import typestore
from ros_mm_perception.offline.recording import START_NS, CameraRecording, write_recording
from ros_mm_perception.synthetic.world3d import build_world, drive, render
from ros_mm_perception.core.results import Intrinsics

K = Intrinsics(60.0, 60.0, 31.5, 23.5)
FRAMES = 4
FIELDS = {
    "id",
    "phrase",
    "match",
    "position",
    "frame",
    "size",
    "first_seen_ns",
    "last_seen_ns",
    "observations",
    "confidence",
    "state",
}


def tf_message(store, parent, child, stamp_ns, transform):
    t = store.types
    stamped = t["geometry_msgs/msg/TransformStamped"](
        header=t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](
                sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9
            ),
            frame_id=parent,
        ),
        child_frame_id=child,
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](
                x=float(transform.translation[0]),
                y=float(transform.translation[1]),
                z=float(transform.translation[2]),
            ),
            rotation=t["geometry_msgs/msg/Quaternion"](
                *[float(v) for v in transform.rotation.as_quat()]
            ),
        ),
    )
    return t["tf2_msgs/msg/TFMessage"](transforms=[stamped])


@pytest.fixture(scope="module")
def room_bag(tmp_path_factory):
    """A still camera in map looking at a wall of the room: 4 frames, depth, camera_info, /tf."""
    world = build_world(3, 8)
    pose = drive(world, 8)[0]
    image, depth, _ = render(world, pose, K, (48, 64))
    store = typestore()
    tf = [
        (
            "/tf",
            tf_message(store, "map", "cam_optical", START_NS + i * 100_000_000, pose),
            START_NS + i * 100_000_000,
        )
        for i in range(FRAMES)
    ]
    mm = np.round(depth * 1000).astype(np.uint16)
    return write_recording(
        tmp_path_factory.mktemp("room") / "room.mcap",
        [
            CameraRecording(
                "/cam",
                [image] * FRAMES,
                depths=[mm] * FRAMES,
                k=[K.fx, 0, K.cx, 0, K.fy, K.cy, 0, 0, 1],
                frame_id="cam_optical",
            )
        ],
        extra=tf,
    )


@pytest.fixture(scope="module")
def clip_args(tiny_clip_dir):
    return tiny_clip_options(
        tiny_clip_dir, "red circle;blue square", "red circle;blue square", threshold=0.0
    )


def run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bag_builds_and_extends_a_memory_that_find_answers(tmp_path, capsys, room_bag, clip_args):
    memory_file = tmp_path / "objects.db"
    argv = [
        "bag",
        str(room_bag),
        "--jsonl",
        str(tmp_path / "out.jsonl"),
        "--memory",
        str(memory_file),
        "--target-frame",
        "map",
        *clip_args,
    ]
    code, _, err = run(capsys, argv)
    assert code == 0, err
    memory = ObjectMemory.open_existing(str(memory_file))
    first = {r.id: r.observations for r in memory.objects()}
    frame = memory.frame
    memory.close()
    assert frame == "map" and first and all(2 <= n <= FRAMES for n in first.values())
    code, _, err = run(capsys, argv[:2] + ["--jsonl", str(tmp_path / "again.jsonl")] + argv[4:])
    assert code == 0, err
    code, out, err = run(
        capsys, ["find", str(memory_file), "--json", "--phrase-only", "--max", "50"]
    )
    assert code == 0, err
    found = json.loads(out)
    again = {o["id"]: o["observations"] for o in found}
    assert set(again) == set(first) and all(again[i] > first[i] for i in first)
    for obj in found:
        assert set(obj) == FIELDS and obj["frame"] == "map" and obj["state"] == "present"
        assert len(obj["position"]) == 3 and len(obj["size"]) == 3
        assert START_NS <= obj["first_seen_ns"] < obj["last_seen_ns"] == START_NS + 300_000_000
    phrase = found[0]["phrase"]
    code, out, _ = run(capsys, ["find", str(memory_file), phrase, "--json", "--phrase-only"])
    assert all(o["phrase"] == phrase or o["match"] >= 0.5 for o in json.loads(out))
    point = ",".join(str(v) for v in found[0]["position"])
    code, out, _ = run(
        capsys, ["find", str(memory_file), "--json", "--near", point, "--radius", "0.01"]
    )
    assert [o["id"] for o in json.loads(out)] == [found[0]["id"]]
    # the CLIP named in the file answers a phrase by embedding too
    code, out, err = run(capsys, ["find", str(memory_file), phrase])
    assert code == 0 and phrase in out, err


def scene_messages(path, topic="/object_scene"):
    """[(schema name, schema text, log time, decoded message)] of ``topic``."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [(s.name, s.data.decode(), m.log_time, msg)
                for s, _, m, msg in reader.iter_decoded_messages(topics=[topic])]


def test_bag_writes_the_memory_scene_into_the_mcap(tmp_path, capsys, room_bag, clip_args):
    memory_file, out = tmp_path / "objects.db", tmp_path / "out.mcap"
    argv = ["bag", str(room_bag), "--out", str(out), "--memory", str(memory_file),
            "--target-frame", "map", "--no-progress", *clip_args]
    code, _, err = run(capsys, argv)
    assert code == 0, err
    memory = ObjectMemory.open_existing(str(memory_file))
    records = memory.objects()
    memory.close()
    scenes = scene_messages(out)
    assert records and 1 <= len(scenes) <= FRAMES  # on change, at most once per frame
    frame_times = [t for _, _, t, _ in scene_messages(out, "/cam/detections")]
    times = [t for _, _, t, _ in scenes]
    assert times == sorted(set(times)) and set(times) <= set(frame_times)  # a frame's log time
    name, schema, log_time, last = scenes[-1]
    assert name == "foxglove_msgs/msg/SceneUpdate" and "MSG: foxglove_msgs/SceneEntity" in schema
    assert log_time == frame_times[-1]  # the last frame changed the memory too
    assert [d.type for d in last.deletions] == [1]  # ALL: each update replaces the one before
    assert [e.id for e in last.entities] == [f"objects/{r.id}" for r in records]
    assert {e.frame_id for e in last.entities} == {"map"}
    newest = max(r.last_seen_ns for r in records)
    assert {e.timestamp.sec * 10**9 + e.timestamp.nanosec for e in last.entities} == {newest}
    for entity, record in zip(last.entities, records):
        p = entity.cubes[0].pose.position
        assert np.allclose([p.x, p.y, p.z], record.mean)
    code, _, err = run(capsys, [*argv[:3], str(tmp_path / "plain.mcap"), "--memory",
                                str(tmp_path / "plain.db"), *argv[6:], "--no-foxglove"])
    assert code == 0, err
    assert scene_messages(tmp_path / "plain.mcap") == []


def test_memory_refuses_the_camera_frame_and_a_recording_without_tf(
    tmp_path, capsys, room_bag, clip_args
):
    code, _, err = run(
        capsys,
        [
            "bag",
            str(room_bag),
            "--jsonl",
            str(tmp_path / "o.jsonl"),
            "--memory",
            str(tmp_path / "m.db"),
            "--memory-frame",
            "cam_optical",
            *clip_args,
        ],
    )
    assert code != 0 and "moves with the camera" in err and len(err.strip().splitlines()) == 1
    folder = tmp_path / "images"
    folder.mkdir()
    import cv2

    cv2.imwrite(str(folder / "a.png"), np.zeros((48, 64, 3), np.uint8))
    code, _, err = run(
        capsys,
        [
            "bag",
            str(folder),
            "--jsonl",
            str(tmp_path / "p.jsonl"),
            "--memory",
            str(tmp_path / "n.db"),
            "--memory-frame",
            "map",
            *clip_args,
        ],
    )
    assert code != 0 and "/tf" in err


def test_find_on_a_file_that_is_no_memory_is_one_line(tmp_path, capsys):
    bad = tmp_path / "notes.db"
    bad.write_text("not a memory")
    code, _, err = run(capsys, ["find", str(bad), "mug"])
    assert code != 0 and len(err.strip().splitlines()) == 1 and "not an object memory" in err
    code, _, err = run(capsys, ["find", str(tmp_path / "none.db"), "mug"])
    assert code != 0 and "does not exist" in err
    code, _, err = run(capsys, ["find", str(tmp_path), "mug"])
    assert code == 2 and "is a folder" in err and len(err.strip().splitlines()) == 1


def test_fleet_writes_one_memory_per_recording_like_bag(tmp_path, capsys, room_bag, clip_args):
    ray = pytest.importorskip("ray")
    folder = tmp_path / "recordings"
    folder.mkdir()
    for name in ("one", "two"):
        (folder / f"{name}.mcap").write_bytes(room_bag.read_bytes())
    alone = tmp_path / "alone.db"
    code, _, err = run(
        capsys,
        [
            "bag",
            str(room_bag),
            "--jsonl",
            str(tmp_path / "a.jsonl"),
            "--memory",
            str(alone),
            "--target-frame",
            "map",
            *clip_args,
        ],
    )
    assert code == 0, err
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        out = tmp_path / "out"
        code, _, err = run(
            capsys,
            [
                "fleet",
                str(folder / "*.mcap"),
                "--out",
                str(out),
                "--memory",
                "--target-frame",
                "map",
                "--json",
                *clip_args,
            ],
        )
        assert code == 0, err
        code, _, err = run(
            capsys,
            [
                "fleet",
                str(folder / "*.mcap"),
                "--out",
                str(tmp_path / "o2"),
                "--memory",
                "--split-s",
                "0.1",
                "--target-frame",
                "map",
                *clip_args,
            ],
        )
        assert code != 0 and "--split-s" in err
    finally:
        ray.shutdown()

    def objects(path):
        memory = ObjectMemory.open_existing(str(path))
        found = [
            (r.phrase, r.observations, np.round(r.mean, 6).tolist()) for r in memory.objects()
        ]
        memory.close()
        return found

    for name in ("one", "two"):
        db = out / name / "objects.db"
        assert objects(db) == objects(alone)
        assert not (out / name / "objects.db-wal").exists()
        memory = ObjectMemory.open_existing(str(db))
        ids = [f"objects/{r.id}" for r in memory.objects()]
        memory.close()
        last = scene_messages(out / name / "perception.mcap")[-1][3]  # the memory's scene too
        assert [e.id for e in last.entities] == ids


def test_a_memory_file_that_is_the_input_or_an_output_is_refused(
    tmp_path, capsys, room_bag, clip_args
):
    recording = room_bag.read_bytes()
    out, jsonl = tmp_path / "out.mcap", tmp_path / "out.jsonl"
    for memory_file in (out, jsonl, room_bag):
        code, _, err = run(capsys, ["bag", str(room_bag), "--out", str(out), "--jsonl",
                                    str(jsonl), "--memory", str(memory_file),
                                    "--target-frame", "map", *clip_args])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert str(memory_file) in err and ("same file" in err or "overwrite the input" in err)
        assert not out.exists() and not jsonl.exists()
    assert room_bag.read_bytes() == recording


def test_a_recording_without_depth_says_the_memory_gets_nothing(
    tmp_path, capsys, clip_args
):
    pose = drive(build_world(3, 8), 8)[0]
    image, _, _ = render(build_world(3, 8), pose, K, (48, 64))
    tf = [("/tf", tf_message(typestore(), "map", "cam_optical", START_NS, pose), START_NS)]
    bag = write_recording(tmp_path / "flat.mcap", [CameraRecording(
        "/cam", [image] * 2, k=[K.fx, 0, K.cx, 0, K.fy, K.cy, 0, 0, 1], frame_id="cam_optical")],
        extra=tf)
    code, _, err = run(capsys, ["bag", str(bag), "--jsonl", str(tmp_path / "o.jsonl"),
                                "--memory", str(tmp_path / "m.db"), "--target-frame", "map",
                                *clip_args])
    assert code == 0, err
    assert err.count("without a depth image and its camera_info place no objects") == 1
