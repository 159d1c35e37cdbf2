"""``ros-mm-perception fleet`` on a local Ray with 2 CPUs and the tiny random CLIP.

Each recording's outputs are compared byte for byte with what ``bag`` writes for it; a corrupt and
a damaged recording fail alone; a worker killed in the middle of a recording leaves exactly one
complete output; a rerun skips complete recordings; ``--split-s`` gives the frames of one window
with track ids unique per window. One Ray instance serves the module.
"""

import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ros_mm_perception.cli import build_parser, main
from ros_mm_perception.core.imaging.image_io import write_rgb
from ros_mm_perception.offline.recording import START_NS, CameraRecording, write_recording
from offline_helpers import K, rendered_images, tiny_clip_options

PHRASES = ["red circle", "blue square"]


@pytest.fixture(scope="module")
def pipeline_args(tiny_clip_dir):
    return tiny_clip_options(tiny_clip_dir, ",".join(PHRASES), "red circle,blue square,green star",
                             threshold=0.16)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    # the test's pipeline factory below
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()


def two_camera_bag(path, seed=0):
    """/front: 4 raw images + depth + camera_info; /rear: 3 JPEG images."""
    depths = [np.full((48, 64), 1200, np.uint16)] * 4
    return write_recording(path, [
        CameraRecording("/front", rendered_images(4, seed), depths=depths, k=K,
                        frame_id="front_optical"),
        CameraRecording("/rear", rendered_images(3, seed + 1), compressed=True,
                        frame_id="rear_optical"),
    ])


def raw_messages(path):
    """[(topic, schema, log time, serialized bytes)] in file order."""
    from mcap.reader import NonSeekingReader

    with open(path, "rb") as f:
        return [(c.topic, s.name, m.log_time, m.data)
                for s, c, m in NonSeekingReader(f).iter_messages()]


def decoded(path, suffix="/detections"):
    """[(topic, log time, frame id, [(class id, x, y, score, track id)])] of the detection
    topics."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [
            (
                c.topic,
                r.log_time,
                m.header.frame_id,
                [
                    (
                        d.results[0].hypothesis.class_id,
                        d.bbox.center.position.x,
                        d.bbox.center.position.y,
                        d.results[0].hypothesis.score,
                        d.id,
                    )
                    for d in m.detections
                ],
            )
            for _, c, r, m in reader.iter_decoded_messages(log_time_order=False)
            if c.topic.endswith(suffix)
        ]


def bag_outputs(folder, recording, pipeline_args):
    """What ``bag`` writes for ``recording``: (MCAP, JSON Lines, COCO) paths in ``folder``."""
    folder.mkdir()
    paths = folder / "perception.mcap", folder / "detections.jsonl", folder / "coco.json"
    assert main(["bag", str(recording), "--out", str(paths[0]), "--jsonl", str(paths[1]), "--coco",
                 str(paths[2]), *pipeline_args]) == 0
    return paths


def fleet_json(capsys, argv, code=0):
    assert main(argv) == code
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # exactly one JSON object on stdout
    return json.loads(out[0])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three good recordings (two bags, an image folder), a corrupt file and a bag whose only chunk
    is damaged."""
    folder = tmp_path_factory.mktemp("recordings")
    good = [two_camera_bag(folder / "a.mcap"), two_camera_bag(folder / "b.mcap", seed=5)]
    images = folder / "images"
    images.mkdir()
    for i, image in enumerate(rendered_images(3, seed=9)):
        write_rgb(images / f"frame_{i}.png", image)
    good.append(images)
    (folder / "corrupt.mcap").write_bytes(b"not an mcap file at all")
    damaged = two_camera_bag(folder / "damaged.mcap", seed=7)
    data = bytearray(damaged.read_bytes())
    data[200:1200] = os.urandom(1000)  # inside the chunk; the summary at the end still opens
    damaged.write_bytes(bytes(data))
    return folder, good


@pytest.fixture(scope="module")
def fleet_run(local_ray, inputs, pipeline_args, tmp_path_factory):
    """One fleet run over all inputs with 2 workers: (summary, output folder)."""
    folder, _ = inputs
    out = tmp_path_factory.mktemp("fleet") / "out"
    list_file = folder / "more.txt"
    list_file.write_text("# a list file\nimages\nb.mcap\n")
    argv = ["fleet", str(folder / "*.mcap"), str(list_file), "--out", str(out), "--workers", "2",
            "--jsonl", "--coco", "--json", *pipeline_args]
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 1  # two recordings failed
    return json.loads(stdout.getvalue()), out


