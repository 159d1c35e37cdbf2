"""The offline command line ``ros-mm-perception`` (no ROS needed).

Each subcommand lives in its own module (or sub-package) under :mod:`ros_mm_perception.commands`
and exposes ``add_parser(subparsers)``, which sets ``func`` on its parser; the options and helpers
several commands share come from :mod:`ros_mm_perception.commands.options`, never from another
command. Errors a user can fix are
:class:`UserError`: printed as one line on stderr with exit code 2, never a traceback.

Ctrl-C, SIGTERM and SIGHUP (how systemd, docker and a closed terminal stop a job) all interrupt
the command the same way: its outputs are not committed, one line says so, and the exit status is
128 + the signal number (130, 143, 129). A closed stdout (``| head``) ends the command quietly with
status 141 once its outputs are committed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from typing import List, Optional

from ros_mm_perception import __version__
from ros_mm_perception.core.errors import UserError

COMMANDS = ("classify", "detect", "ask", "caption", "bag", "find", "fleet", "demo", "bench",
            "eval_embedded", "eval_grounding", "eval_memory")
"""Subcommand modules in :mod:`ros_mm_perception.commands`, in help order."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ros-mm-perception",
        description="Language-grounded perception: CLIP zero-shot labels, PaliGemma VQA and "
                    "detection.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"ros_mm_perception.commands.{name}").add_parser(sub)
    return parser


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


def main(argv: Optional[List[str]] = None) -> int:
    # signals can only be set there
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, _raise_interrupted) for sig in STOP_SIGNALS}
        if in_main_thread
        else {}
    )
    command = "ros-mm-perception"
    try:
        args = build_parser().parse_args(argv)
        command = f"ros-mm-perception {args.command}"
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"{command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"{command}: "
              f"{'interrupted' if signum == signal.SIGINT else 'stopped by ' + err.args[0]}",
              file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        _silence_stdout()
        return 128 + signal.SIGPIPE
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush does not complain about the closed
    pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (tests capture it): nothing to silence
