"""PerceptionPipeline with the tiny CLIP and a scripted PaliGemma stand-in (same methods as the
engine)."""

import numpy as np
import pytest

from ros_mm_perception.core.perception.clip_grounding import ground_with_clip, phrase_scores
from ros_mm_perception.core.config import ConfigError, PerceptionConfig
from ros_mm_perception.core.errors import ImageFormatError, UserError
from ros_mm_perception.core.imaging.preprocess import label_windows
from ros_mm_perception.core.perception.pipeline import (PerceptionPipeline, RateGate,
                                                        combine_scores, suppress)
from ros_mm_perception.core.results import Detection, Frame, Intrinsics, Stamp

H, W = 48, 64
PHRASES = ["red mug", "person"]
VOCAB = ["person", "chair", "door", "cup"]


class ScriptedPaliGemma:
    """Answers ``detect`` with the boxes of ``script(call_index, image_index)``; records every
    call."""

    def __init__(self, script):
        self.script = script
        self.calls = []
        self.closed = False

    def detect_batch(self, images, phrases):
        self.calls.append((len(images), list(phrases)))
        n = len(self.calls) - 1
        return [[Detection(p, s, b, source="paligemma") for p, s, b in self.script(n, i)]
                for i in range(len(images))]

    def detect(self, image, phrases):
        return self.detect_batch([image], phrases)[0]

    def answer(self, image, question):
        return f"answer to {question}"

    def caption(self, image):
        return "a caption"

    def close(self):
        self.closed = True


def still(*entries):
    return ScriptedPaliGemma(lambda n, i: list(entries))


def frame(rng, camera="front", sec=0, nanosec=0, **kw):
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return Frame(image, camera=camera, frame_id=f"{camera}_optical", stamp=Stamp(sec, nanosec),
                 **kw)


def config(**kw):
    base = dict(labels=VOCAB, detect_phrases=PHRASES, score_threshold=0.0,
                grounding_source="paligemma")
    base.update(kw)
    return PerceptionConfig(**base)


@pytest.fixture
def count_clip_calls(tiny_clip, monkeypatch):
    calls = []
    encode = tiny_clip.model.encode_image

    def counted(pixels, *a, **kw):
        calls.append(len(pixels))
        return encode(pixels, *a, **kw)

    monkeypatch.setattr(tiny_clip.model, "encode_image", counted)
    return calls


def test_paligemma_boxes_are_rescored_by_clip_with_the_geometric_mean(tiny_clip, rng):
    boxes = [("red mug", 0.9, (2.0, 3.0, 30.0, 40.0)), ("person", 0.4, (35.0, 1.0, 60.0, 47.0))]
    pipe = PerceptionPipeline(config(), clip=tiny_clip, paligemma=still(*boxes))
    f = frame(rng)
    dets = pipe.process(f).detections
    # Reference: CLIP-only grounding's own region score (context crop, phrases + null prompts).
    probs = phrase_scores(pipe.labeler, f.image, np.asarray([b for _, _, b in boxes]), PHRASES)
    expected = {p: np.sqrt(s * probs[k, PHRASES.index(p)]) for k, (p, s, _) in enumerate(boxes)}
    assert {d.phrase: d.score for d in dets} == pytest.approx(expected, abs=1e-5)
    assert {d.phrase: d.box for d in dets} == {p: b for p, _, b in boxes}
    assert all(d.source == "paligemma" for d in dets)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_combination_rule_needs_both_models_to_agree():
    np.testing.assert_allclose(combine_scores([0.9, 0.9, 0.1, 1.0], [0.9, 0.1, 0.9, 1.0]),
                               [0.9, 0.3, 0.3, 1.0])
    assert combine_scores([0.0], [1.0])[0] == 0.0


