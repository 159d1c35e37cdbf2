"""The Ray a fleet run uses: a private local one, or a cluster joined within a bounded time.

Local (no address): Ray listens on the loopback interface only (its node address is 127.0.0.1, as
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes it), starts no dashboard, keeps its files in a
temporary folder of its own, and a :mod:`~.watchdog` process ends every Ray process of the run once
the driver is gone, even when the driver is killed with SIGKILL. Ray 2.59 and later also require a
token on a local Ray.

Cluster (``auto`` or ``HOST:PORT``): a short-lived process tries to join first and is stopped after
``connect_timeout_s``, because Ray's own connect retries without end on an address where nothing
answers; an unreachable cluster is then one :class:`UserError` line.

Either way the command's own SIGINT, SIGTERM and SIGHUP handlers are put back once Ray has started
(``ray.init`` replaces the SIGTERM handler with one that exits the process from inside Ray).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from contextlib import contextmanager
from typing import Iterator, Optional

from ros_mm_perception.core.errors import UserError
from ros_mm_perception.fleet.watchdog import MARKER

CONNECT_TIMEOUT_S = 30.0
"""How long joining a Ray cluster may take before the run gives up."""
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PROBE = """
import sys
import ray
try:
    ray.init(address=sys.argv[1], logging_level="error", log_to_driver=False)
except BaseException as err:
    print((str(err).strip().splitlines() or [type(err).__name__])[0])
    sys.exit(1)
ray.shutdown()
"""


@contextmanager
def ray_session(address: Optional[str] = None,
                connect_timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator:
    """``ray`` started (or joined) for the ``with`` block, shut down after it; a Ray that is
    already initialised in this process is used as it is."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    watchdog = None
    if address:
        check_cluster(address, connect_timeout_s)
        start = dict(address=address)
    else:
        watchdog, start = _local_start()
    try:
        try:
            ray.init(include_dashboard=False, logging_level="warning", log_to_driver=False,
                     **start)
        except ConnectionError as err:
            raise UserError(f"cannot join Ray at {address}: {_first_line(err)}") from None
        finally:
            _local_end(start)
            _restore(handlers)
        try:
            yield ray
        finally:
            ray.shutdown()
            _restore(handlers)
    finally:
        if watchdog is not None:
            watchdog.stdin.close()  # the watchdog ends what is left of this Ray
            try:
                watchdog.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


def check_cluster(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A :class:`UserError` unless a Ray cluster at ``address`` can be joined within
    ``timeout_s``."""
    if not timeout_s > 0:
        raise UserError(f"--connect-timeout must be a positive number of seconds, got {timeout_s}")
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, address], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              timeout=timeout_s, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise UserError(f"cannot join Ray at {address}: no Ray cluster answered within "
                        f"{timeout_s:g} s") from None
    if done.returncode != 0:
        why = (done.stdout.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise UserError(f"cannot join Ray at {address}: {why}")


def _local_start():
    """The watchdog process and the ``ray.init`` arguments of a private local Ray."""
    import ray._private.ray_constants as ray_constants

    token = uuid.uuid4().hex
    temp_dir = tempfile.mkdtemp(prefix="rmp-ray-")
    watchdog = subprocess.Popen([sys.executable, "-m", "ros_mm_perception.fleet.watchdog", token,
                                 str(os.getpid()), temp_dir], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    os.environ[MARKER] = token
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read when Ray picks the node address: 127.0.0.1
    return watchdog, dict(_temp_dir=temp_dir)


def _local_end(start) -> None:
    """Undo :func:`_local_start`'s marks once Ray's processes have started (they keep them)."""
    if "_temp_dir" not in start:
        return
    import ray._private.ray_constants as ray_constants

    os.environ.pop(MARKER, None)
    os.environ.pop(LOOPBACK_ENV, None)
    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(LOOPBACK_ENV,
                                                              not ray_constants.IS_WINDOWS_OR_OSX)


def _restore(handlers) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread
    for sig, handler in handlers.items():
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
