"""The object memory's SQLite file: restart, a writer killed mid-run, damaged and foreign files."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from memory_helpers import camera_pose, frame, unit, view, wall
from ros_mm_perception.core.memory.objects import GONE, ObjectMemory
from ros_mm_perception.core.memory.store import SCHEMA_VERSION, MemoryFileError

OBJECTS = [("red mug", (2.0, 0.3, 0.4)), ("blue box", (2.5, -0.4, 0.6))]
S = 1_000_000_000
HERE = Path(__file__).resolve().parent


def fill(memory, n=3, start=0, objects=OBJECTS, embeddings=None):
    pose = camera_pose()
    for i in range(start, start + n):
        memory.update(
            frame(pose, objects, i * S, embeddings=embeddings),
            view(pose, i * S, [p for p, _ in OBJECTS], wall()),
        )


def snapshot(memory):
    return [
        (
            r.id,
            r.phrases,
            r.mean.tolist(),
            r.covariance.tolist(),
            r.size.tolist(),
            r.first_seen_ns,
            r.last_seen_ns,
            r.observations,
            r.misses,
            r.log_odds,
            r.confirmed,
            r.state,
            None if r.embedding is None else r.embedding.tolist(),
        )
        for r in memory.objects(include_unconfirmed=True)
    ]


def test_a_reopened_memory_is_the_same_and_keeps_growing(tmp_path):
    path = tmp_path / "objects.db"
    memory = ObjectMemory("map", path=str(path), embedding_model="clip:test")
    fill(memory, embeddings=[unit([1, 0, 0]), unit([0, 1, 0])])
    fill(memory, n=4, start=3, objects=OBJECTS[1:])  # the mug is gone
    before = snapshot(memory)
    memory.close()
    again = ObjectMemory("map", path=str(path))
    assert snapshot(again) == before
    assert again.embedding_model == "clip:test"
    assert [r.state for r in again.objects()] == [GONE, "present"]
    fill(again, n=1, start=7)
    assert again.get(1).state == "present" and again.get(1).observations == 4
    assert again.forget([2]) == [2]
    again.close()
    third = ObjectMemory("map", path=str(path))
    assert [r.id for r in third.objects()] == [1]
    fill(third, n=2, start=8, objects=[("green cup", (3.0, 0.0, 0.3))])
    assert max(r.id for r in third.objects()) == 3  # ids are not reused after forget
    third.close()


def test_the_file_is_sqlite_in_wal_mode_with_a_versioned_schema(tmp_path):
    path = tmp_path / "objects.db"
    ObjectMemory("map", path=str(path)).close()
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_file_of_another_frame_or_embedding_model_is_refused(tmp_path):
    path = tmp_path / "objects.db"
    memory = ObjectMemory("map", path=str(path), embedding_model="clip:a")
    fill(memory)
    memory.close()
    with pytest.raises(MemoryFileError, match="frame 'map', not 'odom'"):
        ObjectMemory("odom", path=str(path))
    with pytest.raises(MemoryFileError, match="clip:a"):
        ObjectMemory("map", path=str(path), embedding_model="clip:b")


def one_line_error(path, match):
    before = path.read_bytes()
    with pytest.raises(MemoryFileError, match=match) as err:
        ObjectMemory("map", path=str(path))
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before  # never overwritten
    assert not Path(str(path) + "-wal").exists() or Path(str(path) + "-wal").stat().st_size == 0


def test_a_file_that_is_not_sqlite_is_a_one_line_error_and_left_alone(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes, not a database\n" * 100)
    one_line_error(path, "not an SQLite file")


def test_an_sqlite_file_of_another_application_is_refused(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE songs (title TEXT)")
    db.execute("INSERT INTO songs VALUES ('a')")
    db.commit()
    db.close()
    one_line_error(path, "another application")


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "objects.db"
    ObjectMemory("map", path=str(path)).close()
    db = sqlite3.connect(str(path))
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    one_line_error(path, f"schema {SCHEMA_VERSION + 1}")


def test_a_damaged_file_is_a_one_line_error_and_left_alone(tmp_path):
    path = tmp_path / "objects.db"
    memory = ObjectMemory("map", path=str(path))
    for start in range(0, 60, 3):  # enough rows for several pages
        fill(
            memory, n=3, start=start, objects=[(f"thing {start}", (2.0, 0.01 * start - 0.3, 0.4))]
        )
    memory.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 3 * 4096
    data[4096 + 100:3 * 4096] = os.urandom(2 * 4096 - 100)  # garble pages after the header
    path.write_bytes(bytes(data))
    one_line_error(path, "damaged")


@pytest.mark.parametrize("column, value", [
    ("mean", np.array([np.nan, 0.0, 0.0]).tobytes()),
    ("covariance", np.full(9, np.inf).tobytes()),
    ("size", b"abc"),
    ("embedding", np.full(3, np.nan, np.float32).tobytes()),
    ("phrases", "[1, 2]"),
])
def test_a_damaged_record_is_a_one_line_error_and_left_alone(tmp_path, column, value):
    path = tmp_path / "objects.db"
    memory = ObjectMemory("map", path=str(path))
    fill(memory)
    memory.close()
    db = sqlite3.connect(str(path))
    db.execute(f"UPDATE objects SET {column} = ? WHERE id = 1", (value,))
    db.commit()
    db.close()
    one_line_error(path, r"damaged \(object 1: ")


WRITER = textwrap.dedent("""
    import sys
    sys.path[:0] = [{here!r}]
    from memory_helpers import camera_pose, frame, view, wall
    from ros_mm_perception.core.memory.objects import ObjectMemory

    memory = ObjectMemory("map", path={path!r})
    pose = camera_pose()
    i = 0
    while True:                                   # a new object every two frames, until killed
        k = i // 2
        objects = [(f"thing {{k}}", (2.0 + 0.01 * (k % 50), 0.3 * ((k // 50) % 3) - 0.3, 0.4))]
        memory.update(frame(pose, objects, i * 10**9), view(pose, i * 10**9, [], wall()))
        if i % 2:
            print(k, flush=True)                  # object k is confirmed and written
        i += 1
""")


def test_a_writer_killed_at_any_moment_leaves_what_it_had_written(tmp_path):
    path = tmp_path / "objects.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(here=str(HERE), path=str(path)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    confirmed = -1
    try:
        deadline = time.monotonic() + 120
        while confirmed < 30 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            confirmed = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert confirmed >= 30, "the writer did not get far enough"
    memory = ObjectMemory("map", path=str(path))
    phrases = {r.phrase for r in memory.objects()}
    assert {f"thing {k}" for k in range(confirmed + 1)} <= phrases
    assert len(memory.objects(include_unconfirmed=True)) >= confirmed + 1
    fill(memory, n=2, start=10_000)  # and it goes on from there
    memory.close()
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_reading_while_another_process_writes(tmp_path):
    path = tmp_path / "objects.db"
    writer = ObjectMemory("map", path=str(path))
    fill(writer)
    reader = ObjectMemory("map", path=str(path))
    assert np.allclose([r.mean for r in reader.objects()], [r.mean for r in writer.objects()])
    fill(writer, n=1, start=3)
    reader.close()
    writer.close()


def test_what_a_held_file_refused_is_written_with_the_next_write(tmp_path, monkeypatch):
    from ros_mm_perception.core.memory import store

    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.01)
    path = tmp_path / "objects.db"
    memory = ObjectMemory("map", path=str(path))
    fill(memory, n=1)
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(MemoryFileError):
        fill(memory, n=2, start=1)  # confirms both objects, in RAM only
    other.execute("ROLLBACK")
    other.close()
    memory.forget([])  # the next write, which changes no record itself
    in_ram = repr(snapshot(memory))
    memory.close()
    assert repr(snapshot(ObjectMemory("map", path=str(path)))) == in_ram


def test_a_memory_locked_by_another_writer_is_a_one_line_error(tmp_path, monkeypatch):
    from ros_mm_perception.core.memory import store

    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.01)
    path = tmp_path / "objects.db"
    memory = ObjectMemory("map", path=str(path))
    fill(memory, n=1)
    before = repr(snapshot(memory))
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(MemoryFileError, match="cannot write the object memory .*locked"):
        fill(memory, n=1, start=1)
    other.execute("ROLLBACK")
    other.close()
    memory.close()
    assert repr(snapshot(ObjectMemory("map", path=str(path)))) == before
