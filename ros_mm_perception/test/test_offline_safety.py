"""Offline runs never lose recorded data and fail cleanly (docs/offline.md, "Guarantees").

No output lands on an input however its path is spelled; outputs appear all together only after a
successful run; signals, full disks, read-only folders and bad options end in one line with the
documented exit status and nothing left behind.
"""

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ros_mm_perception.cli import main
from ros_mm_perception.core.results import Stamp
from ros_mm_perception.offline.recording import CameraRecording, write_recording
from offline_helpers import K, noise_images, tiny_clip_options

PACKAGE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip_args(tiny_clip_dir):
    return tiny_clip_options(tiny_clip_dir, "red circle,blue square", "red circle,blue square",
                             threshold=0)


def snapshot(*folders):
    """Every file under ``folders``: path → (is a link, content hash)."""
    out = {}
    for folder in folders:
        for root, _dirs, names in os.walk(folder):
            for name in names:
                path = Path(root) / name
                data = path.read_bytes() if path.exists() else b""
                out[str(path)] = (path.is_symlink(), hashlib.sha256(data).hexdigest())
    return out


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def rosbag2_folder(path, n=3):
    """A rosbag2 folder (metadata.yaml + <name>_0.mcap) of one raw camera, written by rosbags."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ros_mm_perception.core.imaging.image_codec import numpy_to_image
    from ros_mm_perception.messages.convert import header
    from ros_mm_perception.messages.typestore import rosbags_types, typestore

    store = typestore()
    types = rosbags_types(store)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for i, image in enumerate(noise_images(n)):
            msg = numpy_to_image(image, "rgb8", header=header(types, "cam", Stamp(1, i)),
                                 msg_factory=types.Image, data_as="numpy")
            writer.write(conn, i + 1, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path


def image_folder(path, n=2):
    from ros_mm_perception.core.imaging.image_io import write_rgb

    path.mkdir()
    for i, image in enumerate(noise_images(n)):
        write_rgb(path / f"frame_{i}.png", image)
    return path


# ------------------------------------------------------------------------------------- outputs on
# inputs

def test_no_output_inside_the_input_however_spelled(tmp_path, capsys, clip_args, monkeypatch):
    from ros_mm_perception.commands import bag as bag_command

    def no_model(config):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(bag_command, "build_pipeline", no_model)
    bag = rosbag2_folder(tmp_path / "B")
    storage = next(bag.glob("*.mcap"))
    (tmp_path / "link.mcap").symlink_to(storage)
    os.link(storage, tmp_path / "hard.mcap")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    before = snapshot(tmp_path)
    for option, path in [("--out", storage), ("--out", f"../B/{storage.name}"),
                         ("--jsonl", bag / "metadata.yaml"), ("--out", bag / "new.mcap"),
                         ("--coco", "../sub/../B/x.json"), ("--out", "../link.mcap"),
                         ("--out", tmp_path / "hard.mcap")]:
        assert main(["bag", "../B", option, str(path), *clip_args]) == 2, (option, path)
        err = one_line_error(capsys)
        assert "input" in err, err
        assert snapshot(tmp_path) == before, (option, path)


def test_no_output_on_a_file_of_an_image_folder_or_on_a_single_file_input(tmp_path, capsys,
                                                                          clip_args):
    folder = image_folder(tmp_path / "IMAGES")
    bag = write_recording(tmp_path / "in.mcap", [CameraRecording("/cam", noise_images(2))])
    before = snapshot(tmp_path)
    assert main(["bag", str(folder), "--coco", str(folder / "frame_0.png"), *clip_args]) == 2
    assert "input" in one_line_error(capsys)
    assert main(["bag", str(bag), "--jsonl", str(tmp_path / "." / "x" / ".." / "in.mcap"),
                 *clip_args]) == 2
    assert "overwrite the input" in one_line_error(capsys)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("names", [("--jsonl", "X", "--coco", "X"), ("--out", "X", "--jsonl", "X"),
                                   ("--jsonl", "X", "--coco", "Y")])
def test_two_outputs_on_one_path_are_refused(tmp_path, capsys, clip_args, names):
    bag = write_recording(tmp_path / "in.mcap", [CameraRecording("/cam", noise_images(2))])
    out = tmp_path / "out"
    out.mkdir()
    (out / "Y").symlink_to("X")  # Y is another spelling of X
    before = snapshot(tmp_path)
    argv = ["bag", str(bag)] + [str(out / a) if a in "XY" else a for a in names] + clip_args
    assert main(argv) == 2
    assert "same file" in one_line_error(capsys)
    assert snapshot(tmp_path) == before


# -------------------------------------------------------------------------------- all outputs or
# none

def outputs_argv(bag, out):
    return ["bag", str(bag), "--out", str(out / "out.mcap"), "--jsonl", str(out / "out.jsonl"),
            "--coco", str(out / "coco.json")]


def test_a_run_that_fails_at_its_last_output_commits_none(tmp_path, capsys, clip_args,
                                                          monkeypatch):
    """A full disk while the COCO file is flushed: the MCAP and JSONL files must not appear
    either."""
    bag = write_recording(tmp_path / "in.mcap", [CameraRecording("/cam", noise_images(3))])
    out = tmp_path / "out"
    out.mkdir()
    real_fsync = os.fsync

    def fsync(fd):
        if ".coco.json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main([*outputs_argv(bag, out), *clip_args]) == 2
    err = one_line_error(capsys)
    assert "coco.json" in err and "disk is full" in err
    assert list(out.iterdir()) == []


def test_a_run_without_any_processable_frame_commits_nothing(tmp_path, capsys, clip_args):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    out.mkdir()
    assert main([*outputs_argv(folder, out), *clip_args]) == 1
    assert list(out.iterdir()) == []


def test_a_symlinked_output_is_written_through_to_its_target(tmp_path, capsys, clip_args):
    bag = write_recording(tmp_path / "in.mcap", [CameraRecording("/cam", noise_images(2))])
    real = tmp_path / "real"
    real.mkdir()
    (real / "frames.jsonl").write_text("old\n")
    link = tmp_path / "frames.jsonl"
    link.symlink_to(real / "frames.jsonl")
    dangling = tmp_path / "coco.json"
    dangling.symlink_to(real / "coco.json")  # its target does not exist yet
    assert main(["bag", str(bag), "--jsonl", str(link), "--coco", str(dangling), *clip_args]) == 0
    assert link.is_symlink() and dangling.is_symlink()
    assert len((real / "frames.jsonl").read_text().splitlines()) == 2
    assert len(json.loads((real / "coco.json").read_text())["images"]) == 2
    # no temporary file
    assert sorted(p.name for p in real.iterdir()) == ["coco.json", "frames.jsonl"]


def test_a_failed_rename_puts_back_what_was_renamed(tmp_path, monkeypatch):
    from ros_mm_perception.core.errors import UserError
    from ros_mm_perception.offline.atomic import OutputStaging

    (tmp_path / "a.txt").write_text("old a\n")
    (tmp_path / "c.txt").write_text("old c\n")
    staging = OutputStaging()
    for name in ("a.txt", "b.txt", "c.txt"):
        staging.stage(tmp_path / name, "w").file.write(f"new {name}\n")
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "c.txt":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(UserError, match="c.txt"):
        staging.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "c.txt"]  # b.txt is gone again
    assert [(tmp_path / n).read_text() for n in ("a.txt", "c.txt")] == ["old a\n", "old c\n"]


# -------------------------------------------------------------------------------------------
# signals

DRIVER = textwrap.dedent("""
    import os, signal, sys
    from ros_mm_perception.cli import main
    from ros_mm_perception.commands import bag

    real = bag.build_pipeline

    class Stopping:
        def __init__(self, pipeline):
            self.pipeline, self.calls = pipeline, 0
        def process(self, frame):
            self.calls += 1
            if self.calls == 2:
                os.kill(os.getpid(), getattr(signal, sys.argv[1]))
            return self.pipeline.process(frame)
        def close(self):
            self.pipeline.close()

    bag.build_pipeline = lambda config: Stopping(real(config))
    sys.exit(main(sys.argv[2:]))
