"""The ``owl`` grounding source in the pipeline and the command line, with a tiny random OWLv2."""

import json

import numpy as np
import pytest

from ros_mm_perception.cli import main
from ros_mm_perception.core.config import ConfigError, PerceptionConfig
from ros_mm_perception.core.imaging.image_io import write_rgb
from ros_mm_perception.core.models.owl import load_owl
from ros_mm_perception.core.models.random_models import build_random_owl
from ros_mm_perception.core.perception.pipeline import PerceptionPipeline, suppress
from ros_mm_perception.core.perception.tracking import BIRTH_OVERLAP
from ros_mm_perception.core.results import Frame, Intrinsics, Stamp

H, W = 48, 80
PHRASES = ["red circle", "blue star"]


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory):
    return build_random_owl(tmp_path_factory.mktemp("tiny_owl"), "owlv2")


@pytest.fixture(scope="module")
def owl(owl_dir):
    return load_owl(str(owl_dir), device="cpu", precision="fp32")


def config(**kw):
    base = dict(labels=["red circle", "blue star", "green ring"], detect_phrases=PHRASES,
                owl_score_threshold=0.2, grounding_source="owl", nms_iou=0.5)
    base.update(kw)
    return PerceptionConfig(**base)


def frame(rng, camera="front", sec=0, **kw):
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return Frame(image, camera=camera, frame_id=f"{camera}_optical", stamp=Stamp(sec, 0), **kw)


def test_owl_source_thresholds_suppresses_and_tracks(tiny_clip, owl, rng):
    pipe = PerceptionPipeline(config(), clip=tiny_clip, owl=owl)
    f = frame(rng)
    dets = pipe.process(f).detections
    expected = suppress(owl.detect_batch([f.image], PHRASES, 0.2)[0], 0.2, 0.5)
    assert dets and [(d.phrase, d.box) for d in dets] == [(d.phrase, d.box) for d in expected]
    assert all(d.source == "owl" and d.score >= 0.2 for d in dets)
    tracked = [d for d in dets if d.track_id is not None]
    assert tracked
    # published without an id of its own
    for second_view in (d for d in dets if d.track_id is None):
        assert any(mostly_overlap(second_view, t)
                   for t in tracked if t.phrase == second_view.phrase)
    again = pipe.process(Frame(f.image, camera="front", stamp=Stamp(1, 0))).detections
    assert sorted(d.track_id for d in again if d.track_id) == sorted(d.track_id for d in tracked)


def mostly_overlap(a, b) -> bool:
    lo, hi = np.maximum(a.box[:2], b.box[:2]), np.minimum(a.box[2:], b.box[2:])
    inter = float(np.prod(np.clip(np.subtract(hi, lo), 0, None)))
    area = min((a.box[2] - a.box[0]) * (a.box[3] - a.box[1]),
               (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]))
    return inter > BIRTH_OVERLAP * area