def test_threshold_and_same_phrase_nms_after_rescoring(tiny_clip, rng):
    boxes = [("red mug", 0.9, (2.0, 2.0, 30.0, 30.0)), ("red mug", 0.8, (3.0, 3.0, 31.0, 31.0)),
             ("person", 0.7, (3.0, 3.0, 31.0, 31.0)), ("red mug", 0.6, (40.0, 10.0, 60.0, 40.0))]
    f = frame(rng)
    everything = PerceptionPipeline(config(nms_iou=1.0), clip=tiny_clip,
                                    paligemma=still(*boxes)).process(f)
    scores = {(d.phrase, d.box): d.score for d in everything.detections}
    assert len(scores) == 4
    pipe = PerceptionPipeline(config(nms_iou=0.5), clip=tiny_clip, paligemma=still(*boxes))
    kept = {(d.phrase, d.box) for d in pipe.process(f).detections}
    overlapping = [(p, b) for p, _, b in boxes[:2]]
    winner = max(overlapping, key=scores.get)
    assert kept == {winner, ("person", boxes[2][2]), ("red mug", boxes[3][2])}
    threshold = float(np.median(list(scores.values())))
    pipe.update_config(pipe.config.replace(score_threshold=threshold, nms_iou=1.0))
    assert {(d.phrase, d.box) for d in pipe.process(f).detections} == {
        k for k, s in scores.items() if s >= threshold
    }


def test_suppress_keeps_the_best_of_overlapping_same_phrase_boxes():
    dets = [Detection("a", 0.5, (0, 0, 10, 10)), Detection("a", 0.9, (1, 1, 11, 11)),
            Detection("b", 0.2, (0, 0, 10, 10)), Detection("a", 0.05, (50, 50, 60, 60))]
    out = suppress(dets, 0.1, 0.5)
    assert [(d.phrase, d.score) for d in out] == [("a", 0.9), ("b", 0.2)]


def test_a_batch_of_cameras_makes_one_call_per_model_and_keeps_headers(tiny_clip, rng,
                                                                       count_clip_calls):
    engine = still(("person", 0.8, (5.0, 5.0, 25.0, 40.0)),
                   ("red mug", 0.7, (30.0, 10.0, 50.0, 30.0)))
    pipe = PerceptionPipeline(config(), clip=tiny_clip, paligemma=engine)
    count_clip_calls.clear()
    frames = [frame(rng, cam, sec=7, nanosec=k) for k, cam in enumerate(("front", "left", "rear"))]
    results = pipe.process_batch(frames)
    assert engine.calls == [(3, PHRASES)]
    views = 1 + len(label_windows(H, W, pipe.config.label_tiles))
    assert views > 1
    # each frame and its tiles for labels + 6 box crops, one batch
    assert count_clip_calls == [3 * views + 3 * 2]
    for f, r in zip(frames, results):
        assert (r.camera, r.frame_id, r.stamp, r.width, r.height) == (f.camera, f.frame_id,
                                                                      f.stamp, W, H)
        assert r.labels_ran and r.detections_ran
        assert (
            len(r.labels) == pipe.config.top_k if pipe.config.top_k <= len(VOCAB) else len(VOCAB)
        )
        assert sum(lb.score for lb in r.labels) == pytest.approx(1.0, abs=1e-5)


def test_label_tiles_change_at_run_time(tiny_clip, rng, count_clip_calls):
    pipe = PerceptionPipeline(config(grounding_source="off"), clip=tiny_clip)
    image = frame(rng)
    pipe.process(image)
    pipe.update_config(pipe.config.replace(label_tiles=0))
    pipe.process(image)
    assert count_clip_calls == [1 + len(label_windows(H, W, PerceptionConfig().label_tiles)), 1]
    assert pipe.labeler.label_tiles == 0


def test_batched_labels_match_single_frame_labels(tiny_clip, rng):
    pipe = PerceptionPipeline(config(grounding_source="off"), clip=tiny_clip)
    frames = [frame(rng, "a"), frame(rng, "b")]
    batch = pipe.process_batch(frames)
    for f, r in zip(frames, batch):
        single = pipe.labeler.label(f.image, top_k=pipe.config.top_k)
        assert [lb.phrase for lb in r.labels] == [lb.phrase for lb in single]
        np.testing.assert_allclose([lb.score for lb in r.labels], [lb.score for lb in single],
                                   atol=1e-5)


