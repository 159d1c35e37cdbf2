"""Node parameters through the config dataclass: YAML defaults, descriptors' needs, run-time
changes."""

import dataclasses
import importlib.util
import pathlib

import pytest
import yaml

from ros_mm_perception.core.config import ConfigError, PerceptionConfig
from ros_mm_perception.core.perception.pipeline import MODEL_FIELDS

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]
GENERATOR = PACKAGE_DIR.parent / "scripts" / "generate_param_surfaces.py"
NODE_KEY = "/**/perception"


def yaml_parameters():
    return yaml.safe_load((PACKAGE_DIR / "config"
                           / "perception.yaml").read_text())[NODE_KEY]["ros__parameters"]


def test_yaml_mirrors_the_dataclass_defaults():
    described = {name: spec["default"] for name, spec in PerceptionConfig.describe().items()}
    params = yaml_parameters()
    assert sorted(params) == sorted(
        described
    ), "config/perception.yaml must list exactly the config fields"
    for name, default in described.items():
        assert params[name] == default, name
        # ROS types parameters by their YAML value: 1 is an integer, 1.0 a double.
        assert type(params[name]) is type(
            default
        ), f"{name}: YAML {params[name]!r} vs default {default!r}"


def test_yaml_builds_a_valid_config():
    assert PerceptionConfig.from_dict(yaml_parameters()) == PerceptionConfig()


def test_list_defaults_are_non_empty_string_lists():
    # An empty list has no type in ROS parameters or parameter files (rcl cannot parse `[]`).
    for name, spec in PerceptionConfig.describe().items():
        if isinstance(spec["default"], list):
            assert spec["default"] and all(isinstance(v, str) for v in spec["default"]), name


def test_ranges_match_the_parameter_type():
    # Integer parameters need an IntegerRange and doubles a FloatingPointRange.
    for name, spec in PerceptionConfig.describe().items():
        if "range" in spec:
            low, high = spec["range"]
            assert type(spec["default"]) in (int, float) and low <= spec["default"] <= high, name
            assert all(type(v) is type(spec["default"]) for v in (low, high)), name


def test_model_choices_and_node_wiring_are_read_only():
    read_only = {n for n, spec in PerceptionConfig.describe().items() if spec.get("read_only")}
    assert set(MODEL_FIELDS) <= read_only
    assert {"cameras", "image_transport", "use_depth", "qos_reliability", "autostart"} <= read_only
    assert {"labels", "detect_phrases", "score_threshold", "labels_rate_hz",
            "detect_rate_hz"}.isdisjoint(read_only)


def test_run_time_change_is_validated_and_old_values_kept():
    cfg = PerceptionConfig()
    new = cfg.replace(labels=["red mug", "open door"], detect_phrases=["red mug"],
                      score_threshold=0.5, detect_rate_hz=5.0)
    assert (new.labels, new.detect_phrases, new.score_threshold, new.detect_rate_hz) == (
        ["red mug", "open door"], ["red mug"], 0.5, 5.0)
    for change, reason in [({"score_threshold": -0.1}, "outside"), ({"max_batch": 0}, "outside"),
                           ({"image_transport": "theora"}, "not one of"),
                           ({"qos_reliability": "maybe"}, "not one of"),
                           ({"detect_phrases": ["mug", "mug"]}, "duplicates")]:
        with pytest.raises(ConfigError, match=reason):
            new.replace(**change)
    assert new.score_threshold == 0.5 and new.detect_phrases == ["red mug"]


def test_target_frame_is_a_frame_id():
    assert PerceptionConfig(target_frame="base_link").target_frame == "base_link"
    assert PerceptionConfig().target_frame == ""  # empty: the camera's frame
    for bad in ("base link", " base_link"):
        with pytest.raises(ConfigError, match="target_frame"):
            PerceptionConfig(target_frame=bad)


@pytest.mark.parametrize("cameras, reason",
                         [([], "at least one"), (["front", "front"], "duplicates"),
                          (["front/left"], "letters"), (["1cam"], "start with a letter")])
def test_camera_names_are_checked(cameras, reason):
    with pytest.raises(ConfigError, match=reason):
        PerceptionConfig(cameras=cameras)


def test_every_field_has_one_described_default():
    described = PerceptionConfig.describe()
    assert [f.name for f in dataclasses.fields(PerceptionConfig)] == list(described)
    assert all(spec["description"].strip() for spec in described.values())


def test_docs_parameter_table_matches_the_defaults():
    page = (PACKAGE_DIR.parent / "docs" / "ros2.md").read_text()
    section = page.split("\n## Parameters", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`") and cells[2].startswith("`"):
            rows[cells[0].strip("`")] = (yaml.safe_load(cells[2].strip("`")), cells[3])
    described = PerceptionConfig.describe()
    assert sorted(rows) == sorted(
        described
    ), "docs/ros2.md's parameter table must list every config field"
    for name, spec in described.items():
        assert rows[name] == (spec["default"], "no" if spec.get("read_only") else "yes"), name


def generator():
    spec = importlib.util.spec_from_file_location("generate_param_surfaces", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_surfaces_are_byte_for_byte_what_the_generator_writes():
    surfaces = generator().surfaces()
    assert {p.name for p in surfaces} == {"perception.yaml", "ros2.md"}
    for path, text in surfaces.items():
        assert (
            path.read_text() == text
        ), f"{path.name} is stale: run python3 scripts/{GENERATOR.name}"


def test_generator_check_catches_a_stale_file(tmp_path, monkeypatch):
    module = generator()
    stale = tmp_path / "perception.yaml"
    stale.write_text(module.yaml_text(PerceptionConfig.describe()).replace("top_k: 5", "top_k: 6"))
    monkeypatch.setattr(module, "YAML_FILE", stale)
    monkeypatch.setattr(module, "REPO", tmp_path)
    monkeypatch.setattr(module, "DOCS_FILE", tmp_path / "ros2.md")
    (tmp_path / "ros2.md").write_text("<!-- generated: parameters -->\n<!-- end: parameters -->\n"
                                      "<!-- generated: launch arguments -->\n<!-- end: launch "
                                      "arguments -->\n")
    assert module.main(["--check"]) == 1
    assert "top_k: 6" in stale.read_text()  # --check writes nothing
    assert module.main([]) == 0 and module.main(["--check"]) == 0
    assert "top_k: 5" in stale.read_text()
    with pytest.raises(ValueError, match="markers"):
        module.replace_between("no markers here", "parameters", "")


def test_descriptions_are_one_line():
    for name, spec in PerceptionConfig.describe().items():
        text = spec["description"]
        assert "\n" not in text and len(text) <= 100 and text.endswith("."), name
