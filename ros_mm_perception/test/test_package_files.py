"""Package metadata: package.xml files, declared dependencies, installed data files, launch files,
.srv files."""

import ast
import pathlib
import py_compile
import re
import sys

import pytest
import setuptools
from catkin_pkg.package import parse_package
from rosbags.typesys import get_types_from_msg

REPO = pathlib.Path(__file__).resolve().parents[2]
PKG_DIR = REPO / "ros_mm_perception"
IFACE_DIR = REPO / "ros_mm_perception_interfaces"
BRINGUP_DIR = REPO / "ros_mm_perception_bringup"
SIMULATION_AND_VIEW = {"ros_gz_sim", "ros_gz_bridge", "rviz2"}
OWN = {"ros_mm_perception"}

# Import name → rosdep key (package.xml) for modules a ROS install provides.
ROSDEP = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
          "scipy": "python3-scipy"}
ROS_PACKAGE_SUFFIXES = ("_msgs", "_interfaces")
ROS_PACKAGES = {"rclpy", "rcl_interfaces", "builtin_interfaces", "launch", "launch_ros",
                "ament_index_python", "tf2_ros"}
# Import name → ROS package name where they differ.
ROS_PACKAGE_OF = {"tf2_ros": "tf2_ros_py"}
# Import name → PyPI distribution (setup.py) for everything pip installs (ML stack, bag tools).
PIP = {"numpy": "numpy", "cv2": "opencv-python-headless", "yaml": "pyyaml", "scipy": "scipy",
       "torch": "torch", "torchvision": "torchvision", "open_clip": "open_clip_torch",
       "timm": "timm", "transformers": "transformers", "tokenizers": "tokenizers",
       "safetensors": "safetensors",
       "PIL": "pillow", "tqdm": "tqdm", "mcap": "mcap", "mcap_ros2": "mcap-ros2-support",
       "rosbags": "rosbags", "ray": "ray", "skimage": "scikit-image", "pycocotools": "pycocotools"}


def is_ros_package(root: str) -> bool:
    return root in ROS_PACKAGES or root.endswith(ROS_PACKAGE_SUFFIXES)


def import_roots(paths):
    roots = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                if root not in sys.stdlib_module_names and root not in OWN:
                    roots.setdefault(root, path.relative_to(REPO))
    return roots


def setup_kwargs(monkeypatch):
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    monkeypatch.chdir(PKG_DIR)
    exec(compile((PKG_DIR / "setup.py").read_text(), "setup.py", "exec"), {"__name__": "__main__"})
    return captured


def requirement_names(requirements):
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def exec_keys(package):
    return {d.name for d in package.exec_depends + package.build_export_depends}


@pytest.fixture(scope="module")
def packages():
    return parse_package(str(PKG_DIR / "package.xml")), parse_package(str(IFACE_DIR
                                                                          / "package.xml"))


def test_package_xml_files_parse(packages):
    product, interfaces = packages
    assert (product.name, interfaces.name) == ("ros_mm_perception", "ros_mm_perception_interfaces")
    assert product.package_format == 3 and interfaces.package_format == 3
    assert product.get_build_type() == "ament_python"
    assert interfaces.get_build_type() == "ament_cmake"
    assert {"ament_cmake", "rosidl_default_generators"} <= {d.name
                                                            for d in interfaces.buildtool_depends}
    assert "rosidl_default_runtime" in {d.name for d in interfaces.exec_depends}
    assert "rosidl_interface_packages" in {g.name for g in interfaces.member_of_groups}
    assert product.version == interfaces.version


def test_every_import_is_declared(packages, monkeypatch):
    product, _ = packages
    code = list((PKG_DIR / "ros_mm_perception").rglob("*.py")) + list((PKG_DIR
                                                                       / "launch").glob("*.py"))
    roots = import_roots(code)
    kw = setup_kwargs(monkeypatch)
    pip = requirement_names(kw["install_requires"]
                            + [r for extra in kw["extras_require"].values() for r in extra])
    declared_ros = exec_keys(product)
    problems = []
    for root, where in sorted(roots.items()):
        if is_ros_package(root):
            key = ROS_PACKAGE_OF.get(root, root)
            if key not in declared_ros:
                problems.append(f"{root} ({where}) needs <exec_depend>{key}</exec_depend> in "
                                "package.xml")
            continue
        if root not in PIP:
            problems.append(f"{root} ({where}) is not in this test's PIP/ROSDEP tables: declare "
                            "it, then add it")
            continue
        if PIP[root].lower() not in pip:
            problems.append(f"{root} ({where}) needs {PIP[root]} in setup.py install_requires or "
                            "extras")
        if root in ROSDEP and ROSDEP[root] not in declared_ros:
            problems.append(f"{root} ({where}) needs <exec_depend>{ROSDEP[root]}</exec_depend> "
                            "in package.xml")
    assert not problems, "\n".join(problems)


