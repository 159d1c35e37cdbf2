"""The node's object memory: opened at configure, fed by every processed frame, published, asked.

With ``memory_enabled``: ``configure`` opens the memory (``memory_path``, or RAM when empty) in
``memory_frame`` (default ``target_frame``; a configure without either fails and says why);
``cleanup`` closes it. Each frame that ran detection updates it with the camera's pose from tf2 at
the image stamp; a camera whose frame is the memory frame is refused (logged once: the memory
needs a fixed frame). ``objects`` (Detection3DArray, transient local) is published when the
memory changed, at most twice a second; ``object_markers`` only while someone subscribes; with
foxglove_msgs installed (``foxglove``), ``object_scene`` (SceneUpdate, transient local: every
remembered object, gone ones faded) when the memory changed and someone subscribes, at most as
often as ``objects``. The services ``~/find_objects`` and ``~/forget_objects`` answer in every
state (``success=false`` with the reason while the memory is closed or off).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time

from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.memory.objects import PRESENT, ObjectMemory
from ros_mm_perception.core.memory.text import embedding_model_id, labeler_text_encoder
from ros_mm_perception.core.memory.views import CameraView
from ros_mm_perception.core.perception.transforms import frame_name
from ros_mm_perception.core.results import Stamp
from ros_mm_perception.messages import foxglove
from ros_mm_perception.messages import memory as memory_msgs
from ros_mm_perception.messages.tf import rigid_transform_of
from ros_mm_perception_interfaces.msg import RememberedObject

OBJECTS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
PUBLISH_PERIOD_S = 0.5
"""``objects`` is published on change at most this often (twice a second)."""


class NodeMemory:
    """The object memory of a :class:`~.perception_node.PerceptionNode` (module docstring)."""

    def __init__(self, node, callback_group):
        self.node = node
        self.memory: Optional[ObjectMemory] = None
        self._encoder = (None, 100.0)
        self._published = self._scene_published = -1
        self._refused = set()
        self._objects_pub = self._markers_pub = self._scene_pub = None
        self.types = SimpleNamespace(**vars(node.types), RememberedObject=RememberedObject)
        node.create_timer(
            PUBLISH_PERIOD_S,
            self._publish,
            callback_group=callback_group,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )

    @property
    def frame(self) -> str:
        cfg = self.node.config
        return frame_name(cfg.memory_frame or cfg.target_frame)

    def open(self, pipeline) -> bool:
        """Open the memory (configure); False, with the reason logged, when it cannot be opened."""
        cfg = self.node.config
        if not cfg.memory_enabled:
            return True
        try:
            if not self.frame:
                raise UserError(
                    "memory_enabled needs a fixed frame: set memory_frame or target_frame "
                    "(e.g. map or odom)"
                )
            encode, scale = labeler_text_encoder(pipeline.labeler)
            self.memory = ObjectMemory(
                self.frame, cfg, path=cfg.memory_path, embedding_model=embedding_model_id(cfg)
            )
            self._encoder = (encode, scale)
        except UserError as err:
            self.node.get_logger().error(f"object memory: {err}")
            return False
        if not cfg.use_depth:
            self.node.get_logger().warning(
                "object memory: use_depth is false, so detections have no 3D and the memory "
                "stays as it is")
        where = cfg.memory_path or "RAM only"
        self.node.get_logger().info(
            f"object memory in {self.frame} ({where}): {len(self.memory)} objects"
        )
        self._published = self._scene_published = -1
        self._refused = set()
        return True

    def close(self) -> None:
        """Close the memory (cleanup); everything is already written."""
        if self.memory is not None:
            self.memory.close()
            self.memory = None

    def make_publishers(self) -> None:
        if self.node.config.memory_enabled:
            t = self.types
            self._objects_pub = self.node.create_publisher(
                t.Detection3DArray, "objects", OBJECTS_QOS
            )
            self._markers_pub = self.node.create_publisher(
                t.MarkerArray, "object_markers", OBJECTS_QOS
            )
            fx = self.node.overlay_types
            if fx is not None:
                self._scene_pub = self.node.create_publisher(
                    fx.SceneUpdate, "object_scene", OBJECTS_QOS
                )
            self._published = self._scene_published = -1

    def destroy_publishers(self) -> None:
        for pub in (self._objects_pub, self._markers_pub, self._scene_pub):
            if pub is not None:
                self.node.destroy_publisher(pub)
        self._objects_pub = self._markers_pub = self._scene_pub = None

    def add(self, camera: str, frame, result) -> None:
        """Fold one processed frame in (the worker thread)."""
        memory = self.memory
        if memory is None or not result.detections_ran or frame.intrinsics is None:
            return
        source = frame_name(result.frame_id)
        if source == memory.frame:
            if camera not in self._refused:
                self._refused.add(camera)
                self.node.get_logger().error(
                    f"object memory: camera {camera} publishes in {source!r}, the memory frame; "
                    "the memory "
                    "needs a fixed frame (map, odom), so this camera's frames are left out"
                )
            return
        from tf2_ros import TransformException

        try:
            stamped = self.node._tf_buffer.lookup_transform(
                memory.frame,
                source,
                Time(
                    seconds=result.stamp.sec,
                    nanoseconds=result.stamp.nanosec,
                    clock_type=self.node.get_clock().clock_type,
                ),
                timeout=Duration(seconds=self.node.config.transform_timeout_s),
            )
        except TransformException as err:
            self.node.get_logger().warning(
                f"object memory: no transform {source} -> {memory.frame} at "
                f"the image stamp: {err}",
                throttle_duration_sec=5.0,
            )
            return
        view = CameraView(
            rigid_transform_of(stamped.transform),
            frame.intrinsics,
            frame.image.shape[:2],
            result.stamp.to_ns(),
            self.node.config.detect_phrases,
            frame.depth,
        )
        memory.update(result, view)

    def _publish(self) -> None:
        memory, pub = self.memory, self._objects_pub
        if memory is None or pub is None:
            return
        stamp = Stamp.from_ns(memory.latest_ns)
        if memory.revision != self._published:
            self._published = memory.revision
            present = [r for r in memory.objects() if r.state == PRESENT]
            pub.publish(memory_msgs.objects_array(self.types, present, memory.frame, stamp))
        markers = self._markers_pub
        if markers is not None and markers.get_subscription_count() > 0:
            markers.publish(
                memory_msgs.object_markers(
                    self.types,
                    memory.objects(),
                    memory.frame,
                    stamp,
                    self.node.get_clock().now().nanoseconds,
                )
            )
        scene = self._scene_pub
        if (
            scene is not None
            and memory.revision != self._scene_published
            and scene.get_subscription_count() > 0
        ):
            self._scene_published = memory.revision
            scene.publish(foxglove.memory_scene(self.node.overlay_types, memory))

    # ------------------------------------------------------------------------------ services

    def on_find(self, request, response):
        def work(resp):
            memory = self._require()
            encode, scale = self._encoder
            matches = memory_msgs.answer_find(
                memory, memory_msgs.find_query(request), encode, scale
            )
            resp.header = memory_msgs.header(
                self.types, memory.frame, Stamp.from_ns(memory.latest_ns)
            )
            resp.objects = [memory_msgs.remembered_object(self.types, m) for m in matches]

        return self.node._answer(response, work)

    def on_forget(self, request, response):
        def work(resp):
            resp.forgotten = self._require().forget(memory_msgs.forget_ids(request))

        return self.node._answer(response, work)

    def _require(self) -> ObjectMemory:
        if not self.node.config.memory_enabled:
            raise UserError(
                "the object memory is off: set memory_enabled (and memory_frame or target_frame)"
            )
        if self.memory is None:
            raise UserError("the object memory is closed: configure the node first")
        return self.memory
