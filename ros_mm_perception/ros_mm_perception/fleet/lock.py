"""One fleet run per output folder: an exclusive lock on ``DIR/.fleet-lock``.

The lock is a kernel file lock (``flock``), so it is released when its run ends in any way, SIGKILL
included; the file also names the run (pid, host, start time) for the message a second run gives.
A lock file whose run is gone is taken over with a note. Local file systems only: a folder shared
over NFS by several machines is not protected.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Dict

from ros_mm_perception.core.errors import UserError

LOCK_NAME = ".fleet-lock"


class RunLock:
    """Held from :meth:`acquire` to :meth:`release`; a :class:`UserError` when another run holds
    it."""

    def __init__(self, out_dir: Path, report: Callable[[str], None] = lambda _m: None):
        self.path = Path(out_dir) / LOCK_NAME
        self.report = report
        self._fd = -1

    def acquire(self) -> "RunLock":
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:  # a read-only or foreign output folder
                raise UserError(f"cannot lock {self.path}: {err.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started " \
                      f"{holder.get('started', '?')}" if holder else "another process"
                raise UserError(f"another fleet run ({who}) is writing to {self.path.parent}; "
                                f"wait for it to end or give another --out") from None
            try:  # the file may have been removed by the run that held it, between open and flock
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read(fd)
        if stale:
            self.report(f"{self.path.parent}: taking over the lock of an earlier fleet run that "
                        f"is no longer running (pid {stale.get('pid', '?')} on "
                        f"{stale.get('host', '?')}, started {stale.get('started', '?')})")
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file, then let go of the lock."""
        if self._fd < 0:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *_exc) -> None:
        self.release()


def _read(fd: int) -> Dict:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
