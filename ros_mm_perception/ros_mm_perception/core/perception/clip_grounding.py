"""CLIP-only grounding: class-agnostic region proposals scored by CLIP against the phrases.

Used when PaliGemma is off or too slow. The method, step by step:

1. **Proposals** (:func:`propose_regions`), class-agnostic and cheap on a 640x480 frame (~30 ms
   CPU):

   * square sliding windows at several scales (20 % to 100 % of the short side), half-overlapping;
   * edge boxes: bounding boxes of the closed contours of Canny edges on the L, a and b channels
     (CIELAB), so that colour edges count even where brightness does not change;
   * colour-segment boxes: connected regions of a k-means colour quantisation (CIELAB, k=6) of a
     copy downscaled to ~96 px.

   Near-duplicates (IoU > 0.9) are merged; windows cover every place, the image-driven boxes fit
   object outlines tightly.
2. **Scoring**: every proposal is cropped as a square around its centre (its longer side plus a
   margin, kept inside the image) so CLIP sees the whole region at its usual aspect; all crops go
   through :meth:`ClipLabeler.region_logits` in one batch, against the phrases plus the null
   prompts :data:`NULL_PROMPTS` ("background", "an object").
3. **Per-phrase scores in [0, 1]**: a softmax over phrases + null prompts per region; a phrase's
   score is its share. A region showing something else is claimed by "an object" (or by another
   phrase), an empty region by "background", so a phrase whose object is absent gets a low score on
   every region; a softmax over the phrases alone would hand each region to some phrase.
4. **Selection: one box per object.** Per phrase, regions scoring at least ``score_threshold``
   are grouped greedily, best first: every remaining region that overlaps the best remaining one
   shows the same object (a box on part of it, a looser box around it, a window of another scale, a
   box reaching into it from the side). Each group publishes one box: of its image-fitted boxes
   (edge or colour-segment proposals, which follow object outlines), the one whose own pixels,
   without the context margin, score the phrase best (a second, small batch: the context crop of a
   box beside or on part of the object shows the object too, its own pixels do not); when it holds
   no fitted box, its best window. What overlaps the published box goes with the group. A published
   box whose context crop holds most of a better box of the same phrase (a strip beside the object)
   stays only if its own pixels score the phrase too (:func:`borrowing`). The trade-off: two
   objects of the same phrase whose boxes overlap are reported as one. With the default threshold
   of 0.5 a region is only given to a phrase that holds most of its probability, so no region is
   published under two phrases.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ros_mm_perception.core.perception.boxes import as_boxes, box_area, box_intersection, nms
from ros_mm_perception.core.config import PerceptionConfig, check_phrases
from ros_mm_perception.core.perception.labeler import BACKGROUND_PROMPT, ClipLabeler
from ros_mm_perception.core.imaging.preprocess import check_rgb
from ros_mm_perception.core.results import Detection

NULL_PROMPTS = (BACKGROUND_PROMPT, "an object")
"""Prompts that compete with the phrases for every region: empty regions and other things."""

WINDOW_SCALES = (0.2, 0.3, 0.45, 0.68, 1.0)
"""Sliding-window sides as fractions of the image's short side."""

MIN_WINDOW = 16
"""Smallest sliding-window side in pixels (smaller crops carry too little for CLIP)."""

CONTEXT_MARGIN = 0.1
"""Each side of a proposal's square crop grows by this fraction of the proposal's longer side."""

_DEFAULTS = PerceptionConfig()


def sliding_windows(height: int, width: int, scales: Sequence[float] = WINDOW_SCALES,
                    overlap: float = 0.5) -> np.ndarray:
    """Square windows (``N x 4``) at each scale, spaced so neighbours overlap by about ``overlap``.

    Sides are ``scale`` times the short side, at least :data:`MIN_WINDOW` pixels (or the short
    side).
    """
    short = min(height, width)
    out = []
    for side in sorted({min(max(scale * short, MIN_WINDOW), short) for scale in scales}):
        step = max(1.0, side * (1.0 - overlap))
        xs = np.linspace(0, width - side, int(np.ceil((width - side) / step)) + 1)
        ys = np.linspace(0, height - side, int(np.ceil((height - side) / step)) + 1)
        out += [(x, y, x + side, y + side) for y in ys for x in xs]
    return as_boxes(out)


