"""What a planner would measure of a box-prompted mask model on rendered scenes, in two styles.

* :func:`mask_quality`: multi-object scenes of the ``own`` and ``unseen`` styles
  (:func:`~.evaluation.render`); each visible object's box, each side moved by up to
  :data:`BOX_JITTER` of the box's size (a detector's box is never exact), prompts the model; the
  mask's IoU with the renderer's exact visible mask, overall and per shape, beside the IoU of the
  prompt box itself taken as the mask (what a model must beat to add anything), and the time per
  frame (image encoder) and per box (mask decoder) on this machine, in wall-clock and in the
  thread's CPU time (the figure that holds on a busy machine);
* :func:`depth_error`: single objects of hollow and thin shapes (ring, cross, star) at 0.8-2.5 m
  before a wall 0.5-2 m behind them, with sensor noise (1 % of the range) on a rendered depth
  image; the median error of the 3D centre (metres) from the mask's pixels and from the box
  window (:func:`~ros_mm_perception.core.perception.geometry.locate` without a mask), against the
  object's true centre: its visible pixels' extent at its depth.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from ros_mm_perception.core.perception.geometry import locate
from ros_mm_perception.core.results import Detection, Intrinsics
from ros_mm_perception.synthetic.evaluation import (GROUNDING_OBJECT_SIZE, GROUNDING_SIZE,
                                                    MIN_VISIBLE, STYLES, render)

BOX_JITTER = 0.05
HOLLOW_SHAPES = ("ring", "cross", "star")
FOCAL = 525.0
"""Focal length in pixels of the evaluation's 640 x 480 camera (a Kinect-like sensor)."""


def jittered(rng: np.random.Generator, box, height: int, width: int) -> tuple:
    """``box``, each side moved by up to :data:`BOX_JITTER` of its size, clipped to the frame."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    dx0, dy0, dx1, dy1 = rng.uniform(-BOX_JITTER, BOX_JITTER, 4) * [w, h, w, h]
    return (float(np.clip(x0 + dx0, 0, width)), float(np.clip(y0 + dy0, 0, height)),
            float(np.clip(x1 + dx1, 0, width)), float(np.clip(y1 + dy1, 0, height)))


def box_mask(box, height: int, width: int) -> np.ndarray:
    """The pixels whose centres lie in ``box``."""
    x0, y0, x1, y1 = box
    mask = np.zeros((height, width), bool)
    r0, r1, c0, c1 = (int(np.ceil(v - 0.5)) for v in (y0, y1, x0, x1))
    mask[r0:r1, c0:c1] = True
    return mask


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def mask_quality(engine, style: str, seed: int, n_scenes: int) -> Dict[str, object]:
    """Mean and median mask IoU, per shape, the share of masks at IoU >= 0.75, and timings."""
    rng = np.random.default_rng([seed, 7, STYLES.index(style)])
    ious: List[float] = []
    box_ious: List[float] = []
    by_shape: Dict[str, List[float]] = {}
    encoder_s, total_s, cpu_s, n_boxes = [], [], [], 0
    encode = engine.net.get_image_embeddings

    def timed(pixels):
        t = time.perf_counter()
        out = encode(pixels)
        encoder_s.append(time.perf_counter() - t)
        return out

    engine.net.get_image_embeddings = timed
    try:
        for _ in range(n_scenes):
            scene = render(style, rng, n_objects=int(rng.integers(1, 5)), size=GROUNDING_SIZE,
                           size_range=GROUNDING_OBJECT_SIZE)
            h, w = scene.image.shape[:2]
            objects = [o for o in scene.objects if o.visible_fraction >= MIN_VISIBLE]
            if not objects:
                continue
            boxes = [jittered(rng, o.box, h, w) for o in objects]
            t, cpu = time.perf_counter(), time.thread_time()
            (masks,) = engine.masks([scene.image], [boxes])
            total_s.append(time.perf_counter() - t)
            cpu_s.append(time.thread_time() - cpu)
            n_boxes += len(boxes)
            for obj, mask, box in zip(objects, masks, boxes):
                box_ious.append(mask_iou(box_mask(box, h, w), obj.mask))
                iou = mask_iou(mask, obj.mask)
                ious.append(iou)
                by_shape.setdefault(obj.shape, []).append(iou)
    finally:
        engine.net.get_image_embeddings = encode
    return {"mean_iou": _round(np.mean(ious)), "median_iou": _round(np.median(ious)),
            "iou_at_least_0.75": _round(np.mean(np.array(ious) >= 0.75)),
            "box_as_mask_mean_iou": _round(np.mean(box_ious)),
            "by_shape": {s: _round(np.mean(v)) for s, v in sorted(by_shape.items())},
            "ms_per_frame": _round(1000 * np.mean(total_s), 1),
            "ms_image_encoder": _round(1000 * np.mean(encoder_s), 1),
            "ms_per_box": _round(1000 * (sum(total_s) - sum(encoder_s)) / max(n_boxes, 1), 1),
            "thread_cpu_ms_per_frame": _round(1000 * np.mean(cpu_s), 1),
            "boxes_per_frame": _round(n_boxes / max(len(total_s), 1), 2),
            "objects": len(ious), "frames": len(total_s)}


def scene_depth(rng: np.random.Generator, mask: np.ndarray, z_object: float,
                z_wall: float) -> np.ndarray:
    """Float metres: the object's pixels at ``z_object``, the rest at ``z_wall``, 1 % noise."""
    depth = np.where(mask, z_object, z_wall).astype(np.float32)
    return depth * (1 + rng.normal(0, 0.01, depth.shape)).astype(np.float32)


def depth_error(engine, style: str, seed: int, per_shape: int,
                shapes: Sequence[str] = HOLLOW_SHAPES) -> Dict[str, Dict[str, Optional[float]]]:
    """Median 3D centre error (metres) with masks and with the box window, per shape."""
    from ros_mm_perception.synthetic.scenes import COLOURS

    rng = np.random.default_rng([seed, 8, STYLES.index(style)])
    k = Intrinsics(FOCAL, FOCAL, GROUNDING_SIZE[1] / 2 - 0.5, GROUNDING_SIZE[0] / 2 - 0.5)
    out = {}
    for shape in shapes:
        errors = {"mask": [], "box": []}
        for _ in range(per_shape):
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            scene = render(style, rng, objects=[(colour, shape)], size=GROUNDING_SIZE,
                           size_range=(0.25, 0.5))
            obj = scene.objects[0]
            z_obj = float(rng.uniform(0.8, 2.5))
            depth = scene_depth(rng, obj.mask, z_obj, z_obj + float(rng.uniform(0.5, 2.0)))
            rows, cols = np.nonzero(obj.mask)
            u, v = (cols.min() + cols.max()) / 2, (rows.min() + rows.max()) / 2
            truth = np.array([(u - k.cx) * z_obj / k.fx, (v - k.cy) * z_obj / k.fy, z_obj])
            box = jittered(rng, obj.box, *depth.shape)
            (mask,), = engine.masks([scene.image], [[box]])
            for kind, det_mask in (("mask", mask), ("box", None)):
                det = Detection(obj.phrase, 1.0, box, mask=det_mask)
                locate([det], depth, k, depth.shape)
                error = np.inf if det.xyz is None else np.linalg.norm(np.array(det.xyz) - truth)
                errors[kind].append(float(error))
        out[shape] = {f"median_error_m_{kind}": _round(np.median(e), 4)
                      for kind, e in errors.items()}
    return out


def _round(value, digits: int = 4) -> Optional[float]:
    value = float(value)
    return round(value, digits) if np.isfinite(value) else None
