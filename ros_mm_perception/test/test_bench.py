"""The benchmark runs in its CPU smoke size and prints one JSON object with every key (no timing
checks)."""

import json

import pytest
import torch

from ros_mm_perception import cli
from ros_mm_perception.commands import bench
from ros_mm_perception.commands.bench import harness, paligemma


def keys(tree, prefix=""):
    """Every key path of a nested dict, e.g. ``clip.paths.off.encode_b1_ms``."""
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict) and key != "errors":
            out |= keys(value, f"{prefix}{key}.")
    return out


def test_bench_smoke_prints_every_figure(monkeypatch, capsys):
    # Fewer and smaller inputs than the real run, so the smoke size stays quick on two CPU cores.
    monkeypatch.setattr(harness, "FRAME_SHAPE", (60, 80, 3))
    monkeypatch.setattr(harness, "CLIP_BATCH", 4)
    monkeypatch.setattr(paligemma, "NEW_TOKENS", 4)
    monkeypatch.setattr(paligemma, "QUESTIONS", paligemma.QUESTIONS[:3])
    threads = torch.get_num_threads()
    try:   # one thread: two threads on two busy shared cores spin instead of computing
        code = cli.main(["bench", "--json", "--device", "cpu", "--random-weights", "--sizes",
                         "tiny", "--repeats", "1", "--threads", "1", "--no-compile"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, "--json prints exactly one line: the JSON object"
    result = json.loads(out[0])
    assert keys(result) == keys(bench.empty_result())
    assert result["meta"]["sizes"] == "tiny" and result["meta"]["device"] == "cpu"
    assert result["meta"]["cuda_graphs"] is False and result["meta"]["cpu_threads"] == 1
    # Every path that runs on a CPU produced its figures; only the compile paths were skipped, and
    # the same-precision baselines, since tiny models run in fp32 as plain open_clip does.
    assert set(result["errors"]) == {"clip.paths.compile", "paligemma.paths.compile",
                                     "paligemma2.paths.compile",
                                     "versus_plain.clip.frame_to_labels_same_precision",
                                     "versus_plain.embedded_clip.frame_to_labels_same_precision"}
    for path in ("off", "graph", "freeze"):
        figures = result["clip"]["paths"][path]
        assert all(figures[k] > 0
                   for k in ("encode_b1_ms", "frame_to_labels_b1_ms", "encode_b64_img_per_s"))
    for path in ("off", "graph"):
        assert all(v > 0 for v in result["pipeline"]["paths"][path].values())
    assert result["clip"]["paths"]["graph"]["max_abs_diff_vs_off"] < 1e-4
    assert result["clip"]["paths"]["freeze"]["max_abs_diff_vs_off"] < 1e-4
    for key in ("clip.frame_to_labels", "clip.preprocess_640x480", "embedded_clip.frame_to_labels",
                "embedded_clip.preprocess_640x480", "clip.encode_b1", "embedded_clip.encode_b1",
                "paligemma.answer_20", "paligemma2.answer_20"):
        figures = result["versus_plain"][key]
        assert figures["plain_ms"] > 0 and figures["ours_ms"] > 0
        assert figures["speedup"] == pytest.approx(figures["plain_ms"] / figures["ours_ms"],
                                                   abs=0.01)
        assert figures["plain_thread_cpu_ms"] > 0 and figures["ours_thread_cpu_ms"] > 0
    assert result["versus_plain"]["clip.frame_to_labels"]["ours_fast_path"] == "freeze"
    assert result["versus_plain"]["paligemma.answer_20"]["ours_fast_path"] == "static"
    assert result["embedded_clip"]["grounding_640x480_4_phrases_ms"] > 0
    assert result["embedded_clip"]["grounding_640x480_4_phrases_thread_cpu_ms"] > 0
    # boxes, not the fields of Proposals
    assert result["embedded_clip"]["grounding_proposals"] > 10
    assert result["embedded_clip"]["frame_to_labels_default_tiles_ms"] > 0
    assert result["clip"]["frame_to_labels_default_tiles_ms"] > 0
    for key in paligemma.PALIGEMMA_MODELS:
        paths = result[key]["paths"]
        for path in ("off", "static", "graph"):
            assert all(paths[path][k] > 0
                       for k in ("prefill_ms", "answer_20_ms", "eight_questions_ms"))
            assert 1 <= paths[path]["answer_tokens"] <= 4
        assert paths["graph"]["answers_equal_static"] is True
    assert all(v >= 0 for v in result["image_conversion"].values())


def test_versus_alternates_plain_and_ours(tmp_path):
    """Baseline and our path take turns, so load from other programs falls on both alike."""
    args = cli.build_parser().parse_args(["bench", "--device", "cpu", "--repeats", "3"])
    runner = bench.Bench(args, torch.device("cpu"), str(tmp_path))
    calls = []
    runner.versus("clip.frame_to_labels", lambda: calls.append("plain"),
                  lambda: calls.append("ours"), plain_precision="fp32")
    # two warm-up rounds, then at least five timed rounds
    assert calls == ["plain", "ours"] * (2 + 5)
    figures = runner.result["versus_plain"]["clip.frame_to_labels"]
    assert (
        figures["plain_ms"] >= 0
        and figures["ours_ms"] >= 0
        and figures["plain_precision"] == "fp32"
    )
    assert set(figures) == {"compares", *harness.VERSUS_FIGURES}


def test_bench_rejects_bad_options(capsys):
    assert cli.main(["bench", "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
    assert cli.main(["bench", "--sizes", "tiny"]) == 2
    assert "--random-weights" in capsys.readouterr().err
