"""The object memory: records of physical objects, updated frame by frame, asked by phrase.

Per frame (:meth:`ObjectMemory.update`):

* **association** – each observation joins the record with the smallest Mahalanobis distance
  under the gate: ``d^2 = (x - m)^T (C_record + C_obs + floor^2 I)^-1 (x - m) <= gate_sigma^2``
  (``memory_gate_sigma``, ``memory_gate_floor_m``), among the records whose phrase evidence holds
  its phrase or whose mean CLIP embedding has a cosine of at least ``memory_embedding_threshold``
  with its crop's. Several detections of one frame (two phrases on one object) may join one record;
  an observation that joins none starts a new record;
* **fusion** – the position is fused as independent Gaussian measurements (information form: the
  covariance shrinks with every view), the size is a running mean; a frame is one look at what
  the object is: its phrase evidence gains each phrase's best score of the frame, and its
  embedding (the mean over frames) the crop of the frame's best box; first and last seen and
  the number of frames it was detected in are kept. Its log-odds confidence gains 1 per
  detected frame (at most :data:`MAX_LOG_ODDS`) and ``confidence = sigmoid(log_odds)``;
* **merging** – a record that comes within the gate of a compatible record (two records that
  drifted onto one object) is merged into it; the one seen in more frames keeps its id;
* **confirmation** – a record is confirmed after ``memory_confirm_observations`` frames, in a
  frame that detects it with its whole extent in the image and within range (a place negative
  evidence could judge, :func:`~.views.visibility` not ``outside``); until then it is never
  reported, so a one-frame false positive never reaches a planner, nor one only ever seen cut by
  the image's border (where partial structures, such as a floor's edge, pass for objects and
  could never be seen missing). Given a text
  encoder (``encode_text``), a record is also confirmed only where CLIP prefers its phrase to
  "background" on its mean crop embedding (a second opinion on the detector's);
* **negative evidence** – a record that was not detected in a frame whose detector looked for one
  of its phrases, while its place was in view, within ``memory_max_range_m`` and not hidden
  (:func:`~.views.visibility`), loses :data:`MISS_LOG_ODDS` and counts a miss; a detection
  resets the count.
  After ``memory_gone_views`` misses in a row a confirmed record is marked ``gone`` (kept, with its
  last-seen time; a later detection there makes it ``present`` again) and an unconfirmed one is
  dropped (it never was reported). A moved object therefore leaves a ``gone`` record and gets a new
  record at its new place: records do not move, since two alike objects cannot be told apart
  reliably.

Queries (:meth:`ObjectMemory.query`) rank confirmed records by a match score in [0, 1], the larger
of two parts, both from the CLIP logits ``l(p) = scale * cos(text(p), mean crop embedding)``
when a text encoder is given. The phrase part is the asked phrase's share of the record's phrase
evidence with each phrase's evidence ``e(p)`` weighted by ``exp(l(p))``:
``e(q) exp(l(q)) / sum_p e(p) exp(l(p))`` over the record's phrases (without a text encoder, the
plain share; 1.0 for an object only ever detected as that phrase), so an object the detector
names by several phrases is found by the phrase its crops show. The embedding part is
``sigmoid(min(l(q) - l(own) + MATCH_TOLERANCE, l(q) - max l(other)))``, where ``own`` is the
record's best-described phrase and ``other`` runs over every other phrase the memory knows plus
:data:`NULL_PROMPTS`. So a phrase never in the detection vocabulary ("red thing") finds the object
it describes nearly as well as its own phrase ("red circle") and better than any other known
phrase, while an absent phrase ("green star" for a green circle) loses to the object's own phrase.
:data:`MATCH_THRESHOLD` (0.5) is the default least match.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.memory.store import MemoryFileError, MemoryStore
from ros_mm_perception.core.memory.views import (
    HIDDEN,
    OUTSIDE,
    VISIBLE,
    CameraView,
    Observation,
    observations,
    visibility,
)
from ros_mm_perception.core.results import FrameResult

PRESENT, GONE = "present", "gone"
STATES = (PRESENT, GONE)
MAX_LOG_ODDS = 4.0
"""Most log-odds a record holds (confidence 0.98), so a long-seen object can still go."""
MISS_LOG_ODDS = 1.5
"""Log-odds a record loses per view of its place without a matching detection."""
MATCH_TOLERANCE = 3.0
"""Logits by which an asked phrase may describe an object's crops worse than its own phrase."""
MATCH_THRESHOLD = 0.5
"""Default least match score of a query result (see the module docstring)."""
BACKGROUND = "background"
NULL_PROMPTS = (BACKGROUND, "an object")
"""Phrases every asked phrase competes with, besides the memory's own phrases."""
DEFAULT_LOGIT_SCALE = 100.0

