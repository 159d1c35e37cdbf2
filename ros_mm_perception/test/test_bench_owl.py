"""The OWL section of ``bench`` in its CPU smoke size: plain transformers beside ours (no timing
checks)."""

import json

import torch

from ros_mm_perception import cli
from ros_mm_perception.commands.bench import harness
from ros_mm_perception.commands.bench.owl import OWL_FIGURES


def test_owl_bench_times_plain_and_ours_with_equal_scores(monkeypatch, capsys):
    monkeypatch.setattr(harness, "FRAME_SHAPE", (60, 80, 3))
    monkeypatch.setattr(harness, "CLIP_BATCH", 4)
    threads = torch.get_num_threads()
    try:
        code = cli.main(["bench", "--json", "--device", "cpu", "--random-weights", "--sizes",
                         "tiny", "--repeats", "1", "--threads", "1", "--owl-only"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip())
    owl = result["owl"]
    assert (owl["architecture"], owl["image_size"]) == ("tiny", 48) and result["errors"] == {}
    assert all(owl["paths"]["plain"][k] > 0
               for k in ("frame_to_detections_b1_ms", "frames_to_detections_b4_ms"))
    for path in ("off", "static"):
        figures = owl["paths"][path]
        assert all(figures[k] is not None for k in OWL_FIGURES)
        assert figures["max_abs_score_diff_vs_plain"] < 1e-4
    # GPU-only paths stay empty on a CPU
    assert all(v is None for v in owl["paths"]["compile"].values())