""")


def run_python(code, *args, cwd=None):
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(PACKAGE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


@pytest.mark.parametrize("name, status", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_stop_like_ctrl_c(tmp_path, clip_args, name, status):
    bag = write_recording(tmp_path / "in.mcap", [CameraRecording("/cam", noise_images(4))])
    out = tmp_path / "out"
    out.mkdir()
    done = run_python(DRIVER, name, *outputs_argv(bag, out), *clip_args)
    assert done.returncode == status, done.stderr
    assert (
        "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    ), done.stderr
    assert list(out.iterdir()) == []


CTRL_C_DURING_IMPORT = textwrap.dedent("""
    import runpy, sys

    interrupted = sys.argv[1]

    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name == interrupted:
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, Finder())
    sys.argv = ["ros_mm_perception", *sys.argv[2:]]
    runpy.run_module("ros_mm_perception", run_name="__main__", alter_sys=True)
""")


@pytest.mark.parametrize("module", ["ros_mm_perception.cli", "ros_mm_perception.commands.bag"])
def test_ctrl_c_while_starting_prints_no_traceback(tmp_path, module):
    done = run_python(CTRL_C_DURING_IMPORT, module, "bag", str(tmp_path / "in.mcap"))
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().endswith(
        "interrupted"
    ), done.stderr


def test_a_closed_stdout_ends_quietly_after_the_outputs_are_committed(tmp_path, capsys, clip_args,
                                                                      monkeypatch):
    bag = write_recording(tmp_path / "in.mcap", [CameraRecording("/cam", noise_images(2))])

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["bag", str(bag), "--jsonl", str(tmp_path / "f.jsonl"), "--json",
                 *clip_args]) == 141
    assert "Traceback" not in capsys.readouterr().err
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 2


# ----------------------------------------------------------------------------------- file system
# faults

def test_a_name_too_long_for_the_file_system(tmp_path, capsys, clip_args):
    bag = write_recording(tmp_path / "in.mcap", [CameraRecording("/cam", noise_images(2))])
    before = snapshot(tmp_path)
    assert main(["bag", str(bag), "--out", str(tmp_path / ("x" * 300 + ".mcap")), *clip_args]) == 2
    assert "too long" in one_line_error(capsys)
    assert snapshot(tmp_path) == before


def _mount_tmpfs(path, options):
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                      capture_output=True).returncode:
        pytest.skip("needs permission to mount a small tmpfs")
    return path


@pytest.fixture
def tiny_disk(tmp_path):
    """A 16 KiB file system: a full disk after the first few kilobytes."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    disk = _mount_tmpfs(tmp_path / "disk", "size=16k")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.parametrize("when", ["before", "during"])