TextEncoder = Callable[[Sequence[str]], np.ndarray]
"""Phrases -> their normalised text embeddings (``P x D``), in the crops' embedding space."""


def normalise_phrase(phrase: str) -> str:
    """Lower case, single spaces: how phrases are compared."""
    return re.sub(r"\s+", " ", str(phrase).strip().lower())


@dataclass
class ObjectRecord:
    """One physical object in the memory frame."""

    id: int
    mean: np.ndarray
    covariance: np.ndarray
    size: np.ndarray
    phrases: Dict[str, float]
    """Phrase evidence: the sum of the detection scores per phrase."""
    first_seen_ns: int
    last_seen_ns: int
    embedding_sum: Optional[np.ndarray] = None
    embedding_count: int = 0
    observations: int = 1
    misses: int = 0
    log_odds: float = 0.0
    confirmed: bool = False
    state: str = PRESENT

    @property
    def phrase(self) -> str:
        """The phrase with the most evidence."""
        return max(self.phrases.items(), key=lambda kv: (kv[1], kv[0]))[0]

    @property
    def confidence(self) -> float:
        return 1.0 / (1.0 + math.exp(-self.log_odds))

    @property
    def embedding(self) -> Optional[np.ndarray]:
        """The normalised mean of the crops' CLIP embeddings, or None."""
        if self.embedding_sum is None:
            return None
        norm = float(np.linalg.norm(self.embedding_sum))
        return self.embedding_sum / norm if norm > 0 else None


@dataclass
class Match:
    """A query result: the record and its match score in [0, 1]."""

    record: ObjectRecord
    match: float
    distance_m: Optional[float] = None

    def as_json(self, frame: str) -> dict:
        """The fields a planner reads (``find --json``, the services)."""
        r = self.record
        return {
            "id": r.id,
            "phrase": r.phrase,
            "match": round(self.match, 4),
            "position": [round(float(v), 4) for v in r.mean],
            "frame": frame,
            "size": [round(float(v), 4) for v in r.size],
            "first_seen_ns": r.first_seen_ns,
            "last_seen_ns": r.last_seen_ns,
            "observations": r.observations,
            "confidence": round(r.confidence, 4),
            "state": r.state,
        }


@dataclass
class UpdateReport:
    """What one :meth:`ObjectMemory.update` changed (record ids)."""

    created: List[int] = field(default_factory=list)
    updated: List[int] = field(default_factory=list)
    confirmed: List[int] = field(default_factory=list)
    missed: List[int] = field(default_factory=list)
    hidden: List[int] = field(default_factory=list)
    gone: List[int] = field(default_factory=list)
    dropped: List[int] = field(default_factory=list)
    merged: List[int] = field(default_factory=list)
    """Records folded into another one that lay within the gate of them (their ids are gone)."""

    @property
    def changed(self) -> bool:
        """Whether anything a planner sees (confirmed records) changed."""
        return bool(self.confirmed or self.gone or self.updated or self.missed or self.merged)


