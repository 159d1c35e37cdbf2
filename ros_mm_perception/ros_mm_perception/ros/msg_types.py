"""The rclpy message classes as a types namespace for :mod:`ros_mm_perception.messages.convert`,
imported from the ROS install by the type names of :mod:`ros_mm_perception.messages.names` (the one
table the rosbags types are built from too)."""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Dict, Optional

from ros_mm_perception.messages.names import FOXGLOVE_TYPE_NAMES, TYPE_NAMES


def message_classes(names: Dict[str, str]) -> SimpleNamespace:
    """``{attribute: "pkg/msg/Name"}`` → a namespace of the rclpy classes ``pkg.msg.Name``;
    ImportError (or AttributeError) when a package or message is not installed."""
    classes = {}
    for attr, name in names.items():
        package, kind, message = name.split("/")
        classes[attr] = getattr(importlib.import_module(f"{package}.{kind}"), message)
    return SimpleNamespace(**classes)


def rclpy_types() -> SimpleNamespace:
    """Every class named in :data:`ros_mm_perception.messages.names.TYPE_NAMES`."""
    return message_classes(TYPE_NAMES)


def foxglove_rclpy_types() -> Optional[SimpleNamespace]:
    """The classes of :data:`ros_mm_perception.messages.names.FOXGLOVE_TYPE_NAMES`; None when
    foxglove_msgs (an optional run dependency) is not installed."""
    try:
        return message_classes(FOXGLOVE_TYPE_NAMES)
    except (ImportError, AttributeError):
        return None
