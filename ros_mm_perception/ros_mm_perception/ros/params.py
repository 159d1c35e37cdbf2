"""ROS parameters from :class:`PerceptionConfig`: one parameter per field, validated by the
dataclass."""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)

from ros_mm_perception.core.config import ConfigError, PerceptionConfig


def descriptor(name: str, spec: Dict) -> ParameterDescriptor:
    """The descriptor of one config field: description, range, choices and read-only flag."""
    desc = ParameterDescriptor(name=name, description=spec["description"],
                               read_only=bool(spec.get("read_only")))
    if "choices" in spec:
        desc.additional_constraints = "one of: " + ", ".join(spec["choices"])
    if "range" in spec:
        low, high = spec["range"]
        if isinstance(spec["default"], float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                            to_value=float(high), step=0.0)]
        else:
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return desc


def declare_config(node) -> PerceptionConfig:
    """Declare every config field on ``node`` (defaults from the dataclass) and build the config.

    Values come from parameter overrides (YAML files, launch, ``-p``) where given; a bad value is a
    :class:`ConfigError` naming it.
    """
    values = {}
    for name, spec in PerceptionConfig.describe().items():
        default = list(spec["default"]) if isinstance(spec["default"], list) else spec["default"]
        values[name] = node.declare_parameter(name, default, descriptor(name, spec)).value
    return PerceptionConfig.from_dict({k: list(v) if isinstance(v, (list, tuple)) else v
                                       for k, v in values.items()})


def config_changes(config: PerceptionConfig, parameters: Iterable) -> Tuple[PerceptionConfig,
                                                                            SetParametersResult]:
    """Validate a ``ros2 param set`` against the dataclass.

    Returns the new config and a successful result, or the unchanged config and a failed result
    with the reason (the old values stay in effect). Parameters that are not config fields
    (``use_sim_time``, QoS overrides) pass through untouched.
    """
    fields = set(PerceptionConfig.describe())
    changes = {p.name: (list(p.value) if isinstance(p.value, (list, tuple)) else p.value)
               for p in parameters if p.name in fields}
    if not changes:
        return config, SetParametersResult(successful=True)
    try:
        return config.replace(**changes), SetParametersResult(successful=True)
    except ConfigError as err:
        return config, SetParametersResult(successful=False, reason=str(err))