class _Columns:
    """The records' numbers as arrays, one row per record, kept in step with every change, so that
    association, visibility and queries over many objects are array operations."""

    def __init__(self):
        self.rows: Dict[int, int] = {}
        self.ids = np.zeros(0, np.int64)
        self.valid = np.zeros(0, bool)
        self.means = np.zeros((0, 3))
        self.spread = np.zeros(0)
        """Square root of the covariance's trace (a bound on its largest standard deviation)."""
        self.log_odds = np.zeros(0)
        self.observations = np.zeros(0, np.int64)
        self.last_seen = np.zeros(0, np.int64)
        self.confirmed = np.zeros(0, bool)
        self.present = np.zeros(0, bool)
        self.embeddings: Optional[np.ndarray] = None
        self.has_embedding = np.zeros(0, bool)
        self.codes: Dict[str, int] = {}
        """Phrase -> its column in :attr:`evidence` and :attr:`has_phrase`."""
        self.evidence = np.zeros((0, 0))
        self.has_phrase = np.zeros((0, 0), bool)
        self.totals = np.zeros(0)
        """The sum of each row's phrase evidence."""
        self.free: List[int] = []
        """Rows that hold no record."""
        self.used = 0
        """One past the highest row ever given to a record (rows are handed out lowest first)."""
        self.dirty: set = set()
        """Rows changed since the query cache last looked (:meth:`ObjectMemory._phrase_logits`)."""

    def _grow_rows(self) -> None:
        pad = max(16, len(self.ids))

        def grown(a, fill=0):
            return np.concatenate([a, np.full((pad, *a.shape[1:]), fill, a.dtype)])

        self.ids, self.valid, self.means = (
            grown(self.ids, -1),
            grown(self.valid),
            grown(self.means),
        )
        self.spread, self.log_odds, self.last_seen = (
            grown(self.spread),
            grown(self.log_odds),
            grown(self.last_seen),
        )
        self.confirmed, self.present = grown(self.confirmed), grown(self.present)
        self.observations = grown(self.observations)
        self.has_embedding, self.evidence = grown(self.has_embedding), grown(self.evidence)
        self.has_phrase, self.totals = grown(self.has_phrase), grown(self.totals)
        if self.embeddings is not None:
            self.embeddings = grown(self.embeddings)
        self.free.extend(range(len(self.ids) - 1, len(self.ids) - pad - 1, -1))

    def code(self, phrase: str) -> int:
        """The column of ``phrase`` (a new one for a new phrase)."""
        code = self.codes.get(phrase)
        if code is None:
            code = self.codes[phrase] = len(self.codes)
            if code >= self.evidence.shape[1]:
                extra = max(16, self.evidence.shape[1])
                self.evidence = np.pad(self.evidence, ((0, 0), (0, extra)))
                self.has_phrase = np.pad(self.has_phrase, ((0, 0), (0, extra)))
        return code

    def set(self, record: "ObjectRecord") -> None:
        row = self.rows.get(record.id)
        if row is None:
            if not self.free:
                self._grow_rows()
            row = self.rows[record.id] = self.free.pop()
            self.used = max(self.used, row + 1)
        self.ids[row], self.valid[row], self.means[row] = record.id, True, record.mean
        self.dirty.add(row)
        self.spread[row] = math.sqrt(max(float(np.trace(record.covariance)), 0.0))
        self.log_odds[row], self.last_seen[row] = record.log_odds, record.last_seen_ns
        self.observations[row] = record.observations
        self.confirmed[row], self.present[row] = record.confirmed, record.state == PRESENT
        embedding = record.embedding
        if embedding is not None:
            if self.embeddings is None:
                self.embeddings = np.zeros((len(self.ids), embedding.size), np.float32)
            self.embeddings[row] = embedding
        self.has_embedding[row] = embedding is not None
        for phrase, evidence in record.phrases.items():
            code = self.code(phrase)
            self.evidence[row, code], self.has_phrase[row, code] = evidence, True
        self.totals[row] = sum(record.phrases.values())

    def remove(self, record: "ObjectRecord") -> None:
        row = self.rows.pop(record.id)
        self.valid[row], self.ids[row], self.confirmed[row], self.present[row] = (
            False,
            -1,
            False,
            False,
        )
        self.evidence[row], self.has_phrase[row], self.totals[row] = 0.0, False, 0.0
        self.dirty.add(row)
        self.free.append(row)

    def columns_of(self, phrases: Sequence[str]) -> np.ndarray:
        """Column indices of ``phrases`` (-1 for a phrase no record holds)."""
        return np.array([self.codes.get(p, -1) for p in phrases], np.int64)


