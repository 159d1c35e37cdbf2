"""Outputs that appear all together, only when complete: stage every file, commit all or none.

:class:`OutputStaging` is the one API for this (the ``bag``, ``demo`` and fleet runs use it)::

    staging = OutputStaging(inputs=[recording])   # paths the run reads: never written
    jsonl = staging.stage("frames.jsonl", "w")    # a StagedFile; write to jsonl.file
    ...
    staging.commit()                              # every staged file appears under its name
    # or, on any failure: staging.abort()         # none appears, no temporary file remains

Each file is staged as a hidden ``.<name>.<random>.partial`` temporary file in the folder of its
target and renamed onto it on commit; a symlinked output path is resolved first, so the link is
kept and its target is written (atomically, in the target's folder). :meth:`OutputStaging.stage`
checks every path with :func:`~.output_paths.check_output_path`: never an input, a file inside an
input folder, or a path another output of the run already uses.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import List, Sequence

from ros_mm_perception.core.errors import UserError
from ros_mm_perception.offline.output_paths import (InputFiles, check_output_path, output_target,
                                                    write_error)


class StagedFile:
    """A temporary file that becomes ``target`` when its :class:`OutputStaging` commits.

    ``path`` is the path as the user gave it, ``target`` the file that is written (``path`` with
    its symlinks resolved), ``file`` the open file object to write to.
    """

    def __init__(self, path, target: Path, mode: str, keep_suffix: bool = False):
        self.path, self.target = Path(path), target
        suffix = ".partial" + (target.suffix if keep_suffix else "")
        try:
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix,
                                           dir=target.parent)
            except OSError as err:
                if err.errno != errno.ENAMETOOLONG:
                    raise
                # the name fits but the longer temporary name does not: use a short one
                fd, tmp = tempfile.mkstemp(prefix=".", suffix=suffix, dir=target.parent)
        except OSError as err:
            raise UserError(write_error(self.path, err)) from None
        self.tmp_path = Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp_path, 0o666 & ~umask)  # the permissions of a file created normally
        self.file = _OutputStream(
            os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})), self.path
        )

    def finish(self) -> None:
        """Flush the data to disk and close the file (a full disk shows up here at the latest)."""
        if not self.file.closed:
            self.file.flush()
            self.file.fsync()
            self.file.close()

    def discard(self) -> None:
        """Close and delete the temporary file."""
        try:
            self.file.close()
        except UserError:
            pass  # flushing the rest failed (a full disk): the file goes anyway
        self.tmp_path.unlink(missing_ok=True)


class _OutputStream:
    """A file object whose write failures are one-line :class:`UserError` naming the output."""

    def __init__(self, file, path: Path):
        self._file, self._path = file, path

    @property
    def closed(self) -> bool:
        return self._file.closed

    def _call(self, method, *args):
        try:
            return method(*args)
        except OSError as err:
            raise UserError(write_error(self._path, err)) from None

    def write(self, data):
        return self._call(self._file.write, data)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._call(self._file.flush)

    def fsync(self) -> None:
        self._call(os.fsync, self._file.fileno())

    def close(self) -> None:
        self._call(self._file.close)


class OutputStaging:
    """The output files of one run, made visible together by :meth:`commit` or not at all.

    ``inputs`` are the files and folders the run reads; staging one of them, a file inside one, or
    a second output on a path already staged is a :class:`UserError` (nothing is created).
    Use it as a context manager to abort on any exception.
    """

    def __init__(self, inputs: Sequence = ()):
        self.inputs = InputFiles(inputs)
        self.files: List[StagedFile] = []

    def protect(self, path) -> None:
        """Add ``path`` to the inputs that no output may write."""
        self.inputs.add(path)

    def check(self, path) -> Path:
        """The file an output ``path`` writes, after the checks of the class docstring; for a file
        the run writes in place (an object memory) as well as for the staged ones."""
        target = output_target(path)
        check_output_path(path, target, self.inputs, [(f.path, f.target) for f in self.files])
        return target

    def stage(self, path, mode: str = "wb", keep_suffix: bool = False) -> StagedFile:
        """A new staged file for the output ``path`` (after the checks of the class docstring).

        ``keep_suffix`` ends the temporary name with the target's suffix as well, for a file that
        is read back before the commit by a reader that goes by the suffix (the demo's recording).
        """
        target = self.check(path)
        staged = StagedFile(path, target, mode, keep_suffix)
        self.files.append(staged)
        return staged

    def commit(self) -> List[Path]:
        """Finish every staged file, then rename them all onto their targets; return the paths.

        A failure while finishing (a full disk) commits nothing; a failure while renaming puts the
        files already renamed back as they were (older files under those names are restored).
        """
        try:
            for staged in self.files:
                staged.finish()
        except BaseException:
            self.abort()
            raise
        done = []
        try:
            for staged in self.files:
                backup = _backup(staged.target)
                try:
                    os.replace(staged.tmp_path, staged.target)
                except BaseException:
                    if backup:
                        backup.unlink(missing_ok=True)
                    raise
                done.append((staged, backup))
        except BaseException as err:
            for renamed, backup in reversed(done):
                if backup:
                    os.replace(backup, renamed.target)
                else:
                    renamed.target.unlink(missing_ok=True)
            self.abort()
            if isinstance(err, OSError):
                raise UserError(write_error(staged.path, err)) from None
            raise
        for _, backup in done:
            if backup:
                backup.unlink(missing_ok=True)
        files, self.files = self.files, []
        return [f.path for f in files]

    def abort(self) -> None:
        """Delete every staged file; nothing appears."""
        files, self.files = self.files, []
        for staged in files:
            staged.discard()

    def __enter__(self) -> "OutputStaging":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def _backup(target: Path):
    """A hard link to the file ``target`` replaces, so a failed commit can put it back (None if
    none)."""
    if not target.is_file():
        return None
    backup = target.with_name(f".{target.name}.{os.getpid()}.backup.partial")
    try:
        backup.unlink(missing_ok=True)
        os.link(target, backup)
    except OSError:
        return None  # the file system has no hard links: the old file cannot be restored
    return backup