def test_outputs_equal_bag_per_recording(fleet_run, inputs, pipeline_args, tmp_path):
    summary, out = fleet_run
    _, good = inputs
    rows = {Path(r["input"]).name: r for r in summary["per_recording"]}
    assert sorted(rows) == ["a.mcap", "b.mcap", "corrupt.mcap", "damaged.mcap", "images"]
    assert (summary["done"], summary["failed"]) == (3, 2)
    # no staging left
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "fleet.json", "images"]
    assert json.loads((out / "fleet.json").read_text()) == summary
    for recording in good:
        row = rows[recording.name]
        mcap, jsonl, coco = bag_outputs(tmp_path / recording.name, recording, pipeline_args)
        folder = out / (recording.stem if recording.is_file() else recording.name)
        assert sorted(p.name for p in folder.iterdir()) == [
            "coco.json",
            "detections.jsonl",
            "manifest.json",
            "perception.mcap",
        ]
        # same messages, stamps, bytes
        assert raw_messages(folder / "perception.mcap") == raw_messages(mcap)
        assert (folder / "detections.jsonl").read_text() == jsonl.read_text()
        assert json.loads((folder / "coco.json").read_text()) == json.loads(coco.read_text())
        assert row["status"] == "done" and row["attempts"] == 1 and row["worker"]
        assert row["frames"] == len(jsonl.read_text().splitlines())
        assert row["detections"] == sum(len(json.loads(line)["detections"])
                                        for line in jsonl.read_text().splitlines())
    assert (
        rows["a.mcap"]["frames"] == 7
        and rows["images"]["frames"] == 3
        and rows["a.mcap"]["detections"] > 0
    )


def test_corrupt_and_damaged_recordings_fail_alone(fleet_run):
    summary, out = fleet_run
    rows = {Path(r["input"]).name: r for r in summary["per_recording"]}
    assert (
        rows["corrupt.mcap"]["status"] == "failed"
        and "cannot read bag" in rows["corrupt.mcap"]["reason"]
    )
    # damaged where every image was: nothing to label (a partly damaged one is labeled as bag does)
    reason = rows["damaged.mcap"]["reason"]
    assert rows["damaged.mcap"]["status"] == "failed" and "no frame could be processed" in reason
    assert "damaged chunk" in reason
    assert rows["damaged.mcap"]["output"] is None and not (out / "damaged").exists()


def test_rerun_skips_complete_recordings_and_force_redoes_them(fleet_run, inputs, pipeline_args,
                                                               capsys):
    _, out = fleet_run
    folder, good = inputs
    before = {p: p.stat().st_mtime_ns for p in (out / "a").iterdir()}
    summary = fleet_json(capsys,
                         ["fleet", str(good[0]), str(good[2]), "--out", str(out), "--jsonl",
                          "--coco", "--json", *pipeline_args])
    assert [r["status"] for r in summary["per_recording"]] == ["up-to-date", "up-to-date"]
    assert summary["per_recording"][0]["frames"] == 7 and summary["workers"] == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "a").iterdir()} == before
    summary = fleet_json(capsys,
                         ["fleet", str(good[0]), "--out", str(out), "--jsonl", "--coco", "--json",
                          "--force", *pipeline_args])
    assert summary["per_recording"][0]["status"] == "done"
    assert {p: p.stat().st_mtime_ns for p in (out / "a").iterdir()} != before
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "fleet.json", "images"]


def test_manifest_matches_only_the_same_input_options_and_outputs(tmp_path):
    from ros_mm_perception.fleet.inputs import fingerprint
    from ros_mm_perception.fleet.manifest import matching_manifest, write_manifest

    recording = tmp_path / "r.mcap"
    recording.write_bytes(b"1234")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "perception.mcap").write_bytes(b"")
    size, mtime = fingerprint(recording)
    identity = {"input": str(recording), "size": size, "mtime_ns": mtime,
                "options": {"threshold": 0.2}}
    write_manifest(folder, {**identity, "outputs": ["perception.mcap"], "summary": {}})
    assert matching_manifest(folder, identity) is not None
    assert matching_manifest(folder, {**identity, "options": {"threshold": 0.3}}) is None
    os.utime(recording, ns=(mtime + 10**9, mtime + 10**9))
    assert fingerprint(recording) == (4, mtime + 10**9)
    assert matching_manifest(folder, {**identity, "mtime_ns": mtime + 10**9}) is None
    (folder / "perception.mcap").unlink()
    assert matching_manifest(folder, identity) is None  # an output gone: not complete


class KillOnce:
    """Builds the real pipeline in a worker that kills its own process at the second frame of
    ``camera``; ``marker`` makes that happen once (or always, with ``every_time``)."""

    def __init__(self, marker, camera, every_time=False):
        self.marker, self.camera, self.every_time = Path(marker), camera, every_time

    def __call__(self, config):
        from ros_mm_perception.commands.options import build_pipeline

        return _Killing(build_pipeline(config), self)


