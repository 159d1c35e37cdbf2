"""The import rules: only the node layer (ros/) may import ROS; the package's groups import one
way.

Groups, lowest first: the core's root (config, results, errors, devices), core.imaging,
core.models, core.perception, core.memory; above the core: synthetic, messages, offline, fleet,
ros, commands. :data:`ALLOWED` says which groups each may import; imports inside functions count
too, and no module may take part in an import cycle.
"""

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ros_mm_perception"
ROS_ROOTS = ("rclpy", "launch", "launch_ros", "rosidl_runtime_py", "ament_index_python",
             "cv_bridge", "tf2_ros")


def is_ros_module(name: str) -> bool:
    root = name.split(".")[0]
    return root in ROS_ROOTS or root.endswith("_msgs") or root.endswith("_interfaces")


CORE = ("core", "core.imaging", "core.models", "core.perception")
MEMORY = "core.memory"
ALLOWED = {
    "core": {"core"},
    "core.imaging": {"core", "core.imaging"},
    "core.models": {"core", "core.imaging", "core.models"},
    "core.perception": set(CORE),
    MEMORY: {*CORE, MEMORY},
    "synthetic": {*CORE, "synthetic"},
    "messages": {*CORE, MEMORY, "messages"},
    "offline": {*CORE, MEMORY, "synthetic", "messages", "offline"},
    "fleet": {*CORE, MEMORY, "synthetic", "messages", "offline", "fleet"},
    "ros": {*CORE, MEMORY, "messages", "ros"},
    "commands": {*CORE, MEMORY, "synthetic", "messages", "offline", "fleet", "commands"},
}
"""Which groups a group may import (the package's bare ``__init__``, its version, is open to
all)."""


def imported_modules(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def module_name(package: pathlib.Path, path: pathlib.Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group_of(module: str) -> str:
    """``ros_mm_perception.core.models.paligemma`` → ``core.models``; top-level modules are
    ``commands``."""
    parts = module.split(".")[1:]
    if not parts:
        return ""
    if parts[0] == "core":
        return (
            "core." + parts[1]
            if len(parts) > 2
            or (len(parts) == 2 and parts[1] in ("imaging", "models", "perception", "memory"))
            else "core"
        )
    return parts[0] if parts[0] in ALLOWED else "commands"


def imported_package_modules(path: pathlib.Path, modules):
    """The modules of ``modules`` that ``path`` imports: ``from a.b import c`` counts ``a.b.c``
    when that is a module, else ``a.b``; imports inside functions count too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            subs = [f"{node.module}.{alias.name}" for alias in node.names]
            yield from ([m for m in subs if m in modules] or [node.module])


def import_graph(package: pathlib.Path):
    """Module → the package's modules it imports."""
    modules = {module_name(package, p): p for p in package.rglob("*.py")}
    return {name: set(imported_package_modules(path, modules)) - {name}
            for name, path in modules.items()}


def layer_violations(graph):
    return sorted(f"{src} imports {dst}" for src, dsts in graph.items() for dst in dsts
                  if group_of(dst) and group_of(dst) not in ALLOWED[group_of(src)])


SHARED_COMMAND_MODULE = "options"
"""The one module of shared options and helpers that every command may import."""


def command_of(module: str):
    """``ros_mm_perception.commands.bench.harness`` → ``bench``; None outside the commands."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "commands" else None


def command_cross_imports(graph):
    """Commands (a module or sub-package of ``commands``) importing another command; only the
    shared options module is open to all."""
    return sorted(f"{src} imports {dst}" for src, dsts in graph.items() for dst in dsts
                  if command_of(src) and command_of(dst)
                  and command_of(dst) not in (command_of(src), SHARED_COMMAND_MODULE))


def import_cycles(graph):
    """Each import cycle once, as the list of its modules (Tarjan's strongly connected
    components)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_only_node_layer_imports_ros():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "ros":
            continue
        offenders += [f"{path.relative_to(PACKAGE)}: {m}"
                      for m in imported_modules(path) if is_ros_module(m)]
    assert not offenders, "ROS imports outside ros/: " + ", ".join(offenders)


def test_rule_detects_violations(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import rclpy\nfrom vision_msgs.msg import Detection2D\nfrom . import sibling\n"
    )
    assert [m for m in imported_modules(bad) if is_ros_module(m)] == ["rclpy", "vision_msgs.msg"]


def test_groups_import_one_way():
    graph = import_graph(PACKAGE)
    assert {group_of(m) for m in graph} >= set(ALLOWED), "every group has modules"
    assert not layer_violations(graph)


def test_no_command_imports_another_command():
    assert not command_cross_imports(import_graph(PACKAGE))


def test_command_rule_catches_a_command_importing_another(tmp_path):
    package = tmp_path / "ros_mm_perception"
    files = {
        "__init__.py": "",
        "commands/__init__.py": "",
        "commands/options.py": "",
        "commands/ask.py": "from ros_mm_perception.commands.options import x\n",
        "commands/caption.py": "def f():\n    from ros_mm_perception.commands.ask import load\n",
        "commands/bench/__init__.py": "from ros_mm_perception.commands.bench import harness\n",
        "commands/bench/harness.py": "from ros_mm_perception.commands import options\n",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    assert command_cross_imports(import_graph(package)) == [
        "ros_mm_perception.commands.caption imports ros_mm_perception.commands.ask"]


def test_no_import_cycle():
    assert import_cycles(import_graph(PACKAGE)) == []


def test_layer_and_cycle_checks_catch_violations(tmp_path):
    package = tmp_path / "ros_mm_perception"
    files = {
        "__init__.py": "",
        "core/__init__.py": "",
        # root → higher
        "core/config.py": "from ros_mm_perception.core.perception import pipeline\n",
        "core/perception/__init__.py": "",
        "core/perception/pipeline.py": "import ros_mm_perception.core.config\n",
        "core/imaging/__init__.py": "",
        # lazy, upward
        "core/imaging/codec.py": "def f():\n    from ros_mm_perception.offline import runner\n",
        "offline/__init__.py": "",
        "offline/runner.py": "from ros_mm_perception.core.imaging import codec\n",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    graph = import_graph(package)
    assert layer_violations(graph) == [
        "ros_mm_perception.core.config imports ros_mm_perception.core.perception.pipeline",
        "ros_mm_perception.core.imaging.codec imports ros_mm_perception.offline.runner",
    ]
    assert import_cycles(graph) == [
        ["ros_mm_perception.core.config", "ros_mm_perception.core.perception.pipeline"],
        ["ros_mm_perception.core.imaging.codec", "ros_mm_perception.offline.runner"],
    ]


def test_importing_every_core_module_loads_no_ros():
    modules = sorted(module_name(PACKAGE, p) for p in (PACKAGE / "core").rglob("*.py"))
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "print([m for m in sys.modules if m.split('.')[0] in ('rclpy', 'launch') or "
            "m.split('.')[0].endswith('_msgs')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