def test_parts_switch_off(tiny_clip, rng, count_clip_calls):
    engine = still(("person", 0.8, (5.0, 5.0, 25.0, 40.0)))
    pipe = PerceptionPipeline(config(enable_labels=False, grounding_source="off"), clip=tiny_clip,
                              paligemma=engine)
    count_clip_calls.clear()
    r = pipe.process(frame(rng))
    assert (r.labels_ran, r.detections_ran, r.labels, r.detections) == (False, False, [], [])
    assert engine.calls == [] and count_clip_calls == []


def test_rates_follow_frame_stamps_per_camera(tiny_clip, rng):
    engine = still()                                 # no boxes: the test exercises scheduling only
    pipe = PerceptionPipeline(config(detect_rate_hz=10.0, enable_labels=False), clip=tiny_clip,
                              paligemma=engine)
    image = frame(rng).image
    ran = {"a": [], "b": []}
    for i in range(90):                              # 3 s of 30 Hz frames on two cameras
        ns = i * 33_333_333
        for cam in ran:
            r = pipe.process(Frame(image, camera=cam,
                                   stamp=Stamp.from_ns(ns + (5_000_000 if cam == "b" else 0))))
            ran[cam].append(r.detections_ran)
    assert sum(ran["a"]) == sum(ran["b"]) == 30     # one run per 100 ms grid step
    assert ran["a"][:7] == [True, False, False, False, True, False, False]
    assert len(engine.calls) == 60
    # A stamp that goes back (a bag restarts) runs at once.
    assert pipe.process(Frame(image, camera="a", stamp=Stamp(0, 0))).detections_ran


def test_labels_have_their_own_rate(tiny_clip, rng):
    pipe = PerceptionPipeline(config(labels_rate_hz=20.0, grounding_source="off"), clip=tiny_clip)
    image = frame(rng).image
    ran = [pipe.process(Frame(image, stamp=Stamp.from_ns(i * 25_000_000))).labels_ran
           for i in range(6)]
    assert ran == [True, False, True, False, True, False]


def test_rate_gate_averages_the_configured_rate():
    gate = RateGate()
    runs = [gate.due(i * 10_000_000, 7.0) for i in range(1000)]    # 100 Hz for 10 s at 7 Hz
    assert sum(runs) == 70
    assert gate.due(10_000_000_000, 0.0) and gate.due(10_000_000_000, 0.0)


def test_tracks_are_stable_and_per_camera(tiny_clip, rng):
    engine = ScriptedPaliGemma(lambda n, i: [("person", 0.9,
                                              (2.0 + 2 * n, 5.0, 22.0 + 2 * n, 40.0)),
                                             ("red mug", 0.9, (40.0, 30.0, 55.0, 45.0))])
    pipe = PerceptionPipeline(config(), clip=tiny_clip, paligemma=engine)
    ids = {"a": set(), "b": set()}
    for k in range(6):
        for r in pipe.process_batch([frame(rng, "a", sec=k), frame(rng, "b", sec=k)]):
            ids[r.camera].add(tuple(sorted((d.phrase, d.track_id) for d in r.detections)))
    assert ids["a"] == ids["b"] == {(("person", 1), ("red mug", 2))} or \
        ids["a"] == ids["b"] == {(("person", 2), ("red mug", 1))}
    pipe.reset("a")
    fresh = pipe.process(frame(rng, "a", sec=10)).detections
    assert min(d.track_id for d in fresh) > 2       # forgotten tracks, ids never reused
    assert {d.track_id for d in pipe.process(frame(rng, "b", sec=10)).detections} == {1, 2}


