"""The ROS-free transform tree and 3D results in a target frame, against transforms with known
answers."""

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ros_mm_perception.core.perception.transforms import (RigidTransform, TransformTree,
                                                          transform_3d)
from ros_mm_perception.core.results import Detection, FrameResult, Label, Stamp

S = 1_000_000_000
OPTICAL = Rotation.from_euler("xyz", [-math.pi / 2, 0.0, -math.pi / 2])
"""camera_link (x forward, z up) → camera optical frame (z forward, x right, y down), REP 103."""


def mounted_camera_tree(pitch_deg=30.0, height=1.0):
    """base_link ← camera_link (1 m up, pitched down) ← camera_optical, all static."""
    tree = TransformTree()
    tree.set_transform("base_link", "camera_link",
                       RigidTransform(np.array([0.0, 0.0, height]),
                                      Rotation.from_euler("y", pitch_deg, degrees=True)),
                       static=True)
    tree.set_transform("camera_link", "camera_optical", RigidTransform(np.zeros(3), OPTICAL),
                       static=True)
    return tree


def located_result(frame_id="camera_optical", stamp_ns=0, xyz=(0.0, 0.0, 2.0)):
    dets = [Detection("red mug", 0.9, (10, 20, 30, 40), track_id=3, xyz=xyz,
                      size_xyz=(0.1, 0.2, 0.3)),
            Detection("door", 0.5, (0, 0, 5, 5))]  # no depth there: no 3D
    return FrameResult("front", frame_id, Stamp.from_ns(stamp_ns), 64, 48,
                       labels=[Label("kitchen", 1.0)], detections=dets, labels_ran=True,
                       detections_ran=True)


def test_camera_one_metre_up_pitched_down_sees_the_floor_point():
    # 2 m along the optical axis of a camera 1 m up pitched 30 degrees down: (2 cos 30, 0, 1 - 2
    # sin 30)
    lookup = mounted_camera_tree().lookup("base_link", "camera_optical", 5 * S)
    assert lookup.found and not lookup.missing
    assert np.allclose(lookup.transform.apply([0.0, 0.0, 2.0]), [math.sqrt(3.0), 0.0, 0.0])
    # the optical x axis (image right) is the robot's -y (its right); the optical y axis (image
    # down) tilts back
    assert np.allclose(lookup.transform.rotation.apply([1.0, 0.0, 0.0]), [0.0, -1.0, 0.0])
    assert np.allclose(lookup.transform.rotation.apply([0.0, 1.0, 0.0]),
                       [-0.5, 0.0, -math.sqrt(3.0) / 2])
    # the inverse lookup maps back
    back = mounted_camera_tree().lookup("camera_optical", "base_link", 0).transform
    assert np.allclose(back.apply([math.sqrt(3.0), 0.0, 0.0]), [0.0, 0.0, 2.0])


def test_transform_3d_moves_position_and_orientation_keeps_size_and_header():
    result = located_result(stamp_ns=7 * S)
    transform = mounted_camera_tree().lookup("base_link", "camera_optical", 7 * S).transform
    moved = transform_3d(result, transform, "/base_link")
    assert (
        moved.frame_id == "base_link" and moved.stamp == result.stamp and moved.camera == "front"
    )
    # only located detections have a 3D part
    assert [d.phrase for d in moved.detections] == ["red mug"]
    mug = moved.detections[0]
    assert np.allclose(mug.xyz, [math.sqrt(3.0), 0.0, 0.0]) and mug.size_xyz == (0.1, 0.2, 0.3)
    assert (mug.track_id, mug.score, mug.box) == (3, 0.9, (10, 20, 30, 40))
    assert np.allclose(Rotation.from_quat(mug.orientation).as_matrix(),
                       transform.rotation.as_matrix())
    # the input is untouched: its 2D outputs stay in the camera frame
    assert result.frame_id == "camera_optical" and result.detections[0].xyz == (0.0, 0.0, 2.0)
    assert result.detections[0].orientation is None and result.labels


def moving_base_tree():
    """odom ← base_link moving 1 m along x and turning 90 degrees between t=0 and t=1 s;
    camera_link static."""
    tree = TransformTree()
    tree.set_transform("odom", "base_link", RigidTransform.from_xyz_quat((0, 0, 0), (0, 0, 0, 1)),
                       0)
    tree.set_transform(
        "odom",
        "base_link",
        RigidTransform(np.array([1.0, 0, 0]), Rotation.from_euler("z", 90, degrees=True)),
        S,
    )
    tree.set_transform("base_link", "camera_link",
                       RigidTransform.from_xyz_quat((0.2, 0, 0), (0, 0, 0, 1)), static=True)
    return tree


