"""rosbag2 input (MCAP or sqlite3, folder or single file) through the ``rosbags`` library.

Which topics are used (:func:`plan_cameras`):

- camera topics: those given, else every ``sensor_msgs/Image`` or ``CompressedImage`` topic that is
  not a depth topic; when both ``X`` and ``X/compressed`` are recorded only ``X`` is used;
- depth: a raw ``sensor_msgs/Image`` topic with ``depth`` in its name (16UC1 millimetres or 32FC1
  metres, aligned to the colour image: same size, or same aspect ratio), the one sharing the
  longest namespace with the camera topic (or the only one, for a single camera). Each image is
  paired with the depth image whose header stamp is nearest, within ``depth_tolerance_s`` seconds
  (:mod:`.pairing`; default: the node's ``depth_tolerance_s`` setting);
- camera_info: ``<namespace>/camera_info`` next to the image topic, or the bag's only CameraInfo
  topic for a single camera; the latest one recorded before an image gives that image's intrinsics.

Outputs of a camera go under its namespace: the image topic without ``/compressed`` and without its
last name (``/front/color/image_raw`` → ``/front/color``). Message types come from the bag's own
schemas; bags without any (sqlite3 bags recorded before Iron) use the standard ROS 2 definitions.

Damaged recordings (:mod:`.storage_reading`): every message that can be read is used. A recording
cut off before its summary, a damaged MCAP chunk or sqlite3 page loses only what was in it; each
problem is one line through ``warn`` and in :attr:`BagSource.damaged`, and image messages known to
be lost (from the summary's counts or the chunks' message indexes) are counted in
:attr:`BagSource.lost`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.errors import ImageFormatError, UserError
from ros_mm_perception.core.perception.geometry import depth_scale
from ros_mm_perception.core.config import DEFAULT_MAX_IMAGE_PIXELS
from ros_mm_perception.core.imaging.image_codec import depth_to_metres
from ros_mm_perception.core.results import Frame, Intrinsics
from ros_mm_perception.messages.convert import stamp_of
from ros_mm_perception.messages.frames import intrinsics_of, rgb_of
from ros_mm_perception.offline.pairing import NearestStampPairer
from ros_mm_perception.offline.input_frame import InputFrame, camera_name
from ros_mm_perception.offline import storage_reading

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

    ``/front/color/image_raw`` → ``/front/color``; ``/cam/image_raw/compressed`` → ``/cam``;
    ``/image`` → ``""``.
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

    ``depth_topics=None`` picks depth automatically, ``[]`` disables depth, a list restricts the
    choice.
    """
    images = sorted(t for t, typ in topic_types.items() if typ in (IMAGE, COMPRESSED))
    listing = ", ".join(f"{t} ({topic_types[t]})" for t in images) or "none"
    if camera_topics:
        for topic in camera_topics:
            if topic not in topic_types:
                raise UserError(f"camera topic {topic} is not in the bag; its image topics: "
                                f"{listing}")
            if topic_types[topic] not in (IMAGE, COMPRESSED):
                raise UserError(f"camera topic {topic} has type {topic_types[topic]}, not an "
                                "image type")
        cameras = list(dict.fromkeys(camera_topics))
    else:
        cameras = [t for t in images if not is_depth_topic(t)]
        cameras = [t for t in cameras
                   if not (t.endswith("/compressed") and t[: -len("/compressed")] in cameras)]
        if not cameras:
            raise UserError(f"the bag has no camera image topics (image topics: {listing})")
    if depth_topics is None:
        depths = [t for t in images if topic_types[t] == IMAGE and is_depth_topic(t)
                  and t not in cameras]
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
            raise UserError(f"camera topics {seen[namespace]} and {topic} would both publish "
                            f"under {namespace or '/'}; choose one with --camera-topic")
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
        self.info_problem = ""
        """Why the newest camera_info could not be used ("" when it could, or none came yet)."""
        self.count = 0
        self.warned = set()


ROS_SCHEMA_ENCODINGS = ("ros2msg", "ros2idl", "")
"""MCAP schema encodings of ROS 2 messages ("" for a channel whose schema was lost)."""


