"""``ros-mm-perception detect`` through the real entry point."""

import json

import cv2
import numpy as np
import pytest

from ros_mm_perception.cli import main
from ros_mm_perception.core.imaging.image_io import write_rgb
from ros_mm_perception.core.results import Detection

H, W = 48, 64
BOX = (16.0, 8.0, 48.0, 40.0)


class OneBoxPaliGemma:
    """Stands in for the PaliGemma engine: one box per phrase request."""

    def __init__(self):
        self.language, self.max_new_tokens, self.closed = "en", 32, False

    def detect_batch(self, images, phrases):
        return [[Detection(phrases[0], 0.81, BOX, source="paligemma")] for _ in images]

    def close(self):
        self.closed = True


@pytest.fixture
def image_file(tmp_path, rng):
    return write_rgb(tmp_path / "frame.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))


@pytest.fixture
def depth_file(tmp_path):
    depth = np.full((H, W), 3000, np.uint16)
    depth[8:40, 16:48] = 1500
    depth[20:24, 30:34] = 0                                  # a hole inside the object
    path = tmp_path / "depth.png"
    cv2.imwrite(str(path), depth)
    return path


@pytest.fixture
def scripted_paligemma(monkeypatch):
    loaded = []

    def load(model, device="auto", precision="auto", **kw):
        loaded.append(OneBoxPaliGemma())
        return loaded[-1]

    monkeypatch.setattr("ros_mm_perception.core.models.paligemma.load_paligemma", load)
    return loaded


def detect(*args):
    return main(["detect", *map(str, args)])


def test_paligemma_json_with_3d(tiny_clip_dir, image_file, depth_file, scripted_paligemma, capsys):
    assert detect(image_file, "red mug ; person", "--paligemma-model", "scripted", "--clip-model",
                  tiny_clip_dir, "--device", "cpu", "--score-threshold", "0", "--depth",
                  depth_file, "--intrinsics", "50,50,31.5,23.5", "--json") == 0
    (det,) = json.loads(capsys.readouterr().out)["detections"]
    assert det["label"] == "red mug" and det["box"] == list(BOX)
    assert 0.0 < det["score"] <= np.sqrt(0.81) + 1e-9          # re-scored: sqrt(0.81 * p_clip)
    np.testing.assert_allclose(det["xyz"], [0.0, 0.0, 1.5], atol=1e-6)
    np.testing.assert_allclose(det["size"], [32 * 1.5 / 50, 32 * 1.5 / 50, 0.0], atol=1e-6)
    assert scripted_paligemma[0].closed


def test_clip_only_grounding_without_a_paligemma_model(tiny_clip_dir, image_file, depth_file,
                                                       capsys):
    assert detect(image_file, "red mug ; person", "--clip-model", tiny_clip_dir,
                  "--score-threshold", "0", "--depth", depth_file, "--intrinsics",
                  "50,50,31.5,23.5", "--json") == 0
    dets = json.loads(capsys.readouterr().out)["detections"]
    assert dets and {d["label"] for d in dets} <= {"red mug", "person"}
    assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
    for d in dets:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        assert 1.5 - 1e-6 <= d["xyz"][2] <= 3.0 + 1e-6       # the scene's depths are 1.5 m and 3 m


def test_text_output_and_threshold(tiny_clip_dir, image_file, scripted_paligemma, capsys):
    assert detect(image_file, "red mug", "--paligemma-model", "scripted", "--clip-model",
                  tiny_clip_dir, "--score-threshold", "0") == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("red mug") and "[16.0, 8.0, 48.0, 40.0]" in line and "xyz" not in line
    assert detect(image_file, "red mug", "--paligemma-model", "scripted", "--clip-model",
                  tiny_clip_dir, "--score-threshold", "1") == 0
    assert capsys.readouterr().out.strip() == "no detections at score >= 1.0"


def test_without_depth_json_has_no_xyz(tiny_clip_dir, image_file, scripted_paligemma, capsys):
    assert detect(image_file, "cup", "--paligemma-model", "scripted", "--clip-model",
                  tiny_clip_dir, "--score-threshold", "0", "--json") == 0
    (det,) = json.loads(capsys.readouterr().out)["detections"]
    assert "xyz" not in det


@pytest.mark.parametrize("extra, message", [
    (["--depth", "{depth}"], "--depth and --intrinsics go together"),
    (["--depth", "{depth}", "--intrinsics", "1,2,3"], "four numbers"),
    (["--depth", "{depth}", "--intrinsics", "0,50,1,1"], "must be positive"),
    (["--depth", "/no/depth.png", "--intrinsics", "50,50,1,1"], "does not exist"),
    (["--score-threshold", "1.5"], "score_threshold"),
])
def test_user_errors_are_one_line(tiny_clip_dir, image_file, depth_file, scripted_paligemma,
                                  capsys, extra, message):
    extra = [a.replace("{depth}", str(depth_file)) for a in extra]
    assert detect(image_file, "cup", "--paligemma-model", "scripted", "--clip-model",
                  tiny_clip_dir, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_empty_phrases_and_missing_image(tiny_clip_dir, image_file, capsys):
    assert detect(image_file, " ; ", "--clip-model", tiny_clip_dir) == 2
    assert "must not be empty" in capsys.readouterr().err
    assert detect("missing.png", "cup", "--clip-model", tiny_clip_dir) == 2
    assert "not found" in capsys.readouterr().err
