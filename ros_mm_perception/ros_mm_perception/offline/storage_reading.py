"""Every readable message of a rosbag2 storage file, also when the file is damaged.

Robots lose power and fill their disks, so recordings are often cut off (an MCAP file without its
summary and footer) or have damaged parts. These readers go through the file from the start and
keep going past damage:

- MCAP (:func:`mcap_messages`): records are read in file order with the ``mcap`` library's
  non-seeking :class:`~mcap.stream_reader.StreamReader`; a chunk that does not decompress or fails
  its CRC is skipped and reading goes on with the next one (the message indexes after it tell how
  many messages it held); after bytes that are no readable record, reading resumes at the next
  chunk (from the summary's chunk index when the file has one, else at the next bytes that form a
  consistent chunk header); a file that ends early yields what came before. Channel definitions
  come from the summary too when it is intact, so a damaged chunk that held them loses only itself.
- sqlite3 (:func:`db3_messages`): rows are listed without their data and each row's data is read on
  its own, so a damaged page loses only the rows stored on it.

What was lost is recorded in a :class:`Damage`: one line per problem (also passed to ``warn``) and
the number of messages known lost per topic.
"""

from __future__ import annotations

import re
import sqlite3
import struct
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Set, Tuple

MCAP_MAGIC = b"\x89MCAP0\r\n"
SQLITE_MAGIC = b"SQLite format 3\x00"


UNKNOWN_CHANNEL = ""
"""The :attr:`Damage.lost` key of messages whose channel record was lost."""


class RawMessage(NamedTuple):
    topic: str
    msgtype: str
    log_time: int
    data: bytes


class Damage:
    """What could not be read: :attr:`notes` (one line each) and :attr:`lost` (messages per
    topic)."""

    def __init__(self, warn: Callable[[str], None] = lambda _m: None):
        self.notes: List[str] = []
        self.lost: Counter = Counter()
        self.warn = warn

    def note(self, text: str) -> None:
        """Record (and warn about) one problem; a problem already noted is not repeated."""
        if text not in self.notes:
            self.notes.append(text)
            self.warn(text)


STORAGE_SUFFIXES = (".mcap", ".db3")


def split_files(folder: Path) -> List[Path]:
    """The storage files of a rosbag2 folder that has lost its ``metadata.yaml`` (a recorder that
    did not finish): ``<name>_<N>.mcap`` / ``.db3`` with one ``<name>`` (the folder's own, unless
    it was renamed), by split number N, as ``ros2 bag reindex`` finds them. Empty when the folder
    holds no such files, or storage files named otherwise (a folder of separate recordings)."""
    storages = [p
                for p in Path(folder).iterdir()
                if p.suffix.lower() in STORAGE_SUFFIXES and p.is_file()]
    numbered = [(re.fullmatch(r"(.+)_(\d+)\.(mcap|db3)", p.name, re.IGNORECASE), p)
                for p in storages]
    if (
        not storages
        or not all(m for m, _ in numbered)
        or len({m.group(1) for m, _ in numbered}) != 1
    ):
        return []
    return [p for m, p in sorted(numbered, key=lambda mp: (int(mp[0].group(2)), mp[1].name))]


def storage_topics(kind: Optional[str], path: Path) -> Set[str]:
    """The topics a storage file holds: an MCAP file's summary (or, without one, every record),
    a sqlite3 file's topics table."""
    if kind == "sqlite3":
        return set(db3_topics(path))
    from mcap.reader import SeekingReader

    try:
        with open(path, "rb") as f:
            summary = SeekingReader(f).get_summary()
    except Exception:  # no or damaged summary: read the file through
        summary = None
    if summary is not None:
        return {channel.topic for channel in summary.channels.values()}
    return set(mcap_topics(path)[0])


