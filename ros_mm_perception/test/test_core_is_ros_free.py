"""The import rule: only the node layer (ros/) may import rclpy, launch or ROS message packages."""

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ros_mm_perception"
ROS_ROOTS = ("rclpy", "launch", "launch_ros", "rosidl_runtime_py", "ament_index_python", "cv_bridge")


def is_ros_module(name: str) -> bool:
    root = name.split(".")[0]
    return root in ROS_ROOTS or root.endswith("_msgs") or root.endswith("_interfaces")


def imported_modules(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_only_node_layer_imports_ros():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "ros":
            continue
        offenders += [f"{path.relative_to(PACKAGE)}: {m}" for m in imported_modules(path) if is_ros_module(m)]
    assert not offenders, "ROS imports outside ros/: " + ", ".join(offenders)


def test_rule_detects_violations(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import rclpy\nfrom vision_msgs.msg import Detection2D\nfrom . import sibling\n")
    assert [m for m in imported_modules(bad) if is_ros_module(m)] == ["rclpy", "vision_msgs.msg"]


def test_importing_every_core_module_loads_no_ros():
    modules = sorted(f"ros_mm_perception.core.{p.stem}" for p in (PACKAGE / "core").glob("*.py")
                     if p.stem != "__init__")
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "print([m for m in sys.modules if m.split('.')[0] in ('rclpy', 'launch') or "
            "m.split('.')[0].endswith('_msgs')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
