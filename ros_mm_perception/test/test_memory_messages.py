"""The object memory as ROS messages (rosbags classes): objects, object_markers, the services.

``RememberedObject`` and the two services are read from the interfaces package's own files and
registered with rosbags, so the conversions are checked against the definitions colcon builds.
"""

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rosbags.typesys import get_types_from_msg

from memory_helpers import camera_pose, frame, view, wall
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.memory.objects import GONE, ObjectMemory
from ros_mm_perception.core.results import Stamp
from ros_mm_perception.messages import memory as conv
from ros_mm_perception.messages.typestore import rosbags_types, typestore

IFACE = Path(__file__).resolve().parents[2] / "ros_mm_perception_interfaces"
S = 1_000_000_000


@pytest.fixture(scope="module")
def store():
    store = typestore()
    name = "ros_mm_perception_interfaces/msg/RememberedObject"
    store.register(get_types_from_msg((IFACE / "msg" / "RememberedObject.msg").read_text(), name))
    for srv in ("FindObjects", "ForgetObjects"):
        request, response = (IFACE / "srv" / f"{srv}.srv").read_text().split("\n---\n")
        for half, part in ((request, "Request"), (response, "Response")):
            store.register(
                get_types_from_msg(half, f"ros_mm_perception_interfaces/msg/{srv}_{part}")
            )
    return store


@pytest.fixture(scope="module")
def types(store):
    t = rosbags_types(store)
    return SimpleNamespace(
        **vars(t),
        RememberedObject=store.types["ros_mm_perception_interfaces/msg/RememberedObject"],
    )


def roundtrip(store, msg):
    return store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


@pytest.fixture
def memory():
    memory = ObjectMemory("map")
    pose = camera_pose()
    objects = [("red mug", (2.0, 0.3, 0.4)), ("blue box", (2.5, -0.4, 0.6))]
    for i in range(3):
        memory.update(
            frame(pose, objects, i * S), view(pose, i * S, ["red mug", "blue box"], wall())
        )
    for i in range(3, 8):  # the box is taken away
        memory.update(
            frame(pose, objects[:1], i * S), view(pose, i * S, ["red mug", "blue box"], wall())
        )
    return memory


def test_objects_array_carries_id_phrase_confidence_pose_covariance_and_size(store, types, memory):
    records = memory.objects()
    msg = roundtrip(store, conv.objects_array(types, records, "map", Stamp(7, 0)))
    assert msg.header.frame_id == "map" and msg.header.stamp.sec == 7
    assert [d.id for d in msg.detections] == [str(r.id) for r in records]
    for det, record in zip(msg.detections, records):
        hyp = det.results[0]
        assert hyp.hypothesis.class_id == record.phrase
        assert hyp.hypothesis.score == pytest.approx(record.confidence)
        p = hyp.pose.pose.position
        assert np.allclose([p.x, p.y, p.z], record.mean)
        cov = np.asarray(hyp.pose.covariance).reshape(6, 6)
        assert np.allclose(cov[:3, :3], record.covariance) and not cov[3:].any()
        s = det.bbox.size
        assert np.allclose([s.x, s.y, s.z], record.size)


def test_markers_clear_then_draw_each_object_with_its_age(store, types, memory):
    records = memory.objects()
    msg = roundtrip(store, conv.object_markers(types, records, "map", Stamp(9, 0), 9 * S))
    M = types.Marker
    assert msg.markers[0].action == M.DELETEALL
    texts = [m.text for m in msg.markers if m.type == M.TEXT_VIEW_FACING]
    gone = next(r for r in records if r.state == GONE)
    assert (
        f"{gone.phrase} (gone, seen 7 s ago)" in texts
        and "red mug (present, seen 2 s ago)" in texts
    )
    assert len({(m.ns, m.id) for m in msg.markers[1:]}) == 2 * len(records)


def test_find_request_is_bounded_and_answered_best_first(store, types, memory):
    Request = store.types["ros_mm_perception_interfaces/msg/FindObjects_Request"]
    Point = store.types["geometry_msgs/msg/Point"]

    def request(**kw):
        fields = dict(
            phrases=["red mug", "blue box"],
            max_results=0,
            min_confidence=0.0,
            max_age_s=0.0,
            point=Point(x=0.0, y=0.0, z=0.0),
            radius=0.0,
            include_gone=False,
        )
        fields.update(kw)
        return Request(**fields)

    query = conv.find_query(request())
    assert query["max_results"] == 10 and query["near"] is None and query["max_age_s"] is None
    assert [m.record.phrase for m in conv.answer_find(memory, query)] == ["red mug"]
    both = conv.answer_find(memory, conv.find_query(request(include_gone=True)))
    assert sorted(m.record.state for m in both) == ["gone", "present"]
    near = conv.find_query(
        request(phrases=[], point=Point(x=2.5, y=-0.4, z=0.6), radius=0.2, include_gone=True)
    )
    assert [m.record.phrase for m in conv.answer_find(memory, near)] == ["blue box"]
    msg = roundtrip(store, conv.remembered_object(types, both[0]))
    assert msg.phrase == both[0].record.phrase and msg.state == both[0].record.state
    assert msg.observations == both[0].record.observations
    assert msg.last_seen.sec * S + msg.last_seen.nanosec == both[0].record.last_seen_ns
    for bad in (
        dict(phrases=["x"] * 17),
        dict(max_results=1001),
        dict(min_confidence=math.nan),
        dict(radius=-1.0),
        dict(max_age_s=math.inf),
    ):
        with pytest.raises(UserError):
            conv.find_query(request(**bad))


def test_forget_request(store):
    Request = store.types["ros_mm_perception_interfaces/msg/ForgetObjects_Request"]
    assert conv.forget_ids(Request(ids=np.array([3, 5], np.uint64), all=False)) == [3, 5]
    assert conv.forget_ids(Request(ids=np.array([], np.uint64), all=True)) is None
