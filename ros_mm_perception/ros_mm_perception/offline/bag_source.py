"""rosbag2 input (MCAP or sqlite3, folder or single file) through the ``rosbags`` library.

Which topics are used (:func:`plan_cameras`):

- camera topics: those given, else every ``sensor_msgs/Image`` or ``CompressedImage`` topic that is
  not a depth topic; when both ``X`` and ``X/compressed`` are recorded only ``X`` is used;
- depth: a raw ``sensor_msgs/Image`` topic with ``depth`` in its name (16UC1 millimetres or 32FC1
  metres, aligned to the colour image: same size, or same aspect ratio), the one sharing the longest namespace with
  the camera topic (or the only one, for a single camera). Each image is paired with the depth image
  whose header stamp is nearest, within ``depth_tolerance_s`` seconds (:mod:`.pairing`; default:
  the node's ``depth_tolerance_s`` setting);
- camera_info: ``<namespace>/camera_info`` next to the image topic, or the bag's only CameraInfo
  topic for a single camera; the latest one recorded before an image gives that image's intrinsics.

Outputs of a camera go under its namespace: the image topic without ``/compressed`` and without its
last name (``/front/color/image_raw`` → ``/front/color``). Message types come from the bag's own
schemas; bags without any (sqlite3 bags recorded before Iron) use the standard ROS 2 definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence

from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.errors import ImageFormatError, UserError
from ros_mm_perception.core.perception.geometry import depth_scale
from ros_mm_perception.core.imaging.image_codec import depth_to_metres
from ros_mm_perception.core.results import Frame, Intrinsics
from ros_mm_perception.messages.convert import stamp_of
from ros_mm_perception.messages.frames import intrinsics_of, rgb_of
from ros_mm_perception.offline.pairing import NearestStampPairer
from ros_mm_perception.offline.input_frame import InputFrame, camera_name

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"


@dataclass(frozen=True)
class CameraPlan:
    """The topics of one camera in a bag and where its outputs go."""

    image_topic: str
    namespace: str
    depth_topic: Optional[str] = None
    info_topic: Optional[str] = None


def output_namespace(image_topic: str) -> str:
    """The outputs' namespace of a camera topic.

    ``/front/color/image_raw`` → ``/front/color``; ``/cam/image_raw/compressed`` → ``/cam``; ``/image`` → ``""``.
    """
    topic = image_topic.rstrip("/")
    if topic.endswith("/compressed"):
        topic = topic[: -len("/compressed")]
    return topic.rsplit("/", 1)[0] if "/" in topic else ""


def is_depth_topic(topic: str) -> bool:
    return any("depth" in part.lower() for part in topic.split("/"))


def _common_parts(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.strip("/").split("/"), b.strip("/").split("/")):
        if x != y:
            break
        n += 1
    return n


def plan_cameras(topic_types: Dict[str, str], camera_topics: Sequence[str] = (),
                 depth_topics: Optional[Sequence[str]] = None) -> List[CameraPlan]:
    """Choose camera, depth and camera_info topics from ``topic name → message type``.

    ``depth_topics=None`` picks depth automatically, ``[]`` disables depth, a list restricts the choice.
    """
    images = sorted(t for t, typ in topic_types.items() if typ in (IMAGE, COMPRESSED))
    listing = ", ".join(f"{t} ({topic_types[t]})" for t in images) or "none"
    if camera_topics:
        for topic in camera_topics:
            if topic not in topic_types:
                raise UserError(f"camera topic {topic} is not in the bag; its image topics: {listing}")
            if topic_types[topic] not in (IMAGE, COMPRESSED):
                raise UserError(f"camera topic {topic} has type {topic_types[topic]}, not an image type")
        cameras = list(dict.fromkeys(camera_topics))
    else:
        cameras = [t for t in images if not is_depth_topic(t)]
        cameras = [t for t in cameras if not (t.endswith("/compressed") and t[: -len("/compressed")] in cameras)]
        if not cameras:
            raise UserError(f"the bag has no camera image topics (image topics: {listing})")
    if depth_topics is None:
        depths = [t for t in images if topic_types[t] == IMAGE and is_depth_topic(t) and t not in cameras]
    else:
        for topic in depth_topics:
            if topic_types.get(topic) != IMAGE:
                raise UserError(f"depth topic {topic} is not a sensor_msgs/Image topic of the bag")
        depths = list(depth_topics)
    infos = sorted(t for t, typ in topic_types.items() if typ == CAMERA_INFO)

    plans, seen = [], {}
    for topic in cameras:
        namespace = output_namespace(topic)
        if namespace in seen:
            raise UserError(f"camera topics {seen[namespace]} and {topic} would both publish under "
                            f"{namespace or '/'}; choose one with --camera-topic")
        seen[namespace] = topic
        plans.append(CameraPlan(topic, namespace,
                                _pick_depth(topic, depths, single_camera=len(cameras) == 1),
                                _pick_info(namespace, infos, single_camera=len(cameras) == 1)))
    return plans


def _pick_depth(camera_topic: str, depths: List[str], single_camera: bool) -> Optional[str]:
    scored = [(_common_parts(camera_topic, d), "aligned" in d, d) for d in depths]
    scored = [s for s in scored if s[0] > 0 or single_camera]
    return max(scored)[2] if scored else None


def _pick_info(namespace: str, infos: List[str], single_camera: bool) -> Optional[str]:
    if f"{namespace}/camera_info" in infos:
        return f"{namespace}/camera_info"
    return infos[0] if len(infos) == 1 and single_camera else None


class _Pending(NamedTuple):
    """An image message waiting for its depth pairing."""

    index: int
    number: int
    msg: Any
    log_time: int
    intrinsics: Optional[Intrinsics]


class _CameraState:
    def __init__(self, plan: CameraPlan, tolerance_ns: int):
        self.plan = plan
        self.pairer = NearestStampPairer(tolerance_ns, max_pending=16)
        self.intrinsics: Optional[Intrinsics] = None
        self.count = 0
        self.warned = set()


class BagSource:
    """Frames of the camera topics of a rosbag2, with depth and intrinsics attached when recorded.

    Undecodable image messages are yielded as errors; undecodable depth or camera_info messages are
    reported through ``warn`` and counted in :attr:`aux_skipped` (the image is still processed).
    """

    def __init__(self, path, camera_topics: Sequence[str] = (), depth_topics: Optional[Sequence[str]] = None,
                 depth_tolerance_s: Optional[float] = None, warn: Callable[[str], None] = lambda _m: None):
        from rosbags.highlevel import AnyReader

        from ros_mm_perception.messages.typestore import typestore

        self.path = Path(path)
        self.warn = warn
        self.aux_skipped = 0
        self.reader = AnyReader([self.path], default_typestore=typestore())
        try:
            self.reader.open()
        except Exception as err:  # rosbags raises several unrelated types for unreadable files
            raise UserError(f"cannot read bag {self.path}: {err}") from err
        try:
            infos = self.reader.topics
            self.cameras = plan_cameras({t: i.msgtype for t, i in infos.items()}, camera_topics, depth_topics)
        except BaseException:
            self.reader.close()
            raise
        self.total = sum(infos[c.image_topic].msgcount for c in self.cameras)
        if depth_tolerance_s is None:
            depth_tolerance_s = PerceptionConfig().depth_tolerance_s
        self.tolerance_ns = int(round(depth_tolerance_s * 1e9))

    def __len__(self) -> int:
        return self.total

    def transform_tree(self):
        """The recording's ``/tf`` and ``/tf_static`` as a transform tree (:mod:`.bag_transforms`)."""
        from ros_mm_perception.offline.bag_transforms import read_transform_tree

        return read_transform_tree(self.reader, self.path, self.warn)

    def close(self) -> None:
        if self.reader.stack:
            self.reader.close()

    def __iter__(self) -> Iterator[InputFrame]:
        states = [_CameraState(plan, self.tolerance_ns) for plan in self.cameras]
        roles: Dict[str, list] = {}
        for state in states:
            roles.setdefault(state.plan.image_topic, []).append(("image", state))
            if state.plan.depth_topic:
                roles.setdefault(state.plan.depth_topic, []).append(("depth", state))
            if state.plan.info_topic:
                roles.setdefault(state.plan.info_topic, []).append(("info", state))
        connections = [c for c in self.reader.connections if c.topic in roles]
        self._index = 0
        for connection, log_time, raw in self._messages(connections):
            kinds = roles[connection.topic]
            try:
                msg = self.reader.deserialize(raw, connection.msgtype)
            except Exception as err:  # corrupt CDR raises assorted errors; skip, never crash
                yield from self._bad_message(connection.topic, kinds, log_time, f"undecodable message: {err}")
                continue
            for kind, state in kinds:
                if kind == "image":
                    yield from self._on_image(state, msg, log_time)
                elif kind == "depth":
                    yield from self._on_depth(state, msg)
                else:
                    self._on_info(state, msg)
        for state in states:
            for pending, depth in state.pairer.flush():
                yield self._frame(state, pending, depth)

    def _messages(self, connections):
        """The raw messages in recording order; a damaged file (bad chunk, truncation) is a :class:`UserError`."""
        try:
            yield from self.reader.messages(connections=connections)
        except Exception as err:
            raise UserError(f"bag {self.path} is damaged after {self._index} images: {err}") from err

    def _bad_message(self, topic, kinds, log_time, reason) -> Iterator[InputFrame]:
        images = [state for kind, state in kinds if kind == "image"]
        if not images:
            self.aux_skipped += 1
            self.warn(f"{topic}: {reason}; skipped")
        for state in images:
            yield InputFrame(self._next_index(), f"{topic}#{state.count}", state.plan.namespace, log_time,
                             error=reason)
            state.count += 1

    def _next_index(self) -> int:
        self._index += 1
        return self._index - 1

    def _on_image(self, state: _CameraState, msg, log_time: int) -> Iterator[InputFrame]:
        pending = _Pending(self._next_index(), state.count, msg, log_time, state.intrinsics)
        state.count += 1
        if not state.plan.depth_topic:
            yield self._frame(state, pending, None)
            return
        stamp = stamp_of(msg.header).to_ns()
        for ready, depth in state.pairer.add_image(stamp, pending):
            yield self._frame(state, ready, depth)

    def _on_depth(self, state: _CameraState, msg) -> Iterator[InputFrame]:
        try:
            depth = depth_to_metres(msg)
        except Exception as err:
            self.aux_skipped += 1
            self.warn(f"{state.plan.depth_topic}: bad depth image ({err}); skipped")
            return
        stamp = stamp_of(msg.header).to_ns()
        for ready, paired in state.pairer.add_depth(stamp, depth):
            yield self._frame(state, ready, paired)

    def _on_info(self, state: _CameraState, msg) -> None:
        try:
            state.intrinsics = intrinsics_of(msg)
        except ImageFormatError as err:
            self.aux_skipped += 1
            self.warn(f"{state.plan.info_topic}: unusable camera_info ({err}); skipped")

    def _frame(self, state: _CameraState, pending: _Pending, depth) -> InputFrame:
        msg, intrinsics, plan = pending.msg, pending.intrinsics, state.plan
        item = InputFrame(pending.index, f"{plan.image_topic}#{pending.number}", plan.namespace, pending.log_time)
        try:
            image = rgb_of(msg)
        except Exception as err:  # codec and OpenCV errors alike mean bad image data
            item.error = f"bad image data: {err}"
            return item
        if not image.flags.writeable:  # a view of the read-only message buffer
            image = image.copy()
        if depth is not None and intrinsics is None:
            self._warn_once(state, "no camera_info", f"{plan.image_topic}: depth without camera_info before it; "
                                                     "those frames get no 3D")
            depth = None
        if depth is not None:
            try:
                depth_scale(image.shape, depth.shape)
            except ImageFormatError as err:
                self._warn_once(state, "size", f"{plan.depth_topic}: {err}; those frames get no 3D")
                depth = None
        item.frame = Frame(image, camera=camera_name(plan.namespace), frame_id=str(msg.header.frame_id),
                           stamp=stamp_of(msg.header), depth=depth,
                           intrinsics=intrinsics if depth is not None else None)
        return item

    def _warn_once(self, state: _CameraState, key: str, message: str) -> None:
        if key not in state.warned:
            state.warned.add(key)
            self.warn(message)
