"""``perception_node``'s ``main()`` exits on Ctrl-C whenever it comes (skipped where ROS 2 is not
installed).

A Ctrl-C raises KeyboardInterrupt in the main thread at whatever line it is running. Had the main
thread started the executor's pool threads, one landing just after a pool thread started would
leave that thread unregistered and never told to stop, and the process would hang at exit (seen on
Humble). The script below raises KeyboardInterrupt in the main thread right after it starts any
pool thread, keeps the executor alive past ``main()`` (as it was in the hang), and sends a real
SIGINT once the executor runs.
"""

import subprocess
import sys

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs")
pytest.importorskip("ros_mm_perception_interfaces")

LIMIT_S = 120
SCRIPT = """
import os, signal, sys, threading

start = threading.Thread.start

def start_then_interrupt(self):
    start(self)
    if not self.name.startswith("ThreadPoolExecutor"):
        return
    if threading.current_thread() is threading.main_thread():
        raise KeyboardInterrupt  # a Ctrl-C just after the thread started
    if not getattr(start_then_interrupt, "armed", False):
        start_then_interrupt.armed = True
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()

threading.Thread.start = start_then_interrupt

import rclpy.executors

# the executor outlives main(), as it did in the hang seen (nothing then wakes its idle threads)
kept = []
init = rclpy.executors.MultiThreadedExecutor.__init__

def init_and_keep(self, *args, **kwargs):
    init(self, *args, **kwargs)
    kept.append(self)

rclpy.executors.MultiThreadedExecutor.__init__ = init_and_keep
from ros_mm_perception.ros.perception_node import main

main(["--ros-args", "-p", "clip_model:=" + sys.argv[1], "-p", "device:=cpu",
      "-p", "precision:=fp32"])
"""


def test_ctrl_c_exits_even_right_after_a_pool_thread_starts(tiny_clip_dir):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tiny_clip_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"the node did not exit within {LIMIT_S} s of Ctrl-C:\n{output[-2000:]}")
    assert proc.returncode == 0, output[-2000:]
    assert "active: listening" in output
