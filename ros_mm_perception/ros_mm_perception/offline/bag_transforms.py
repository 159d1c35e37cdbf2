"""The transform tree of a recording, from its ``/tf`` and ``/tf_static`` topics, and 3D results
moved with it.

The whole recording's transforms are read first (one pass over those two topics only), so a frame
is transformed with the transforms on both sides of its stamp, interpolated, as tf2 would live.
Transforms tf2 would refuse (an empty frame id, a frame parented to itself, a NaN or infinite
value, a quaternion far from unit length) are left out, counted by reason and reported once; a
frame whose moved 3D result would not be finite has no 3D output (counted with the missing
transforms).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.perception.transforms import TransformTree, frame_name, transform_3d
from ros_mm_perception.core.results import FrameResult
from ros_mm_perception.messages.tf import add_tf_message

TF_TOPICS = {"/tf": False, "/tf_static": True}
"""Transform topics and whether they are static."""
TF_TYPE = "tf2_msgs/msg/TFMessage"


def read_transform_tree(messages, deserialize, path="the bag",
                        warn: Callable[[str], None] = lambda _m: None) -> TransformTree:
    """Every transform in ``messages``: (topic, message type, raw CDR) of ``/tf`` and
    ``/tf_static``, decoded with ``deserialize(raw, type)``."""
    tree = TransformTree()
    bad = 0
    try:
        for topic, msgtype, raw in messages:
            try:
                msg = deserialize(raw, msgtype)
            except Exception:  # corrupt CDR raises assorted errors; that message is left out
                bad += 1
                continue
            add_tf_message(tree, msg, static=TF_TOPICS[topic])
    except Exception as err:
        raise UserError(f"cannot read the transforms of {path}: {err}") from err
    if bad:
        warn(f"{path}: {bad} undecodable /tf or /tf_static message(s) left out")
    if tree.rejected:
        warn(f"{path}: {sum(tree.rejected.values())} transform(s) on /tf or /tf_static rejected: "
             f"{rejection_text(tree.rejected)}")
    return tree


def rejection_text(rejected: Dict[str, int]) -> str:
    """``"2 NaN or infinite value, 1 empty frame id"``: counts by reason, most first."""
    order = sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{n} {reason}" for reason, n in order)


class TargetFrame:
    """Moves 3D results into ``target_frame`` with a recording's tree; counts and reports what is
    missing.

    :meth:`apply` gives the moved result, or None when the transform at the frame's stamp is
    missing (that frame then has no 3D output); the first frame missing each link is reported
    through ``warn``.
    """

    def __init__(self, tree: TransformTree, target_frame: str,
                 warn: Callable[[str], None] = lambda _m: None):
        self.tree = tree
        self.target_frame = frame_name(target_frame)
        self.warn = warn
        self.missing: Dict[str, int] = {}

    @classmethod
    def of(cls, tree: TransformTree, target_frame: str,
           warn: Callable[[str], None] = lambda _m: None) -> "TargetFrame":
        """A :class:`TargetFrame`, or a :class:`UserError` when the recording has no usable
        transform."""
        if not tree.frames():
            if tree.rejected:
                raise UserError(f"--target-frame {target_frame}: every transform on /tf and "
                                f"/tf_static was rejected ({rejection_text(tree.rejected)})")
            raise UserError(f"--target-frame {target_frame}: the recording has no transforms on "
                            f"/tf or /tf_static")
        return cls(tree, target_frame, warn)

    def apply(self, result: FrameResult) -> Optional[FrameResult]:
        lookup = self.tree.lookup(self.target_frame, result.frame_id, result.stamp.to_ns())
        why = lookup.missing
        if lookup.found:
            moved = transform_3d(result, lookup.transform, self.target_frame)
            if all(np.isfinite([*d.xyz, *d.orientation]).all() for d in moved.detections):
                return moved
            why = "the transform gives NaN or infinite positions"
        key = f"{frame_name(result.frame_id)} -> {self.target_frame}"
        if key not in self.missing:
            self.warn(f"{result.camera}: no 3D output in {self.target_frame} for frames without "
                      f"the transform {key}: {why}")
        self.missing[key] = self.missing.get(key, 0) + 1
        return None
