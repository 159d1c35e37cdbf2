"""``ros-mm-perception classify`` end to end through the real entry point."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ros_mm_perception.cli import main
from ros_mm_perception.core.imaging.image_io import write_rgb


@pytest.fixture
def image_file(tmp_path, rng):
    return write_rgb(tmp_path / "frame.png", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))


def test_json_output(tiny_clip_dir, image_file, capsys):
    assert main(["classify", str(image_file), "--labels", "red mug, person,door",
                 "--clip-model", str(tiny_clip_dir), "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    labels = out["labels"]
    assert sorted(lb["label"] for lb in labels) == ["door", "person", "red mug"]
    scores = [lb["score"] for lb in labels]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)


def test_top_k_and_text_output(tiny_clip_dir, image_file, capsys):
    assert main(["classify", str(image_file), "--labels", "a,b,c", "--clip-model",
                 str(tiny_clip_dir), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.split()[0] in "abc" for line in lines)


@pytest.mark.parametrize("args, message", [
    (["missing.png", "--labels", "a"], "image file not found"),
    (["{image}", "--labels", " , "], "must not be empty"),
    (["{image}", "--labels", "a", "--clip-model", "/no/such/dir"], "does not exist"),
])
def test_user_errors_are_one_line(tiny_clip_dir, image_file, capsys, args, message):
    args = [a.replace("{image}", str(image_file)) for a in args]
    assert main(["classify", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_undecodable_image(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG truncated")
    assert main(["classify", str(bad), "--labels", "a"]) == 2
    assert "cannot decode" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "ros_mm_perception", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "classify" in out.stdout
