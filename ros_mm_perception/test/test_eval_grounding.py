"""eval-grounding compares sources on the same scenes as eval-embedded and honours --threshold."""

import json

from ros_mm_perception.cli import main
from ros_mm_perception.commands.eval_grounding import evaluation_scenes


def test_scene_sets_are_reproducible_and_of_both_styles():
    own, again, unseen = (evaluation_scenes("own", 5, 2), evaluation_scenes("own", 5, 2),
                          evaluation_scenes("unseen", 5, 2))
    assert all((a[0].image == b[0].image).all() and a[1:] == b[1:] for a, b in zip(own, again))
    for scene, present, absent in own + unseen:
        assert absent not in present and set(present) == {o.phrase for o in scene.objects}
    assert {s.image.shape[:2] for s, _, _ in own} == {(480, 640)}
    assert {s.background for s, _, _ in unseen}.isdisjoint({s.background for s, _, _ in own})


def run_eval(capsys, *extra):
    assert main(["eval-grounding", "--scenes", "2", "--sources", "clip,owl", "--json",
                 *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_reports_every_source_and_set_and_a_threshold_of_one_finds_nothing(capsys):
    report = run_eval(capsys)
    assert report["score_thresholds"] == {"clip": 0.5, "owl": 0.3}      # each source's own default
    for source in ("clip", "owl"):
        for kind in ("own", "unseen"):
            figures = report["sources"][source][kind]
            assert 0.0 <= figures["recall"] <= 1.0 and 0.0 <= figures["precision"] <= 1.0
            assert figures["scenes"] == 2 and figures["objects"] >= 2
    strict = run_eval(capsys, "--threshold", "1.0")
    assert strict["score_thresholds"] == {"clip": 1.0, "owl": 1.0}
    assert all(f["recall"] == 0.0 for sets in strict["sources"].values() for f in sets.values())
    assert report["sources"]["clip"]["own"]["recall"] > 0.0


def test_compare_precision_reports_int8_agreement_with_fp32(capsys):
    assert main(["eval-grounding", "--scenes", "2", "--sources", "owl", "--json",
                 "--precision", "fp32", "--compare-precision", "int8"]) == 0
    report = json.loads(capsys.readouterr().out)
    compared = report["compare_precision"]
    assert compared["precisions"] == {"reference": "fp32", "compared": "int8"}
    for kind in ("own", "unseen"):
        figures = compared["sets"][kind]
        assert figures["scenes"] == 2 and 0.0 <= figures["recall"] <= 1.0
        assert figures["detected_patches"] > 0 and 0.9 <= figures["top1_agreement"] <= 1.0
        assert 0.0 < figures["max_score_diff"] < 0.05
        assert 0.99 < figures["class_embedding_cosine_min"] < 1.0


def test_compare_precision_with_itself_agrees_exactly(capsys):
    assert main(["eval-grounding", "--scenes", "1", "--sets", "own", "--sources", "owl",
                 "--json", "--precision", "fp32", "--compare-precision", "fp32"]) == 0
    report = json.loads(capsys.readouterr().out)
    figures = report["compare_precision"]["sets"]["own"]
    assert figures["top1_agreement"] == 1.0 and figures["max_score_diff"] == 0.0
    assert figures["recall"] == report["sources"]["owl"]["own"]["recall"]


def test_compare_precision_needs_the_owl_source(capsys):
    assert main(["eval-grounding", "--sources", "clip", "--compare-precision", "int8"]) == 2
    assert "--compare-precision" in capsys.readouterr().err