def test_owl_has_its_own_threshold_and_an_explicit_one_wins(tiny_clip, owl, rng):
    f = frame(rng)
    scores = sorted(d.score for d in owl.detect_batch([f.image], PHRASES, 0.0)[0])
    cut = scores[len(scores) // 2]
    pipe = PerceptionPipeline(config(owl_score_threshold=cut, score_threshold=1.0), clip=tiny_clip,
                              owl=owl)
    assert pipe.detection_threshold() == cut
    dets = pipe.process(f).detections
    # score_threshold (1.0) does not apply to OWL
    assert dets and min(d.score for d in dets) >= cut
    assert all(d.score >= 0.9 for d in pipe.ground(f, PHRASES, score_threshold=0.9).detections)


def test_cameras_share_one_image_tower_call_and_phrases_are_encoded_once(tiny_clip, owl, rng,
                                                                         monkeypatch):
    calls = []
    embed = owl.model.image_embedder

    def counted(pixel_values, **kw):
        calls.append(len(pixel_values))
        return embed(pixel_values=pixel_values, **kw)

    monkeypatch.setattr(owl.model, "image_embedder", counted)
    owl.forget_text()
    before = owl.text_encodings
    pipe = PerceptionPipeline(config(), clip=tiny_clip, owl=owl)
    assert owl.text_encodings - before == 2                 # encoded when configured
    results = pipe.process_batch([frame(rng, "front"), frame(rng, "rear"), frame(rng, "left")])
    assert calls == [3] and [r.camera for r in results] == ["front", "rear", "left"]
    pipe.update_config(pipe.config.replace(detect_phrases=["blue star", "green ring"]))
    assert owl.text_encodings - before == 3                 # only the new phrase
    pipe.process_batch([frame(rng, "front", sec=1)])
    assert owl.text_encodings - before == 3


def test_3d_positions_from_depth(tiny_clip, owl, rng):
    depth = np.full((H, W), 2000, np.uint16)
    pipe = PerceptionPipeline(config(owl_score_threshold=0.0), clip=tiny_clip, owl=owl)
    dets = pipe.process(frame(rng, depth=depth,
                              intrinsics=Intrinsics(50.0, 50.0, W / 2, H / 2))).detections
    assert dets and all(d.xyz is not None and d.xyz[2] == pytest.approx(2.0) for d in dets)


def test_auto_prefers_owl_then_paligemma_then_clip(tiny_clip, owl):
    class Stub:
        language, max_new_tokens = "en", 32

    assert PerceptionPipeline(config(grounding_source="auto"), clip=tiny_clip, owl=owl,
                              paligemma=Stub()).detection_source() == "owl"
    assert PerceptionPipeline(config(grounding_source="auto"), clip=tiny_clip,
                              paligemma=Stub()).detection_source() == "paligemma"
    assert PerceptionPipeline(config(grounding_source="auto"),
                              clip=tiny_clip).detection_source() == "clip"


def test_owl_source_without_a_model_is_a_config_error(tiny_clip):
    with pytest.raises(ConfigError, match="owl_model"):
        PerceptionPipeline(config(), clip=tiny_clip)


def test_owl_model_cannot_change_at_run_time(tiny_clip, owl, owl_dir):
    pipe = PerceptionPipeline(config(), clip=tiny_clip, owl=owl)
    with pytest.raises(ConfigError, match="owl_model cannot change"):
        pipe.update_config(pipe.config.replace(owl_model=str(owl_dir)))


def test_pipeline_loads_the_configured_model_and_releases_it(tiny_clip, owl_dir, rng):
    pipe = PerceptionPipeline(config(owl_model=str(owl_dir), device="cpu", owl_fast_path="static"),
                              clip=tiny_clip)
    engine = pipe.owl
    assert engine.fast_encoder is not None and engine.fast_encoder.mode == "static"
    ground = pipe.ground(frame(rng), ["red circle"], score_threshold=0.0)
    assert ground.detections and {d.phrase for d in ground.detections} == {"red circle"}
    pipe.close()
    assert engine.model is None


def test_detect_command_with_owl_model(tmp_path, capsys, tiny_clip_dir, owl_dir, rng):
    image = write_rgb(tmp_path / "frame.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    assert main(["detect", str(image), "red circle ; blue star", "--owl-model", str(owl_dir),
                 "--clip-model", str(tiny_clip_dir), "--device", "cpu", "--owl-score-threshold",
                 "0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["detections"]
    assert rows and {r["label"] for r in rows} <= set(PHRASES)
    assert all(0 <= r["score"] <= 1 and 0 <= r["box"][0] < r["box"][2] <= W for r in rows)


def test_bag_options_name_the_owl_model(owl_dir):
    from argparse import ArgumentParser

    from ros_mm_perception.commands.options import add_pipeline_options, config_from_args

    parser = ArgumentParser()
    add_pipeline_options(parser)
    cfg = config_from_args(parser.parse_args(["--owl-model", str(owl_dir), "--grounding-source",
                                              "owl"]))
    assert (cfg.owl_model, cfg.grounding_source) == (str(owl_dir), "owl")


def test_missing_owl_model_is_a_one_line_cli_error(tmp_path, capsys, tiny_clip_dir, rng):
    image = write_rgb(tmp_path / "frame.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    code = main(["detect", str(image), "red circle", "--owl-model", str(tmp_path / "no" / "such"),
                 "--clip-model", str(tiny_clip_dir), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "does not exist" in err and len(err.splitlines()) == 1
