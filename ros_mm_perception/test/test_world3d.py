"""The rendered 3D room: depth and object indices agree with the geometry; eval-memory runs."""

import json

import numpy as np

from ros_mm_perception.cli import main
from ros_mm_perception.core.perception.transforms import RigidTransform
from ros_mm_perception.core.results import Intrinsics
from ros_mm_perception.synthetic.world3d import (
    OPTICAL, Panel, World, WorldObject, look_at, render,
)

K = Intrinsics(100.0, 100.0, 49.5, 39.5)
HW = (80, 100)


def test_depth_and_indices_follow_the_geometry():
    ring = WorldObject("red", "ring", (3.0, 2.5, 1.0), 0.3, np.pi)     # facing the camera
    world = World([ring], size=(6.0, 5.0, 2.6))
    pose = RigidTransform(np.array([1.0, 2.5, 1.0]), OPTICAL)          # looking along +x
    _, depth, index = render(world, pose, K, HW)
    centre = (39, 49)                                                  # the ring's hole: the wall
    assert index[centre] == -1 and abs(depth[centre] - 5.0) < 0.02
    on_ring = (39, 49 + int(0.25 * K.fx / 2.0))                        # 0.25 m right of its centre
    assert index[on_ring] == 0 and abs(depth[on_ring] - 2.0) < 0.02
    world.panels = [Panel((2.0, 2.5, 1.0), 2.0, 2.0, np.pi)]           # a panel 1 m away hides it
    _, depth, index = render(world, pose, K, HW)
    assert (index == -1).all() and abs(depth[on_ring] - 1.0) < 0.02
    _, _, index = render(World([ring]), pose, K, HW, removed=(0,))
    assert (index == -1).all()


def test_look_at_shows_the_place_in_the_middle_of_every_view():
    disc = WorldObject("red", "circle", (5.5, 1.0, 1.3), 0.2, 2.4)
    world = World([disc], size=(6.0, 5.0, 2.6))
    poses = look_at(world, disc.position, 5)
    assert len(poses) == 5 and len({tuple(p.translation) for p in poses}) == 5
    for pose in poses:
        _, depth, index = render(world, pose, K, HW)
        assert index[39, 49] == 0 and 1.4 < depth[39, 49] < 1.8


def test_eval_memory_runs_and_reports_every_figure(capsys):
    assert main(["eval-memory", "--frames", "8", "--style", "own", "--json", "--threads",
                 "1"]) == 0
    everything = json.loads(capsys.readouterr().out)
    assert everything["mask_model"] == ""  # the default setting: boxes, no masks
    figures = everything["own"]
    for key in ("recorded_once", "duplicates", "false_objects_per_object",
                "position_error_median_m", "query_top1", "absent_phrases_answered",
                "removed_marked_gone", "views_until_gone", "wrongly_gone",
                "hidden_object_marked_gone", "recorded_once_any_phrase",
                "false_objects_at_an_object", "position_errors_m", "query_least_right_match",
                "never_wholly_in_view", "position_error_median_wholly_seen_m"):
        assert key in figures
    assert 0.0 <= figures["recorded_once"] <= 1.0 and figures["frames_per_pass"] == 8
