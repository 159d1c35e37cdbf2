"""One phrase-separator rule, the crop mode, --nms and --no-labels, and the embedded model's world
warning."""

import argparse
import json

import numpy as np
import pytest
import torch

from ros_mm_perception.cli import main
from ros_mm_perception.commands.options import add_pipeline_options, config_from_args
from ros_mm_perception.core.config import ConfigError, PerceptionConfig, split_phrases
from ros_mm_perception.core.imaging.image_io import write_rgb
from ros_mm_perception.core.imaging.preprocess import ClipPreprocessor
from ros_mm_perception.core.models.embedded import outside_world_message, phrases_outside_world
from ros_mm_perception.synthetic.scenes import all_phrases


@pytest.mark.parametrize("text, phrases", [
    ("red mug, person,door", ["red mug", "person", "door"]),
    ("red mug ; person", ["red mug", "person"]),
    ("cup, upside down ; door", ["cup, upside down", "door"]),
    (" a ;; b ; ", ["a", "b"]),
    ("one phrase", ["one phrase"]),
    (" , ", []),
])
def test_one_separator_rule(text, phrases):
    assert split_phrases(text) == phrases


def bag_config(argv):
    parser = argparse.ArgumentParser()
    add_pipeline_options(parser)
    return config_from_args(parser.parse_args(argv))


def test_bag_options_reach_the_config():
    assert bag_config([]) == PerceptionConfig()
    config = bag_config(["--no-enable-labels", "--nms-iou", "0.25", "--score-threshold", "0.4",
                         "--crop-mode", "center", "--label-tiles", "0", "--detect-phrases",
                         "red mug ; cup, blue", "--labels", "a,b"])
    assert not config.enable_labels and config.nms_iou == 0.25 and config.score_threshold == 0.4
    assert config.crop_mode == "center" and config.label_tiles == 0
    assert config.detect_phrases == ["red mug", "cup, blue"] and config.labels == ["a", "b"]
    with pytest.raises(ConfigError, match="nms_iou"):
        bag_config(["--nms-iou", "1.5"])
    with pytest.raises(ConfigError, match="label_tiles"):
        bag_config(["--label-tiles", "9"])


def test_crop_mode_is_a_validated_setting():
    assert PerceptionConfig().crop_mode == "letterbox"
    with pytest.raises(ConfigError, match="crop_mode"):
        PerceptionConfig(crop_mode="stretch")


def test_letterbox_keeps_the_whole_frame_and_pads_with_the_mean():
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.25, 0.25)
    pre = ClipPreprocessor(32, mean, std, torch.device("cpu"))
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :8] = 255  # a white band on the left edge, outside the centre square
    boxed = pre.frames([frame], "letterbox")[0]
    centred = pre.frames([frame], "center")[0]
    white = (1.0 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(boxed[:, 16, 1], white, atol=0.05)  # the band is there, at the left
    assert (centred < 0).all()  # the centre crop never shows it
    pad = boxed[:, :4, :]  # 48x64 fits as 24x32: 4 rows of padding above
    assert pad.abs().max() < 0.02
    with pytest.raises(ValueError, match="crop mode"):
        pre.frames([frame], "stretch")


def test_phrases_outside_the_embedded_world():
    assert phrases_outside_world(all_phrases() + ["a photo of a red shape.", "Blue"]) == []
    assert phrases_outside_world(["red circle", "person", "red mug"]) == ["person", "red mug"]
    message = outside_world_message(["person", "red circle"], "--clip-model")
    assert (
        "person" in message
        and "red circle" not in message.split("world:")[1]
        and "--clip-model" in message
    )
    assert outside_world_message(["red circle"], "--clip-model") is None


def test_a_folder_without_a_world_reports_nothing(tmp_path):
    (tmp_path / "training.json").write_text(json.dumps({"seed": 0}))
    assert phrases_outside_world(["person"], tmp_path) == []


def test_classify_warns_once_on_the_embedded_model_only(tmp_path, capsys, tiny_clip_dir):
    image = write_rgb(tmp_path / "frame.png", np.full((40, 60, 3), 128, np.uint8))
    assert main(["classify", str(image), "--labels", "person,red circle", "--device", "cpu",
                 "--json"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "person" in err and "--clip-model" in err
    assert main(["classify", str(image), "--labels", "person,red circle", "--clip-model",
                 str(tiny_clip_dir), "--crop-mode", "center", "--label-tiles", "1", "--json"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["classify", str(image), "--labels", "red circle", "--label-tiles", "-1"]) == 2
    assert "label_tiles" in capsys.readouterr().err