def test_node_imports_ros_only_from_the_node_layer():
    ros_dir = PKG_DIR / "ros_mm_perception" / "ros"
    outside = [p
               for p in (PKG_DIR / "ros_mm_perception").rglob("*.py") if ros_dir not in p.parents]
    assert not [r for r in import_roots(outside) if is_ros_package(r)]
    # the message packages are imported by name (test_every_message_package_of_the_type_table_...)
    assert {"rclpy", "ros_mm_perception_interfaces"} <= set(import_roots(ros_dir.rglob("*.py")))


def test_setup_installs_launch_config_and_resource_files(monkeypatch):
    kw = setup_kwargs(monkeypatch)
    installed = {(dest, pathlib.Path(src).as_posix()) for dest, files in kw["data_files"]
                 for src in files}
    expected = [("share/ament_index/resource_index/packages", "resource/ros_mm_perception"),
                ("share/ros_mm_perception", "package.xml")]
    for folder in ("launch", "config"):
        files = sorted(p for p in (PKG_DIR / folder).iterdir() if p.is_file())
        assert files, folder
        expected += [(f"share/ros_mm_perception/{folder}", f"{folder}/{p.name}") for p in files]
    missing = [e for e in expected if e not in installed]
    assert not missing, f"not installed by setup.py data_files: {missing}"
    scripts = kw["entry_points"]["console_scripts"]
    assert "perception_node = ros_mm_perception.ros.perception_node:main" in scripts


def test_entry_point_targets_exist():
    tree = ast.parse((PKG_DIR / "ros_mm_perception" / "ros" / "perception_node.py").read_text())
    assert "main" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    cfg = (PKG_DIR / "setup.cfg").read_text()
    assert "install_scripts=$base/lib/ros_mm_perception" in cfg  # where `ros2 run` looks


@pytest.mark.parametrize("launch_file", sorted([*(PKG_DIR / "launch").glob("*.launch.py"),
                                                *(BRINGUP_DIR / "launch").glob("*.launch.py")]),
                         ids=lambda p: f"{p.parents[1].name}/{p.name}")
def test_launch_files_compile_and_define_a_description(launch_file, tmp_path):
    py_compile.compile(str(launch_file), cfile=str(tmp_path / "out.pyc"), doraise=True)
    tree = ast.parse(launch_file.read_text())
    assert "generate_launch_description" in {n.name
                                             for n in tree.body if isinstance(n, ast.FunctionDef)}


def parse_srv(path):
    """(request fields, response fields) as {name: type} via rosbags' .msg parser."""
    halves = path.read_text().split("\n---\n")
    assert len(halves) == 2, f"{path.name} must have exactly one '---' separator"
    out = []
    for half, part in zip(halves, ("Request", "Response")):
        name = f"ros_mm_perception_interfaces/msg/{path.stem}_{part}"
        (_, fields), = get_types_from_msg(half, name).values()
        out.append({field: spec for field, spec in fields})
    return out


def type_name(spec):
    kind, detail = spec
    if kind.name == "SEQUENCE":
        return type_name(detail[0]) + "[]"
    return detail[0] if kind.name == "BASE" else detail


