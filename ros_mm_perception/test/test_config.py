"""PerceptionConfig: the one home of defaults, validated on every change."""

import pytest

from ros_mm_perception.core.config import ConfigError, PerceptionConfig


def test_defaults_are_valid_and_described():
    cfg = PerceptionConfig()
    described = PerceptionConfig.describe()
    assert set(described) == set(cfg.to_dict())
    for name, info in described.items():
        assert info["default"] == getattr(cfg, name)
        assert info["description"]


def test_replace_validates_and_keeps_old_values():
    cfg = PerceptionConfig()
    new = cfg.replace(labels=["red mug", " door "], score_threshold=1)
    assert new.labels == ["red mug", "door"]
    assert new.score_threshold == 1.0 and isinstance(new.score_threshold, float)
    assert cfg.labels == PerceptionConfig().labels
    bad = [
        ({"score_threshold": 1.5}, "outside"),
        ({"top_k": 0}, "outside"),
        ({"top_k": True}, "must be int"),
        ({"labels": []}, "must not be empty"),
        ({"labels": ["a", "a"]}, "duplicates"),
        ({"labels": "a,b"}, "list of strings"),
        ({"grounding_source": "yolo"}, "not one of"),
        ({"prompt_templates": ["no placeholder"]}, "'{}'"),
        ({"device": "tpu"}, "device"),
        ({"no_such_setting": 1}, "unknown"),
    ]
    for change, message in bad:
        with pytest.raises(ConfigError, match=message):
            cfg.replace(**change)


def test_detect_phrases_may_be_empty_but_labels_not():
    assert PerceptionConfig(detect_phrases=[]).detect_phrases == []
    with pytest.raises(ConfigError):
        PerceptionConfig(labels=[])


def test_from_dict_round_trip():
    cfg = PerceptionConfig(labels=["cup"], top_k=1)
    assert PerceptionConfig.from_dict(cfg.to_dict()) == cfg
