"""ros_mm_perception: language-grounded perception for ROS 2 robots.

The public API, loaded on first use so that ``import ros_mm_perception`` stays cheap and needs
neither torch nor ROS::

    import ros_mm_perception as rmp

    labeler = rmp.ClipLabeler(rmp.load_clip(), ["red mug", "person", "door"])
    labels = labeler.label(rmp.read_rgb("frame.png"), top_k=3)

The ROS-free core lives in :mod:`ros_mm_perception.core`; the rclpy node layer in
:mod:`ros_mm_perception.ros`; the offline command line in :mod:`ros_mm_perception.cli`.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_clip": "ros_mm_perception.core.models.clip_model",
    "load_owl": "ros_mm_perception.core.models.owl",
    "load_paligemma": "ros_mm_perception.core.models.paligemma",
    "ClipLabeler": "ros_mm_perception.core.perception.labeler",
    "PerceptionPipeline": "ros_mm_perception.core.perception.pipeline",
    "PerceptionConfig": "ros_mm_perception.core.config",
    "Frame": "ros_mm_perception.core.results",
    "FrameResult": "ros_mm_perception.core.results",
    "Label": "ros_mm_perception.core.results",
    "Detection": "ros_mm_perception.core.results",
    "Intrinsics": "ros_mm_perception.core.results",
    "read_rgb": "ros_mm_perception.core.imaging.image_io",
}
"""Public name → the module that defines it."""

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
