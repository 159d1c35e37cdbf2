"""Output files that appear only when complete: write to a temporary file, rename at the end."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ros_mm_perception.core.errors import UserError


class AtomicFile:
    """A temporary file next to ``path`` that becomes ``path`` on :meth:`commit`.

    The temporary name starts with a dot and ends in ``.partial`` so an interrupted run never leaves
    a file that looks complete; :meth:`abort` removes it.
    """

    def __init__(self, path, mode: str = "wb"):
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError(f"output {self.path} is a folder; give a file name")
        if not self.path.parent.is_dir():
            raise UserError(f"output folder {self.path.parent} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent)
        self.tmp_path = Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp_path, 0o666 & ~umask)  # the permissions of a file created normally
        self.file = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))

    def commit(self) -> Path:
        """Flush, close and rename to the final path (replacing an older file)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        self.file.close()
        self.tmp_path.unlink(missing_ok=True)