def test_3d_positions_when_depth_and_intrinsics_come_with_the_frame(tiny_clip, rng):
    box = (16.0, 8.0, 48.0, 40.0)
    pipe = PerceptionPipeline(config(), clip=tiny_clip, paligemma=still(("red mug", 0.9, box)))
    depth = np.full((H, W), 3000, np.uint16)
    depth[8:40, 16:48] = 1500
    k = Intrinsics(fx=50.0, fy=50.0, cx=31.5, cy=23.5)
    (det,) = pipe.process(frame(rng, depth=depth, intrinsics=k)).detections
    np.testing.assert_allclose(det.xyz, (0.0, 0.0, 1.5), atol=1e-6)
    np.testing.assert_allclose(det.size_xyz, (32 * 1.5 / 50, 32 * 1.5 / 50, 0.0), atol=1e-6)
    (no_depth,) = pipe.process(frame(rng, sec=1, intrinsics=k)).detections
    assert no_depth.xyz is None and no_depth.size_xyz is None
    with pytest.raises(ImageFormatError, match="depth"):
        pipe.process(frame(rng, sec=2, depth=np.zeros((H, H), np.uint16), intrinsics=k))


def test_ground_detects_given_phrases_now_without_tracking(tiny_clip, rng):
    engine = still(("door", 0.9, (2.0, 2.0, 30.0, 30.0)))
    pipe = PerceptionPipeline(config(detect_rate_hz=1.0), clip=tiny_clip, paligemma=engine)
    f = frame(rng, depth=np.full((H, W), 2.0, np.float32),
              intrinsics=Intrinsics(50, 50, 31.5, 23.5))
    pipe.process(f)
    for _ in range(2):                               # no rate limit, no tracker
        r = pipe.ground(f, ["door"])
        assert r.detections_ran and not r.labels_ran
        (det,) = r.detections
        assert det.track_id is None and det.xyz[2] == pytest.approx(2.0)
        assert (r.camera, r.frame_id, r.stamp) == (f.camera, f.frame_id, f.stamp)
    assert engine.calls[-1] == (1, ["door"])
    assert pipe.ground(f, ["door"], score_threshold=1.0).detections == []
    with pytest.raises(UserError):
        pipe.ground(f, [])


def test_clip_source_runs_clip_only_grounding_with_tracking(tiny_clip, rng):
    f = frame(rng)
    pipe = PerceptionPipeline(config(grounding_source="clip"), clip=tiny_clip)
    dets = pipe.process(f).detections
    direct = ground_with_clip(pipe.labeler, f.image, PHRASES, score_threshold=0.0)
    assert dets and [(d.phrase, d.box) for d in dets] == [(d.phrase, d.box) for d in direct]
    np.testing.assert_allclose([d.score for d in dets], [d.score for d in direct], atol=1e-6)
    assert all(d.source == "clip" for d in dets)
    ids = [d.track_id for d in dets]
    assert None not in ids and len(set(ids)) == len(ids)
    again = pipe.process(Frame(f.image, camera=f.camera, stamp=Stamp(1, 0))).detections
    assert sorted(d.track_id for d in again) == sorted(ids)     # same frame again: same tracks


def test_auto_uses_paligemma_when_configured(tiny_clip):
    assert PerceptionPipeline(config(grounding_source="auto"), clip=tiny_clip,
                              paligemma=still()).detection_source() == "paligemma"
    assert PerceptionPipeline(config(grounding_source="auto"),
                              clip=tiny_clip).detection_source() == "clip"


def test_paligemma_source_without_a_model_is_a_config_error(tiny_clip):
    with pytest.raises(ConfigError, match="paligemma_model"):
        PerceptionPipeline(config(grounding_source="paligemma"), clip=tiny_clip)


def test_classify_answer_and_caption(tiny_clip, rng):
    image = frame(rng).image
    pipe = PerceptionPipeline(config(), clip=tiny_clip, paligemma=still())
    labels = pipe.classify(image, ["a cat", "a dog", "a car"])
    assert sorted(lb.phrase for lb in labels) == ["a car", "a cat", "a dog"]
    assert sum(lb.score for lb in labels) == pytest.approx(1.0, abs=1e-5)
    assert len(pipe.classify(image, ["a cat", "a dog", "a car"], top_k=1)) == 1
    assert pipe.answer(image, "is the door open?") == "answer to is the door open?"
    assert pipe.caption(image) == "a caption"
    clip_only = PerceptionPipeline(config(grounding_source="off"), clip=tiny_clip)
    with pytest.raises(UserError, match="PaliGemma is not configured"):
        clip_only.answer(image, "what is this?")
    with pytest.raises(UserError, match="PaliGemma is not configured"):
        clip_only.caption(image)