class ObjectMemory:
    """Records of the objects seen in ``frame``; in RAM only, or kept in the SQLite file ``path``.

    ``embedding_model`` names the space of the crops' embeddings (e.g. the CLIP model); a file made
    with another one is refused, as its embeddings could not be compared. Thread-safe (one lock).
    """

    def __init__(
        self,
        frame: str,
        config: Optional[PerceptionConfig] = None,
        path: str = "",
        embedding_model: str = "",
        encode_text: Optional[TextEncoder] = None,
        logit_scale: float = DEFAULT_LOGIT_SCALE,
    ):
        frame = str(frame).strip().lstrip("/")
        if not frame:
            raise UserError(
                "the object memory needs a fixed frame: set memory_frame (or target_frame), "
                "e.g. map"
            )
        self.frame = frame
        self.config = config or PerceptionConfig()
        self.embedding_model = embedding_model
        self.encode_text, self.logit_scale = encode_text, logit_scale
        """With a text encoder, a record is confirmed only where CLIP prefers its phrase to
        "background" on its crops (:meth:`_agrees`)."""
        self.revision = 0
        """Counts changes a planner sees (for publishing on change)."""
        self._lock = threading.RLock()
        self._records: Dict[int, ObjectRecord] = {}
        self._cols = _Columns()
        self._logit_cache = None
        self._next_id = 1
        self._latest_ns = 0
        self._unwritten: set = set()
        self._unwritten_deleted: set = set()
        self._store: Optional[MemoryStore] = MemoryStore(path) if path else None
        if self._store is not None:
            try:
                self._load()
            except BaseException:
                self._store.close()
                raise

    # -------------------------------------------------------------------------------- file

    @classmethod
    def open_existing(cls, path: str, config: Optional[PerceptionConfig] = None) -> "ObjectMemory":
        """The memory file ``path`` in the frame it was made in; an error when it holds none."""
        if not Path(path).is_file() or Path(path).stat().st_size == 0:
            raise MemoryFileError(f"{path} holds no object memory")
        store = MemoryStore(path)
        frame = store.meta().get("frame", "")
        store.close()
        if not frame:
            raise MemoryFileError(f"{path} holds no object memory")
        return cls(frame, config, path=path)

    def _load(self) -> None:
        meta = self._store.meta()
        if not meta:
            self._store.write(
                meta={"frame": self.frame, "embedding_model": self.embedding_model, "next_id": "1"}
            )
            return
        path = self._store.path
        if meta.get("frame") != self.frame:
            raise MemoryFileError(
                f"the object memory {path} is in frame {meta.get('frame')!r}, not {self.frame!r}"
            )
        stored_model = meta.get("embedding_model", "")
        if stored_model and self.embedding_model and stored_model != self.embedding_model:
            raise MemoryFileError(
                f"the object memory {path} holds embeddings of {stored_model!r}, not of "
                f"{self.embedding_model!r}; use that model or another file"
            )
        if self.embedding_model and not stored_model:
            self._store.write(meta={"embedding_model": self.embedding_model})
        self.embedding_model = self.embedding_model or stored_model
        for values in self._store.rows():
            record = ObjectRecord(**values)
            self._records[record.id] = record
            self._cols.set(record)
            self._latest_ns = max(self._latest_ns, record.last_seen_ns)
        self._next_id = max([int(meta.get("next_id", "1")), *(i + 1 for i in self._records)])

    @property
    def path(self):
        return None if self._store is None else self._store.path

    def close(self) -> None:
        """Close the file (everything is already written); the memory is empty after."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._records, self._cols, self._logit_cache = {}, _Columns(), None

    # ------------------------------------------------------------------------------ reading

    def objects(self, include_unconfirmed: bool = False) -> List[ObjectRecord]:
        """The records, by id; confirmed ones only unless ``include_unconfirmed``."""
        with self._lock:
            return [
                r for _, r in sorted(self._records.items()) if r.confirmed or include_unconfirmed
            ]

    def get(self, object_id: int) -> Optional[ObjectRecord]:
        return self._records.get(int(object_id))

    @property
    def latest_ns(self) -> int:
        """The newest stamp the memory saw (the default 'now' of age filters)."""
        return self._latest_ns

    def __len__(self) -> int:
        return int(self._cols.confirmed.sum())

    # ------------------------------------------------------------------------------ updating

    def update(self, result: FrameResult, view: CameraView) -> UpdateReport:
        """Fold one frame in: ``result`` holds the frame's detections in the camera's optical frame
        (as the pipeline makes them), ``view`` where the camera was and what it could see."""
        cfg = self.config
        obs = observations(result, view, cfg.memory_depth_noise)
        report = UpdateReport()
        with self._lock:
            stamp = int(view.stamp_ns)
            self._latest_ns = max(self._latest_ns, stamp)
            joined: Dict[int, List[Observation]] = {}
            for o in sorted(obs, key=lambda o: -o.score):  # the best box of an object first
                record = self._associate(o)
                if record is None:
                    record = self._create(o, stamp)
                    report.created.append(record.id)
                joined.setdefault(record.id, []).append(o)
            for rid, items in joined.items():
                record = self._records[rid]
                self._fuse(record, items, stamp, created=rid in report.created)
                if record.confirmed:
                    if rid not in report.created:
                        report.updated.append(rid)
                elif (
                    record.observations >= cfg.memory_confirm_observations
                    and self._wholly_in_view(record, view)
                    and self._agrees(record)
                ):
                    record.confirmed = True
                    report.confirmed.append(rid)
                self._cols.set(record)
            for rid in joined:
                if rid in self._records:
                    self._merge_duplicate(self._records[rid], report)
            self._negative_evidence(view, set(joined), report)
            dirty = {
                *report.created,
                *report.updated,
                *report.confirmed,
                *report.missed,
                *report.gone,
            }
            self._write(
                [self._records[i] for i in sorted(dirty) if i in self._records],
                [*report.dropped, *report.merged],
            )
            if report.changed:
                self.revision += 1
        return report

    def _wholly_in_view(self, record: ObjectRecord, view: CameraView) -> bool:
        """Whether the record's whole extent lies in the image and within range in ``view``: a
        place that negative evidence could also judge, not one cut by the image's border."""
        cfg = self.config
        return (
            visibility(
                record.mean, record.size, view, cfg.memory_depth_noise, cfg.memory_max_range_m
            )
            != OUTSIDE
        )

    def _agrees(self, record: ObjectRecord) -> bool:
        """Whether CLIP prefers the record's phrase to "background" on its mean crop embedding
        (always, without a text encoder or an embedding)."""
        embedding = record.embedding
        if self.encode_text is None or embedding is None or BACKGROUND in record.phrases:
            return True
        cos = np.asarray(self.encode_text([record.phrase, BACKGROUND]), np.float32) @ embedding
        return bool(cos[0] >= cos[1])

    def _merge_duplicate(self, record: ObjectRecord, report: UpdateReport) -> None:
        """Merge ``record`` with a compatible record within the gate of it, if there is one: two
        records that drifted onto one object (the one seen in more frames keeps its id)."""
        cols, cfg = self._cols, self.config
        floor = cfg.memory_gate_floor_m**2
        gate = cfg.memory_gate_sigma**2
        reach = gate * (cols.spread**2 + float(np.trace(record.covariance)) + 3 * floor)
        near = np.flatnonzero(
            cols.valid & (np.sum((cols.means - record.mean) ** 2, axis=1) <= reach)
        )
        for row in near:
            other = self._records[int(cols.ids[row])]
            if other.id == record.id or not self._records_compatible(record, other):
                continue
            delta = other.mean - record.mean
            joint = record.covariance + other.covariance + floor * np.eye(3)
            if float(delta @ np.linalg.solve(joint, delta)) > gate:
                continue
            keep, drop = sorted((record, other), key=lambda r: (-r.observations, r.id))
            self._absorb(keep, drop)
            del self._records[drop.id]
            cols.remove(drop)
            cols.set(keep)
            report.merged.append(drop.id)
            if keep.confirmed and keep.id not in report.updated:
                report.updated.append(keep.id)
            return

    @staticmethod
    def _absorb(keep: ObjectRecord, drop: ObjectRecord) -> None:
        """Fold ``drop``'s evidence into ``keep`` (independent observations: information adds)."""
        info_k, info_d = np.linalg.inv(keep.covariance), np.linalg.inv(drop.covariance)
        covariance = np.linalg.inv(info_k + info_d)
        keep.mean = covariance @ (info_k @ keep.mean + info_d @ drop.mean)
        keep.covariance = (covariance + covariance.T) / 2
        total = keep.observations + drop.observations
        keep.size = (keep.size * keep.observations + drop.size * drop.observations) / total
        for phrase, evidence in drop.phrases.items():
            keep.phrases[phrase] = keep.phrases.get(phrase, 0.0) + evidence
        if drop.embedding_sum is not None:
            keep.embedding_sum = (
                drop.embedding_sum.copy()
                if keep.embedding_sum is None
                else keep.embedding_sum + drop.embedding_sum
            )
            keep.embedding_count += drop.embedding_count
        keep.first_seen_ns = min(keep.first_seen_ns, drop.first_seen_ns)
        keep.last_seen_ns = max(keep.last_seen_ns, drop.last_seen_ns)
        keep.observations = total
        keep.log_odds = max(keep.log_odds, drop.log_odds)
        keep.misses = min(keep.misses, drop.misses)
        keep.confirmed = keep.confirmed or drop.confirmed
        if PRESENT in (keep.state, drop.state):
            keep.state = PRESENT

    def _records_compatible(self, a: ObjectRecord, b: ObjectRecord) -> bool:
        if set(a.phrases) & set(b.phrases):
            return True
        ea, eb = a.embedding, b.embedding
        return (
            ea is not None
            and eb is not None
            and float(ea @ eb) >= self.config.memory_embedding_threshold
        )

    def _compatible(self, record: ObjectRecord, o: Observation) -> bool:
        if normalise_phrase(o.phrase) in record.phrases:
            return True
        mean = record.embedding
        if mean is None or o.embedding is None:
            return False
        cosine = float(mean @ o.embedding) / max(float(np.linalg.norm(o.embedding)), 1e-12)
        return cosine >= self.config.memory_embedding_threshold

    def _associate(self, o: Observation) -> Optional[ObjectRecord]:
        """The compatible record nearest to ``o`` under the gate, or None."""
        cols, cfg = self._cols, self.config
        floor = cfg.memory_gate_floor_m**2
        gate = cfg.memory_gate_sigma**2
        # a cheap first cut: d^2 <= gate needs |delta|^2 <= gate * trace(C_rec + C_obs + floor I)
        reach = gate * (cols.spread**2 + float(np.trace(o.covariance)) + 3 * floor)
        near = np.flatnonzero(cols.valid & (np.sum((cols.means - o.xyz) ** 2, axis=1) <= reach))
        best, best_d2 = None, gate
        for row in near:
            record = self._records[int(cols.ids[row])]
            delta = o.xyz - record.mean
            d2 = float(
                delta
                @ np.linalg.solve(record.covariance + o.covariance + floor * np.eye(3), delta)
            )
            if d2 <= best_d2 and self._compatible(record, o):
                best, best_d2 = record, d2
        return best

    def _create(self, o: Observation, stamp: int) -> ObjectRecord:
        record = ObjectRecord(
            id=self._next_id,
            mean=o.xyz.copy(),
            covariance=o.covariance.copy(),
            size=o.size.copy(),
            phrases={normalise_phrase(o.phrase): o.score},
            first_seen_ns=stamp,
            last_seen_ns=stamp,
            embedding_sum=None if o.embedding is None else o.embedding.astype(np.float32).copy(),
            embedding_count=0 if o.embedding is None else 1,
            log_odds=1.0,
            confirmed=self.config.memory_confirm_observations <= 1,
        )
        self._next_id += 1
        self._records[record.id] = record
        self._cols.set(record)
        return record

    @staticmethod
    def _fuse(
        record: ObjectRecord, items: Sequence[Observation], stamp: int, created: bool
    ) -> None:
        """Fold one frame's observations of ``record`` in, best score first (``created``: the
        record was made from ``items[0]`` in this frame).

        Every box's position is a measurement (the boxes of one frame on an object scatter about
        it). The frame is one look, though: each phrase gains the best score it had in the frame
        (a detector's overlapping lesser boxes, often of a part, are not further evidence of what
        the object is), and the crop embedding is the best box's (a whole-object box, where the
        lesser ones show a part; a record made from a box without one waits for the next
        frame's)."""
        info = np.linalg.inv(record.covariance)
        weighted = info @ record.mean
        for o in items[1:] if created else items:
            o_info = np.linalg.inv(o.covariance)
            info, weighted = info + o_info, weighted + o_info @ o.xyz
            n = record.observations
            record.size = (record.size * n + o.size) / (n + 1)
        covariance = np.linalg.inv(info)
        record.covariance = (covariance + covariance.T) / 2
        record.mean = record.covariance @ weighted
        frame_best: Dict[str, float] = {}
        for o in items:
            key = normalise_phrase(o.phrase)
            frame_best[key] = max(frame_best.get(key, 0.0), o.score)
        if created:  # items[0], the frame's best, made the record: its phrase and look are in
            del frame_best[normalise_phrase(items[0].phrase)]
        for key, score in frame_best.items():
            record.phrases[key] = record.phrases.get(key, 0.0) + score
        best = next((o.embedding for o in items if o.embedding is not None), None)
        if best is not None and not created:
            emb = best.astype(np.float32)
            record.embedding_sum = (
                emb.copy() if record.embedding_sum is None else record.embedding_sum + emb
            )
            record.embedding_count += 1
        record.last_seen_ns = max(record.last_seen_ns, stamp)
        record.misses = 0
        record.state = PRESENT
        if not created:
            record.observations += 1
            record.log_odds = min(record.log_odds + 1.0, MAX_LOG_ODDS)

    def _negative_evidence(self, view: CameraView, seen: set, report: UpdateReport) -> None:
        cfg, cols = self.config, self._cols
        looked_for = {normalise_phrase(p) for p in view.phrases}
        if not looked_for or not cols.valid.any():
            return
        # a cheap first cut: present records in front, within range, centre in the image
        camera = view.camera_to_memory.inverse().apply(cols.means)
        z = camera[:, 2]
        k, (h, w) = view.intrinsics, view.image_hw
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = k.fx * camera[:, 0] / z + k.cx, k.fy * camera[:, 1] / z + k.cy
        rows = np.flatnonzero(
            cols.valid
            & cols.present
            & (z > 0.1)
            & (z <= cfg.memory_max_range_m)
            & (u >= 0)
            & (u <= w)
            & (v >= 0)
            & (v <= h)
        )
        for row in rows:
            rid = int(cols.ids[row])
            record = self._records[rid]
            if rid in seen or not looked_for.intersection(record.phrases):
                continue
            seen_as = visibility(
                record.mean, record.size, view, cfg.memory_depth_noise, cfg.memory_max_range_m
            )
            if seen_as == HIDDEN:
                report.hidden.append(rid)
            if seen_as != VISIBLE:
                continue
            record.misses += 1
            record.log_odds -= MISS_LOG_ODDS
            if record.misses < cfg.memory_gone_views:
                if record.confirmed:
                    report.missed.append(rid)
            elif record.confirmed:
                record.state = GONE
                report.gone.append(rid)
            else:
                del self._records[rid]
                cols.remove(record)
                report.dropped.append(rid)
                continue
            cols.set(record)

    def _write(self, records, deleted=()) -> None:
        """Write ``records`` and ``deleted`` ids with what an earlier write could not (a file
        held by another writer): the file catches up with the first write that goes through."""
        if self._store is None:
            return
        self._unwritten.update(r.id for r in records)
        self._unwritten_deleted.update(deleted)
        self._unwritten -= self._unwritten_deleted
        records = [self._records[i] for i in sorted(self._unwritten) if i in self._records]
        self._store.write(records, sorted(self._unwritten_deleted),
                          meta={"next_id": str(self._next_id)})
        self._unwritten.clear()
        self._unwritten_deleted.clear()

    def forget(self, ids: Optional[Sequence[int]] = None) -> List[int]:
        """Delete the records ``ids`` (all when None); returns the ids deleted (never reused)."""
        with self._lock:
            chosen = (
                list(self._records)
                if ids is None
                else [int(i) for i in ids if int(i) in self._records]
            )
            for i in chosen:
                self._cols.remove(self._records.pop(i))
            self._write([], chosen)
            if chosen:
                self.revision += 1
            return sorted(chosen)

    # ------------------------------------------------------------------------------- queries

    def vocabulary(self) -> List[str]:
        """Every phrase of a confirmed record."""
        with self._lock:
            cols = self._cols
            held = cols.has_phrase[cols.valid & cols.confirmed].any(axis=0)
            return sorted(p for p, code in cols.codes.items() if held[code])

    def query(
        self,
        phrase: Optional[str] = None,
        *,
        encode_text: Optional[TextEncoder] = None,
        logit_scale: float = DEFAULT_LOGIT_SCALE,
        near: Optional[Sequence[float]] = None,
        radius: Optional[float] = None,
        min_confidence: float = 0.0,
        max_age_s: Optional[float] = None,
        now_ns: Optional[int] = None,
        states: Sequence[str] = (PRESENT,),
        max_results: int = 10,
        min_match: float = MATCH_THRESHOLD,
    ) -> List[Match]:
        """Confirmed records that match ``phrase`` (every record, match 1, when None), best first.

        Filters: within ``radius`` metres of ``near`` (memory frame), confidence at least
        ``min_confidence``, last seen at most ``max_age_s`` before ``now_ns`` (default: the newest
        stamp the memory saw), state in ``states``; at most ``max_results``; match at least
        ``min_match``. Ties in match go to the record seen in more frames, then the more
        confident, then the nearer one.
        """
        check_query(phrase, near, radius, min_confidence, max_age_s, states, max_results,
                    min_match)
        with self._lock:
            cols = self._cols
            keep = cols.valid & cols.confirmed
            if PRESENT not in states:
                keep &= ~cols.present
            if GONE not in states:
                keep &= cols.present
            if min_confidence > 0:
                keep &= (
                    cols.log_odds >= math.log(min_confidence / (1.0 - min_confidence))
                    if min_confidence < 1
                    else cols.log_odds >= MAX_LOG_ODDS
                )
            if max_age_s is not None:
                now = self._latest_ns if now_ns is None else int(now_ns)
                keep &= cols.last_seen >= now - int(max_age_s * 1e9)
            distance = None
            if near is not None:
                distance = np.linalg.norm(cols.means - np.asarray(near, np.float64), axis=1)
                if radius is not None:
                    keep &= distance <= radius
            rows = np.flatnonzero(keep)
            if phrase is None:
                scores = np.ones(rows.size)
            else:
                scores = self._match_scores(
                    normalise_phrase(phrase), rows, encode_text, logit_scale
                )
            chosen = scores >= min_match
            rows, scores = rows[chosen], scores[chosen]
            near_key = distance[rows] if distance is not None else np.zeros(rows.size)
            order = np.lexsort(
                (cols.ids[rows], near_key, -cols.log_odds[rows], -cols.observations[rows], -scores)
            )[:max_results]
            return [
                Match(
                    self._records[int(cols.ids[rows[i]])],
                    float(scores[i]),
                    None if distance is None else float(near_key[i]),
                )
                for i in order
            ]

    def _phrase_logits(self, encode_text):
        """``(K, own, other)``: per row, the cosines ``K`` of its mean crop embedding with every
        phrase the memory knows (by code) and :data:`NULL_PROMPTS`, and the columns of the largest
        of its own phrases and of the others. Kept between queries; rows changed since are
        redone."""
        cols, cache = self._cols, self._logit_cache
        phrases = [*cols.codes, *NULL_PROMPTS]
        rows = len(cols.ids)
        text = np.asarray(encode_text(phrases), np.float32)  # the encoder's cache: cheap
        if (
            cache is None
            or cache["known"].shape != (rows, len(phrases))
            or not np.array_equal(cache["text"], text)
        ):
            cache = self._logit_cache = {
                "text": text,
                "known": np.zeros((rows, len(phrases)), np.float32),
                "own": np.zeros(rows, np.int64),
                "other": np.zeros(rows, np.int64),
            }
            dirty = np.flatnonzero(cols.valid & cols.has_embedding)
        else:
            dirty = np.fromiter(cols.dirty, np.int64, len(cols.dirty))
        cols.dirty.clear()
        if dirty.size:
            known = cols.embeddings[dirty] @ cache["text"].T
            own = cols.has_phrase[dirty, : len(cols.codes)]
            own = np.pad(own, ((0, 0), (0, len(NULL_PROMPTS))))
            cache["known"][dirty] = known
            cache["own"][dirty] = np.where(own, known, -np.inf).argmax(axis=1)
            cache["other"][dirty] = np.where(own, -np.inf, known).argmax(axis=1)
        return cache["known"], cache["own"], cache["other"]

    def _match_scores(self, phrase: str, rows: np.ndarray, encode_text, logit_scale) -> np.ndarray:
        cols = self._cols
        code = cols.codes.get(phrase)
        scores = np.zeros(rows.size)
        if code is not None:
            scores = cols.evidence[rows, code] / np.maximum(cols.totals[rows], 1e-12)
        embedded = cols.has_embedding[rows]
        if encode_text is None or cols.embeddings is None or not embedded.any():
            return scores
        chosen = rows[embedded]
        known, own_at, other_at = self._phrase_logits(encode_text)
        text = np.asarray(encode_text([phrase]), np.float32)[0]
        asked = (cols.embeddings[: cols.used] @ text)[chosen]
        own_at, other_at = own_at[chosen], other_at[chosen]
        has_own = cols.has_phrase[chosen, own_at] & (own_at < len(cols.codes))
        best_own = np.where(has_own, known[chosen, own_at], -np.inf)
        best_other = known[chosen, other_at]
        if code is not None:  # the asked phrase competes with none: redo rows it led
            redo = np.flatnonzero((own_at == code) | (other_at == code))
            if redo.size:
                own = cols.has_phrase[chosen[redo], : len(cols.codes)]
                own = np.pad(own, ((0, 0), (0, len(NULL_PROMPTS))))
                rest = known[chosen[redo]]
                rest[:, code] = -np.inf
                best_own[redo] = np.where(own, rest, -np.inf).max(axis=1)
                best_other[redo] = np.where(own, -np.inf, rest).max(axis=1)
        margin = np.minimum(
            np.where(
                np.isfinite(best_own), logit_scale * (asked - best_own) + MATCH_TOLERANCE, np.inf
            ),
            logit_scale * (asked - best_other),
        )
        embed = 1.0 / (1.0 + np.exp(-np.clip(margin, -50.0, 50.0)))
        # the evidence share, each phrase weighted by CLIP's view of the crops
        if code is not None:
            held = np.flatnonzero(cols.has_phrase[chosen, code])
            if held.size:
                n = len(cols.codes)
                own = cols.has_phrase[chosen[held], :n]
                logits = np.where(own, logit_scale * known[chosen[held], :n], -np.inf)
                weights = cols.evidence[chosen[held], :n] * np.exp(
                    logits - logits.max(axis=1, keepdims=True)
                )
                shares = scores[embedded]
                shares[held] = weights[:, code] / np.maximum(weights.sum(axis=1), 1e-300)
                scores[embedded] = shares
        scores[embedded] = np.maximum(scores[embedded], embed)
        return scores


