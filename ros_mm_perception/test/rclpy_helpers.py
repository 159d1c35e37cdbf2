"""What the tests on a real ROS 2 graph share: an inbox per topic and the running perception node.

Import it after ``pytest.importorskip("rclpy")``: the tests that use it skip where ROS 2 is absent.
"""

import contextlib
import threading

LIMIT_S = 120.0
"""Longest wait for anything on the graph (generous: a busy machine loads models slowly)."""

NODE_PARAMETERS = {"device": "cpu", "precision": "fp32", "detect_phrases": ["red box"],
                   "score_threshold": 0.0}
"""The node's parameters in these tests, besides its CLIP model: CPU, fp32, one phrase, every
box."""


class Inbox:
    """Messages of one topic (a subscription callback), with an event per arrival and a condition
    to wait for one that matches."""

    def __init__(self):
        self.messages, self.event, self.cond = [], threading.Event(), threading.Condition()

    def __call__(self, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()
        self.event.set()

    def wait_for(self, predicate, start=0):
        """The first message from index ``start`` on that satisfies ``predicate``, waiting up to
        :data:`LIMIT_S`."""
        found = []

        def check():
            found[:] = [m for m in self.messages[start:] if predicate(m)][:1]
            return bool(found)

        with self.cond:
            assert self.cond.wait_for(check, LIMIT_S), "no matching message arrived"
        return found[0]


def call(probe, srv_type, name, request):
    """``request`` to the service ``name`` from ``probe``: its response, each wait up to
    :data:`LIMIT_S`."""
    client = probe.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=LIMIT_S), f"service {name} did not appear"
    done = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _: done.set())
    assert done.wait(LIMIT_S), f"service {name} did not answer"
    return future.result()


@contextlib.contextmanager
def perception_graph(clip_dir, probe_name="probe", **parameters):
    """rclpy started, a started :class:`PerceptionNode` on the CLIP model in ``clip_dir`` (with
    :data:`NODE_PARAMETERS` and ``parameters``) and a probe node, spun by one executor; yields
    ``(node, probe)`` and takes everything down after."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from ros_mm_perception.ros import perception_node

    rclpy.init()
    values = {"clip_model": str(clip_dir), **NODE_PARAMETERS, **parameters}
    node = perception_node.PerceptionNode(
        parameter_overrides=[Parameter(name, value=value) for name, value in values.items()])
    probe = rclpy.create_node(probe_name)
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert node.start()
        yield node, probe
    finally:
        executor.shutdown()
        spinner.join(LIMIT_S)  # the spin loop has returned before any node is destroyed
        node.release()
        node.destroy_node()
        probe.destroy_node()
        rclpy.try_shutdown()