def test_update_config_encodes_only_new_phrases(tiny_clip):
    pipe = PerceptionPipeline(config(grounding_source="off"), clip=tiny_clip)
    before = pipe.labeler.text_encodes
    pipe.update_config(pipe.config.replace(labels=VOCAB + ["sofa"],
                                           detect_phrases=["person", "lamp"], detect_rate_hz=5.0))
    assert pipe.labeler.text_encodes - before == 2      # "sofa" and "lamp"
    assert pipe.labeler.vocabulary == tuple(VOCAB + ["sofa"])
    assert pipe.config.detect_rate_hz == 5.0
    with pytest.raises(ConfigError, match="clip_model"):
        pipe.update_config(pipe.config.replace(clip_model="ViT-B-16"))
    with pytest.raises(ConfigError):
        pipe.update_config(pipe.config.replace(grounding_source="paligemma"))
    # a rejected change leaves everything as it was
    assert pipe.config.grounding_source == "off"


def test_track_settings_reach_existing_trackers(tiny_clip, rng):
    engine = ScriptedPaliGemma(lambda n, i: [("person", 0.9, (2.0, 5.0, 22.0, 40.0))]
                               if n in (0, 2) else [])
    pipe = PerceptionPipeline(config(track_max_missed=0), clip=tiny_clip, paligemma=engine)
    first = pipe.process(frame(rng, sec=0)).detections[0].track_id
    pipe.process(frame(rng, sec=1))                        # missed once: dies with max_missed 0
    assert pipe.process(frame(rng, sec=2)).detections[0].track_id != first
    pipe.update_config(pipe.config.replace(track_max_missed=3))
    engine.script = lambda n, i: [("person", 0.9, (2.0, 5.0, 22.0, 40.0))] if n != 4 else []
    kept = pipe.process(frame(rng, sec=3)).detections[0].track_id
    pipe.process(frame(rng, sec=4))
    assert pipe.process(frame(rng, sec=5)).detections[0].track_id == kept


def test_close_releases_models_it_loaded_only(tiny_clip, rng):
    engine = still()
    pipe = PerceptionPipeline(config(), clip=tiny_clip, paligemma=engine)
    assert pipe.model_state == "ready"
    pipe.close()
    pipe.close()
    assert pipe.model_state == "closed"
    # given by the caller: the caller closes it
    assert not engine.closed
    with pytest.raises(UserError, match="closed"):
        pipe.process(frame(rng))
    with pytest.raises(UserError, match="closed"):
        pipe.answer(frame(rng).image, "hi?")


def test_bad_frames_are_clear_errors(tiny_clip):
    pipe = PerceptionPipeline(config(grounding_source="off"), clip=tiny_clip)
    with pytest.raises(ImageFormatError, match="HxWx3 uint8"):
        pipe.process(Frame(np.zeros((4, 4), np.uint8)))


# ---- end to end with the real tiny PaliGemma (random weights, loaded through load_paligemma)
# -------

def forced_answers(engine, texts):
    """A logits processor that makes generation emit ``texts[b]`` (then end of sequence) for batch
    row b."""
    from transformers import LogitsProcessor
    import torch

    tok = engine.processor.tokenizer
    rows = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]

    class Force(LogitsProcessor):
        step = 0

        def __call__(self, input_ids, scores):
            forced = torch.full_like(scores, float("-inf"))
            for b in range(scores.shape[0]):
                forced[b, rows[b][min(self.step, len(rows[b]) - 1)]] = 0.0
            self.step += 1
            return forced

    return Force()