SRV_CONTRACT = {
    "AskQuestion": ({"camera": "string", "image": "sensor_msgs/msg/Image", "question": "string"},
                    {"answer": "string", "header": "std_msgs/msg/Header", "success": "bool",
                     "message": "string"}),
    "GroundPhrases": ({"camera": "string", "image": "sensor_msgs/msg/Image", "phrases": "string[]",
                       "score_threshold": "float64"},
                      {"detections": "vision_msgs/msg/Detection2DArray",
                       "detections_3d": "vision_msgs/msg/Detection3DArray", "success": "bool",
                       "message": "string"}),
    "ClassifyImage": ({"camera": "string", "image": "sensor_msgs/msg/Image", "labels": "string[]",
                       "top_k": "uint16"},
                      {"classification": "vision_msgs/msg/Classification", "success": "bool",
                       "message": "string"}),
    "FindObjects": ({"phrases": "string[]", "max_results": "uint32", "min_confidence": "float64",
                     "max_age_s": "float64", "point": "geometry_msgs/msg/Point",
                     "radius": "float64", "include_gone": "bool"},
                    {"header": "std_msgs/msg/Header",
                     "objects": "ros_mm_perception_interfaces/msg/RememberedObject[]",
                     "success": "bool", "message": "string"}),
    "ForgetObjects": ({"ids": "uint64[]", "all": "bool"},
                      {"forgotten": "uint64[]", "success": "bool", "message": "string"}),
}
MSG_CONTRACT = {
    "RememberedObject": {"id": "uint64", "phrase": "string", "match": "float64",
                         "pose": "geometry_msgs/msg/PoseWithCovariance",
                         "size": "geometry_msgs/msg/Vector3",
                         "first_seen": "builtin_interfaces/msg/Time",
                         "last_seen": "builtin_interfaces/msg/Time",
                         "observations": "uint32", "confidence": "float64", "state": "string"},
}


@pytest.mark.parametrize("name", sorted(SRV_CONTRACT))
def test_srv_files_parse_with_the_contract_fields(name):
    request, response = parse_srv(IFACE_DIR / "srv" / f"{name}.srv")
    want_request, want_response = SRV_CONTRACT[name]
    assert {k: type_name(v) for k, v in request.items()} == want_request
    assert {k: type_name(v) for k, v in response.items()} == want_response


@pytest.mark.parametrize("name", sorted(MSG_CONTRACT))
def test_msg_files_parse_with_the_contract_fields(name):
    path = IFACE_DIR / "msg" / f"{name}.msg"
    name_in_store = f"ros_mm_perception_interfaces/msg/{name}"
    (_, fields), = get_types_from_msg(path.read_text(), name_in_store).values()
    assert {field: type_name(spec) for field, spec in fields} == MSG_CONTRACT[name]


def test_score_threshold_defaults_to_the_node_parameter_sentinel():
    text = (IFACE_DIR / "srv" / "GroundPhrases.srv").read_text()
    assert re.search(r"^float64 score_threshold -1\.0$", text, re.M)


def test_interface_build_lists_every_srv_and_its_dependencies(packages):
    _, interfaces = packages
    cmake = (IFACE_DIR / "CMakeLists.txt").read_text()
    srv_files = sorted(p.name for p in (IFACE_DIR / "srv").glob("*.srv"))
    assert (
        sorted(re.findall(r'"srv/(\w+\.srv)"', cmake))
        == srv_files
        == sorted(f"{n}.srv" for n in SRV_CONTRACT)
    )
    msg_files = sorted(p.name for p in (IFACE_DIR / "msg").glob("*.msg"))
    listed = sorted(re.findall(r'"msg/(\w+\.msg)"', cmake))
    assert listed == msg_files == sorted(f"{n}.msg" for n in MSG_CONTRACT)
    fields = [t for req, resp in SRV_CONTRACT.values() for t in [*req.values(), *resp.values()]]
    fields += [t for msg in MSG_CONTRACT.values() for t in msg.values()]
    used = {t.split("/")[0] for t in fields if "/" in t} - {interfaces.name}
    deps = set(re.search(r"DEPENDENCIES([^)]*)\)", cmake).group(1).split())
    assert used == deps == {"builtin_interfaces", "geometry_msgs", "sensor_msgs", "std_msgs",
                            "vision_msgs"}
    declared = {d.name for d in interfaces.build_depends} & {d.name
                                                             for d in interfaces.exec_depends}
    assert used <= declared
    for pkg in used:
        assert f"find_package({pkg} REQUIRED)" in cmake