def test_moving_base_is_interpolated_between_stamps():
    tree = moving_base_tree()
    half = tree.lookup("odom", "camera_link", S // 2).transform
    # base at (0.5, 0, 0) turned 45 degrees; a point 1 m ahead of the camera is 1.2 m ahead of the
    # base
    c = math.cos(math.pi / 4)
    assert np.allclose(half.apply([1.0, 0.0, 0.0]), [0.5 + 1.2 * c, 1.2 * c, 0.0])
    assert np.allclose(half.rotation.as_euler("xyz", degrees=True), [0, 0, 45])
    quarter = tree.lookup("odom", "camera_link", S // 4).transform
    assert np.allclose(quarter.translation,
                       [0.25 + 0.2 * math.cos(math.pi / 8), 0.2 * math.sin(math.pi / 8), 0])
    # the recorded stamps themselves give the recorded poses
    assert np.allclose(tree.lookup("odom", "base_link", S).transform.translation, [1.0, 0, 0])


def test_samples_out_of_order_and_repeated_stamps():
    tree = TransformTree()

    def at_x(x):
        return RigidTransform.from_xyz_quat((x, 0, 0), (0, 0, 0, 1))

    # out of order; the later 1 s sample wins
    for stamp, x in ((2 * S, 2.0), (0, 0.0), (S, 5.0), (S, 1.0)):
        tree.set_transform("odom", "base_link", at_x(x), stamp)
    assert tree.lookup("odom", "base_link", S).transform.translation[0] == pytest.approx(1.0)
    assert tree.lookup("odom", "base_link",
                       3 * S // 2).transform.translation[0] == pytest.approx(1.5)
    # added after a lookup: used by the next
    tree.set_transform("odom", "base_link", at_x(3.0), 3 * S)
    assert tree.lookup("odom", "base_link",
                       5 * S // 2).transform.translation[0] == pytest.approx(2.5)
    # a new parent replaces the link
    tree.set_transform("map", "base_link", at_x(9.0), static=True)
    assert tree.lookup("map", "base_link", 123).transform.translation[0] == pytest.approx(9.0)
    assert "'odom' is not in the transform tree" in tree.lookup("odom", "base_link", S).missing


def test_no_extrapolation_beyond_the_tolerance():
    tree = moving_base_tree()
    near = tree.lookup("odom", "camera_link", S + tree.tolerance_ns // 2)
    assert near.found and np.allclose(near.transform.translation, [1.0, 0.2, 0.0])
    late = tree.lookup("odom", "camera_link", 3 * S)
    assert not late.found and late.transform is None
    assert (
        "odom -> base_link" in late.missing
        and "3.000 s" in late.missing
        and "0.000 s to 1.000 s" in late.missing
    )
    assert not tree.lookup("odom", "camera_link", -S).found


def test_missing_frames_and_disconnected_trees_are_named():
    tree = mounted_camera_tree()
    unknown = tree.lookup("map", "camera_optical", 0)
    assert not unknown.found and "'map' is not in the transform tree" in unknown.missing
    assert "base_link" in unknown.missing  # the frames it knows are listed
    tree.set_transform("map", "odom", RigidTransform.identity(), static=True)
    apart = tree.lookup("map", "camera_optical", 0)
    assert not apart.found and "not connected" in apart.missing and "'base_link'" in apart.missing
    tree.set_transform("odom", "base_link",
                       RigidTransform.from_xyz_quat((2.0, 0, 0), (0, 0, 0, 1)), static=True)
    joined = tree.lookup("map", "camera_optical", 0)
    assert joined.found and np.allclose(
        joined.transform.apply([0, 0, 2.0]), [2.0 + math.sqrt(3.0), 0, 0]
    )
    assert tree.lookup("camera_optical", "/camera_optical",
                       0).transform.translation.tolist() == [0, 0, 0]


def test_bad_links_are_rejected():
    from ros_mm_perception.core.perception.transforms import TransformRejected

    tree = TransformTree()
    for parent, child, reason in (("", "a", "empty frame id"),
                                  ("a", "a", "frame is its own parent"),
                                  ("/a", "a", "frame is its own parent")):
        with pytest.raises(TransformRejected, match=reason):
            tree.set_transform(parent, child, RigidTransform.identity())
    with pytest.raises(TransformRejected, match="NaN or infinite"):
        tree.set_transform("a", "b",
                           RigidTransform(np.array([0.0, math.nan, 0.0]), Rotation.identity()))
    assert tree.frames() == []


def tf_msg(parent, child, xyz, quat, stamp_ns=0):
    """A TFMessage-like object holding one transform."""
    from types import SimpleNamespace as N

    return N(transforms=[N(header=N(frame_id=parent,
                                    stamp=N(sec=stamp_ns // S, nanosec=stamp_ns % S)),
                           child_frame_id=child,
                           transform=N(translation=N(x=xyz[0], y=xyz[1], z=xyz[2]),
                                       rotation=N(x=quat[0], y=quat[1], z=quat[2], w=quat[3])))])


@pytest.mark.parametrize("parent, child, xyz, quat, reason", [
    ("base", "cam", (0, 0, 1), (0, 0, 0, math.inf), "NaN or infinite value"),
    ("base", "cam", (0, 0, 1), (0, 0, 0, math.nan), "NaN or infinite value"),
    ("base", "cam", (math.nan, 0, 1), (0, 0, 0, 1), "NaN or infinite value"),
    ("base", "cam", (0, 0, -math.inf), (0, 0, 0, 1), "NaN or infinite value"),
    ("base", "cam", (0, 0, 1), (0, 0, 0, 0), "quaternion not of unit length"),
    ("base", "cam", (0, 0, 1), (0, 0, 0, 2), "quaternion not of unit length"),
    ("cam", "cam", (0, 0, 1), (0, 0, 0, 1), "frame is its own parent"),
    ("", "cam", (0, 0, 1), (0, 0, 0, 1), "empty frame id"),
    ("base", "", (0, 0, 1), (0, 0, 0, 1), "empty frame id"),
])
def test_tf_messages_tf2_refuses_are_counted_by_reason(parent, child, xyz, quat, reason):
    from ros_mm_perception.messages.tf import add_tf_message

    tree = TransformTree()
    assert add_tf_message(tree, tf_msg(parent, child, xyz, quat), static=True) == 0
    assert tree.rejected == {reason: 1} and tree.frames() == []
    assert add_tf_message(tree, tf_msg("base", "cam", (0, 0, 1), (0, 0, 0, 1)), static=True) == 1
    assert tree.frames() == ["base", "cam"] and sum(tree.rejected.values()) == 1


def test_rigid_transform_composition_and_inverse():
    a = RigidTransform(np.array([1.0, 2.0, 3.0]),
                       Rotation.from_euler("xyz", [10, 20, 30], degrees=True))
    b = RigidTransform(np.array([-1.0, 0.5, 0.0]), Rotation.from_euler("z", -40, degrees=True))
    p = np.array([0.3, -0.7, 2.0])
    assert np.allclose((a * b).apply(p), a.apply(b.apply(p)))
    assert np.allclose((a.inverse() * a).apply(p), p)


def test_random_tf_garbage_never_raises_nor_reaches_an_output():
    """Property: whatever /tf and /tf_static hold, reading them raises nothing but a one-line
    :class:`UserError`, every transform is used or rejected with a reason, and a moved 3D result is
    finite or absent."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from ros_mm_perception.core.errors import UserError
    from ros_mm_perception.core.perception.transforms import REJECTION_REASONS
    from ros_mm_perception.offline.bag_transforms import TargetFrame, read_transform_tree

    frames = st.sampled_from(["base_link", "odom", "cam", "/cam", "", "map"])
    number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 2),
                       st.sampled_from([0.0, 1.0, -1.0, 1e308, -1e308, 5e-324]))
    transform = st.tuples(frames, frames, st.integers(0, 3 * S), st.tuples(number, number, number),
                          st.tuples(number, number, number, number))
    message = st.tuples(st.sampled_from(["/tf", "/tf_static"]), st.lists(transform, max_size=4))

    @settings(max_examples=300, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(message, max_size=8), st.integers(0, 3 * S),
           st.tuples(st.floats(-100, 100), st.floats(-100, 100), st.floats(0.1, 100)))
    def check(messages, stamp_ns, xyz):
        notes = []
        raw = [(topic, "tf2_msgs/msg/TFMessage", [tf_msg(p, c, v, q, ns).transforms[0]
                                                  for p, c, ns, v, q in entries])
               for topic, entries in messages]
        tree = read_transform_tree(
            raw,
            lambda transforms, _type: type("M", (), {"transforms": transforms}),
            warn=notes.append,
        )
        offered = sum(len(entries) for _, entries in messages)
        assert set(tree.rejected) <= set(REJECTION_REASONS)
        assert sum(tree.rejected.values()) <= offered
        assert bool(tree.rejected) == any("rejected" in n for n in notes)
        try:
            target = TargetFrame.of(tree, "base_link")
        except UserError as err:
            assert "\n" not in str(err)
            assert ("rejected" in str(err)) == bool(tree.rejected)
            return
        moved = target.apply(located_result("cam", stamp_ns, xyz))
        if moved is not None:
            for det in moved.detections:
                assert np.isfinite([*det.xyz, *det.orientation]).all()

    check()
