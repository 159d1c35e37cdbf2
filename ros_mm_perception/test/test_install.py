"""One install step on a robot: every package.xml key resolves with rosdep on Humble, Jazzy and
Lyrical (checked against a snapshot of the rosdep database kept here), the pip-only packages are
the requirements file, which matches setup.py, and docs/ros2.md installs with exactly one rosdep
line and one pip line. Lyrical removed CMake's ament_target_dependencies: no CMakeLists uses it."""

import re
from pathlib import Path

import pytest
import setuptools
from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ros_mm_perception", "ros_mm_perception_interfaces", "ros_mm_perception_bringup")
DISTROS = {"humble": "jammy", "jazzy": "noble", "lyrical": "resolute"}
"""Each ROS 2 distribution and the Ubuntu release it is built for (REP 2000)."""

# Snapshot of the rosdep database: ros/rosdistro at 8468e88 (2026-08-22). ROS packages released
# in each distribution (its distribution.yaml), with their versions for humble, jazzy, lyrical:
RELEASED = {
    "ament_cmake": ("1.3.14", "2.5.6", "2.8.8"),
    "builtin_interfaces": ("1.2.3", "2.0.4", "2.4.5"),
    "diagnostic_msgs": ("4.9.2", "5.3.8", "5.9.3"),
    "foxglove_msgs": ("3.4.3", "3.4.3", "3.4.3"),
    "geometry_msgs": ("4.9.2", "5.3.8", "5.9.3"),
    "launch": ("1.0.14", "3.4.11", "3.9.8"),
    "launch_ros": ("0.19.14", "0.26.12", "0.29.9"),
    "launch_testing": ("1.0.14", "3.4.11", "3.9.8"),
    "lifecycle_msgs": ("1.2.3", "2.0.4", "2.4.5"),
    "rcl_interfaces": ("1.2.3", "2.0.4", "2.4.5"),
    "rclpy": ("3.3.21", "7.1.11", "10.0.10"),
    "ros_gz_bridge": ("0.244.25", "1.0.23", "3.0.9"),
    "ros_gz_sim": ("0.244.25", "1.0.23", "3.0.9"),
    "rosidl_default_generators": ("1.2.1", "1.6.1", "1.8.1"),
    "rosidl_default_runtime": ("1.2.1", "1.6.1", "1.8.1"),
    "rviz2": ("11.2.28", "14.1.23", "15.2.5"),
    "sensor_msgs": ("4.9.2", "5.3.8", "5.9.3"),
    "std_msgs": ("4.9.2", "5.3.8", "5.9.3"),
    "tf2_ros_py": ("0.25.22", "0.36.22", "0.45.9"),
    "vision_msgs": ("4.1.1", "4.1.1", "4.2.0"),
    "visualization_msgs": ("4.9.2", "5.3.8", "5.9.3"),
}
# System keys of rosdep/python.yaml and the apt package each resolves to on jammy, noble and
# resolute (the same name on all three).
SYSTEM_KEYS = {
    "python3-numpy": "python3-numpy",
    "python3-opencv": "python3-opencv",
    "python3-yaml": "python3-yaml",
    "python3-scipy": "python3-scipy",
    "python3-pytest": "python3-pytest",
    "python3-catkin-pkg": "python3-catkin-pkg",
}
# pip distribution of setup.py → the rosdep key in package.xml that installs it from apt instead.
FROM_APT = {"numpy": "python3-numpy", "opencv-python-headless": "python3-opencv",
            "pyyaml": "python3-yaml", "scipy": "python3-scipy"}


def keys(name):
    package = parse_package(str(REPO / name / "package.xml"))
    groups = ("build_depends", "buildtool_depends", "build_export_depends", "exec_depends",
              "test_depends", "doc_depends")
    return {d.name for group in groups for d in getattr(package, group)}


@pytest.mark.parametrize("distro", sorted(DISTROS))
def test_every_package_xml_key_resolves_with_rosdep(distro):
    own = set(PACKAGES)
    for name in PACKAGES:
        unresolved = sorted(k for k in keys(name) - own
                            if k not in SYSTEM_KEYS and k not in RELEASED)
        assert not unresolved, f"{name}: no rosdep rule for {unresolved} in the snapshot"
    index = sorted(DISTROS).index(distro)
    for key in keys("ros_mm_perception") & set(RELEASED):
        assert RELEASED[key][index], f"{key} is not released in {distro}"