def storage_kind(path: Path) -> Optional[str]:
    """``"mcap"`` or ``"sqlite3"`` from the file's first bytes (None if neither)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(MCAP_MAGIC):
        return "mcap"
    if head.startswith(SQLITE_MAGIC):
        return "sqlite3"
    return None


class McapTopic(NamedTuple):
    msgtype: str
    schema_encoding: str
    schema: str
    count: int


def mcap_topics(path: Path) -> Tuple[Dict[str, McapTopic], List[str]]:
    """Topics of an MCAP file found by reading it through (for files whose summary is missing), and
    the damage seen on the way."""
    damage = Damage()
    topics = dict(_McapScan(path, damage, None).channels_seen())
    return topics, damage.notes


def mcap_messages(path: Path, damage: Damage,
                  topics: Optional[Set[str]] = None) -> Iterator[RawMessage]:
    """The messages of ``topics`` (all if None) of the MCAP file ``path``, in file order (see
    module)."""
    return _McapScan(path, damage, topics).messages()


class _McapScan:
    def __init__(self, path: Path, damage: Damage, topics: Optional[Set[str]]):
        self.path, self.damage, self.topics = Path(path), damage, topics
        self.schemas: Dict[int, object] = {}
        self.channels: Dict[int, object] = {}
        self.counts: Counter = Counter()
        self.chunk_starts: List[int] = []
        self._from_summary()

    def _from_summary(self) -> None:
        """Channels and schemas from the summary, when the file still has one (they may also have
        been in a chunk that is damaged)."""
        from mcap.reader import SeekingReader

        try:
            with open(self.path, "rb") as f:
                summary = SeekingReader(f).get_summary()
        # no or damaged summary: the records in the data section are all there is
        except Exception:
            return
        if summary is not None:
            self.schemas.update(summary.schemas)
            self.channels.update(summary.channels)
            self.chunk_starts = sorted(ci.chunk_start_offset for ci in summary.chunk_indexes)

    def channels_seen(self):
        for _ in self.messages(count_only=True):
            pass
        for channel_id, channel in self.channels.items():
            schema = self.schemas.get(channel.schema_id)
            yield channel.topic, McapTopic(schema.name if schema else "",
                                           schema.encoding if schema else "",
                                           schema.data.decode(errors="replace") if schema else "",
                                           self.counts[channel_id])

    def messages(self, count_only: bool = False) -> Iterator[RawMessage]:
        yield from self._messages(count_only)
        orphans = self.damage.lost.pop(UNKNOWN_CHANNEL, 0)
        if orphans:
            self.damage.note(f"{self.path.name}: {orphans} messages of channels defined in a "
                             "damaged part could not be read")

    def _messages(self, count_only: bool) -> Iterator[RawMessage]:
        from mcap.records import Channel, Chunk, DataEnd, Footer, Message, MessageIndex, Schema
        from mcap.stream_reader import StreamReader, breakup_chunk

        size = self.path.stat().st_size
        name = self.path.name
        with open(self.path, "rb") as f:
            records = StreamReader(f, emit_chunks=True, record_size_limit=size).records
            lost_chunk = False
            while True:
                start = f.tell()
                try:
                    record = next(records)
                except StopIteration:
                    return
                # the mcap library raises assorted errors for garbled bytes
                except Exception as err:
                    at_end = f.tell() >= size
                    resume = self._next_chunk(f, start, size) if start > 0 else None
                    if resume is None:
                        self._ended(start, size, err, at_end)
                        return
                    self.damage.note(f"{name}: unreadable bytes {start}-{resume} "
                                     f"({_reason(err)}); their messages are lost, reading goes "
                                     "on with the next chunk")
                    f.seek(resume)
                    records = StreamReader(f, skip_magic=True, emit_chunks=True,
                                           record_size_limit=size).records
                    lost_chunk = False
                    continue
                if isinstance(record, (DataEnd, Footer)):
                    return  # the summary section repeats what was read
                if isinstance(record, Chunk):
                    try:
                        inner = breakup_chunk(record, validate_crc=True)
                    except Exception as err:
                        if f.tell() >= size:
                            self.damage.note(f"{name}: cut off at byte {size}, inside the chunk "
                                             f"that starts at byte {start} (its messages are "
                                             "lost); everything before was read")
                            return
                        lost_chunk = True
                        self.damage.note(f"{name}: damaged chunk at byte {start} "
                                         f"({_reason(err)}); its messages are lost, reading goes "
                                         "on after it")
                        continue
                    lost_chunk = False
                else:
                    if isinstance(record, MessageIndex):
                        if lost_chunk:
                            channel = self.channels.get(record.channel_id)
                            if channel is not None and (
                                self.topics is None or channel.topic in self.topics
                            ):
                                self.damage.lost[channel.topic] += len(record.records)
                        continue
                    inner = [record]
                for rec in inner:
                    if isinstance(rec, Schema):
                        self.schemas[rec.id] = rec
                    elif isinstance(rec, Channel):
                        self.channels[rec.id] = rec
                    elif isinstance(rec, Message):
                        channel = self.channels.get(rec.channel_id)
                        if channel is None:
                            self.damage.lost[UNKNOWN_CHANNEL] += 1
                            continue
                        self.counts[rec.channel_id] += 1
                        if count_only or (
                            self.topics is not None and channel.topic not in self.topics
                        ):
                            continue
                        schema = self.schemas.get(channel.schema_id)
                        yield RawMessage(channel.topic, schema.name if schema else "",
                                         rec.log_time, rec.data)

    def _next_chunk(self, f, after: int, size: int) -> Optional[int]:
        """Where the next chunk after byte ``after`` starts: from the summary's chunk index, else
        the next bytes that form a consistent chunk header; None if there is none."""
        if self.chunk_starts:
            return next((c for c in self.chunk_starts if c > after), None)
        import mmap

        if size == 0:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            position = data.find(b"\x06", after + 1)
            while position != -1:
                if _chunk_header_at(data, position, size):
                    return position
                position = data.find(b"\x06", position + 1)
        return None

    def _ended(self, start: int, size: int, err: Exception, at_end: bool) -> None:
        from mcap.exceptions import EndOfFile

        with open(self.path, "rb") as f:  # a record whose length runs past the end was cut off
            f.seek(start)
            head = f.read(9)
        cut = len(head) < 9 or start + 9 + struct.unpack("<Q", head[1:])[0] > size
        if isinstance(err, EndOfFile) or at_end or cut:
            self.damage.note(f"{self.path.name}: cut off at byte {size} (no summary or footer); "
                             "everything before was read")
        else:
            self.damage.note(f"{self.path.name}: unreadable from byte {start} of {size} "
                             f"({_reason(err)}); the rest is lost")


def _chunk_header_at(data, position: int, size: int) -> bool:
    """Whether the bytes at ``position`` are a Chunk record whose fields agree with its length."""
    # opcode, length, start/end time, uncompressed size, crc, compression length
    fixed = 1 + 8 + 8 + 8 + 8 + 4 + 4
    if position + fixed > size:
        return False
    length = struct.unpack_from("<Q", data, position + 1)[0]
    compression_length = struct.unpack_from("<I", data, position + fixed - 4)[0]
    if compression_length not in (0, 3, 4) or position + 9 + length > size:
        return False
    compression = bytes(data[position + fixed:position + fixed + compression_length])
    if (
        compression not in (b"", b"lz4", b"zstd")
        or position + fixed + compression_length + 8 > size
    ):
        return False
    records_length = struct.unpack_from("<Q", data, position + fixed + compression_length)[0]
    return length == 8 + 8 + 8 + 4 + 4 + compression_length + 8 + records_length


def _reason(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def db3_topics(path: Path) -> Dict[str, str]:
    """Topic name → message type of a sqlite3 storage file (:class:`sqlite3.DatabaseError` if
    unreadable)."""
    with _connect(path) as conn:
        return {name: typ for name, typ in conn.execute("SELECT name, type FROM topics")}


def db3_messages(path: Path, damage: Damage,
                 topics: Optional[Set[str]] = None) -> Iterator[RawMessage]:
    """The messages of ``topics`` (all if None) of the sqlite3 file ``path`` in timestamp order
    (see module)."""
    name = Path(path).name
    conn = _connect(path)
    try:
        try:
            names = {tid: (topic, typ)
                     for tid, topic, typ in conn.execute("SELECT id, name, type FROM topics")}
        except sqlite3.DatabaseError as err:
            damage.note(f"{name}: the topics table is unreadable ({_reason(err)}); no message "
                        "can be read")
            return
        try:
            rows = conn.execute("SELECT id, topic_id, timestamp FROM messages ORDER BY "
                                "timestamp, id").fetchall()
        except sqlite3.DatabaseError as err:
            rows = _probe_rows(conn)
            damage.note(f"{name}: the message table is damaged ({_reason(err)}); read "
                        f"{len(rows)} rows one by one")
        bad = 0
        for row_id, topic_id, timestamp in rows:
            topic, typ = names.get(topic_id, (None, None))
            if topic is None or (topics is not None and topic not in topics):
                continue
            try:
                (data,) = conn.execute("SELECT data FROM messages WHERE id = ?",
                                       (row_id,)).fetchone()
            except (sqlite3.DatabaseError, TypeError):
                bad += 1
                damage.lost[topic] += 1
                continue
            yield RawMessage(topic, typ, timestamp, bytes(data))
        if bad:
            damage.note(f"{name}: {bad} damaged message rows could not be read")
    finally:
        conn.close()


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{Path(path).resolve()}?immutable=1", uri=True)


def _probe_rows(conn: sqlite3.Connection) -> List[tuple]:
    """(id, topic_id, timestamp) of every row that can be reached by its id, in timestamp order."""
    try:
        (last,) = conn.execute("SELECT max(id) FROM messages").fetchone()
    except sqlite3.DatabaseError:
        return []
    rows = []
    for row_id in range(1, (last or 0) + 1):
        try:
            row = conn.execute("SELECT id, topic_id, timestamp FROM messages WHERE id = ?",
                               (row_id,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row:
            rows.append(row)
    return sorted(rows, key=lambda r: (r[2], r[0]))