class BagSource:
    """Frames of the camera topics of a rosbag2, with depth and intrinsics attached when recorded.

    Undecodable image messages are yielded as errors; undecodable depth or camera_info messages are
    reported through ``warn`` and counted in :attr:`aux_skipped` (the image is still processed).
    """

    def __init__(self, path, camera_topics: Sequence[str] = (),
                 depth_topics: Optional[Sequence[str]] = None,
                 depth_tolerance_s: Optional[float] = None,
                 warn: Callable[[str], None] = lambda _m: None,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        self.path = Path(path)
        self.warn = warn
        self.max_pixels = max_pixels
        self.aux_skipped = 0
        self.lost = 0
        """Image messages known to be in the recording that could not be read (damage)."""
        self.damage = storage_reading.Damage(warn)
        self.reader = None
        self._open()
        try:
            self.cameras = plan_cameras(self.msgtypes, camera_topics, depth_topics)
        except BaseException:
            self.close()
            raise
        self.total = sum(self.counts.get(c.image_topic, 0) for c in self.cameras)
        if depth_tolerance_s is None:
            depth_tolerance_s = PerceptionConfig().depth_tolerance_s
        self.tolerance_ns = int(round(depth_tolerance_s * 1e9))

    @property
    def damaged(self) -> List[str]:
        """One line per damaged part of the recording (empty for an intact one)."""
        return self.damage.notes

    @property
    def paths(self) -> List[Path]:
        """The files the recording is read from (no output may be written to them)."""
        return [p.resolve() for _kind, p in self.storages]

    def _open(self) -> None:
        """Open with rosbags (metadata, types); a recording it cannot open, one without
        ``metadata.yaml`` and one whose ``metadata.yaml`` disagrees with its files are read file by
        file (the files are trusted)."""
        from rosbags.highlevel import AnyReader

        from ros_mm_perception.messages.typestore import typestore

        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            files = storage_reading.split_files(self.path)
            if not files:
                raise UserError(f"cannot read bag {self.path}: no metadata.yaml and no storage "
                                f"files named {self.path.name}_<N>.mcap or .db3")
            self.damage.note(f"{self.path}: no metadata.yaml (its recorder did not finish); "
                             f"reading its {len(files)} storage file(s) in split order, as ros2 "
                             "bag reindex would")
            self._open_files([(storage_reading.storage_kind(f), f) for f in files],
                             "no metadata.yaml", {})
            return
        try:
            reader = AnyReader([self.path], default_typestore=typestore())
            reader.open()
        except Exception as err:  # rosbags raises several unrelated types for unreadable files
            self._open_damaged(err)
            return
        self.reader = reader
        infos = reader.topics
        self.msgtypes = {t: i.msgtype for t, i in infos.items()}
        self.counts = {t: i.msgcount for t, i in infos.items()}
        self.declared = dict(self.counts)
        self.storages = _storage_files(reader)
        self.deserialize = reader.deserialize
        disagreement = self._metadata_disagreement()
        if disagreement:
            self.damage.note(disagreement)
            reader.close()
            self.reader = None
            self._open_files(self.storages, disagreement, {})

    def _metadata_disagreement(self) -> str:
        """What a folder's ``metadata.yaml`` says that its storage files do not ("" when they
        agree)."""
        if not self.path.is_dir() or any(kind is None for kind, _ in self.storages):
            return ""
        try:
            held = set().union(*(storage_reading.storage_topics(kind, p)
                                 for kind, p in self.storages))
        except Exception:  # a storage file that cannot be listed: rosbags' reading decides
            return ""
        listed = set(self.msgtypes)
        if held == listed:
            return ""
        return (f"{self.path}: metadata.yaml lists topics its storage files do not hold "
                f"({', '.join(sorted(listed - held)) or 'none'}; the files hold "
                f"{', '.join(sorted(held - listed)) or 'no others'}); reading the files as they "
                "are")

    def _open_damaged(self, err: Exception) -> None:
        reason = one_line(err)
        try:
            self.storages, missing = _storage_files_of(self.path)
        except Exception as exc:  # unreadable or garbled metadata.yaml
            raise UserError(f"cannot read bag {self.path}: {reason}") from exc
        if missing and self.storages:
            self.damage.note(f"{self.path}: {', '.join(missing)} listed in metadata.yaml "
                             f"{'is' if len(missing) == 1 else 'are'} missing; reading the "
                             f"{len(self.storages)} storage file(s) present")
        self._open_files(self.storages, reason, _declared_counts(self.path))

    def _open_files(self, storages, reason: str, declared: Dict[str, int]) -> None:
        """Read the topics of ``storages`` ((kind, path) pairs) file by file, past any damage."""
        self.storages = storages
        if not self.storages or any(kind is None for kind, _ in self.storages):
            raise UserError(f"cannot read bag {self.path}: {reason}")
        self.msgtypes, self.counts, schemas, notes = {}, {}, {}, []
        foreign = []
        self.declared = declared
        for kind, path in self.storages:
            try:
                if kind == "mcap":
                    topics, seen = storage_reading.mcap_topics(path)
                    notes += seen
                    for topic, info in topics.items():
                        if info.schema_encoding not in ROS_SCHEMA_ENCODINGS:
                            foreign.append(f"{topic} ({info.schema_encoding})")
                            continue
                        self.msgtypes[topic] = info.msgtype
                        self.counts[topic] = self.counts.get(topic, 0) + info.count
                        if info.schema_encoding == "ros2msg" and info.schema:
                            schemas[info.msgtype] = info.schema
                else:
                    self.msgtypes.update(storage_reading.db3_topics(path))
            except Exception as exc:  # sqlite3 and mcap errors alike: nothing readable
                raise UserError(f"cannot read bag {self.path}: {reason}") from exc
        if not self.msgtypes:
            raise UserError(f"cannot read bag {self.path}: no message in it can be read "
                            f"({(notes or [reason])[0]})")
        self.deserialize = _typestore_of(self.path, schemas).deserialize_cdr
        for note in notes:
            self.damage.note(note)
        if foreign:  # what rosbags could not open, and no damage: said, but not as damage
            self.warn(f"{self.path}: topics not in a ROS 2 encoding are left aside: "
                      f"{', '.join(foreign)}")
        elif not self.damage.notes:
            self.damage.note(f"{self.path}: damaged ({reason}); reading every message that can "
                             "be read")

    def __len__(self) -> int:
        return self.total

    def transform_tree(self):
        """The recording's ``/tf`` and ``/tf_static`` as a transform tree
        (:mod:`.bag_transforms`)."""
        from ros_mm_perception.offline.bag_transforms import (TF_TOPICS, TF_TYPE,
                                                              read_transform_tree)

        topics = {t for t in TF_TOPICS if self.msgtypes.get(t) == TF_TYPE}
        messages = ((t, typ, raw)
                    for t, typ, _log_time, raw in self._messages(topics)) if topics else ()
        tree = read_transform_tree(messages, self.deserialize, self.path, self.warn)
        self.transforms_rejected = dict(tree.rejected)
        return tree

    def close(self) -> None:
        if self.reader is not None and self.reader.stack:
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
        self._index = 0
        read: Counter = Counter()
        for topic, msgtype, log_time, raw in self._messages(set(roles)):
            kinds = roles[topic]
            read[topic] += 1
            try:
                msg = self.deserialize(raw, msgtype)
            except Exception as err:  # corrupt CDR raises assorted errors; skip, never crash
                yield from self._bad_message(topic, kinds, log_time,
                                             f"undecodable message: {one_line(err)}")
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
        self._count_lost(roles, read)

    def _messages(self, topics):
        """(topic, type, log time, raw CDR) of ``topics`` in recording order, past any damage."""
        for kind, path in self.storages:
            if kind == "mcap":
                yield from storage_reading.mcap_messages(path, self.damage, topics)
            elif kind == "sqlite3":
                yield from storage_reading.db3_messages(path, self.damage, topics)
            # a storage rosbags reads but the damage-tolerant readers do not (compressed files)
            else:
                connections = [c for c in self.reader.connections if c.topic in topics]
                for connection, log_time, raw in self.reader.messages(connections=connections):
                    yield connection.topic, connection.msgtype, log_time, raw
                return

    def _count_lost(self, roles, read: Counter) -> None:
        """Count the messages the damage took: the recording's own counts where it has them, else
        the damaged chunks' message indexes."""
        for topic, kinds in roles.items():
            lost = max(self.declared.get(topic, 0) - read[topic], 0)
            lost = max(lost, self.damage.lost.get(topic, 0))
            if not lost:
                continue
            if any(kind == "image" for kind, _ in kinds):
                self.lost += lost
            else:
                self.aux_skipped += lost
            if not self.damage.notes:
                self.damage.note(f"{topic}: {lost} of its {self.declared.get(topic)} recorded "
                                 "messages are missing")

    def _bad_message(self, topic, kinds, log_time, reason) -> Iterator[InputFrame]:
        images = [state for kind, state in kinds if kind == "image"]
        if not images:
            self.aux_skipped += 1
            self.warn(f"{topic}: {reason}; skipped")
        for state in images:
            yield InputFrame(self._next_index(), f"{topic}#{state.count}", state.plan.namespace,
                             log_time, error=reason)
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
        self._check_stamp(state, msg.header, state.plan.image_topic)
        for ready, depth in state.pairer.add_image(stamp, pending):
            yield self._frame(state, ready, depth)

    def _on_depth(self, state: _CameraState, msg) -> Iterator[InputFrame]:
        try:
            depth = depth_to_metres(msg, max_pixels=self.max_pixels)
        except Exception as err:
            self.aux_skipped += 1
            self.warn(f"{state.plan.depth_topic}: bad depth image ({err}); skipped")
            return
        stamp = stamp_of(msg.header).to_ns()
        self._check_stamp(state, msg.header, state.plan.depth_topic)
        for ready, paired in state.pairer.add_depth(stamp, depth):
            yield self._frame(state, ready, paired)

    def _check_stamp(self, state: _CameraState, header, topic: str) -> None:
        """Say once per camera when stamps are not normalised or go backwards (pairing copes; see
        :mod:`.pairing`)."""
        if header.stamp.nanosec >= 1_000_000_000:
            self._warn_once(state, "nanosec",
                            f"{topic}: header stamp with nanosec {header.stamp.nanosec} >= 1e9; "
                            "read as sec + nanosec / 1e9")
        if state.pairer.jumps and "jump" not in state.warned:
            self._warn_once(state, "jump",
                            f"{state.plan.image_topic}: header stamps go backwards; depth is "
                            "paired within each run of increasing stamps")

    def _on_info(self, state: _CameraState, msg) -> None:
        try:
            state.intrinsics = intrinsics_of(msg)
        except ImageFormatError as err:
            self.aux_skipped += 1
            state.info_problem = str(err)
            self.warn(f"{state.plan.info_topic}: unusable camera_info ({err}); skipped")

    def _frame(self, state: _CameraState, pending: _Pending, depth) -> InputFrame:
        msg, intrinsics, plan = pending.msg, pending.intrinsics, state.plan
        item = InputFrame(pending.index, f"{plan.image_topic}#{pending.number}", plan.namespace,
                          pending.log_time)
        try:
            image = rgb_of(msg, self.max_pixels)
        except Exception as err:  # codec and OpenCV errors alike mean bad image data
            item.error = f"bad image data: {err}"
            return item
        if not image.flags.writeable:  # a view of the read-only message buffer
            image = image.copy()
        if depth is not None and intrinsics is None:
            if state.info_problem:
                self._warn_once(state, "no camera_info",
                                f"{plan.image_topic}: depth whose camera_info is "
                                f"unusable ({state.info_problem}); those frames get no 3D")
            else:
                self._warn_once(state, "no camera_info",
                                f"{plan.image_topic}: depth without camera_info before "
                                "it; those frames get no 3D")
            depth = None
        if depth is not None:
            try:
                depth_scale(image.shape, depth.shape)
            except ImageFormatError as err:
                self._warn_once(state, "size",
                                f"{plan.depth_topic}: {err}; those frames get no 3D")
                depth = None
        item.frame = Frame(image, camera=camera_name(plan.namespace),
                           frame_id=str(msg.header.frame_id), stamp=stamp_of(msg.header),
                           depth=depth, intrinsics=intrinsics if depth is not None else None)
        return item

    def _warn_once(self, state: _CameraState, key: str, message: str) -> None:
        if key not in state.warned:
            state.warned.add(key)
            self.warn(message)


def one_line(err: Exception, limit: int = 200) -> str:
    """A library error message as one short line."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _storage_files(reader) -> List[tuple]:
    """(kind, path) of the storage files an open AnyReader reads; kind None for ones rosbags must
    read."""
    from rosbags.rosbag2.storage_mcap import McapReader
    from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader

    files = []
    for bag in reader.readers:
        storage = bag.storage
        for part in getattr(storage, "storages", [storage]):
            kind = (
                "mcap"
                if isinstance(part, McapReader)
                else "sqlite3" if isinstance(part, Sqlite3Reader) else None
            )
            files.append((kind, Path(part.path)))
    if getattr(reader.readers[0].storage, "metadata",
               None) and reader.readers[0].storage.metadata.compression_mode:
        return [(None, p) for _kind, p in files]  # compressed files are read through rosbags
    return files


def _storage_files_of(path: Path) -> Tuple[List[tuple], List[str]]:
    """(kind, path) of a recording's storage files that exist, found without rosbags (which could
    not open it), and the names of those its metadata.yaml lists but are missing."""
    if path.is_file():
        return [(storage_reading.storage_kind(path), path)], []
    import yaml

    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    if (info.get("compression_mode") or "none").lower() != "none":
        return [(None, path)], []
    files = [path / Path(str(name)).name for name in info["relative_file_paths"]]
    return ([(storage_reading.storage_kind(f), f) for f in files if f.is_file()],
            [f.name for f in files if not f.is_file()])


def _declared_counts(path: Path) -> Dict[str, int]:
    """Message counts per topic from a recording folder's metadata.yaml (empty when there is
    none)."""
    import yaml

    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return {t["topic_metadata"]["name"]: int(t["message_count"])
                for t in info["topics_with_message_count"]}
    except Exception:  # no folder, no or garbled metadata: the counts are unknown
        return {}


def _typestore_of(path: Path, schemas: Dict[str, str]):
    """The standard ROS 2 types plus the recording's own ``ros2msg`` schemas."""
    from rosbags.typesys import get_types_from_msg

    from ros_mm_perception.messages.typestore import typestore

    store = typestore()
    for msgtype, text in schemas.items():
        try:
            store.register(get_types_from_msg(text, msgtype))
        except Exception as err:
            raise UserError(
                f"bag {path}: the schema of {msgtype} is garbled ({one_line(err)})"
            ) from None
    return store
