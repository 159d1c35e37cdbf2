"""Axis-aligned box maths on ``(x0, y0, x1, y1)`` pixel boxes: areas, intersections, IoU and
non-maximum suppression."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def as_boxes(boxes) -> np.ndarray:
    """Any sequence of 4-number boxes → ``N x 4`` float64 array."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return arr


def box_area(boxes) -> np.ndarray:
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_intersection(a, b) -> np.ndarray:
    """Pairwise intersection areas (``len(a) x len(b)``)."""
    a, b = as_boxes(a), as_boxes(b)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)


def box_iou(a, b) -> np.ndarray:
    """Pairwise IoU matrix (``len(a) x len(b)``); empty or degenerate boxes have IoU 0."""
    a, b = as_boxes(a), as_boxes(b)
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes, scores: Sequence[float], iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    b = as_boxes(boxes)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou(b[i:i + 1], b[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
