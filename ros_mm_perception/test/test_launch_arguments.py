"""perception.launch.py's arguments → node parameters and remappings, ROS-free (launch modules
stubbed).

The stubs record what the launch file hands to ``launch_ros.actions.Node``; test_launch_graph.py
and test_launch_perception.py run the real launch file where ROS 2 is installed.
"""

import pathlib
import sys
import types

import pytest

LAUNCH_FILE = pathlib.Path(__file__).resolve().parents[1] / "launch" / "perception.launch.py"


class _Configuration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.get(self.name, "")


@pytest.fixture
def launch_module(monkeypatch):
    """The launch file's module, with launch and launch_ros replaced by recording stubs."""
    stubs = {
        name: types.ModuleType(name)
        for name in (
            "launch",
            "launch.actions",
            "launch.substitutions",
            "launch_ros",
            "launch_ros.actions",
            "launch_ros.substitutions",
        )
    }
    stubs["launch"].LaunchDescription = list
    stubs["launch.actions"].DeclareLaunchArgument = lambda name, **kw: ("argument", name, kw)
    stubs["launch.actions"].OpaqueFunction = lambda function: ("opaque", function)
    stubs["launch.substitutions"].LaunchConfiguration = _Configuration
    stubs["launch.substitutions"].PathJoinSubstitution = lambda parts: parts
    stubs["launch_ros.actions"].Node = lambda **kw: kw
    stubs["launch_ros.substitutions"].FindPackageShare = lambda name: name
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    module = types.ModuleType("perception_launch")
    exec(compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec"), module.__dict__)
    return module


def node_of(module, **arguments):
    context = {"use_sim_time": "false", **arguments}
    node, = module._node(context)
    return node


def test_compressed_transport_remaps_only_the_base_image_name(launch_module):
    node = node_of(launch_module, image_topic="/camera/image_raw", image_transport="compressed")
    # the node subscribes <remapped image>/compressed = /camera/image_raw/compressed, as
    # image_transport does
    assert node["remappings"] == [("image", "/camera/image_raw")]
    assert node["parameters"][1]["image_transport"] == "compressed"


def test_several_cameras_get_one_remapping_each(launch_module):
    node = node_of(launch_module, cameras="front,rear", image_topic="/f/image_raw,/r/image_raw",
                   depth_topic="/f/depth,/r/depth")
    assert node["remappings"] == [("front/image", "/f/image_raw"), ("rear/image", "/r/image_raw"),
                                  ("front/depth", "/f/depth"), ("rear/depth", "/r/depth")]
    assert node["parameters"][1]["cameras"] == ["front", "rear"]
    with pytest.raises(ValueError, match="lists 2 topics"):
        node_of(launch_module, image_topic="/a,/b")


def test_target_frame_and_empty_arguments(launch_module):
    node = node_of(launch_module, target_frame="base_link", use_depth="true", use_sim_time="true")
    assert node["parameters"][1] == {"use_sim_time": True, "target_frame": "base_link",
                                     "use_depth": True}
    # empty keeps the file's values
    assert node_of(launch_module)["parameters"][1] == {"use_sim_time": False}
    declared = {item[1]
                for item in launch_module.generate_launch_description() if item[0] == "argument"}
    assert {"target_frame", "image_transport", "image_topic", "use_depth"} <= declared


def test_label_tiles_reaches_the_node_as_an_integer(launch_module):
    node = node_of(launch_module, label_tiles="0")
    assert node["parameters"][1]["label_tiles"] == 0
    with pytest.raises(ValueError, match="label_tiles"):
        node_of(launch_module, label_tiles="three")


def test_parameter_arguments_are_the_launch_fields_of_the_config(launch_module):
    from ros_mm_perception.core.config import PerceptionConfig

    described = PerceptionConfig.describe()
    declared = {item[1]: item[2]
                for item in launch_module.generate_launch_description() if item[0] == "argument"}
    fields = [name for name, spec in described.items() if spec.get("launch")]
    assert fields and set(fields) <= set(declared)
    # no config field outside the metadata
    assert not (set(declared) - set(fields)) & set(described)
    for name in fields:
        assert declared[name]["description"] == described[name]["description"]


def test_arguments_reach_the_node_as_the_field_types(launch_module):
    node = node_of(launch_module, use_depth="TRUE", label_tiles="2", cameras="a, b",
                   crop_mode="center")
    assert node["parameters"][1] == {"use_sim_time": False, "use_depth": True, "label_tiles": 2,
                                     "cameras": ["a", "b"], "crop_mode": "center"}
    with pytest.raises(ValueError, match="use_depth must be true or false"):
        node_of(launch_module, use_depth="yes")
