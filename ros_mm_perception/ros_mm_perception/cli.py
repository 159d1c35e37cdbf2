"""The offline command line ``ros-mm-perception`` (no ROS needed).

Each subcommand lives in its own module under :mod:`ros_mm_perception.commands` and exposes
``add_parser(subparsers)`` (which sets ``func`` on its parser) . Errors a user can fix are
:class:`UserError`: printed as one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from ros_mm_perception import __version__
from ros_mm_perception.core.errors import UserError

COMMANDS = ("classify", "detect", "ask", "caption", "bag", "demo", "bench", "eval_embedded")
"""Subcommand modules in :mod:`ros_mm_perception.commands`, in help order."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ros-mm-perception",
        description="Language-grounded perception: CLIP zero-shot labels, PaliGemma VQA and detection.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"ros_mm_perception.commands.{name}").add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"ros-mm-perception {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ros-mm-perception {args.command}: interrupted", file=sys.stderr)
        return 130
