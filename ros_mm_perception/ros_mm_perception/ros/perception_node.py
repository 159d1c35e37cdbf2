"""The perception lifecycle node: cameras in, language-grounded detections, labels and answers out.

Lifecycle (the state table is :mod:`.lifecycle_table`): ``configure`` loads and warms up the models
(one pipeline shared by every camera) and makes the publishers, ``activate`` subscribes and starts
the inference worker, ``deactivate`` stops them and keeps the models, so resuming costs no model
load; ``cleanup`` releases the models and their GPU memory. With ``autostart`` (default) the node
configures and activates itself at start-up. Services exist in every state and answer
``success=false`` with a reason while the models are not loaded.

With ``target_frame`` set, ``detections_3d`` and ``markers`` are transformed with tf2 at each
image's stamp (waiting at most ``transform_timeout_s``); a frame without the transform publishes
its 2D outputs only, and a throttled warning and ``/diagnostics`` name the missing transform.

With ``memory_enabled``, the object memory (:mod:`.memory_glue`) is opened at configure, fed by
every processed frame, published on ``objects`` / ``object_markers`` / ``object_scene`` and asked
through ``~/find_objects`` and ``~/forget_objects``; cleanup closes its file.

Only the newest frame of each camera is processed: callbacks store messages in a
:class:`FrameScheduler`, one worker thread takes up to ``max_batch`` waiting frames (one per
camera) per model call. Every output carries the header of the input image it came from.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from typing import Dict, List, Optional

import rclpy
import rclpy.logging
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time

from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.errors import ImageFormatError, UserError
from ros_mm_perception.core.imaging.image_codec import numpy_to_image
from ros_mm_perception.core.models.embedded import outside_world_message
from ros_mm_perception.core.results import FrameResult, Stamp
from ros_mm_perception.core.perception.scheduler import FrameScheduler
from ros_mm_perception.core.perception.transforms import frame_name, transform_3d
from ros_mm_perception.messages import convert, foxglove
from ros_mm_perception.core.imaging.drawing import annotate
from ros_mm_perception.messages.requests import check_request
from ros_mm_perception.messages.tf import rigid_transform_of
from ros_mm_perception.ros.camera_state import CameraState
from ros_mm_perception.ros.memory_glue import NodeMemory
from ros_mm_perception.ros.lifecycle_table import (DESTROY_PUBLISHERS, LOAD_MODELS,
                                                   MAKE_PUBLISHERS, RELEASE_MODELS,
                                                   START_STREAMING, STOP_STREAMING,
                                                   transition_steps)
from ros_mm_perception.ros.msg_types import foxglove_rclpy_types, rclpy_types
from ros_mm_perception.ros.params import config_changes, declare_config
from ros_mm_perception.ros.startup import StampWhenClockRuns
from ros_mm_perception.ros.stats import StatsBook, gpu_memory
from ros_mm_perception_interfaces.srv import (AskQuestion, ClassifyImage, FindObjects,
                                              ForgetObjects, GroundPhrases)

NODE_NAME = "perception"
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                        reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
SILENCE_WARNING_S = 5.0
"""An active camera that has received nothing for this long is reported (log + diagnostics
WARN)."""
WORKER_POLL_S = 0.5
SHUTDOWN_WAIT_S = 5.0
"""Longest wait at exit for the executor's thread to return after it is shut down."""


class _Pending:
    """A received image waiting in the scheduler (decoded only if it is still the newest)."""

    __slots__ = ("camera", "msg", "received_at")

    def __init__(self, camera: str, msg, received_at: float):
        self.camera, self.msg, self.received_at = camera, msg, received_at


