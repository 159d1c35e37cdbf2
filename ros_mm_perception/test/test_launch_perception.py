"""perception.launch.py brings the node up to active on the topic its arguments name, and it exits
cleanly (needs ROS 2 and launch_testing).

Runs where the package is installed (``colcon test``), since the launch file is found by package
share. test_launch_arguments.py checks the same arguments without ROS, test_node_helpers.py the
topic the node derives from them.
"""

import tempfile
import unittest

import pytest

launch_testing = pytest.importorskip("launch_testing")
pytest.importorskip("launch_ros")
pytest.importorskip("ros_mm_perception_interfaces")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch.substitutions import PathJoinSubstitution  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402

from ros_mm_perception.core.models.random_models import build_random_clip  # noqa: E402

CASES = [
    # a namespace, and the image topic remapped into it
    ({"namespace": "robot1", "image_topic": "/robot1/camera/image_raw"},
     "/robot1/camera/image_raw"),
    # compressed transport: only the base name is remapped, the node subscribes
    # <image_topic>/compressed
    ({"image_transport": "compressed", "image_topic": "/camera/image_raw"},
     "/camera/image_raw/compressed"),
]


@pytest.mark.launch_test
@launch_testing.parametrize("arguments, topic", CASES)
def generate_test_description(arguments, topic):
    clip_dir = build_random_clip(tempfile.mkdtemp(prefix="tiny_clip_"))
    perception = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("ros_mm_perception"),
                                                            "launch", "perception.launch.py"])),
        launch_arguments={"clip_model": str(clip_dir), "device": "cpu", **arguments}.items(),
    )
    return launch.LaunchDescription([perception, launch_testing.actions.ReadyToTest()])


class TestNodeComesUp(unittest.TestCase):
    def test_reaches_active_on_the_remapped_topic(self, proc_output, topic):
        proc_output.assertWaitFor(f"active: listening on {topic}", timeout=120)


@launch_testing.post_shutdown_test()
class TestCleanExit(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
