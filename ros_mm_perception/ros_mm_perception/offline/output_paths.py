"""Where outputs may go: never onto an input, into an input folder, or onto another output.

Paths are compared as the file system sees them, however they are spelled: resolved (relative
paths, ``..`` and symlinks) and by file identity ``(st_dev, st_ino)`` (hard links).
:class:`~.atomic.OutputStaging` runs these checks for every output it stages.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterable, List, Set, Tuple

from ros_mm_perception.core.errors import UserError

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "the file name is too long for the file system",
    errno.ENOENT: "its folder does not exist",
}


def write_error(path, err: OSError) -> str:
    """One line saying why output ``path`` cannot be written."""
    return f"cannot write {path}: {_REASONS.get(err.errno, err.strerror or str(err))}"


def _identity(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class InputFiles:
    """The files and folders a run reads: resolved paths and file identities."""

    def __init__(self, paths: Iterable = ()):
        self.files: Set[Path] = set()
        self.folders: Set[Path] = set()
        self.identities: Set[Tuple[int, int]] = set()
        for path in paths:
            self.add(path)

    def add(self, path) -> None:
        """Protect ``path``: a file, or a folder and every file in it."""
        resolved = Path(os.path.realpath(path))
        if resolved.is_dir():
            self.folders.add(resolved)
            for root, _dirs, names in os.walk(resolved):
                for name in names:
                    self._add_file(Path(root) / name)
        else:
            self._add_file(Path(path))

    def _add_file(self, path: Path) -> None:
        self.files.add(Path(os.path.realpath(path)))
        identity = _identity(path)
        if identity:
            self.identities.add(identity)

    def conflict(self, target: Path):
        """The input ``target`` would write over or into, or None."""
        if target in self.files:
            return target
        for folder in self.folders:
            if target == folder or folder in target.parents:
                return folder
        identity = _identity(target)
        if identity and identity in self.identities:
            return target
        return None


def output_target(path) -> Path:
    """The file an output ``path`` writes: symlinks followed (a link's target, even a dangling
    one)."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise UserError(f"output {path} is a folder; give a file name")
    target = Path(os.path.realpath(path))
    try:
        if target.is_dir():
            raise UserError(f"output {path} is a folder; give a file name")
        if not target.parent.is_dir():
            raise UserError(f"output folder {path.parent} does not exist")
        if len(os.fsencode(target.name)) > os.pathconf(target.parent, "PC_NAME_MAX"):
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    except OSError as err:  # e.g. a name too long for the file system
        raise UserError(write_error(path, err)) from None
    return target


def check_output_path(path, target: Path, inputs: InputFiles,
                      others: List[Tuple[Path, Path]]) -> None:
    """A :class:`UserError` if output ``path`` (writing ``target``) is an input, lies in an input
    folder, or is the same file as one of ``others`` (``(path, target)`` of the run's other
    outputs)."""
    conflict = inputs.conflict(target)
    if conflict is not None:
        where = (
            "is inside the input folder"
            if conflict in inputs.folders
            else "would overwrite the input"
        )
        raise UserError(f"output {path} {where} {conflict}; write it somewhere else")
    identity = _identity(target)
    for other, other_target in others:
        if other_target == target or (identity and identity == _identity(other_target)):
            raise UserError(
                f"outputs {other} and {path} are the same file; give each its own path"
            )
