"""perception.launch.py with image_transport:=compressed subscribes <image_topic>/compressed (needs ROS 2).

Runs where the package is installed (``colcon test``); test_launch_arguments.py checks the remapping
without ROS and test_node_helpers.py the topic the node derives from it.
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


@pytest.mark.launch_test
def generate_test_description():
    clip_dir = build_random_clip(tempfile.mkdtemp(prefix="tiny_clip_"))
    perception = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("ros_mm_perception"), "launch",
                                                            "perception.launch.py"])),
        launch_arguments={"clip_model": str(clip_dir), "device": "cpu", "image_transport": "compressed",
                          "image_topic": "/camera/image_raw"}.items(),
    )
    return launch.LaunchDescription([perception, launch_testing.actions.ReadyToTest()])


class TestCompressedTopic(unittest.TestCase):
    def test_subscribes_the_compressed_sub_topic(self, proc_output):
        proc_output.assertWaitFor("active: listening on /camera/image_raw/compressed", timeout=120)


@launch_testing.post_shutdown_test()
class TestCleanExit(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