def check_query(phrase, near, radius, min_confidence, max_age_s, states, max_results,
                min_match) -> None:
    """One-line :class:`UserError` for a bad query field."""
    if phrase is not None and (
        not isinstance(phrase, str) or not phrase.strip() or len(phrase) > 200
    ):
        raise UserError("the phrase must be 1 to 200 characters")
    if near is not None:
        if len(near) != 3 or not np.isfinite(np.asarray(near, np.float64)).all():
            raise UserError(f"near must be three finite numbers x, y, z, got {near!r}")
    if radius is not None and (near is None or not math.isfinite(radius) or radius <= 0):
        raise UserError("radius must be a positive number of metres and needs a point to be near")
    if not 0.0 <= min_confidence <= 1.0:
        raise UserError(f"min_confidence={min_confidence} is outside [0, 1]")
    if not 0.0 <= min_match <= 1.0:
        raise UserError(f"min_match={min_match} is outside [0, 1]")
    if max_age_s is not None and not (max_age_s >= 0 and math.isfinite(max_age_s)):
        raise UserError(f"max_age_s={max_age_s} must be a non-negative number of seconds")
    if not states or any(s not in STATES for s in states):
        raise UserError(f"states must be some of {', '.join(STATES)}, got {list(states)!r}")
    if not 1 <= int(max_results) <= 10_000:
        raise UserError(f"max_results={max_results} is outside [1, 10000]")