class _Killing:
    def __init__(self, pipeline, plan):
        self.pipeline, self.plan, self.seen = pipeline, plan, 0

    def reset(self, camera=None, restart_ids=False):
        self.seen = 0
        self.pipeline.reset(camera, restart_ids)

    def process(self, frame):
        if frame.camera == self.plan.camera:
            self.seen += 1
            if self.seen == 2 and (self.plan.every_time or not self.plan.marker.exists()):
                self.plan.marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return self.pipeline.process(frame)


def fleet_parts(argv):
    """(config, tools) of a fleet command line."""
    from ros_mm_perception.commands.options import config_from_args
    from ros_mm_perception.commands.fleet import label_tools

    args = build_parser().parse_args(argv)
    return config_from_args(args), label_tools(args)


def victim_bag(path):
    return write_recording(path,
                           [CameraRecording("/victim", rendered_images(5, seed=3),
                                            frame_id="victim_optical")])


def test_killed_worker_retried_exactly_one_output(local_ray, inputs, pipeline_args, tmp_path):
    from ros_mm_perception.fleet.engine import FleetOptions, run_fleet

    _, good = inputs
    victim = victim_bag(tmp_path / "victim.mcap")
    config, tools = fleet_parts(["fleet", "x", "--out", "y", *pipeline_args])
    tools = replace(tools, build_pipeline=KillOnce(tmp_path / "killed", "victim"))
    out = tmp_path / "out"
    summary = run_fleet([victim, good[0]], out, config, tools, FleetOptions(workers=2, threads=1),
                        progress=False)
    row = summary["per_recording"][0]
    assert (tmp_path / "killed").exists()  # a worker did die in the middle of the recording
    assert row["status"] == "done" and row["attempts"] == 2 and row["frames"] == 5
    assert summary["per_recording"][1]["status"] == "done"
    reference, _, _ = bag_outputs(tmp_path / "bag", victim, pipeline_args)
    # no duplicate, no loss
    assert raw_messages(out / "victim" / "perception.mcap") == raw_messages(reference)
    assert sorted(p.name for p in out.iterdir()) == ["a", "fleet.json", "victim"]

    # a worker that dies every time: bounded retries, then failed with the reason
    tools = replace(tools, build_pipeline=KillOnce(tmp_path / "killed", "victim", every_time=True))
    summary = run_fleet([victim], tmp_path / "out2", config, tools,
                        FleetOptions(retries=1, threads=1), progress=False)
    row = summary["per_recording"][0]
    assert (
        row["status"] == "failed"
        and row["attempts"] == 2
        and "worker died, 2 of 2 attempts" in row["reason"]
    )
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["fleet.json"]


def static_tf(parent, child, z):
    """A /tf_static message: ``child`` ``z`` metres above ``parent``, not rotated (rosbags
    classes)."""
    from ros_mm_perception.messages.typestore import typestore

    t = typestore().types
    return t["tf2_msgs/msg/TFMessage"](
        transforms=[
            t["geometry_msgs/msg/TransformStamped"](
                header=t["std_msgs/msg/Header"](
                    stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=parent
                ),
                child_frame_id=child,
                transform=t["geometry_msgs/msg/Transform"](
                    translation=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=z),
                    rotation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
                ),
            )
        ]
    )


