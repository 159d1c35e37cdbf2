"""ROS-free message classes from the ``rosbags`` type store, and the schema text MCAP files need.

``rosbags_types(typestore())`` gives the same attribute names as the node's namespace of real
rclpy classes (see :data:`..names.TYPE_NAMES`), so the conversions in :mod:`.convert` build either
kind.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Dict

from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from ros_mm_perception.messages.definitions import VISION_MSGS, foxglove_msgs
from ros_mm_perception.messages.names import TYPE_NAMES

DISTROS = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY,
           "lyrical": Stores.ROS2_LYRICAL}


def typestore(distro: str = "jazzy"):
    """A rosbags type store for ``distro`` ("humble", "jazzy" or "lyrical") with vision_msgs 4.x
    and foxglove_msgs registered."""
    try:
        store = get_typestore(DISTROS[distro])
    except KeyError:
        raise ValueError(
            f"unknown ROS distribution {distro!r}; use one of {', '.join(DISTROS)}"
        ) from None
    types = {}
    for name, text in {**VISION_MSGS, **foxglove_msgs()}.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def rosbags_types(store, names: Dict[str, str] = TYPE_NAMES) -> SimpleNamespace:
    """A types namespace (attributes of ``names``, by default :data:`TYPE_NAMES`) holding the
    store's message classes."""
    return SimpleNamespace(**{attr: store.types[name] for attr, name in names.items()})


def schema_text(store, typename: str) -> str:
    """The ``ros2msg`` schema of ``typename`` as rosbag2 writes it into MCAP files.

    The type's own fields come first, then one ``MSG: pkg/Type`` section per dependency, each
    preceded by a line of 80 ``=``; ``mcap_ros2`` and Foxglove parse exactly this layout.
    """
    text, _ = store.generate_msgdef(typename, ros_version=2)
    return text
