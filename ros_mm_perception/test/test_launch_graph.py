"""perception.launch.py on a real ROS 2 graph, used as a robot would (needs ROS 2 and
launch_testing).

Two cameras in a namespace under simulation time, a tiny CLIP and a tiny PaliGemma on the CPU. A
probe node publishes /clock and synthetic images for both cameras on a timer, then checks what a
user checks with ``ros2 topic echo``, ``ros2 service call``, ``ros2 param set`` and ``ros2
lifecycle set``: output headers equal to the inputs' (empty arrays still published), every
service's success and failure answers, run-time parameter changes (good and bad),
deactivate/activate keeping the models loaded (the time from activate to the first output is
printed), label_info stamped with /clock once it runs, and a burst of concurrent service calls
while frames stream. Waits are on events with a generous limit, never sleeps. Runs where the
package is installed (``colcon test``).
"""

import tempfile
import threading
import unittest

import numpy as np
import pytest

launch_testing = pytest.importorskip("launch_testing")
pytest.importorskip("launch_ros")
pytest.importorskip("ros_mm_perception_interfaces")
rclpy = pytest.importorskip("rclpy")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch.substitutions import PathJoinSubstitution  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from vision_msgs.msg import Classification, Detection2DArray, LabelInfo  # noqa: E402

from ros_mm_perception.core.imaging.image_codec import numpy_to_image  # noqa: E402
from ros_mm_perception.core.models.random_models import (build_random_clip,  # noqa: E402
                                                         build_random_paligemma)
from ros_mm_perception_interfaces.srv import (AskQuestion, ClassifyImage,  # noqa: E402
                                              GroundPhrases)
from rclpy_helpers import Inbox  # noqa: E402

LIMIT_S = 120.0
NODE = "/robot2/perception"
CAMERAS = ("front", "rear")
SIM_START_S = 1000
"""The probe's /clock starts here; wall-clock stamps are far larger, so sim-time stamps are
recognisable."""


@pytest.mark.launch_test
def generate_test_description():
    clip_dir = build_random_clip(tempfile.mkdtemp(prefix="tiny_clip_"))
    paligemma_dir = build_random_paligemma(tempfile.mkdtemp(prefix="tiny_paligemma_"))
    perception = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("ros_mm_perception"),
                                                            "launch", "perception.launch.py"])),
        launch_arguments={"clip_model": str(clip_dir), "paligemma_model": str(paligemma_dir),
                          "device": "cpu", "namespace": "robot2", "cameras": ",".join(CAMERAS),
                          "use_sim_time": "true",
                          "image_topic": ",".join(f"/{c}/image_raw" for c in CAMERAS)}.items(),
    )
    return launch.LaunchDescription([perception, launch_testing.actions.ReadyToTest()])


def key(header):
    return header.stamp.sec, header.stamp.nanosec, header.frame_id