def test_split_gives_the_frames_of_one_window_with_unique_ids(local_ray, pipeline_args, tmp_path,
                                                              capsys):
    """Also with --target-frame: every window sees the recording's transforms."""
    from ros_mm_perception.fleet.engine import TRACK_ID_STRIDE

    long_bag = write_recording(tmp_path / "long.mcap", [
        CameraRecording("/front", rendered_images(12, seed=2),
                        depths=[np.full((48, 64), 900, np.uint16)] * 12, k=K,
                        frame_id="front_optical")],
        extra=[("/tf_static", static_tf("base_link", "front_optical", 1.0), START_NS - 1)])
    pipeline_args = [*pipeline_args, "--target-frame", "base_link"]
    whole, _, _ = bag_outputs(tmp_path / "bag", long_bag, pipeline_args)
    capsys.readouterr()
    summary = fleet_json(capsys,
                         ["fleet", str(long_bag), "--out", str(tmp_path / "out"), "--split-s",
                          "0.3", "--workers", "2", "--json", *pipeline_args])
    assert (
        summary["per_recording"][0]["status"] == "done"
        and summary["per_recording"][0]["frames"] == 12
    )
    split = tmp_path / "out" / "long" / "perception.mcap"
    strip = [(t, s, lt) for t, s, lt, _ in raw_messages(whole)]
    # same topics, order and stamps
    assert [(t, s, lt) for t, s, lt, _ in raw_messages(split)] == strip

    assert {m[0] for m in raw_messages(split)} >= {"/front/detections", "/front/detections_3d",
                                                   "/front/annotations", "/front/scene"}
    for suffix in ("/detections", "/detections_3d"):
        one, parts = decoded(whole, suffix), decoded(split, suffix)
        assert len(one) == 12
        assert [(t, lt, f, [d[:4] for d in dets]) for t, lt, f, dets in parts] == \
               [(t, lt, f, [d[:4] for d in dets]) for t, lt, f, dets in one]
    assert {f for _, _, f, _ in decoded(split, "/detections_3d")} == {"base_link"}
    ids_per_window = {}
    start = raw_messages(whole)[0][2]
    for _, log_time, _, dets in decoded(split):
        window = (log_time - start) // 300_000_000
        ids_per_window.setdefault(window, set()).update(int(d[4]) for d in dets if d[4])
    assert len(ids_per_window) == 4 and all(ids_per_window.values())
    for window, ids in ids_per_window.items():
        assert all(window * TRACK_ID_STRIDE < i < (window + 1) * TRACK_ID_STRIDE for i in ids)


def test_a_pipeline_that_cannot_load_is_one_line(local_ray, inputs, capsys, tmp_path):
    _, good = inputs
    out = tmp_path / "out"
    assert main(["fleet", str(good[0]), "--out", str(out), "--clip-model",
                 str(tmp_path / "missing"), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err and "does not exist" in err
    assert list(out.iterdir()) == []  # no staging, no summary


def test_without_ray_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    assert main(["fleet", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'ros_mm_perception[fleet]'" in err


def test_inputs_expand_globs_lists_and_folders(tmp_path):
    from ros_mm_perception.fleet.inputs import expand_inputs, output_names

    day = tmp_path / "day"
    (day / "bag1").mkdir(parents=True)
    (day / "bag1" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (day / "x.mcap").write_bytes(b"")
    (day / "notes.md").write_text("not a recording")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.mcap").write_bytes(b"")
    (tmp_path / "list.txt").write_text("day/x.mcap  # again\n\nother/x.mcap\n")
    paths = expand_inputs([str(day), str(tmp_path / "l*.txt")])
    # once each
    assert paths == [p.resolve()
                     for p in (day / "bag1", day / "x.mcap", tmp_path / "other" / "x.mcap")]
    names = output_names(paths)
    assert (
        names[0] == "bag1" and names[1] != names[2] and all(n.startswith("x-") for n in names[1:])
    )
    from ros_mm_perception.core.errors import UserError

    with pytest.raises(UserError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.db3")])
    with pytest.raises(UserError, match="holds no recordings"):
        expand_inputs([str(tmp_path / "other" / "..")])


def test_pipeline_reset_can_restart_track_ids(tiny_clip):
    from ros_mm_perception.core.config import PerceptionConfig
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
    from ros_mm_perception.core.results import Frame

    config = PerceptionConfig().replace(detect_phrases=["red circle"], grounding_source="clip",
                                        score_threshold=0.0, track_min_hits=1)
    pipeline = PerceptionPipeline(config, clip=tiny_clip)
    frames = [Frame(image, camera="cam") for image in rendered_images(2)]

    def ids():
        return sorted(d.track_id for f in frames for d in pipeline.process(f).detections)

    first = ids()
    assert first and min(first) == 1
    pipeline.reset()
    assert min(ids()) > max(first)  # plain reset: ids stay unique
    pipeline.reset(restart_ids=True)
    assert ids() == first  # as a fresh pipeline


def test_rejected_transforms_are_counted_per_recording(local_ray, pipeline_args, tmp_path, capsys):
    import math

    bad = static_tf("base_link", "front_optical", math.nan)
    bag = write_recording(tmp_path / "tf.mcap", [
        CameraRecording("/front", rendered_images(2, seed=4),
                        depths=[np.full((48, 64), 900, np.uint16)] * 2, k=K,
                        frame_id="front_optical")],
        extra=[("/tf_static", bad, START_NS - 2),
               ("/tf_static", static_tf("base_link", "front_optical", 1.0), START_NS - 1)])
    summary = fleet_json(capsys, ["fleet", str(bag), "--out", str(tmp_path / "out"), "--json",
                                  "--target-frame", "base_link", *pipeline_args])
    row = summary["per_recording"][0]
    assert row["status"] == "done" and row["frames"] == 2
    assert row["transforms_rejected"] == {"NaN or infinite value": 1}
