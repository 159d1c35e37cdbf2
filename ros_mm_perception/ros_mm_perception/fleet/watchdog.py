"""Ends every process of a local Ray once the fleet run that started it is gone (SIGKILL too).

``python -m ros_mm_perception.fleet.watchdog TOKEN DRIVER_PID TEMP_DIR`` runs in its own session
and reads its stdin, a pipe whose only writer is the driver: end of file means the driver closed it
or died. Then every process whose environment holds ``ROS_MM_FLEET_RAY=TOKEN`` (the driver sets it
only while ``ray.init`` starts its processes, which pass it to their children) gets SIGTERM, and
SIGKILL after a grace period; finally Ray's temporary folder for the run is removed. Processes are
found by their PID in ``/proc`` (Linux).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from typing import List

MARKER = "ROS_MM_FLEET_RAY"
"""The environment variable that marks the processes of one local Ray."""
GRACE_S = 3.0
"""How long processes have to end after SIGTERM before SIGKILL."""


def marked_pids(token: str, exclude=()) -> List[int]:
    """PIDs of live processes whose environment holds ``MARKER=token``."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:  # gone, or another user's
            continue
    return found


def end_processes(token: str, exclude=()) -> List[int]:
    """SIGTERM the marked processes, SIGKILL those left after :data:`GRACE_S`; returns the PIDs
    still alive."""
    exclude = {os.getpid(), *exclude}
    pids = marked_pids(token, exclude)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + GRACE_S
        while (sig == signal.SIGTERM and time.monotonic() < deadline
               and marked_pids(token, exclude)):
            time.sleep(0.1)
        pids = marked_pids(token, exclude)
        if not pids:
            break
    return pids


def main(argv=None) -> int:
    token, driver, temp_dir = (argv or sys.argv[1:])[:3]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    end_processes(token, exclude={int(driver)})
    shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
