"""``geometry_msgs/TransformStamped`` and ``tf2_msgs/TFMessage`` (rclpy or rosbags) → the core
transform types."""

from __future__ import annotations

from typing import Tuple

from ros_mm_perception.core.perception.transforms import (RigidTransform, TransformRejected,
                                                          TransformTree, check_transform)
from ros_mm_perception.messages.convert import stamp_of


def rigid_transform_of(msg) -> RigidTransform:
    """The :class:`RigidTransform` of a ``geometry_msgs/Transform`` (child → parent)."""
    t, q = msg.translation, msg.rotation
    return RigidTransform.from_xyz_quat((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def transform_stamped_of(msg) -> Tuple[str, str, int, RigidTransform]:
    """``(parent frame, child frame, stamp in ns, transform)`` of a
    ``geometry_msgs/TransformStamped``; :class:`TransformRejected` for what tf2 refuses (see
    :func:`check_transform`)."""
    parent, child = str(msg.header.frame_id), str(msg.child_frame_id)
    t, q = msg.transform.translation, msg.transform.rotation
    check_transform(parent, child, (t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
    return parent, child, stamp_of(msg.header).to_ns(), rigid_transform_of(msg.transform)


def add_tf_message(tree: TransformTree, msg, static: bool) -> int:
    """Add every transform of a ``tf2_msgs/TFMessage`` to ``tree``; returns how many were usable.

    A transform tf2 would refuse (an empty frame id, a frame parented to itself, a NaN or infinite
    value, a quaternion far from unit length) is left out and counted in ``tree.rejected`` by
    reason.
    """
    used = 0
    for stamped in msg.transforms:
        try:
            parent, child, stamp_ns, transform = transform_stamped_of(stamped)
            tree.set_transform(parent, child, transform, stamp_ns, static=static)
        except TransformRejected as err:
            tree.rejected[err.reason] += 1
            continue
        used += 1
    return used
