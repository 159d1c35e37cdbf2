"""``bench --cpu-only``: plain, fp32 and int8 raced on small models; every figure present (no
timing checks)."""

import json

import torch

from ros_mm_perception import cli
from ros_mm_perception.commands.bench import cpu, harness


def test_cpu_section_races_plain_fp32_and_int8(monkeypatch, capsys, tiny_clip_dir):
    monkeypatch.setattr(harness, "FRAME_SHAPE", (60, 80, 3))
    monkeypatch.setattr(harness, "CLIP_BATCH", 2)
    monkeypatch.setattr(cpu, "COSINE_FRAMES", 2)
    monkeypatch.setattr(cpu, "CPU_MODELS", ("tiny", "embedded"))
    embedded_folder = cpu.CpuBench.cpu_model_folder
    monkeypatch.setattr(cpu.CpuBench, "cpu_model_folder", lambda self, name: (
        str(tiny_clip_dir) if name == "tiny" else embedded_folder(self, name)))
    threads = torch.get_num_threads()
    try:
        code = cli.main(["bench", "--json", "--cpu-only", "--device", "cpu", "--random-weights",
                         "--repeats", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["errors"] == {}
    section = result["cpu"]["clip_frame_to_labels"]
    tiny, embedded = section["tiny"], section["embedded"]
    assert set(tiny) == set(cpu.CPU_FIGURES)
    assert all(tiny[k] > 0 for k in ("plain_ms", "fp32_ms", "int8_ms", "int8_thread_cpu_ms",
                                     "int8_speedup", "frames_per_s_one_core"))
    assert tiny["int8_layers"] == 4 and tiny["int8_cosine_min"] > 0.999
    # the embedded CLIP is a ResNet: no int8 layers, so no int8 figures
    assert embedded["fp32_ms"] > 0 and embedded["int8_ms"] is None
    assert embedded["auto_precision"] in ("fp32", "bf16")
    owl = result["cpu"]["embedded_owl_frame_to_detections"]
    assert all(owl[k] > 0 for k in ("plain_ms", "fp32_ms", "int8_ms"))
    assert owl["int8_max_score_diff"] < 0.05
    assert result["cpu"]["embedded_grounding_640x480_4_phrases_thread_cpu_ms"] > 0
    assert result["meta"]["cpu"]["model"] is not None
