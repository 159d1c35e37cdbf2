"""MCAP output of ROS 2 messages that ``ros2 bag``, Foxglove and ``mcap_ros2`` read.

The file uses the ``ros2`` profile: one ``ros2msg`` schema per message type (the layout rosbag2
writes, from :func:`~ros_mm_perception.messages.typestore.schema_text`) and ``cdr`` channels, one
per topic; messages are rosbags message objects serialized with the type store. It is written to a
stream, in offline runs a staged file of :class:`~.atomic.OutputStaging`.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict

from ros_mm_perception import __version__
from ros_mm_perception.messages.typestore import schema_text

CHUNK_SIZE = 1024 * 1024
OBJECT_SCENE_TOPIC = "/object_scene"
"""The object memory's SceneUpdate (the node's ``object_scene``; one memory per recording)."""
"""Bytes of messages per compressed MCAP chunk (the unit a damaged file loses)."""


class RosMcapFile:
    """Append ROS 2 messages (objects of ``store``'s classes) to an MCAP stream, topic by topic."""

    def __init__(self, stream, store, chunk_size: int = CHUNK_SIZE):
        from mcap.writer import CompressionType, Writer

        self.store = store
        self.writer = Writer(stream, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        self.writer.start(profile="ros2", library=f"ros_mm_perception {__version__}")
        self.schemas: Dict[str, int] = {}
        self.channels: Dict[str, int] = {}
        self.counts: Counter = Counter()

    def write(self, topic: str, msg, log_time_ns: int) -> None:
        """Write ``msg`` on ``topic``; ``log_time_ns`` is its recording time (and publish time)."""
        typename = msg.__msgtype__
        channel = self.channels.get(topic)
        if channel is None:
            if typename not in self.schemas:
                self.schemas[typename] = self.writer.register_schema(
                    typename, "ros2msg", schema_text(self.store, typename).encode())
            channel = self.channels[topic] = self.writer.register_channel(topic, "cdr",
                                                                          self.schemas[typename])
        data = self.store.serialize_cdr(msg, typename)
        self.writer.add_message(channel, log_time=log_time_ns, publish_time=log_time_ns,
                                sequence=self.counts[topic], data=bytes(data))
        self.counts[topic] += 1

    def finish(self) -> None:
        """Write the summary section (the stream stays open)."""
        self.writer.finish()


class ResultsMcap:
    """The live node's output topics for each processed frame, written to an MCAP file.

    Per frame, under the frame's namespace ``ns``: ``ns/detections`` (Detection2DArray, always,
    also when empty), ``ns/detections_3d`` (Detection3DArray, when the frame had depth and
    intrinsics), ``ns/labels`` (Classification, when labels ran), ``ns/instance_mask`` (mono16,
    when detection ran with masks) and, with ``debug_images``, ``ns/debug_image`` (the annotated
    frame, rgb8). With ``target`` (a :class:`~.bag_transforms.TargetFrame`), ``detections_3d`` is
    in the target frame, and left out for frames whose transform is missing. With
    ``config.foxglove``, Foxglove's overlays beside them: ``ns/annotations`` (ImageAnnotations,
    every frame) and ``ns/scene`` (SceneUpdate, with each ``detections_3d``), their schemas the
    official foxglove_msgs definitions (:mod:`..messages.foxglove`). Once per namespace,
    ``ns/label_info`` (LabelInfo: the detection phrases then the label vocabulary, and the score
    threshold, as the node publishes it). Every message carries its input image's header; its log
    time is the input's recording time. With an object memory (``bag --memory``) and
    ``config.foxglove``, :meth:`add_object_scene` writes the memory's records on
    :data:`OBJECT_SCENE_TOPIC`.
    """

    def __init__(self, stream, config, debug_images: bool = False, distro: str = "jazzy",
                 target=None):
        from ros_mm_perception.messages.names import FOXGLOVE_TYPE_NAMES
        from ros_mm_perception.messages.typestore import rosbags_types, typestore

        store = typestore(distro)
        self.types = rosbags_types(store)
        self.overlays = rosbags_types(store, FOXGLOVE_TYPE_NAMES) if config.foxglove else None
        self.file = RosMcapFile(stream, store)
        self.phrases = list(dict.fromkeys([*config.detect_phrases, *config.labels]))
        self.threshold = config.score_threshold
        self.debug_images = debug_images
        self.target = target
        self.namespaces = set()

    def add(self, item, result) -> None:
        from ros_mm_perception.messages import convert, foxglove

        types, ns, t = self.types, item.namespace, item.log_time_ns
        if ns not in self.namespaces:
            self.namespaces.add(ns)
            info = convert.label_info(types, convert.result_header(types, result), self.phrases,
                                      self.threshold)
            self.file.write(f"{ns}/label_info", info, t)
        self.file.write(f"{ns}/detections", convert.detection_2d_array(types, result), t)
        if self.overlays is not None:
            annotations = foxglove.image_annotations(self.overlays, result)
            self.file.write(f"{ns}/annotations", annotations, t)
        if item.frame.depth is not None and item.frame.intrinsics is not None:
            located = result if self.target is None else self.target.apply(result)
            if located is not None:
                self.file.write(f"{ns}/detections_3d", convert.detection_3d_array(types, located),
                                t)
                if self.overlays is not None:
                    scene = foxglove.scene_update(self.overlays, located, ns)
                    self.file.write(f"{ns}/scene", scene, t)
        if result.labels_ran:
            self.file.write(f"{ns}/labels", convert.classification(types, result), t)
        if result.masks_ran:
            self.file.write(f"{ns}/instance_mask", convert.instance_mask(types, result), t)
        if self.debug_images:
            from ros_mm_perception.core.imaging.image_codec import numpy_to_image
            from ros_mm_perception.core.imaging.drawing import annotate

            debug = numpy_to_image(annotate(item.frame.image, result), "rgb8", data_as="numpy",
                                   header=convert.result_header(types, result),
                                   msg_factory=types.Image)
            self.file.write(f"{ns}/debug_image", debug, t)

    def add_object_scene(self, memory, log_time_ns: int) -> None:
        """The object memory's records as one SceneUpdate on :data:`OBJECT_SCENE_TOPIC`
        (:func:`~ros_mm_perception.messages.foxglove.memory_scene`); nothing without the Foxglove
        overlays."""
        from ros_mm_perception.messages import foxglove

        if self.overlays is not None:
            self.file.write(OBJECT_SCENE_TOPIC, foxglove.memory_scene(self.overlays, memory),
                            log_time_ns)

    def finish(self) -> None:
        self.file.finish()
