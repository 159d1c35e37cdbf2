"""Per-camera multi-object tracking of phrase detections: stable integer ids across frames.

Policy (one :class:`Tracker` per camera, updated on each frame where detection ran):

* **Association** – each track predicts its box with a constant-velocity model; detections are
  matched to tracks by IoU with the predicted box, as SORT does: the assignment with the largest
  total IoU (``scipy.optimize.linear_sum_assignment``), pairs below ``iou_threshold`` never match.
  More matches never outweigh better ones: a track whose predicted box equals a detection keeps it,
  even when giving it away would let two weaker pairs match. Detections of the same phrase are
  matched first, then the remaining detections and tracks regardless of phrase.
* **Overlap fallback and births** – an unmatched detection that mostly lies on an unmatched track
  of its phrase (:data:`BIRTH_OVERLAP` of the smaller box, with the track's last or predicted box)
  continues that track: the object moved or changed size too much for ``iou_threshold``. One that
  mostly lies on a track of its phrase matched in this update is a second view of a tracked object
  and is published with ``track_id=None``. Any other starts a track. The track gets its id once it
  has been seen in ``min_hits`` consecutive updates (default 1: at once, so a planner can refer to
  it immediately); until then its detection carries ``track_id=None``. A tentative track that
  misses once is dropped.
* **Deaths** – a confirmed track missed in more than ``max_missed`` consecutive updates is deleted;
  an object seen again before that keeps its id (short occlusions, missed detections).
* **Label changes** – the id follows the object, not the phrase: a track matched in the second
  stage takes the detection's new phrase and keeps its id. Only a phrase that no live track has can
  take over another phrase's track, so a track lost behind another object is never handed to that
  object's detection (whose own track may have lost it for a frame or two).
* Ids are positive integers, counted per tracker from 1 and never reused, also not after
  :meth:`reset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ros_mm_perception.core.perception.boxes import box_area, box_intersection, box_iou
from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.results import Detection

_DEFAULTS = PerceptionConfig()
VELOCITY_SMOOTHING = 0.5
"""Weight of the newest displacement in the track's velocity estimate (exponential smoothing)."""
BIRTH_OVERLAP = 0.5
"""Share of the smaller box that makes a detection lie on a same-phrase track (continue it, or not
start one)."""


@dataclass
class Track:
    """One tracked object: its last box, per-update velocity and bookkeeping."""

    phrase: str
    box: np.ndarray
    track_id: Optional[int] = None
    hits: int = 1
    missed: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))

    def predicted_box(self) -> np.ndarray:
        """Where the box is expected in the next update (last box moved by velocity per elapsed
        update)."""
        return self.box + self.velocity * (self.missed + 1)

    def observe(self, phrase: str, box: np.ndarray) -> None:
        step = (box - self.box) / (self.missed + 1)
        weight = 1.0 if self.hits == 1 else VELOCITY_SMOOTHING
        self.velocity = weight * step + (1 - weight) * self.velocity
        self.phrase, self.box = phrase, box
        self.hits += 1
        self.missed = 0


class Tracker:
    """Assigns stable track ids to one camera's detections (see the module docstring for the
    policy)."""

    def __init__(self, iou_threshold: float = _DEFAULTS.track_iou,
                 max_missed: int = _DEFAULTS.track_max_missed,
                 min_hits: int = _DEFAULTS.track_min_hits):
        self.iou_threshold = float(iou_threshold)
        self.max_missed = int(max_missed)
        self.min_hits = max(1, int(min_hits))
        self._tracks: List[Track] = []
        self._last_id = 0

    @property
    def tracks(self) -> List[Track]:
        """The live tracks (confirmed and tentative)."""
        return list(self._tracks)

    def reset(self) -> None:
        """Forget every track; ids already given out are still never reused."""
        self._tracks = []

    def update(self, detections: Sequence[Detection]) -> Sequence[Detection]:
        """Match ``detections`` to tracks, set each detection's ``track_id`` in place and return
        them."""
        boxes = np.asarray([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        phrases = [d.phrase for d in detections]
        free_dets = list(range(len(detections)))
        free_tracks = list(range(len(self._tracks)))
        owner = {}
        for same_phrase in (True, False):
            for d, t in self._assign(boxes, phrases, free_dets, free_tracks, same_phrase):
                track = self._tracks[t]
                track.observe(phrases[d], boxes[d])
                self._confirm(track)
                owner[d] = track
                free_dets.remove(d)
                free_tracks.remove(t)
        born: List[Track] = []
        for d in free_dets:
            lost = [t for t in free_tracks if self._lies_on(boxes[d], phrases[d], self._tracks[t])]
            if lost:  # moved too far for IoU, but still mostly on its own track: continue it
                track = self._tracks[lost[0]]
                track.observe(phrases[d], boxes[d])
                self._confirm(track)
                owner[d] = track
                free_tracks.remove(lost[0])
            elif not any(self._lies_on(boxes[d], phrases[d], track)
                         for track in [*owner.values(), *born]):
                owner[d] = Track(phrases[d], boxes[d])
                self._confirm(owner[d])
                born.append(owner[d])
        kept = [track
                for t, track in enumerate(self._tracks)
                if t not in free_tracks or self._survives_miss(track)]
        self._tracks = kept + born
        for d, det in enumerate(detections):
            det.track_id = owner[d].track_id if d in owner else None
        return detections

    @staticmethod
    def _lies_on(box: np.ndarray, phrase: str, track: Track) -> bool:
        """Whether ``track`` has ``phrase`` and most of ``box`` or of the track's box (last or
        predicted) overlaps."""
        if track.phrase != phrase:
            return False
        others = [track.box, track.predicted_box()]
        inter = box_intersection([box], others)[0]
        return bool(np.any(inter
                           > BIRTH_OVERLAP * np.minimum(box_area([box])[0], box_area(others))))

    def _survives_miss(self, track: Track) -> bool:
        track.missed += 1
        if track.track_id is None:
            return False
        return track.missed <= self.max_missed

    def _confirm(self, track: Track) -> None:
        if track.track_id is None and track.hits >= self.min_hits:
            self._last_id += 1
            track.track_id = self._last_id

    def _assign(self, boxes, phrases, dets, tracks, same_phrase):
        if not dets or not tracks:
            return []
        predicted = np.stack([self._tracks[t].predicted_box() for t in tracks])
        iou = box_iou(boxes[dets], predicted)
        allowed = iou >= self.iou_threshold
        if same_phrase:
            allowed &= np.asarray([[phrases[d] == self._tracks[t].phrase for t in tracks]
                                   for d in dets])
        else:
            tracked = {track.phrase for track in self._tracks}
            allowed &= np.asarray([[phrases[d] not in tracked] for d in dets])
        if not allowed.any():
            return []
        # Total IoU of the allowed pairs is maximised; a forbidden pair costs what leaving both
        # free costs.
        cost = np.where(allowed, -iou, 0.0)
        rows, cols = linear_sum_assignment(cost)
        return [(dets[r], tracks[c]) for r, c in zip(rows, cols) if allowed[r, c]]
