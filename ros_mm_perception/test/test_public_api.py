"""The package's public API: a few names at the top, loaded on first use, without torch or ROS."""

import subprocess
import sys

import pytest

import ros_mm_perception as rmp

PUBLIC = ("load_clip", "load_owl", "load_paligemma", "ClipLabeler", "PerceptionPipeline",
          "PerceptionConfig", "Frame", "FrameResult", "Label", "Detection", "Intrinsics",
          "read_rgb")


def test_importing_the_package_loads_no_torch_and_no_ros():
    code = ("import sys, ros_mm_perception\n"
            "heavy = ('torch', 'numpy', 'rclpy', 'cv2')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy\n"
            "             or m.startswith('ros_mm_perception.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_resolves_to_its_definition():
    from ros_mm_perception.core.models.clip_model import load_clip
    from ros_mm_perception.core.perception.labeler import ClipLabeler
    from ros_mm_perception.core.results import Frame

    assert set(PUBLIC) <= set(rmp.__all__) and set(PUBLIC) <= set(dir(rmp))
    assert (rmp.load_clip, rmp.ClipLabeler, rmp.Frame) == (load_clip, ClipLabeler, Frame)
    for name in PUBLIC:
        assert getattr(rmp, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        rmp.nothing


def test_labels_through_the_top_level_names(tmp_path):
    import numpy as np

    from ros_mm_perception.core.imaging.image_io import write_rgb

    path = write_rgb(tmp_path / "frame.png", np.full((48, 64, 3), 200, np.uint8))
    labeler = rmp.ClipLabeler(rmp.load_clip(device="cpu"), ["red circle", "blue square"])
    labels = labeler.label(rmp.read_rgb(path), top_k=2)
    assert [type(lb) for lb in labels] == [rmp.Label, rmp.Label]
    assert abs(sum(lb.score for lb in labels) - 1.0) < 1e-5