class TestPerceptionGraph(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.probe = rclpy.create_node("graph_probe",
                                      parameter_overrides=[Parameter("use_sim_time", value=False)])
        cls.sent = {c: set() for c in CAMERAS}
        cls.sent_lock = threading.Lock()
        cls.ticks = 0
        cls.clock_pub = cls.probe.create_publisher(Clock, "/clock", 10)
        cls.image_pubs = {c: cls.probe.create_publisher(Image, f"/{c}/image_raw", 10)
                          for c in CAMERAS}
        cls.inboxes = {}
        for cam in CAMERAS:
            for base, msg_type in (("detections", Detection2DArray), ("labels", Classification)):
                inbox = cls.inboxes[cam, base] = Inbox()
                cls.probe.create_subscription(msg_type, f"/robot2/{cam}/{base}", inbox, 10)
        cls.diagnostics = Inbox()
        cls.probe.create_subscription(DiagnosticArray, "/diagnostics", cls.diagnostics, 10)
        cls.label_info = Inbox()
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        cls.probe.create_subscription(LabelInfo, "/robot2/label_info", cls.label_info, latched)
        cls.probe.create_timer(0.05, cls._tick)
        cls.executor = MultiThreadedExecutor()
        cls.executor.add_node(cls.probe)
        cls.spinner = threading.Thread(target=cls.executor.spin, daemon=True)
        cls.spinner.start()

    @classmethod
    def tearDownClass(cls):
        cls.executor.shutdown()
        cls.probe.destroy_node()
        rclpy.try_shutdown()

    @classmethod
    def _tick(cls):
        """One /clock step of 0.05 s and one 64x96 frame per camera, stamped with that sim time."""
        cls.ticks += 1
        sec, nanosec = SIM_START_S + cls.ticks // 20, (cls.ticks % 20) * 50_000_000
        clock = Clock()
        clock.clock.sec, clock.clock.nanosec = sec, nanosec
        cls.clock_pub.publish(clock)
        rgb = np.zeros((64, 96, 3), np.uint8)
        rgb[16:48, 24:72] = (200, 30, 30)
        for cam, pub in cls.image_pubs.items():
            header = Header(frame_id=f"{cam}_optical")
            header.stamp.sec, header.stamp.nanosec = sec, nanosec
            with cls.sent_lock:
                cls.sent[cam].add(key(header))
            pub.publish(numpy_to_image(rgb, "rgb8", header=header, msg_factory=Image,
                                       data_as="array"))

    def call(self, srv_type, name, request):
        future = self.call_async(srv_type, name, request)
        return self.result(future, name)

    def call_async(self, srv_type, name, request):
        client = self.probe.create_client(srv_type, name)
        self.assertTrue(client.wait_for_service(timeout_sec=LIMIT_S),
                        f"service {name} did not appear")
        return client.call_async(request)

    def result(self, future, name):
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        self.assertTrue(done.wait(LIMIT_S), f"service {name} did not answer")
        return future.result()

    def set_parameter(self, name, value):
        param = Parameter(name, value=value).to_parameter_msg()
        return self.call(SetParameters, f"{NODE}/set_parameters",
                         SetParameters.Request(parameters=[param])).results[0]

    def get_parameter(self, name):
        return self.call(GetParameters, f"{NODE}/get_parameters",
                         GetParameters.Request(names=[name])).values[0]

    def change_state(self, transition_id):
        response = self.call(ChangeState, f"{NODE}/change_state",
                             ChangeState.Request(transition=Transition(id=transition_id)))
        self.assertTrue(response.success, f"transition {transition_id} failed")

    def sent_headers(self, cam):
        with self.sent_lock:
            return set(self.sent[cam])

    def test_each_camera_publishes_outputs_with_its_input_header(self):
        for cam in CAMERAS:
            for base in ("detections", "labels"):
                msg = self.inboxes[cam, base].wait_for(lambda m: m.header.frame_id)
                self.assertEqual(msg.header.frame_id, f"{cam}_optical")
                self.assertIn(key(msg.header), self.sent_headers(cam),
                              f"{cam}/{base}: header is not an input's")
                self.assertGreaterEqual(msg.header.stamp.sec, SIM_START_S)

    def test_empty_detection_arrays_are_still_published(self):
        self.assertTrue(self.set_parameter("score_threshold", 1.0).successful)
        try:
            inbox = self.inboxes["front", "detections"]
            start = len(inbox.messages)
            msg = inbox.wait_for(lambda m: not m.detections, start)
            self.assertIn(key(msg.header), self.sent_headers("front"))
        finally:
            self.assertTrue(self.set_parameter("score_threshold", 0.3).successful)

    def test_diagnostics_use_simulation_time_and_report_both_cameras(self):
        msg = self.diagnostics.wait_for(
            lambda m: m.header.stamp.sec >= SIM_START_S
            and sum(" camera " in s.name for s in m.status) == 2)
        self.assertLess(msg.header.stamp.sec, SIM_START_S + 100_000,
                        "diagnostics are not stamped with /clock")

    def test_vocabulary_changes_at_run_time_and_bad_values_are_rejected(self):
        self.assertTrue(self.set_parameter("labels", ["kitchen", "corridor"]).successful)
        inbox = self.inboxes["rear", "labels"]
        msg = inbox.wait_for(lambda m: m.results
                             and {r.class_id for r in m.results} <= {"kitchen", "corridor"})
        self.assertIn(key(msg.header), self.sent_headers("rear"))
        rejected = self.set_parameter("labels", ["mug", "mug"])
        self.assertFalse(rejected.successful)
        self.assertIn("duplicates", rejected.reason)
        self.assertEqual(list(self.get_parameter("labels").string_array_value),
                         ["kitchen", "corridor"])
        self.assertFalse(self.set_parameter("device", "cuda").successful)  # read-only
        # outside the declared range
        self.assertFalse(self.set_parameter("score_threshold", 1.5).successful)

    def test_services_answer_success_and_failure(self):
        self.inboxes["rear", "labels"].wait_for(lambda m: True)  # a rear frame has arrived
        grounded = self.call(GroundPhrases, f"{NODE}/ground",
                             GroundPhrases.Request(camera="rear", phrases=["red box"],
                                                   score_threshold=0.0))
        self.assertTrue(grounded.success, grounded.message)
        self.assertIn(key(grounded.detections.header), self.sent_headers("rear"))
        classified = self.call(ClassifyImage, f"{NODE}/classify",
                               ClassifyImage.Request(camera="front",
                                                     labels=["red", "green", "blue"], top_k=2))
        self.assertTrue(classified.success, classified.message)
        self.assertEqual(len(classified.classification.results), 2)
        answered = self.call(AskQuestion, f"{NODE}/ask",
                             AskQuestion.Request(camera="front", question="what is red?"))
        self.assertTrue(answered.success, answered.message)
        self.assertIn(key(answered.header), self.sent_headers("front"))
        unknown = self.call(ClassifyImage, f"{NODE}/classify",
                            ClassifyImage.Request(camera="side"))
        self.assertFalse(unknown.success)
        self.assertIn("unknown camera", unknown.message)
        truncated = Image(height=2, width=2, encoding="rgb8", step=6, data=[1, 2, 3])
        bad_image = self.call(AskQuestion, f"{NODE}/ask",
                              AskQuestion.Request(image=truncated, question="?"))
        self.assertFalse(bad_image.success)
        self.assertIn("truncated", bad_image.message)
        bad_threshold = self.call(GroundPhrases, f"{NODE}/ground",
                                  GroundPhrases.Request(score_threshold=2.0))
        self.assertFalse(bad_threshold.success)
        self.assertIn("score_threshold", bad_threshold.message)

    def test_ten_concurrent_service_calls_while_frames_stream(self):
        self.inboxes["front", "detections"].wait_for(lambda m: True)
        kinds = [(AskQuestion, "ask", AskQuestion.Request(question="is the door open?")),
                 (GroundPhrases, "ground", GroundPhrases.Request(phrases=["red box"])),
                 (ClassifyImage, "classify", ClassifyImage.Request(labels=["red", "blue"]))]
        futures = [(name, self.call_async(srv_type, f"{NODE}/{name}", request))
                   for srv_type, name, request in (kinds[i % 3] for i in range(10))]
        start = len(self.inboxes["front", "detections"].messages)
        for name, future in futures:
            response = self.result(future, name)
            self.assertTrue(response.success, f"{name}: {response.message}")
        self.inboxes["front", "detections"].wait_for(lambda m: True, start)  # the stream goes on

    def test_label_info_is_stamped_with_simulation_time_once_the_clock_runs(self):
        msg = self.label_info.wait_for(lambda m: m.header.stamp.sec >= SIM_START_S)
        self.assertLess(msg.header.stamp.sec, SIM_START_S + 100_000,
                        "label_info is not stamped with /clock")
        self.assertTrue(msg.class_map)

    def test_z_deactivate_keeps_models_and_activate_resumes_at_once(self):
        self.change_state(Transition.TRANSITION_DEACTIVATE)
        state = self.call(GetState, f"{NODE}/get_state", GetState.Request()).current_state.label
        self.assertEqual(state, "inactive")
        idle = self.call(ClassifyImage, f"{NODE}/classify",
                         ClassifyImage.Request(labels=["red", "blue"]))
        self.assertTrue(idle.success, idle.message)  # the models stay loaded while inactive
        inactive = self.diagnostics.wait_for(lambda m: any("inactive" in s.message
                                                           for s in m.status))
        self.assertTrue(any("models" in s.message and "not loaded" not in s.message
                            for s in inactive.status))
        start_diagnostics = len(self.diagnostics.messages)
        inbox = self.inboxes["front", "detections"]
        start = len(inbox.messages)
        self.change_state(Transition.TRANSITION_ACTIVATE)
        msg = inbox.wait_for(lambda m: True, start)
        self.assertIn(key(msg.header), self.sent_headers("front"))

        def first_output(m):
            return {kv.key: kv.value for s in m.status if s.name.endswith(": pipeline")
                    for kv in s.values
                    }.get("first_output_after_activate_s")

        timed = self.diagnostics.wait_for(first_output, start_diagnostics)
        # a measurement, not an assertion
        print(f"activate -> first output: {first_output(timed)} s")
        resumed = self.call(ClassifyImage, f"{NODE}/classify",
                            ClassifyImage.Request(camera="rear"))
        self.assertTrue(resumed.success, resumed.message)


@launch_testing.post_shutdown_test()
class TestCleanExit(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_no_error_logged(self, proc_output):
        for output in proc_output:
            self.assertNotIn("[ERROR]", output.text.decode(errors="replace"))
