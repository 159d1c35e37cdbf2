#!/usr/bin/env python3
"""Write the parameter surfaces derived from ``PerceptionConfig``: ``config/perception.yaml`` and,
in ``docs/ros2.md``, the parameter table and the list of launch arguments (between marker
comments).

    python3 scripts/generate_param_surfaces.py          # rewrite the files
    python3 scripts/generate_param_surfaces.py --check  # exit 1 if a file would change

``test/test_params.py`` compares the files byte for byte with :func:`surfaces`.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Dict

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ros_mm_perception"
YAML_FILE = PACKAGE / "config" / "perception.yaml"
DOCS_FILE = REPO / "docs" / "ros2.md"
NODE_KEY = "/**/perception"
LAUNCH_ONLY = ("image_topic", "depth_topic", "camera_info_topic", "namespace", "params_file",
               "use_sim_time", "log_level")
"""The launch file's arguments that are no config field (topics and node options)."""


def _describe() -> Dict[str, Dict]:
    sys.path.insert(0, str(PACKAGE))
    from ros_mm_perception.core.config import PerceptionConfig

    return PerceptionConfig.describe()


def yaml_value(value) -> str:
    """A default as YAML that ROS types like the field: ``1.0`` a double, ``1`` an integer."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def type_name(value) -> str:
    if isinstance(value, list):
        return "string[]"
    return {bool: "bool", int: "int", float: "double", str: "string"}[type(value)]


def yaml_text(described: Dict[str, Dict]) -> str:
    lines = ["# Parameters of the perception node: the defaults of PerceptionConfig, written by",
             "# scripts/generate_param_surfaces.py (do not edit by hand; a test compares them).",
             "# The '/**/perception' key matches the node named 'perception' in any namespace.",
             "# Change values at run time with: ros2 param set /perception <name> <value>",
             "# (read-only parameters, marked below, take effect at start-up only).",
             f"{NODE_KEY}:", "  ros__parameters:"]
    for name, spec in described.items():
        notes = [spec["description"]]
        if spec.get("read_only"):
            notes.append("[read-only]")
        if "choices" in spec:
            notes.append("One of: " + ", ".join(spec["choices"]) + ".")
        if "range" in spec:
            notes.append("Range {}..{}.".format(*spec["range"]))
        lines += [f"    # {' '.join(notes)}", f"    {name}: {yaml_value(spec['default'])}"]
    return "\n".join(lines) + "\n"


def parameter_table(described: Dict[str, Dict]) -> str:
    rows = ["| parameter | type | default | run time | description |", "|---|---|---|---|---|"]
    for name, spec in described.items():
        text = spec["description"]
        if "choices" in spec:
            text += " One of: " + ", ".join(spec["choices"]) + "."
        if "range" in spec:
            text += " Range [{}, {}].".format(*spec["range"])
        rows.append(f"| `{name}` | {type_name(spec['default'])} | "
                    f"`{yaml_value(spec['default'])}` | "
                    f"{'no' if spec.get('read_only') else 'yes'} | {text} |")
    return "\n".join(rows) + "\n"


def launch_list(described: Dict[str, Dict]) -> str:
    fields = [name for name, spec in described.items() if spec.get("launch")]
    names = ", ".join(f"`{n}`" for n in (*LAUNCH_ONLY, *fields))
    text = (f"Launch arguments: {names}. The topic arguments remap the node's inputs "
            "(comma-separated, one per camera); the others set the parameter of the same name, "
            "and an empty argument keeps the parameter file's value.")
    return textwrap.fill(text, 100, break_on_hyphens=False, break_long_words=False) + "\n"


def replace_between(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` set
    to ``body``; ValueError when the markers are missing."""
    begin, end = f"<!-- generated: {name} -->\n", f"<!-- end: {name} -->"
    head, found, rest = text.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not (found and found_end):
        raise ValueError(f"{DOCS_FILE.name} lacks the markers {begin.strip()} ... {end}")
    return head + begin + body + end + tail


def surfaces() -> Dict[Path, str]:
    """Each generated file → the text it must hold."""
    described = _describe()
    docs = DOCS_FILE.read_text()
    docs = replace_between(docs, "parameters", parameter_table(described))
    docs = replace_between(docs, "launch arguments", launch_list(described))
    return {YAML_FILE: yaml_text(described), DOCS_FILE: docs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    stale = []
    for path, text in surfaces().items():
        if path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    for path in stale:
        print(f"{'differs' if args.check else 'wrote'}: {path.relative_to(REPO)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
