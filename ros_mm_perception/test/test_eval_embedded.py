"""``eval-embedded`` reports every planner-facing figure for both scene styles, at the defaults."""

import json

from ros_mm_perception.cli import main


def test_json_report_has_both_styles_and_every_measure(tiny_clip_dir, capsys):
    assert main(["eval-embedded", "--clip-model", str(tiny_clip_dir), "--device", "cpu", "--n",
                 "1", "--scenes", "1", "--sequences", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (
        report["settings"]["score_threshold"] == 0.5
        and report["settings"]["crop_mode"] == "letterbox"
    )
    assert report["settings"]["label_tiles"] == 3
    for style in ("own", "unseen"):
        classes = report[style]["classification"]
        assert set(classes) == {"letterbox", "center", "letterbox_frame_alone",
                                "center_frame_alone"}
        assert set(classes["letterbox"]["by_size"]) == {"small", "medium", "large"}
        assert classes["letterbox"]["n"] == 48 and 0.0 <= classes["letterbox"]["top1"] <= 1.0
        grounding = report[style]["grounding"]
        assert {"recall", "precision", "duplicates_per_object",
                "absent_phrase_rate"} <= set(grounding)
        assert grounding["n_objects"] >= 2
        assert 0.0 <= report[style]["scene_labels"]["objects_in_top_k"] <= 1.0
        assert report[style]["scene_labels"]["n_scenes"] == 1
        assert report[style]["tracking"] is None


def test_counts_must_be_positive(capsys):
    assert main(["eval-embedded", "--n", "0"]) == 2
    assert "--n and --scenes" in capsys.readouterr().err


def test_a_second_box_on_a_found_object_is_a_duplicate_and_a_lone_misplaced_box_is_not():
    from ros_mm_perception.core.results import Detection
    from ros_mm_perception.synthetic.evaluation import _duplicates, match
    from ros_mm_perception.synthetic.scenes import SceneObject

    objects = [SceneObject("red", "circle", (0.0, 0.0, 40.0, 40.0)),
               SceneObject("blue", "star", (100, 100, 140, 140))]
    dets = [Detection("red circle", 0.9, (1, 1, 40, 40)),
            Detection("red circle", 0.6, (10, 10, 30, 30)),
            Detection("blue star", 0.7, (100, 118, 140, 158))]  # IoU 0.38 with the star: not found
    pairs = match(dets, objects)
    assert pairs == {0: 0}
    assert _duplicates(dets, objects, pairs) == 1