def test_no_key_of_the_node_pulls_in_pytorch_from_apt():
    """PyTorch comes from pip (apt's is too old on jammy and would mix with pip's torchvision)."""
    assert not {k for k in keys("ros_mm_perception") if "torch" in k}


def setup_extras(monkeypatch):
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    monkeypatch.chdir(REPO / "ros_mm_perception")
    exec(compile(Path("setup.py").read_text(), "setup.py", "exec"), {"__name__": "__main__"})
    return captured


def split(requirement: str):
    """(lower-case name, version specifier, environment marker) of a requirement line."""
    text, _, marker = requirement.partition(";")
    name = re.split(r"[<>=!~\[ ]", text.strip(), maxsplit=1)[0]
    return name.lower(), text.strip()[len(name):].strip(), marker.strip()


def test_requirements_file_is_the_ml_extra_less_what_rosdep_installs(monkeypatch):
    kw = setup_extras(monkeypatch)
    lines = (REPO / "ros_mm_perception" / "requirements.txt").read_text().splitlines()
    wanted = {split(line)[0]: split(line) for line in lines if line and not line.startswith("#")}
    ml = {split(r)[0]: split(r) for r in kw["extras_require"]["ml"]}
    node_keys = keys("ros_mm_perception")
    expected = {name for name in ml if FROM_APT.get(name) not in node_keys}
    assert set(wanted) - {"numpy"} == expected
    for name in expected:  # the same versions as setup.py
        assert wanted[name][1] == ml[name][1], name
    # NumPy: only kept below 2 where the system's (apt's OpenCV, cv_bridge) is 1.x.
    assert wanted["numpy"][1:] == ("<2", 'python_version < "3.13"')
    assert all(FROM_APT[name] in node_keys for name in ml.keys() - expected)


def install_block():
    text = (REPO / "docs" / "ros2.md").read_text()
    section = text.split("## Install and build", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)[0]


def test_the_docs_install_with_one_rosdep_line_and_one_pip_line():
    commands = [line.split("#")[0].strip() for line in install_block().splitlines()]
    rosdep = [c for c in commands if c.startswith("rosdep install")]
    pip = [c for c in commands if re.search(r"\bpip install\b", c)]
    assert len(rosdep) == 1 and len(pip) == 1, commands
    assert {"--from-paths", "-y", "--ignore-src"} <= set(rosdep[0].split())
    assert "--skip-keys" not in rosdep[0]
    target = pip[0].split("-r", 1)[1].split()[0]
    assert target.startswith("src/ros_mm_perception/")  # the clone under the workspace's src
    assert (REPO / target[len("src/ros_mm_perception/"):]).is_file()


def test_no_cmake_file_uses_what_lyrical_removed():
    for name in PACKAGES[1:]:
        assert "ament_target_dependencies" not in (REPO / name / "CMakeLists.txt").read_text()


# What rclpy 10 (Lyrical) removed, deprecated in earlier releases (rclpy 8.0's source): the
# logger's warn() (warning() stays), the qos_event module and QoSEventHandler, and
# declare_parameter with a name only.
REMOVED_IN_RCLPY_10 = re.compile(
    r"(?<!warnings)\.warn\(|\bqos_event\b|\bQoSEventHandler\b|declare_parameter\(\s*[^,()]+\)")


def test_the_node_uses_no_rclpy_api_that_lyrical_removed():
    package = REPO / "ros_mm_perception"
    files = [*(package / "ros_mm_perception" / "ros").glob("*.py"),
             *(package / "launch").glob("*.py"), *(package / "test").glob("*rclpy*.py")]
    assert len(files) > 5
    found = [f"{path.name}: {line.strip()}" for path in files
             for line in path.read_text().splitlines() if REMOVED_IN_RCLPY_10.search(line)]
    assert not found
    assert REMOVED_IN_RCLPY_10.search('node.get_logger().warn("x")')
    assert REMOVED_IN_RCLPY_10.search("node.declare_parameter('name')")
    assert not REMOVED_IN_RCLPY_10.search('warnings.warn("x") or node.declare_parameter(n, 1)')