def test_a_full_disk(tmp_path, capsys, clip_args, tiny_disk, when):
    bag = write_recording(tmp_path / "in.mcap", [CameraRecording("/cam", noise_images(4))])
    if when == "before":
        filler = tiny_disk / "filler"
        with pytest.raises(OSError):
            filler.write_bytes(bytes(64 * 1024))
    assert main([*outputs_argv(bag, tiny_disk), "--debug-images", *clip_args]) == 2
    assert "disk is full" in one_line_error(capsys)
    assert [p.name for p in tiny_disk.iterdir()] == (["filler"] if when == "before" else [])


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no file can be created in (a read-only mount for root, who ignores permissions)."""
    folder = tmp_path / "ro"
    if os.geteuid() == 0:
        _mount_tmpfs(folder, "size=16k,ro")
        yield folder
        subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_a_read_only_output_folder(tmp_path, capsys, clip_args, read_only_folder):
    bag = write_recording(tmp_path / "in.mcap", [CameraRecording("/cam", noise_images(2))])
    assert main(["bag", str(bag), "--jsonl", str(tmp_path / "ok.jsonl"), "--out",
                 str(read_only_folder / "o.mcap"), *clip_args]) == 2
    err = one_line_error(capsys)
    assert "o.mcap" in err and ("read-only" in err or "permission" in err)
    assert list(read_only_folder.iterdir()) == [] and not (tmp_path / "ok.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------------------------------- bad
# options

@pytest.mark.parametrize("fps", ["nan", "0", "-1", "1e-9", "inf", "1e-300"])
def test_fps_must_be_a_usable_rate(tmp_path, capsys, clip_args, fps):
    # at 1e-9 frames/s, frame 3 is 3e9 s after frame 0
    folder = image_folder(tmp_path / "images", n=4)
    assert main(["bag", str(folder), "--jsonl", str(tmp_path / "f.jsonl"), "--fps", fps,
                 *clip_args]) == 2
    assert "--fps" in one_line_error(capsys)
    assert not (tmp_path / "f.jsonl").exists()


def strict_json(text):
    def refuse(name):
        raise ValueError(f"{name} in JSON output")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("k_bad", [(0, float("nan")), (2, float("inf")), (4, float("-inf"))])
def test_non_finite_camera_info_never_reaches_the_json(tmp_path, capsys, clip_args, k_bad):
    k = list(K)
    k[k_bad[0]] = k_bad[1]
    depths = [np.full((48, 64), 1200, np.uint16)] * 2
    bag = write_recording(tmp_path / "in.mcap",
                          [CameraRecording("/cam", noise_images(2), depths=depths, k=k)])
    jsonl, coco = tmp_path / "f.jsonl", tmp_path / "coco.json"
    assert main(["bag", str(bag), "--jsonl", str(jsonl), "--coco", str(coco), "--json",
                 *clip_args]) == 0
    captured = capsys.readouterr()
    strict_json(captured.out)
    strict_json(coco.read_text())
    records = [strict_json(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 2 and all("xyz" not in d for r in records for d in r["detections"])
    assert "camera_info" in captured.err and "not finite" in captured.err


@pytest.mark.parametrize("intrinsics", ["nan,60,32,24", "60,60,inf,24", "60,-inf,32,24"])
def test_non_finite_intrinsics_option_is_an_error(tmp_path, capsys, tiny_clip_dir, intrinsics):
    from ros_mm_perception.core.imaging.image_io import write_rgb

    write_rgb(tmp_path / "f.png", noise_images(1)[0])
    np.save(tmp_path / "d.npy", np.full((48, 64), 1.0, np.float32))
    assert main(["detect", str(tmp_path / "f.png"), "red circle", "--clip-model",
                 str(tiny_clip_dir), "--device", "cpu", "--depth", str(tmp_path / "d.npy"),
                 "--intrinsics", intrinsics, "--json"]) == 2
    assert "--intrinsics" in one_line_error(capsys)


@pytest.mark.parametrize("top_k", ["0", "-2"])
def test_top_k_must_be_positive(tmp_path, capsys, tiny_clip_dir, top_k):
    from ros_mm_perception.core.imaging.image_io import write_rgb

    write_rgb(tmp_path / "f.png", noise_images(1)[0])
    assert main(["classify", str(tmp_path / "f.png"), "--labels", "a,b,c", "--clip-model",
                 str(tiny_clip_dir), "--device", "cpu", "--top-k", top_k]) == 2
    assert "--top-k" in one_line_error(capsys)


def test_a_folder_given_as_an_image_says_so(tmp_path, capsys, tiny_clip_dir):
    assert main(["classify", str(tmp_path), "--labels", "a,b", "--clip-model",
                 str(tiny_clip_dir)]) == 2
    assert "is a folder" in one_line_error(capsys)


@pytest.mark.parametrize("kind", ["objects", "npz", "garbage"])
def test_a_npy_depth_that_is_not_a_plain_array(tmp_path, capsys, tiny_clip_dir, kind):
    from ros_mm_perception.core.imaging.image_io import write_rgb

    write_rgb(tmp_path / "f.png", noise_images(1)[0])
    depth = tmp_path / "d.npy"
    if kind == "objects":
        np.save(depth, np.array([{"depth": 1.0}], dtype=object), allow_pickle=True)
    elif kind == "npz":
        with open(depth, "wb") as f:
            np.savez(f, a=np.zeros((48, 64), np.float32))
    else:
        depth.write_bytes(b"\x93NUMPY garbage")
    assert main(["detect", str(tmp_path / "f.png"), "red circle", "--clip-model",
                 str(tiny_clip_dir), "--device", "cpu", "--depth", str(depth), "--intrinsics",
                 "60,60,32,24"]) == 2
    assert "d.npy" in one_line_error(capsys)
