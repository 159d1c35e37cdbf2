"""CLIP-only grounding: class-agnostic region proposals scored by CLIP against the phrases.

Used when PaliGemma is off or too slow. The method, step by step:

1. **Proposals** (:func:`propose_regions`), class-agnostic and cheap on a 640x480 frame (~30 ms CPU):

   * square sliding windows at several scales (20 % to 100 % of the short side), half-overlapping;
   * edge boxes: bounding boxes of the closed contours of Canny edges on the L, a and b channels
     (CIELAB), so that colour edges count even where brightness does not change;
   * colour-segment boxes: connected regions of a k-means colour quantisation (CIELAB, k=6) of a
     copy downscaled to ~96 px.

   Near-duplicates (IoU > 0.9) are merged; windows cover every place, the image-driven boxes fit
   object outlines tightly.
2. **Scoring**: every proposal is cropped as a square around its centre (its longer side plus a
   margin, kept inside the image) so CLIP sees the whole region at its usual aspect; all crops go
   through :meth:`ClipLabeler.region_logits` in one batch, against the phrases plus the null prompts
   :data:`NULL_PROMPTS` ("background", "an object").
3. **Per-phrase scores in [0, 1]**: a softmax over phrases + null prompts per region; a phrase's
   score is its share. A region showing something else is claimed by "an object" (or by another
   phrase), an empty region by "background", so a phrase whose object is absent gets a low score on
   every region; a softmax over the phrases alone would hand each region to some phrase.
4. **Selection**: per phrase, regions scoring at least ``score_threshold`` are kept, overlapping ones
   suppressed (greedy NMS at ``nms_iou``, :func:`core.boxes.nms`), highest score first. A kept box
   that encloses a better-scoring box of the same phrase (covers :data:`ENCLOSED` of its area) is a
   loose view of the same object and is dropped too: NMS alone keeps it when the two boxes' IoU is low.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ros_mm_perception.core.perception.boxes import as_boxes, box_area, nms
from ros_mm_perception.core.config import PerceptionConfig, check_phrases
from ros_mm_perception.core.perception.labeler import ClipLabeler
from ros_mm_perception.core.imaging.preprocess import check_rgb
from ros_mm_perception.core.results import Detection

NULL_PROMPTS = ("background", "an object")
"""Prompts that compete with the phrases for every region: empty regions and other things."""

WINDOW_SCALES = (0.2, 0.3, 0.45, 0.68, 1.0)
"""Sliding-window sides as fractions of the image's short side."""

MIN_WINDOW = 16
"""Smallest sliding-window side in pixels (smaller crops carry too little for CLIP)."""

ENCLOSED = 0.8
"""Share of a better box's area that a same-phrase box must cover to count as a loose view of it."""

CONTEXT_MARGIN = 0.1
"""Each side of a proposal's square crop grows by this fraction of the proposal's longer side."""

_DEFAULTS = PerceptionConfig()