def edge_boxes(image: np.ndarray) -> np.ndarray:
    """Bounding boxes of closed contours of the Canny edges of the L, a and b channels."""
    lab = cv2.cvtColor(cv2.GaussianBlur(image, (0, 0), 1.5), cv2.COLOR_RGB2LAB)
    edges = np.zeros(image.shape[:2], np.uint8)
    for c in range(3):
        edges |= cv2.Canny(lab[..., c], 30, 80)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    return _xywh_to_boxes([cv2.boundingRect(c) for c in contours], 1.0)


def colour_segment_boxes(image: np.ndarray, k: int = 6, short_side: int = 96) -> np.ndarray:
    """Boxes of connected regions of a k-means colour quantisation of a downscaled copy."""
    h, w = image.shape[:2]
    scale = min(1.0, short_side / min(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    pixels = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    if len(pixels) < 4 * k:  # too few pixels to segment
        return as_boxes([])
    # k-means++ seeding draws from OpenCV's RNG: fixed, so proposals are repeatable
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 10, 1.0)
    _, labels, _ = cv2.kmeans(pixels, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    labels = labels.reshape(small.shape[:2])
    rects = []
    for c in range(k):
        _, _, stats, _ = cv2.connectedComponentsWithStats((labels == c).astype(np.uint8),
                                                          connectivity=8)
        rects += [tuple(s[:4]) for s in stats[1:] if s[4] >= 12]
    return _xywh_to_boxes(rects, scale)


def _xywh_to_boxes(rects, scale: float) -> np.ndarray:
    b = as_boxes(rects)
    b[:, 2:] += b[:, :2]
    return b / scale


class Proposals(NamedTuple):
    """Region proposals: ``boxes`` (``N x 4`` pixels) and ``fitted`` (``N`` bools: image-fitted,
    not a window)."""

    boxes: np.ndarray
    fitted: np.ndarray


def propose_regions(image: np.ndarray, *, scales: Sequence[float] = WINDOW_SCALES,
                    min_area: float = 0.003, max_area: float = 0.9) -> Proposals:
    """Class-agnostic proposals: edge boxes and colour-segment boxes (fitted), then windows.

    Image-driven boxes smaller than ``min_area`` or larger than ``max_area`` of the image are
    dropped; boxes overlapping an earlier one by IoU > 0.9 are merged into it.
    """
    h, w = check_rgb(image).shape[:2]
    fitted = np.concatenate([edge_boxes(image), colour_segment_boxes(image)])
    area = box_area(fitted) / float(h * w)
    fitted = fitted[(area >= min_area) & (area <= max_area)]
    windows = sliding_windows(h, w, scales)
    boxes = np.concatenate([fitted, windows])
    is_fitted = np.arange(len(boxes)) < len(fitted)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    valid = box_area(boxes) > 0
    boxes, is_fitted = boxes[valid], is_fitted[valid]
    # first come, first kept
    keep = np.sort(nms(boxes, -np.arange(len(boxes), dtype=np.float64), 0.9))
    return Proposals(boxes[keep], is_fitted[keep])


def context_squares(boxes: np.ndarray, height: int, width: int,
                    margin: float = CONTEXT_MARGIN) -> np.ndarray:
    """The square crop that scores each box: centred on it, its longer side plus ``margin``, inside
    the image."""
    b = as_boxes(boxes)
    side = np.minimum((b[:, 2:] - b[:, :2]).max(axis=1) * (1 + 2 * margin), min(height, width))
    side = np.maximum(side, 1.0)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    x0 = np.clip(cx - side / 2, 0, width - side)
    y0 = np.clip(cy - side / 2, 0, height - side)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1)


def phrase_scores(labeler: ClipLabeler, image: np.ndarray, boxes: np.ndarray,
                  phrases: Sequence[str], context: bool = True) -> np.ndarray:
    """Per-region phrase scores in [0, 1] (``B x P``): softmax over phrases + null prompts, one
    batch.

    With ``context`` each region is seen through its square context crop (:func:`context_squares`),
    else through its own pixels only (fitted to the model's input by the labeler's crop mode).
    """
    nulls = [p for p in NULL_PROMPTS if p not in phrases]
    h, w = image.shape[:2]
    crops = context_squares(boxes, h, w) if context else boxes
    logits = labeler.region_logits(image, crops, list(phrases) + nulls)
    return torch.from_numpy(logits).softmax(dim=-1).numpy()[:, :len(phrases)]


def overlapping(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Which of ``others`` share some area with ``box``."""
    return box_intersection(box, others)[0] > 0


def one_box_per_object(boxes: np.ndarray, fitted: np.ndarray, scores: np.ndarray,
                       score_threshold: float,
                       own_scores: Optional[np.ndarray] = None) -> List[int]:
    """Indices of the boxes published for one phrase: one per group of overlapping boxes (module
    docstring).

    Among a group's fitted boxes the best ``own_scores`` (the phrase's score on the box's own
    pixels) wins, then the best ``scores``; without ``own_scores``, the best ``scores``.
    """
    remaining = np.flatnonzero(scores >= score_threshold)
    remaining = remaining[np.argsort(-scores[remaining], kind="stable")]
    own = np.zeros(len(scores)) if own_scores is None else own_scores
    chosen: List[int] = []
    while remaining.size:
        in_group = overlapping(boxes[remaining[0]], boxes[remaining])
        in_group[0] = True
        group = remaining[in_group]
        fitted_members = [i for i in group if fitted[i]]
        pick = int(max(fitted_members, key=lambda i: (own[i], scores[i], -i)) if fitted_members
                   else max(group, key=lambda i: (scores[i], -i)))
        chosen.append(pick)
        remaining = remaining[~(in_group | overlapping(boxes[pick], boxes[remaining]))]
    return chosen


BORROWED_SHARE = 0.5
"""A box whose context crop holds this share of a better-scoring box of the same phrase may owe its
score to that object (:func:`borrowing`)."""


def borrowing(boxes: np.ndarray, chosen: Sequence[int], scores: np.ndarray, height: int,
              width: int) -> List[int]:
    """Which of one phrase's ``chosen`` boxes see, in their context crop (:func:`context_squares`),
    at least :data:`BORROWED_SHARE` of a better-scoring chosen box: a strip beside an object scores
    the object's phrase through its margin. Such a box is published only if its own pixels score
    the phrase too."""
    chosen = np.asarray(chosen, dtype=np.int64)
    if chosen.size < 2:
        return []
    own = boxes[chosen]
    held = box_intersection(context_squares(own, height, width), own) / np.maximum(box_area(own),
                                                                                   1e-9)
    better = scores[chosen][None, :] > scores[chosen][:, None]  # [i, j]: box j scores above box i
    return chosen[((held >= BORROWED_SHARE) & better).any(axis=1)].tolist()


def ground_with_clip(labeler: ClipLabeler, image: np.ndarray, phrases: Sequence[str], *,
                     score_threshold: float = _DEFAULTS.score_threshold,
                     max_detections: Optional[int] = None) -> List[Detection]:
    """Detections of ``phrases`` in one HxWx3 uint8 RGB frame by CLIP alone (see the module
    docstring).

    Boxes are in pixels of ``image``; ``source`` is ``"clip"``. Detections are sorted by score, at
    most ``max_detections`` of them (``None``: one per object that passes the threshold).
    """
    check_rgb(image)
    phrases = check_phrases(phrases, "phrases", allow_empty=True)
    if not phrases or (max_detections is not None and max_detections <= 0):
        return []
    boxes, fitted = propose_regions(image)
    scores = phrase_scores(labeler, image, boxes, phrases)
    own = np.zeros_like(scores)
    candidates = np.flatnonzero(fitted & (scores.max(axis=1) >= score_threshold))
    if candidates.size:
        own[candidates] = phrase_scores(labeler, image, boxes[candidates], phrases, context=False)
    picks = [one_box_per_object(boxes, fitted, scores[:, p], score_threshold, own[:, p])
             for p in range(len(phrases))]
    borrowed = [set(borrowing(boxes, chosen, scores[:, p], *image.shape[:2]))
                for p, chosen in enumerate(picks)]
    unscored = sorted(set().union(*borrowed) - set(candidates.tolist()))
    if unscored:  # windows have no own-pixel scores yet
        own[unscored] = phrase_scores(labeler, image, boxes[unscored], phrases, context=False)
    found: List[Tuple[float, int, int]] = []
    for p, chosen in enumerate(picks):
        found += [(float(scores[i, p]), p, i) for i in chosen if i not in borrowed[p] or own[i, p]
                  >= score_threshold]
    found.sort(key=lambda f: (-f[0], f[1], f[2]))
    if max_detections is not None:
        found = found[:max_detections]
    return [Detection(phrases[p], score, tuple(float(v) for v in boxes[i]), source="clip")
            for score, p, i in found]
