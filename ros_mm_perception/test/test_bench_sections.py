"""The benchmark's CPU record and its fleet section (no timing checks)."""

import json
import platform

import pytest

from ros_mm_perception import cli
from ros_mm_perception.commands.bench import fleet
from ros_mm_perception.core import devices

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni
"""
SAPPHIRE_RAPIDS = """model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid bf16
"""


def test_cpu_info_reads_model_and_instruction_sets(tmp_path, monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    (tmp_path / "epyc").write_text(EPYC)
    info = devices.cpu_info(str(tmp_path / "epyc"))
    assert set(info) == set(devices.CPU_FIELDS)
    assert info["model"] == "AMD EPYC 9654 96-Core Processor"
    assert (info["avx2"], info["avx512"], info["avx512_bf16"], info["amx"], info["neon"]) == (
        True, True, True, False, False)
    assert info["isa_limits"] == "ONEDNN_MAX_CPU_ISA=AVX2"
    (tmp_path / "spr").write_text(SAPPHIRE_RAPIDS)
    assert devices.cpu_info(str(tmp_path / "spr"))["amx"] is True
    (tmp_path / "graviton").write_text(GRAVITON)
    arm = devices.cpu_info(str(tmp_path / "graviton"))
    assert arm["neon"] is True and arm["avx2"] is False and arm["avx512_bf16"] is False


def test_cpu_info_without_cpuinfo_says_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    info = devices.cpu_info(str(tmp_path / "missing"))
    assert info["avx2"] is None and info["neon"] is None and info["arch"] == "x86_64"


def test_fleet_section_times_bag_and_fleet(monkeypatch, capsys):
    pytest.importorskip("ray")
    monkeypatch.setattr(fleet, "RECORDINGS", 1)
    monkeypatch.setattr(fleet, "FRAMES", 1)
    monkeypatch.setattr(fleet, "SIZE", (48, 64))
    monkeypatch.setattr(fleet, "WORKERS", (1,))
    code = cli.main(["bench", "--json", "--device", "cpu", "--fleet-only"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["errors"] == {}
    section = result["fleet"]
    assert set(section) == {"recordings", "frames_per_camera", "size", "ray_init_s",
                            "bag_sequential", "workers_1"}
    frames = section["bag_sequential"]["frames"]
    assert frames == 2  # one recording of one frame on each of two cameras
    assert section["workers_1"]["frames"] == frames and section["workers_1"]["frames_per_s"] > 0
    assert result["meta"]["cpu"]["model"] and result["meta"]["cpu"]["cores"] >= 1
