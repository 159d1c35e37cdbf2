"""The OWL section of ``bench`` in its CPU smoke size: plain transformers, ours and ours in int8
taking turns (no timing checks)."""

import json

import pytest
import torch

from ros_mm_perception import cli
from ros_mm_perception.commands.bench import harness, owl as owl_section
from ros_mm_perception.commands.bench.owl import OWL_FIGURES


def run_owl_bench(monkeypatch, capsys, *extra):
    monkeypatch.setattr(harness, "FRAME_SHAPE", (60, 80, 3))
    monkeypatch.setattr(harness, "CLIP_BATCH", 4)
    threads = torch.get_num_threads()
    try:
        code = cli.main(["bench", "--json", "--device", "cpu", "--random-weights", "--sizes",
                         "tiny", "--repeats", "1", "--threads", "1", "--owl-only", *extra])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return json.loads(capsys.readouterr().out.strip())


def test_owl_bench_times_plain_and_ours_with_equal_scores(monkeypatch, capsys):
    result = run_owl_bench(monkeypatch, capsys)
    owl = result["owl"]
    assert (owl["architecture"], owl["image_size"]) == ("tiny", 48) and result["errors"] == {}
    assert owl["precision"] == "fp32"
    plain = owl["paths"]["plain"]
    assert all(plain[k] > 0 for k in OWL_FIGURES if k.endswith("_ms"))
    for path in ("off", "static", "int8"):
        figures = owl["paths"][path]
        assert all(figures[k] is not None for k in OWL_FIGURES)
    for path in ("off", "static"):
        assert owl["paths"][path]["max_abs_score_diff_vs_plain"] < 1e-4
    # int8 of the tower's linear layers: close to plain, not equal
    assert 0 < owl["paths"]["int8"]["max_abs_score_diff_vs_plain"] < 0.05
    # GPU-only paths stay empty on a CPU
    assert all(v is None for v in owl["paths"]["compile"].values())


def test_owl_bench_with_ours_in_int8_races_plain_in_fp32(monkeypatch, capsys):
    result = run_owl_bench(monkeypatch, capsys, "--owl-precision", "int8")
    owl = result["owl"]
    assert owl["precision"] == "int8"
    assert result["errors"] == {"owl.paths.int8": "skipped: off runs int8 already"}
    assert owl["paths"]["plain"]["frame_to_detections_b1_ms"] > 0
    # ours in int8 against the plain fp32 call: close, not equal
    assert 0 < owl["paths"]["off"]["max_abs_score_diff_vs_plain"] < 0.05


def test_owlv2_base_on_the_cpu_races_batch_one_only(monkeypatch, capsys):
    """The real-size CPU case (seconds per frame), run at the tiny size: plain, off and int8 at
    batch 1, --repeats rounds after the reference and prepare calls, no fast path."""
    rounds = []
    race = harness.Harness.race

    def counted(self, calls, rounds_=None, warmup=2):
        rounds.append((list(calls), rounds_, warmup))
        return race(self, calls, rounds_, warmup)

    monkeypatch.setattr(owl_section.OwlBench, "owl_heavy", lambda self: True)
    monkeypatch.setattr(harness.Harness, "race", counted)
    result = run_owl_bench(monkeypatch, capsys)
    assert rounds == [(["plain", "off", "int8"], 1, 0)]
    paths = result["owl"]["paths"]
    assert all(paths[p]["frame_to_detections_b1_thread_cpu_ms"] > 0
               for p in ("plain", "off", "int8"))
    assert all(paths[p]["frames_to_detections_b4_ms"] is None for p in ("plain", "off", "int8"))
    assert all(v is None for v in paths["static"].values())
    assert set(result["errors"]) == {"owl.b4"}


@pytest.mark.parametrize("rounds", [None, 3])
def test_race_alternates_the_calls(tmp_path, rounds):
    """Calls take turns round by round, so load from other programs falls on each alike."""
    from ros_mm_perception.commands import bench

    args = cli.build_parser().parse_args(["bench", "--device", "cpu", "--repeats", "2"])
    runner = bench.Bench(args, torch.device("cpu"), str(tmp_path))
    order = []
    times = runner.race({name: (lambda name=name: order.append(name))
                         for name in ("plain", "off", "int8")}, rounds, warmup=1)
    assert order == ["plain", "off", "int8"] * (1 + (rounds or 5))
    assert set(times) == {"plain_ms", "off_ms", "int8_ms", "plain_thread_cpu_ms",
                          "off_thread_cpu_ms", "int8_thread_cpu_ms", "off_speedup",
                          "int8_speedup", "thread_cpu_off_speedup", "thread_cpu_int8_speedup"}