def sliding_windows(height: int, width: int, scales: Sequence[float] = WINDOW_SCALES,
                    overlap: float = 0.5) -> np.ndarray:
    """Square windows (``N x 4``) at each scale, spaced so neighbours overlap by about ``overlap``.

    Sides are ``scale`` times the short side, at least :data:`MIN_WINDOW` pixels (or the short side).
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
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    pixels = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    if len(pixels) < 4 * k:  # too few pixels to segment
        return as_boxes([])
    cv2.setRNGSeed(0)  # k-means++ seeding draws from OpenCV's RNG: fixed, so proposals are repeatable
    criteria = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 10, 1.0)
    _, labels, _ = cv2.kmeans(pixels, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    labels = labels.reshape(small.shape[:2])
    rects = []
    for c in range(k):
        _, _, stats, _ = cv2.connectedComponentsWithStats((labels == c).astype(np.uint8), connectivity=8)
        rects += [tuple(s[:4]) for s in stats[1:] if s[4] >= 12]
    return _xywh_to_boxes(rects, scale)


def _xywh_to_boxes(rects, scale: float) -> np.ndarray:
    b = as_boxes(rects)
    b[:, 2:] += b[:, :2]
    return b / scale


def propose_regions(image: np.ndarray, *, scales: Sequence[float] = WINDOW_SCALES,
                    min_area: float = 0.003, max_area: float = 0.9) -> np.ndarray:
    """Class-agnostic proposals (``N x 4`` pixel boxes): windows, edge boxes, colour-segment boxes.

    Image-driven boxes smaller than ``min_area`` or larger than ``max_area`` of the image are
    dropped; boxes overlapping an earlier one by IoU > 0.9 are merged into it.
    """
    h, w = check_rgb(image).shape[:2]
    fitted = np.concatenate([edge_boxes(image), colour_segment_boxes(image)])
    area = box_area(fitted) / float(h * w)
    fitted = fitted[(area >= min_area) & (area <= max_area)]
    boxes = np.concatenate([fitted, sliding_windows(h, w, scales)])
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    boxes = boxes[box_area(boxes) > 0]
    keep = nms(boxes, -np.arange(len(boxes), dtype=np.float64), 0.9)  # first come, first kept
    return boxes[np.sort(keep)]


def context_squares(boxes: np.ndarray, height: int, width: int, margin: float = CONTEXT_MARGIN) -> np.ndarray:
    """The square crop that scores each box: centred on it, its longer side plus ``margin``, inside the image."""
    b = as_boxes(boxes)
    side = np.minimum((b[:, 2:] - b[:, :2]).max(axis=1) * (1 + 2 * margin), min(height, width))
    side = np.maximum(side, 1.0)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    x0 = np.clip(cx - side / 2, 0, width - side)
    y0 = np.clip(cy - side / 2, 0, height - side)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1)


def phrase_scores(labeler: ClipLabeler, image: np.ndarray, boxes: np.ndarray,
                  phrases: Sequence[str]) -> np.ndarray:
    """Per-region phrase scores in [0, 1] (``B x P``): softmax over phrases + null prompts, one batch."""
    nulls = [p for p in NULL_PROMPTS if p not in phrases]
    h, w = image.shape[:2]
    logits = labeler.region_logits(image, context_squares(boxes, h, w), list(phrases) + nulls)
    return torch.from_numpy(logits).softmax(dim=-1).numpy()[:, :len(phrases)]


def drop_enclosing(boxes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``order`` (indices, best first) without boxes covering :data:`ENCLOSED` of a better box."""
    keep: List[int] = []
    for i in order:
        better = boxes[keep]
        ix = np.clip(np.minimum(boxes[i, 2], better[:, 2]) - np.maximum(boxes[i, 0], better[:, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], better[:, 3]) - np.maximum(boxes[i, 1], better[:, 1]), 0, None)
        if not (ix * iy >= ENCLOSED * box_area(better)).any():
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def ground_with_clip(labeler: ClipLabeler, image: np.ndarray, phrases: Sequence[str], *,
                     score_threshold: float = _DEFAULTS.score_threshold, nms_iou: float = _DEFAULTS.nms_iou,
                     max_detections: Optional[int] = None) -> List[Detection]:
    """Detections of ``phrases`` in one HxWx3 uint8 RGB frame by CLIP alone (see the module docstring).

    Boxes are in pixels of ``image``; ``source`` is ``"clip"``. Detections are sorted by score, at
    most ``max_detections`` of them (``None``: all that pass the threshold and NMS).
    """
    check_rgb(image)
    phrases = check_phrases(phrases, "phrases", allow_empty=True)
    if not phrases or (max_detections is not None and max_detections <= 0):
        return []
    boxes = propose_regions(image)
    scores = phrase_scores(labeler, image, boxes, phrases)
    found: List[Tuple[float, int, int]] = []
    for p in range(len(phrases)):
        idx = np.flatnonzero(scores[:, p] >= score_threshold)
        if idx.size:
            kept = idx[nms(boxes[idx], scores[idx, p], nms_iou)]
            found += [(float(scores[i, p]), p, int(i)) for i in drop_enclosing(boxes, kept)]
    found.sort(key=lambda f: (-f[0], f[1], f[2]))
    if max_detections is not None:
        found = found[:max_detections]
    return [Detection(phrases[p], score, tuple(float(v) for v in boxes[i]), source="clip")
            for score, p, i in found]