class PerceptionNode(LifecycleNode):
    """Lifecycle node serving one or more cameras from one :class:`PerceptionPipeline`."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.types = rclpy_types()
        self.config: PerceptionConfig = declare_config(self)
        self.overlay_types = foxglove_rclpy_types() if self.config.foxglove else None
        if self.config.foxglove and self.overlay_types is None:
            self.get_logger().info(
                "foxglove_msgs is not installed: the annotations and scene outputs are off "
                "(apt install ros-$ROS_DISTRO-foxglove-msgs turns them on)")
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.pipeline = None
        self.state_label = "unconfigured"
        self._cameras: Dict[str, CameraState] = {}
        self._subscriptions_made: List = []
        self._publishers_made: Dict[str, object] = {}
        self._scheduler: Optional[FrameScheduler] = None
        self._worker: Optional[threading.Thread] = None
        self._stats = StatsBook(self.config.cameras, time.monotonic())
        self._active_since = time.monotonic()
        self._label_info_stamp = StampWhenClockRuns()
        self._tf_buffer = None
        if self.config.target_frame or self.config.memory_enabled:
            from tf2_ros import Buffer, TransformListener

            self._tf_buffer = Buffer(node=self)
            self._tf_listener = TransformListener(self._tf_buffer, self)
        self._camera_group = ReentrantCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.memory = NodeMemory(self, self._timer_group)
        for srv_type, name, handler in ((AskQuestion, "~/ask", self._on_ask),
                                        (GroundPhrases, "~/ground", self._on_ground),
                                        (ClassifyImage, "~/classify", self._on_classify),
                                        (FindObjects, "~/find_objects", self.memory.on_find),
                                        (ForgetObjects, "~/forget_objects",
                                         self.memory.on_forget)):
            self.create_service(srv_type, name, handler, callback_group=self._service_group)
        self._diagnostics = self.create_publisher(self.types.DiagnosticArray, "/diagnostics",
                                                  OUTPUT_QOS)
        # A steady clock: diagnostics keep coming while simulation time is paused or absent.
        self.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics,
                          callback_group=self._timer_group,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ------------------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("configure")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition("activate")
        return super().on_activate(state) if result == TransitionCallbackReturn.SUCCESS else result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._transition("deactivate")  # the models stay loaded: activate resumes within a frame
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("cleanup")

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self.state_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def _transition(self, transition: str) -> TransitionCallbackReturn:
        """Run the steps of the state table for ``transition`` from the current state
        (:func:`.lifecycle_table.transition_steps`); FAILURE leaves it unchanged."""
        target, steps = transition_steps(self.state_label, transition)
        work = {LOAD_MODELS: self._load_models, RELEASE_MODELS: self._release_models,
                MAKE_PUBLISHERS: self._make_publishers,
                DESTROY_PUBLISHERS: self._destroy_publishers,
                START_STREAMING: self._start_streaming, STOP_STREAMING: self._stop_streaming}
        for step in steps:
            if work[step]() is False:
                return TransitionCallbackReturn.FAILURE
        self.state_label = target
        return TransitionCallbackReturn.SUCCESS

    def _load_models(self) -> bool:
        """Load and warm up the pipeline and make the camera states; False, with the reason logged,
        on failure."""
        from ros_mm_perception.core.perception.pipeline import PerceptionPipeline

        self.get_logger().info(f"loading models (device {self.config.device}, clip "
                               f"{self.config.clip_model or 'embedded'}, paligemma "
                               f"{self.config.paligemma_model or 'off'}, owl "
                               f"{self.config.owl_model or 'off'})")
        try:
            self.pipeline = PerceptionPipeline(self.config)
            self.pipeline.warm_up(sorted({1,
                                          min(self.config.max_batch, len(self.config.cameras))}))
        # a failed load leaves the models unloaded, with the reason logged
        except Exception as err:
            self.pipeline = None
            self._log_failure("loading models failed", err)
            return False
        if not self.memory.open(self.pipeline):
            self._release_models()
            return False
        self._cameras = {c: CameraState(c, self.config.cameras,
                                        self.config.image_transport == "compressed")
                         for c in self.config.cameras}
        self.get_logger().info(f"models ready ({self.pipeline.model_state}); cameras: "
                               f"{', '.join(self._cameras)}")
        self._warn_outside_world()
        return True

    def _warn_outside_world(self) -> None:
        """On the embedded model, log once which configured phrases lie outside its world of
        coloured shapes."""
        phrases = (self.config.labels if self.config.enable_labels
                   else []) + self.config.detect_phrases
        message = (
            None
            if self.config.clip_model
            else outside_world_message(phrases, "the clip_model parameter")
        )
        if message:
            self.get_logger().warning(message)

    def _start_streaming(self) -> None:
        cfg = self.config
        self._scheduler = FrameScheduler(max_batch=cfg.max_batch, max_cameras=len(cfg.cameras))
        self._stats = StatsBook(cfg.cameras, time.monotonic())
        self._active_since = time.monotonic()
        self._make_subscriptions()
        self._worker = threading.Thread(target=self._work, args=(self._scheduler,),
                                        name="perception-worker", daemon=True)
        self._worker.start()
        topics = ", ".join(self._subscribed_topic(cam) for cam in self._cameras.values())
        self.get_logger().info(f"active: listening on {topics} ({cfg.qos_reliability}, keep last "
                               "1)")

    def start(self) -> bool:
        """Configure and activate (the autostart path); False, with the reason logged, on
        failure."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        """Stop streaming, destroy the publishers and free the models, whatever the state
        (shutdown, errors, exit)."""
        self._stop_streaming()
        self._destroy_publishers()
        self._release_models()
        self.state_label = "unconfigured"

    def _release_models(self) -> None:
        self.memory.close()
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
        self._cameras = {}

    def _stop_streaming(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
        if self._worker is not None:
            self._worker.join()
        self._scheduler = self._worker = None
        for sub in self._subscriptions_made:
            self.destroy_subscription(sub)
        self._subscriptions_made = []

    def _destroy_publishers(self) -> None:
        for pub in self._publishers_made.values():
            self.destroy_publisher(pub)
        self._publishers_made = {}
        self.memory.destroy_publishers()

    # -------------------------------------------------------------------------- topics

    def _make_publishers(self) -> None:
        """The output publishers (and the latched label_info), kept while inactive so resuming
        re-matches nothing."""
        t, pubs = self.types, self._publishers_made
        pubs["label_info"] = self.create_publisher(t.LabelInfo, "label_info", LATCHED_QOS)
        for cam in self._cameras.values():
            outputs = {"detections": t.Detection2DArray, "labels": t.Classification,
                       "debug_image": t.Image}
            if self.config.use_depth:
                outputs.update(detections_3d=t.Detection3DArray, markers=t.MarkerArray)
            if self.overlay_types is not None:
                outputs["annotations"] = self.overlay_types.ImageAnnotations
                if self.config.use_depth:
                    outputs["scene"] = self.overlay_types.SceneUpdate
            if self.pipeline is not None and self.pipeline.makes_masks:
                outputs["instance_mask"] = t.Image
            for base, msg_type in outputs.items():
                pubs[cam.topic(base)] = self.create_publisher(msg_type, cam.topic(base),
                                                              OUTPUT_QOS)
        self.memory.make_publishers()
        self._publish_label_info()

    def _subscribed_topic(self, cam: CameraState) -> str:
        return cam.subscription_topic(self.resolve_topic_name)

    def _make_subscriptions(self) -> None:
        reliability = (ReliabilityPolicy.RELIABLE if self.config.qos_reliability == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability)
        t = self.types
        for cam in self._cameras.values():
            image_type = t.CompressedImage if cam.compressed else t.Image
            subs = [(image_type, self._subscribed_topic(cam), self._image_callback(cam))]
            if self.config.use_depth:
                subs += [(t.Image, cam.topic("depth"), cam.on_depth),
                         (t.CameraInfo, cam.topic("camera_info"), cam.on_camera_info)]
            for msg_type, topic, callback in subs:
                self._subscriptions_made.append(
                    self.create_subscription(msg_type, topic, callback, qos,
                                             callback_group=self._camera_group))

    def _image_callback(self, cam: CameraState):
        def on_image(msg) -> None:
            now = time.monotonic()
            cam.on_image(msg)
            self._stats.image_received(cam.name, now)
            scheduler = self._scheduler
            if scheduler is not None:
                scheduler.put(_Pending(cam.name, msg, now))
        return on_image

    def _publisher(self, cam: CameraState, base: str):
        return self._publishers_made.get(cam.topic(base))

    def _publish_if_watched(self, cam: CameraState, base: str, make) -> None:
        """Publish ``make()`` on the camera's ``base`` topic if it exists and is subscribed."""
        pub = self._publisher(cam, base)
        if pub is not None and pub.get_subscription_count() > 0:
            pub.publish(make())

    def _publish_label_info(self) -> None:
        pub = self._publishers_made.get("label_info")
        if pub is None:
            return
        cfg = self.config
        phrases = list(dict.fromkeys([*cfg.detect_phrases, *cfg.labels]))
        stamp = self._now()
        header = convert.header(self.types, "", stamp)
        pub.publish(convert.label_info(self.types, header, phrases, cfg.score_threshold))
        self._label_info_stamp.published(stamp.to_ns())

    def _now(self) -> Stamp:
        """The node clock (simulation time under ``use_sim_time``) as a core Stamp."""
        return Stamp.from_ns(self.get_clock().now().nanoseconds)

    # ---------------------------------------------------------------------------- worker

    def _work(self, scheduler: FrameScheduler) -> None:
        """Take the newest waiting frames, run the pipeline on them in one batch, publish the
        results."""
        while not scheduler.closed and self.context.ok():
            pending = scheduler.take(timeout=WORKER_POLL_S, max_frames=self.config.max_batch)
            frames, received = [], []
            for item in pending:
                cam = self._cameras.get(item.camera)
                if cam is None:
                    continue
                try:
                    tolerance = self.config.depth_tolerance_s if self.config.use_depth else None
                    frame, no_depth = cam.frame(item.msg, tolerance, self.config.max_image_pixels)
                    frames.append(frame)
                    received.append(item.received_at)
                    if no_depth:
                        self.get_logger().warning(
                            f"camera {item.camera}: frame without 3D: {no_depth}",
                            throttle_duration_sec=5.0)
                except UserError as err:
                    reason = "undecodable" if isinstance(err, ImageFormatError) else "rejected"
                    self._stats.skipped(item.camera, reason, time.monotonic())
                    self.get_logger().warning(f"camera {item.camera}: frame skipped: {err}",
                                              throttle_duration_sec=5.0)
            if not frames:
                continue
            try:
                results = self.pipeline.process_batch(frames)
            except Exception as err:
                for frame in frames:
                    self._stats.skipped(frame.camera, "processing_error", time.monotonic())
                self._log_failure("processing failed", err, throttle=True)
                continue
            for frame, result, received_at in zip(frames, results, received):
                try:
                    self._publish_result(self._cameras[frame.camera], frame, result)
                except Exception as err:  # the worker must outlive any one bad frame
                    # rclpy shut down (Ctrl-C) while the batch ran: stop quietly
                    if not self.context.ok():
                        return
                    self._log_failure(f"camera {frame.camera}: publishing failed", err,
                                      throttle=True)
                    continue
                now = time.monotonic()
                if self._stats.published(frame.camera, now - received_at, now):
                    self.get_logger().info(f"first output {self._stats.first_output_s:.3f} s "
                                           f"after activate (camera {frame.camera})")

    def _in_target_frame(self, camera: str, result: FrameResult) -> Optional[FrameResult]:
        """``result``'s 3D part in ``target_frame`` (tf2 at the image stamp, bounded wait); None,
        noted and warned about, when the transform is missing. Without ``target_frame``, ``result``
        itself."""
        target = frame_name(self.config.target_frame)
        if not target or target == frame_name(result.frame_id):
            return result
        from tf2_ros import TransformException

        source = frame_name(result.frame_id)  # tf2 frame ids have no leading '/'
        what = f"{source or '(empty frame_id)'} -> {target}"
        try:
            if not source:
                raise TransformException("the image header has no frame_id")
            stamped = self._tf_buffer.lookup_transform(
                target,
                source,
                Time(
                    seconds=result.stamp.sec,
                    nanoseconds=result.stamp.nanosec,
                    clock_type=self.get_clock().clock_type,
                ),
                timeout=Duration(seconds=self.config.transform_timeout_s),
            )
        except TransformException as err:
            self._stats.transform_missing(camera, what, time.monotonic())
            self.get_logger().warning(f"camera {camera}: detections_3d not published: no "
                                      f"transform {what} at "
                                      f"{result.stamp.sec}.{result.stamp.nanosec:09d}: {err}",
                                      throttle_duration_sec=5.0)
            return None
        return transform_3d(result, rigid_transform_of(stamped.transform), target)

    def _publish_result(self, cam: CameraState, frame, result: FrameResult) -> None:
        t = self.types
        if result.detections_ran:
            self._publisher(cam, "detections").publish(convert.detection_2d_array(t, result))
            fx = self.overlay_types
            self._publish_if_watched(cam, "annotations",
                                     lambda: foxglove.image_annotations(fx, result))
            located = self._in_target_frame(cam.name, result) if self.config.use_depth else None
            if located is not None:
                self._publisher(cam,
                                "detections_3d").publish(convert.detection_3d_array(t, located))
                self._publish_if_watched(cam, "markers",
                                         lambda: convert.marker_array(t, located, ns=cam.name))
                self._publish_if_watched(cam, "scene",
                                         lambda: foxglove.scene_update(fx, located, cam.name))
        self.memory.add(cam.name, frame, result)
        if result.labels_ran:
            self._publisher(cam, "labels").publish(convert.classification(t, result))
        if result.masks_ran and self._publisher(cam, "instance_mask") is not None:
            self._publisher(cam, "instance_mask").publish(convert.instance_mask(t, result,
                                                                                data_as="array"))
        debug = self._publisher(cam, "debug_image")
        if debug.get_subscription_count() > 0:
            debug.publish(numpy_to_image(annotate(frame.image, result), "rgb8", data_as="array",
                                         header=convert.result_header(t, result),
                                         msg_factory=t.Image))

    # --------------------------------------------------------------------------- parameters

    def _on_set_parameters(self, parameters):
        new, result = config_changes(self.config, parameters)
        if not result.successful or new == self.config:
            return result
        if self.pipeline is not None:
            try:
                self.pipeline.update_config(new)
            except UserError as err:
                result.successful, result.reason = False, str(err)
                return result
        vocabulary_changed = (new.labels, new.detect_phrases, new.score_threshold) != (
            self.config.labels, self.config.detect_phrases, self.config.score_threshold)
        self.config = new
        if vocabulary_changed:
            self._publish_label_info()
        return result

    # ------------------------------------------------------------------------------ services

    def _service_frame(self, camera: str, image):
        """(frame, None) for a request, or (None, reason); the camera's newest frame when image is
        empty."""
        if self.pipeline is None:
            return None, (f"models are not loaded (node is {self.state_label}): configure the "
                          f"node with 'ros2 lifecycle set {self.get_fully_qualified_name()} "
                          "configure'")
        name = camera or self.config.cameras[0]
        cam = self._cameras.get(name)
        if cam is None:
            return None, f"unknown camera {name!r}; cameras: {', '.join(self.config.cameras)}"
        msg = image if image.height > 0 else cam.latest
        if msg is None:
            return None, (f"no frame received yet from camera {name!r} on "
                          f"{self.resolve_topic_name(cam.image_topic)}; pass an image in the "
                          "request")
        tolerance = (
            self.config.depth_tolerance_s
            if (self.config.use_depth and image.height == 0)
            else None
        )
        return cam.frame(msg, tolerance, self.config.max_image_pixels)[0], None

    def _answer(self, response, work):
        """Run ``work(response)``; any failure becomes ``success=false`` with the reason."""
        try:
            work(response)
            response.success = True  # ``work`` may leave a note in ``message``
        except UserError as err:
            response.success, response.message = False, str(err)
        except Exception as err:
            self._log_failure("service failed", err)
            response.success, response.message = (False,
                                                  f"internal error: {type(err).__name__}: {err}")
        return response

    def _on_ask(self, request, response):
        def work(resp):
            check_request(self.config.max_image_pixels, request.image, question=request.question)
            frame, reason = self._service_frame(request.camera, request.image)
            if frame is None:
                raise UserError(reason)
            resp.header = convert.header(self.types, frame.frame_id, frame.stamp)
            question = request.question.strip()
            resp.answer = (self.pipeline.answer(frame.image, question) if question
                           else self.pipeline.caption(frame.image))
        return self._answer(response, work)

    def _on_ground(self, request, response):
        def work(resp):
            check_request(self.config.max_image_pixels, request.image, phrases=request.phrases,
                          score_threshold=request.score_threshold)
            frame, reason = self._service_frame(request.camera, request.image)
            if frame is None:
                raise UserError(reason)
            phrases = list(request.phrases) or self.config.detect_phrases
            threshold = None if request.score_threshold < 0 else request.score_threshold
            result = self.pipeline.ground(frame, phrases, score_threshold=threshold)
            resp.detections = convert.detection_2d_array(self.types, result)
            located = self._in_target_frame(frame.camera, result)
            if located is None:
                resp.message = ("detections_3d left empty: no transform to "
                                f"{self.config.target_frame} at the frame's stamp")
                located = dataclasses.replace(result, frame_id=self.config.target_frame,
                                              detections=[])
            resp.detections_3d = convert.detection_3d_array(self.types, located)
        return self._answer(response, work)

    def _on_classify(self, request, response):
        def work(resp):
            check_request(self.config.max_image_pixels, request.image, labels=request.labels,
                          top_k=request.top_k)
            frame, reason = self._service_frame(request.camera, request.image)
            if frame is None:
                raise UserError(reason)
            labels = list(request.labels) or self.config.labels
            result = FrameResult(frame.camera, frame.frame_id, frame.stamp, frame.image.shape[1],
                                 frame.image.shape[0], labels_ran=True)
            result.labels = self.pipeline.classify(frame.image, labels,
                                                   top_k=request.top_k or self.config.top_k)
            resp.classification = convert.classification(self.types, result)
        return self._answer(response, work)

    # --------------------------------------------------------------------------- diagnostics

    def _publish_diagnostics(self) -> None:
        # sim time: /clock has started
        if self._label_info_stamp.due(self.get_clock().now().nanoseconds):
            self._publish_label_info()
        t, now = self.types, time.monotonic()
        scheduler = self._scheduler
        reports = self._stats.report(scheduler.stats() if scheduler else {}, now)
        node_name = self.get_fully_qualified_name()
        model_state = self.pipeline.model_state if self.pipeline is not None else "not loaded"
        level = "OK" if self.state_label == "active" else "WARN"
        first = self._stats.first_output_s
        first_output = {} if first is None else {"first_output_after_activate_s": f"{first:.3f}"}
        statuses = [
            convert.diagnostic_status(
                t,
                f"{node_name}: pipeline",
                level,
                f"{self.state_label}, models {model_state}",
                {
                    "lifecycle_state": self.state_label,
                    "model_state": model_state,
                    "max_batch": self.config.max_batch,
                    "target_frame": self.config.target_frame or "(camera frame)",
                    **first_output,
                    **gpu_memory(),
                },
                hardware_id=node_name,
            )
        ]
        for name, cam in self._cameras.items():
            report = reports.get(name)
            if report is None:
                continue
            topic = self._subscribed_topic(cam)
            quiet_s = (
                report.seconds_since_image
                if report.seconds_since_image >= 0
                else now - self._active_since
            )
            silent = self.state_label == "active" and quiet_s >= SILENCE_WARNING_S
            message = (f"no images on {topic} (check the topic name and that the publisher's QoS "
                       f"matches {self.config.qos_reliability})") if silent else report.summary()
            if silent:
                self.get_logger().warning(f"camera {name}: {message}", throttle_duration_sec=30.0)
            level = "WARN" if silent or not report.healthy else "OK"
            statuses.append(convert.diagnostic_status(t, f"{node_name}: camera {name}", level,
                                                      message, {"topic": topic, **report.values()},
                                                      hardware_id=node_name))
        self._diagnostics.publish(convert.diagnostic_array(t, self._now(), statuses))

    def _log_failure(self, what: str, err: Exception, throttle: bool = False) -> None:
        if isinstance(err, UserError):
            text = f"{what}: {err}"
        else:
            text = f"{what}: {type(err).__name__}: {err}\n{traceback.format_exc()}"
        if throttle:
            self.get_logger().error(text, throttle_duration_sec=5.0)
        else:
            self.get_logger().error(text)