def test_end_to_end_with_the_tiny_paligemma(tiny_paligemma_dir, tiny_clip, rng):
    cfg = config(paligemma_model=str(tiny_paligemma_dir), device="cpu", max_new_tokens=24)
    pipe = PerceptionPipeline(cfg, clip=tiny_clip)
    engine = pipe.paligemma
    answers = ["<loc0100><loc0200><loc0500><loc0600> red mug ; "
               "<loc0000><loc0000><loc1023><loc1023> person",
               "<loc0512><loc0000><loc1023><loc0512> person"]
    generate_calls = []
    generate = engine.model.generate

    def counted(*a, **kw):
        generate_calls.append(kw.get("input_ids", a[0] if a else None).shape[0])
        return generate(*a, **kw)

    engine.model.generate = counted
    frames = [frame(rng, "front", sec=1), frame(rng, "rear", sec=1)]
    engine.logits_processors[:] = [forced_answers(engine, answers)]
    results = pipe.process_batch(frames)
    assert generate_calls == [2]                     # both cameras in one generate call
    front = {d.phrase: d for d in results[0].detections}
    assert front["red mug"].box == pytest.approx((200 / 1024 * W, 100 / 1024 * H, 600 / 1024 * W,
                                                  500 / 1024 * H))
    assert front["person"].box == pytest.approx((0.0, 0.0, 1023 / 1024 * W, 1023 / 1024 * H))
    (rear,) = results[1].detections
    assert rear.phrase == "person" and rear.box == pytest.approx(
        (0.0, H / 2, W / 2, 1023 / 1024 * H)
    )
    assert all(d.track_id is not None and d.source == "paligemma" for r in results
               for d in r.detections)
    # Re-scoring with the real engine: score = sqrt(PaliGemma confidence * CLIP probability).
    engine.logits_processors[:] = [forced_answers(engine, answers)]
    raw = engine.detect_batch([f.image for f in frames], PHRASES)
    for f, r, dets in zip(frames, results, raw):
        probs = phrase_scores(pipe.labeler, f.image, np.asarray([d.box for d in dets]), PHRASES)
        expected = {d.phrase: np.sqrt(d.score * probs[k, PHRASES.index(d.phrase)])
                    for k, d in enumerate(dets)}
        assert {d.phrase: d.score for d in r.detections} == pytest.approx(expected, abs=1e-5)
    engine.logits_processors.clear()
    assert isinstance(pipe.answer(frames[0].image, "what color is the mug?"), str)
    assert isinstance(pipe.caption(frames[0].image), str)
    pipe.close()
    assert engine.model is None                      # the pipeline loaded it, so it released it


def test_warm_up_prepares_the_batches_of_frames_with_their_tiles(tiny_clip_dir, rng):
    from ros_mm_perception.core.models.clip_model import load_clip
    from ros_mm_perception.core.models.fast_clip import enable_fast_clip

    clip = load_clip(str(tiny_clip_dir), device="cpu")
    encoder = enable_fast_clip(clip, "static", buckets=(1, 2, 4, 8, 16, 32, 64))
    pipeline = PerceptionPipeline(config(grounding_source="off"), clip=clip)
    pipeline.warm_up([1])
    # a 4:3 frame and its 12 tiles, 16:9 and 18, regions
    assert encoder.captured_buckets == (16, 32, 64)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert pipeline.process(Frame(image, camera="front")).labels_ran
    assert encoder.captured_buckets == (16, 32, 64)    # nothing left to prepare on the first frame


def test_warm_up_prepares_the_fast_paths_for_the_frame_batches(tiny_clip_dir, rng):
    from ros_mm_perception.core.models.clip_model import load_clip
    from ros_mm_perception.core.models.fast_clip import enable_fast_clip

    clip = load_clip(str(tiny_clip_dir), device="cpu")
    encoder = enable_fast_clip(clip, "static", buckets=(1, 2, 4, 8))
    engine = still()
    engine.warm_ups = []
    engine.warm_up = engine.warm_ups.append
    pipeline = PerceptionPipeline(config(label_tiles=0), clip=clip, paligemma=engine)
    assert encoder.captured_buckets == ()
    pipeline.warm_up([1, 2])
    # the frame batches and the region-scoring bucket
    assert encoder.captured_buckets == (1, 2, 8)
    assert engine.warm_ups == [[1, 2]]
    before = pipeline.process(frame(rng))
    assert before.labels_ran and encoder.captured_buckets == (1, 2, 8)
