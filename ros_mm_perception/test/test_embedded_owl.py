"""The shipped embedded OWL detector finds rendered objects by phrase; its training is
deterministic."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from ros_mm_perception.cli import main
from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.models.owl import embedded_owl_dir, load_owl
from ros_mm_perception.core.perception.boxes import box_iou
from ros_mm_perception.core.perception.pipeline import suppress
from ros_mm_perception.synthetic.scenes import all_phrases, render_scene

SAMPLES = Path(embedded_owl_dir()).parent / "samples"
DEFAULTS = PerceptionConfig()


@pytest.fixture(scope="module")
def owl():
    return load_owl("embedded", device="cpu", precision="fp32")


def detect(owl, image, phrases):
    (dets,) = owl.detect_batch([image], phrases, DEFAULTS.owl_score_threshold)
    return suppress(dets, DEFAULTS.owl_score_threshold, DEFAULTS.nms_iou)


def test_shipped_detector_fits_the_size_budget_and_records_its_training():
    folder = embedded_owl_dir()
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 15 * 1024 * 1024
    info = json.loads((folder / "training.json").read_text())
    assert len(info["loss_curve"]) == info["steps"]
    assert np.mean(info["loss_curve"][-50:]) < 0.8 * np.mean(info["loss_curve"][:50])


def test_it_loads_as_an_owlv2_checkpoint(owl):
    assert owl.kind == "owlv2" and owl.has_objectness and owl.name == str(embedded_owl_dir())


def test_a_rendered_object_is_found_by_its_phrase_and_an_absent_phrase_is_not(owl):
    rng = np.random.default_rng(2718)
    found, absent_hits = 0, 0
    for _ in range(8):
        scene = render_scene(rng, n_objects=1, size=(480, 640), size_range=(0.3, 0.45))
        (obj,) = scene.objects
        absent = [p for p in all_phrases() if p != obj.phrase][int(rng.integers(47))]
        dets = detect(owl, scene.image, [obj.phrase, absent])
        mine = [d.box for d in dets if d.phrase == obj.phrase]
        found += bool(mine) and box_iou([obj.box], mine).max() >= 0.5
        absent_hits += any(d.phrase == absent for d in dets)
    assert found >= 7
    assert absent_hits <= 2


def test_detect_command_finds_the_bundled_sample(capsys):
    assert main(["detect", str(SAMPLES / "red_circle.png"), "red circle ; blue star",
                 "--owl-model", "embedded", "--device", "cpu", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["detections"]
    assert rows and {r["label"] for r in rows} == {"red circle"}


def test_training_is_deterministic_given_the_seed(tmp_path):
    from training.train_owl import train

    first = train(seed=5, steps=2, batch_size=2, lr=1e-3, out=tmp_path / "a", threads=1)
    second = train(seed=5, steps=2, batch_size=2, lr=1e-3, out=tmp_path / "b", threads=1)
    assert first["loss_curve"] == second["loss_curve"]
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(
        str(tmp_path / "b" / "model.safetensors")
    )
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    # the written folder is a loadable OWLv2 model
    engine = load_owl(str(tmp_path / "a"), device="cpu")
    assert engine.kind == "owlv2"


def test_demo_runs_on_the_embedded_detector(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "2", "--owl-model", "embedded", "--device",
                 "cpu", "--threads", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "OWL detector embedded" in printed and "objects found" in printed
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert len(records) == 4 and any(r["detections"] for r in records)
    assert all(d["score"] >= DEFAULTS.owl_score_threshold for r in records
               for d in r["detections"])
    assert (out / "contact_sheet.png").stat().st_size > 0
