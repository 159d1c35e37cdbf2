"""Newest-frame scheduler: bounded, drops counted, newest frames in order, clean shutdown (no
sleeps)."""

import threading

import numpy as np
import pytest

from ros_mm_perception.core.results import Frame, Stamp
from ros_mm_perception.core.perception.scheduler import FrameScheduler

IMAGE = np.zeros((2, 2, 3), np.uint8)
JOIN_S = 30


def frame(camera, i):
    return Frame(IMAGE, camera=camera, frame_id=f"{camera}_optical", stamp=Stamp(i, 0))


def start(target):
    errors = []

    def wrapped():
        try:
            target()
        except BaseException as err:  # surfaced in the main thread
            errors.append(err)

    thread = threading.Thread(target=wrapped, daemon=True)
    thread.start()
    return thread, errors


def join(thread, errors):
    thread.join(JOIN_S)
    assert not thread.is_alive(), "thread did not finish"
    if errors:
        raise errors[0]


def test_frames_arriving_while_one_waits_replace_it_and_count_as_dropped():
    sched = FrameScheduler()
    replaced = [sched.put(frame("cam", i)) for i in range(10)]
    assert replaced == [False] + [True] * 9
    assert sched.pending() == 1
    (newest,) = sched.take(timeout=0)
    assert newest.stamp.sec == 9
    stats = sched.stats()["cam"]
    assert (stats.received, stats.processed, stats.dropped) == (10, 1, 9)


def test_a_batch_holds_one_frame_per_camera_longest_waiting_first():
    sched = FrameScheduler(max_batch=2)
    for cam in ("a", "b", "c"):
        sched.put(frame(cam, 0))
    sched.put(frame("a", 1))                 # replacing keeps a's place at the front
    first = sched.take(timeout=0)
    assert [(f.camera, f.stamp.sec) for f in first] == [("a", 1), ("b", 0)]
    assert [f.camera for f in sched.take(timeout=0)] == ["c"]
    assert sched.take(timeout=0) == []


def test_producer_faster_than_consumer():
    """Each time the consumer is busy, the producer delivers ``burst`` frames per camera."""
    cameras, bursts, burst = ("front", "rear"), 12, 5
    sched = FrameScheduler(max_batch=len(cameras))
    busy, ready = threading.Event(), threading.Event()
    taken, max_pending = [], []

    def producer():
        i = 0
        for _ in range(bursts):
            assert busy.wait(JOIN_S)
            busy.clear()
            for _ in range(burst):
                for cam in cameras:
                    sched.put(frame(cam, i))
                    max_pending.append(sched.pending())
                i += 1
            ready.set()

    def consumer():
        for _ in range(bursts):
            busy.set()                       # "the GPU is busy": the producer runs meanwhile
            assert ready.wait(JOIN_S)
            ready.clear()
            taken.append(sched.take(timeout=JOIN_S))
        sched.close()

    threads = [start(producer), start(consumer)]
    for t in threads:
        join(*t)
    assert max(max_pending) <= len(cameras)  # bounded: one waiting frame per camera
    for batch_no, batch in enumerate(taken):
        assert sorted(f.camera for f in batch) == sorted(cameras)
        # The newest frame of each burst is processed; the older ones were dropped.
        assert {f.stamp.sec for f in batch} == {(batch_no + 1) * burst - 1}
        assert all(f.frame_id == f"{f.camera}_optical" for f in batch)
    for cam, stats in sched.stats().items():
        assert stats.received == bursts * burst
        assert stats.processed == bursts
        assert stats.dropped == bursts * (burst - 1)


def test_free_running_producer_keeps_order_and_consistent_counts():
    n, sched = 2000, FrameScheduler()
    processed = []

    def producer():
        for i in range(n):
            sched.put(frame("cam", i))

    def consumer():
        # The newest frame is never dropped, so the consumer always sees the last one.
        while not processed or processed[-1] != n - 1:
            batch = sched.take(timeout=JOIN_S)
            assert batch, "the last frame never arrived"
            processed.extend(f.stamp.sec for f in batch)

    threads = [start(producer), start(consumer)]
    for t in threads:
        join(*t)
    assert processed == sorted(set(processed)), "frames came out of order or twice"
    assert sched.pending() == 0
    stats = sched.stats()["cam"]
    assert stats.received == n
    assert stats.processed == len(processed)
    assert stats.processed + stats.dropped == n


def test_close_wakes_a_blocked_take():
    sched = FrameScheduler()
    result = []
    thread = start(lambda: result.append(sched.take()))   # blocks: nothing waits, no timeout
    sched.close()
    join(*thread)
    assert result == [[]]
    assert sched.closed
    assert sched.put(frame("cam", 0)) is False
    assert sched.take(timeout=0) == []


def test_take_times_out_empty():
    assert FrameScheduler().take(timeout=0) == []


def test_bounds_are_enforced():
    sched = FrameScheduler(max_cameras=2)
    sched.put(frame("a", 0))
    sched.put(frame("b", 0))
    with pytest.raises(ValueError, match="limit of 2 cameras"):
        sched.put(frame("c", 0))
    with pytest.raises(ValueError):
        FrameScheduler(max_batch=0)


def test_items_may_be_keyed_explicitly():
    sched = FrameScheduler()
    sched.put(b"raw message 1", camera="cam")
    sched.put(b"raw message 2", camera="cam")
    assert sched.take(timeout=0) == [b"raw message 2"]