def main(args=None) -> None:
    """``ros2 run ros_mm_perception perception_node``: spin the node on a multi-threaded
    executor."""
    rclpy.init(args=args)
    try:
        node = PerceptionNode()
    # a bad parameter file or override: one clear line
    except (UserError, ParameterException) as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"invalid parameters: {err}")
        rclpy.try_shutdown()
        raise SystemExit(2) from None
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    # The executor spins in a thread of its own, so Ctrl-C's KeyboardInterrupt lands in the main
    # thread's wait below and never inside the executor while it starts a pool thread (a thread
    # started but not yet registered is never told to stop, and the process would not exit).
    spinner = threading.Thread(target=_spin, args=(executor,), name="executor", daemon=True)
    try:
        if node.config.autostart and not node.start():
            node.get_logger().error("autostart failed; the node stays unconfigured (see the "
                                    "error above)")
        spinner.start()
        while spinner.is_alive():
            spinner.join(timeout=1.0)
    except KeyboardInterrupt:
        pass
    finally:
        node.release()
        executor.shutdown()
        if spinner.is_alive():
            spinner.join(timeout=SHUTDOWN_WAIT_S)
        node.destroy_node()
        rclpy.try_shutdown()


def _spin(executor) -> None:
    """Spin until the executor shuts down or the context does (a signal's handler shuts it
    down)."""
    try:
        executor.spin()
    except ExternalShutdownException:
        pass


if __name__ == "__main__":
    main()