def test_node_uses_exactly_the_declared_services():
    tree = ast.parse((PKG_DIR / "ros_mm_perception" / "ros" / "perception_node.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "ros_mm_perception_interfaces.srv" for a in n.names}
    assert imported == set(SRV_CONTRACT)


def test_node_package_leaves_simulation_and_rviz_to_the_bringup_package(packages):
    product, _ = packages
    assert not SIMULATION_AND_VIEW & {d.name for d in product.exec_depends + product.build_depends}
    assert not list((PKG_DIR / "launch").glob("sim*")) and not list(
        (PKG_DIR / "config").glob("*.rviz")
    )
    bringup = parse_package(str(BRINGUP_DIR / "package.xml"))
    assert (bringup.name, bringup.package_format, bringup.get_build_type()) == (
        "ros_mm_perception_bringup", 3, "ament_cmake")
    assert bringup.version == product.version
    assert SIMULATION_AND_VIEW | {"ros_mm_perception", "launch", "launch_ros"} <= {
        d.name for d in bringup.exec_depends
    }
    cmake = (BRINGUP_DIR / "CMakeLists.txt").read_text()
    assert "project(ros_mm_perception_bringup)" in cmake and "ament_package()" in cmake
    assert re.search(r"install\(DIRECTORY launch config DESTINATION share/\$\{PROJECT_NAME\}\)",
                     cmake)
    sim = (BRINGUP_DIR / "launch" / "sim.launch.py").read_text()
    assert (BRINGUP_DIR / "config" / "perception.rviz").is_file()
    # the RViz file of this package
    assert 'FindPackageShare("ros_mm_perception_bringup"), "config"' in sim
    # every package the sim launch file finds is declared by the bringup package
    found = set(re.findall(r'FindPackageShare\("(\w+)"\)',
                           sim)) | set(re.findall(r'package="(\w+)"', sim))
    assert found <= {d.name for d in bringup.exec_depends} | {"ros_mm_perception_bringup"}


def test_wheel_holds_the_embedded_model_without_setuptools_warnings(tmp_path):
    """``pip wheel`` of the node package (as colcon's setuptools build does): the model files are
    in it."""
    import shutil
    import subprocess
    import zipfile

    pytest.importorskip("pip")
    major = int(setuptools.__version__.split(".")[0])
    if major < 70:
        pytest.importorskip("wheel")  # older setuptools build wheels through the wheel package
    src = tmp_path / "src"
    shutil.copytree(PKG_DIR, src,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", "test"))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-v",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    for warning in ("would be ignored", "is absent from the `packages`", "as data is deprecated"):
        assert warning not in log, warning
    wheel, = (tmp_path / "dist").glob("ros_mm_perception-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = PKG_DIR / "ros_mm_perception" / "data"
    expected = {f"ros_mm_perception/data/{p.relative_to(data).as_posix()}" for p in data.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert {"ros_mm_perception/data/embedded_clip/open_clip_model.safetensors",
            "ros_mm_perception/data/embedded_clip/open_clip_config.json"} <= expected
    assert expected <= names, sorted(expected - names)
    assert "ros_mm_perception/ros/perception_node.py" in names
    assert not [n for n in names if "__pycache__" in n]


def test_scikit_image_is_an_extra_for_training_and_the_unseen_evaluation(monkeypatch):
    """A plain ``pip install`` pulls no scikit-image; the ``photos`` extra (and the checkout's
    environment, for the tests) does."""
    kw = setup_kwargs(monkeypatch)
    assert "scikit-image" not in requirement_names(kw["install_requires"])
    holders = {name for name, reqs in kw["extras_require"].items()
               if "scikit-image" in requirement_names(reqs)}
    assert holders == {"photos"}
    assert re.search(r"\[[a-z,]*\bphotos\b[a-z,]*\]",
                     (REPO / "scripts" / "setup_env.sh").read_text())


def test_every_message_package_of_the_type_table_is_a_run_dependency(packages):
    """The node imports its message classes by the names of messages/names.py, not by import
    lines."""
    from ros_mm_perception.messages.names import TYPE_NAMES

    product, _ = packages
    used = {name.split("/")[0] for name in TYPE_NAMES.values()}
    assert used and used <= exec_keys(product), sorted(used - exec_keys(product))


def test_from_the_repository_root_the_real_package_is_imported():
    """Not the ament folder of the same name as a namespace package (setup.py's package_dir keeps
    editable installs a plain path entry, without setuptools' deprecated compat mode)."""
    import subprocess

    code = "import ros_mm_perception as p; print(p.__file__)"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("ros_mm_perception/__init__.py"), run.stdout
    assert "compat" not in (REPO / "scripts" / "setup_env.sh").read_text()
