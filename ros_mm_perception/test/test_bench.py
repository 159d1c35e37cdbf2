"""The benchmark runs in its CPU smoke size and prints one JSON object with every key (no timing checks)."""

import json

import torch

from ros_mm_perception import cli
from ros_mm_perception.commands import bench


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
    monkeypatch.setattr(bench, "FRAME_SHAPE", (60, 80, 3))
    monkeypatch.setattr(bench, "CLIP_BATCH", 4)
    monkeypatch.setattr(bench, "NEW_TOKENS", 4)
    monkeypatch.setattr(bench, "QUESTIONS", bench.QUESTIONS[:3])
    threads = torch.get_num_threads()
    try:   # one thread: two threads on two busy shared cores spin instead of computing
        code = cli.main(["bench", "--json", "--device", "cpu", "--random-weights", "--sizes", "tiny", "--repeats",
                         "1", "--threads", "1", "--no-compile"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, "--json prints exactly one line: the JSON object"
    result = json.loads(out[0])
    assert keys(result) == keys(bench.empty_result())
    assert result["meta"]["sizes"] == "tiny" and result["meta"]["device"] == "cpu"
    assert result["meta"]["cuda_graphs"] is False and result["meta"]["cpu_threads"] == 1
    # Every path that runs on a CPU produced its figures; only the compile paths were skipped.
    assert set(result["errors"]) == {"clip.paths.compile", "paligemma.paths.compile", "paligemma2.paths.compile"}
    for path in ("off", "graph"):
        figures = result["clip"]["paths"][path]
        assert all(figures[k] > 0 for k in ("encode_b1_ms", "frame_to_labels_b1_ms", "encode_b64_img_per_s"))
        assert all(v > 0 for v in result["pipeline"]["paths"][path].values())
    assert result["clip"]["paths"]["graph"]["max_abs_diff_vs_off"] < 1e-4
    for key in bench.PALIGEMMA_MODELS:
        paths = result[key]["paths"]
        for path in ("off", "static", "graph"):
            assert all(paths[path][k] > 0 for k in ("prefill_ms", "answer_20_ms", "eight_questions_ms"))
            assert 1 <= paths[path]["answer_tokens"] <= 4
        assert paths["graph"]["answers_equal_static"] is True
    assert all(v >= 0 for v in result["image_conversion"].values())


def test_bench_rejects_bad_options(capsys):
    assert cli.main(["bench", "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
    assert cli.main(["bench", "--sizes", "tiny"]) == 2
    assert "--random-weights" in capsys.readouterr().err
