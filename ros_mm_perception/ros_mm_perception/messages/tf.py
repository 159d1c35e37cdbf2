"""``geometry_msgs/TransformStamped`` and ``tf2_msgs/TFMessage`` (rclpy or rosbags) → the core transform types."""

from __future__ import annotations

from typing import Tuple

from ros_mm_perception.core.perception.transforms import RigidTransform, TransformTree
from ros_mm_perception.messages.convert import stamp_of


def rigid_transform_of(msg) -> RigidTransform:
    """The :class:`RigidTransform` of a ``geometry_msgs/Transform`` (child → parent)."""
    t, q = msg.translation, msg.rotation
    return RigidTransform.from_xyz_quat((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def transform_stamped_of(msg) -> Tuple[str, str, int, RigidTransform]:
    """``(parent frame, child frame, stamp in ns, transform)`` of a ``geometry_msgs/TransformStamped``."""
    return (str(msg.header.frame_id), str(msg.child_frame_id), stamp_of(msg.header).to_ns(),
            rigid_transform_of(msg.transform))


def add_tf_message(tree: TransformTree, msg, static: bool) -> int:
    """Add every transform of a ``tf2_msgs/TFMessage`` to ``tree``; returns how many were usable.

    A transform with a zero-length quaternion or an empty frame id is left out (tf2 rejects those too).
    """
    used = 0
    for stamped in msg.transforms:
        try:
            parent, child, stamp_ns, transform = transform_stamped_of(stamped)
            tree.set_transform(parent, child, transform, stamp_ns, static=static)
        except ValueError:
            continue
        used += 1
    return used
