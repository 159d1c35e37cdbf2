"""What a planner would measure of a CLIP model on rendered scenes, in two styles.

``own`` scenes come from the training renderer (:mod:`.scenes`), ``unseen`` scenes from
:mod:`.unseen` (other shades, outlines, shadows, backgrounds and clutter training never made,
small and off-centre objects, JPEG). Everything runs at the given :class:`PerceptionConfig`
(the defaults unless told otherwise):

* :func:`classification`: whole-frame top-1 over all colour-shape phrases on single-object 4:3
  frames, per crop mode, with and without tiles, by object size band, by background kind and by
  position (``side``: less than half of the object's box lies in the frame's centre square);
* :func:`grounding`: CLIP-only grounding of multi-object scenes queried with their objects'
  phrases plus one absent phrase: recall and precision (one-to-one matches of the same phrase at
  IoU >= 0.5), duplicates per object, and how often the absent phrase is reported anyway;
* :func:`scene_labels`: whole-frame labels of multi-object scenes: the share of the objects among
  the top-k labels, with and without tiles;
* :func:`tracking`: 40-frame sequences of moving objects through the :class:`Tracker`: track ids
  per object, id switches per object, the share of frames where the object was found, and how many
  ids were given to more than one object (an id that moved from one object to another).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ros_mm_perception.core.config import CROP_MODES, PerceptionConfig
from ros_mm_perception.core.perception.boxes import box_area, box_intersection, box_iou
from ros_mm_perception.core.perception.clip_grounding import ground_with_clip
from ros_mm_perception.core.perception.tracking import Tracker
from ros_mm_perception.synthetic import scenes, unseen

STYLES = ("own", "unseen")
IOU_FOUND = 0.5
SIZE_BANDS = {"small": (0.1, 0.2), "medium": (0.2, 0.4), "large": (0.4, 0.6)}
"""Object diameter as a fraction of the frame's short side."""
CLASSIFY_SIZE = (240, 320)
GROUNDING_SIZE = (480, 640)
GROUNDING_OBJECT_SIZE = (0.12, 0.4)
MIN_VISIBLE = 0.3
"""Objects less visible than this (hidden behind others) are not counted as missed."""


def render(style: str, rng, **kwargs) -> scenes.Scene:
    """One scene of ``style`` (``own`` or ``unseen``) with the renderer's keyword arguments."""
    if style == "own":
        kwargs.pop("side_band", None)
        return scenes.render_scene(rng, **kwargs)
    if style == "unseen":
        return unseen.render_unseen_scene(rng, **kwargs)
    raise ValueError(f"unknown style {style!r}; known: {', '.join(STYLES)}")


def centre_share(box, height: int, width: int) -> float:
    """Share of ``box``'s area inside the frame's centre square."""
    side = min(height, width)
    x0, y0 = (width - side) / 2, (height - side) / 2
    inter = box_intersection([box], [[x0, y0, x0 + side, y0 + side]])[0, 0]
    return float(inter / max(box_area([box])[0], 1e-9))


def top_labels_at(labeler, frames: Sequence[np.ndarray], top_k: int, *,
                  crop_mode: Optional[str] = None, label_tiles: Optional[int] = None,
                  chunk: int = 64) -> List[List]:
    """Top-k labels of each frame over all phrases, ``chunk`` frames a batch, at these settings
    (None: the labeler's own, which are restored afterwards)."""
    previous = labeler.crop_mode, labeler.label_tiles
    labeler.crop_mode = previous[0] if crop_mode is None else crop_mode
    labeler.label_tiles = previous[1] if label_tiles is None else label_tiles
    try:
        return [labels for start in range(0, len(frames), chunk)
                for labels in labeler.label_batch(frames[start:start + chunk], top_k,
                                                  scenes.all_phrases())]
    finally:
        labeler.crop_mode, labeler.label_tiles = previous


def classification(labeler, style: str, seed: int, per_combo: int,
                   heldout: Sequence[Tuple[str, str]] = ()) -> Dict[str, Dict]:
    """Top-1 per crop mode at the labeler's ``label_tiles`` (and, when it has tiles, of the frame
    alone: ``<mode>_frame_alone``): overall, ``ge20`` (objects >= 20 % of the frame), per band,
    background, position."""
    rng = np.random.default_rng([seed, 1, STYLES.index(style)])
    frames, keys = [], []
    bands = list(SIZE_BANDS)
    for i, combo in enumerate(scenes.all_combos() * per_combo):
        band = bands[i % len(bands)]
        # half the small and medium objects; large ones do not fit
        side = style == "unseen" and i % 6 < 2
        scene = render(style, rng, objects=[combo], size=CLASSIFY_SIZE,
                       size_range=SIZE_BANDS[band], side_band=side)
        position = "side" if centre_share(scene.objects[0].box, *CLASSIFY_SIZE) < 0.5 else "centre"
        frames.append(scene.image)
        keys.append((scenes.phrase(*combo), band, scene.background, position, combo in heldout))
    report = {}
    views = {mode: (mode, labeler.label_tiles) for mode in CROP_MODES}
    if labeler.label_tiles:
        views.update({f"{mode}_frame_alone": (mode, 0) for mode in CROP_MODES})
    for name, (mode, tiles) in views.items():
        top = [labels[0].phrase
               for labels in top_labels_at(labeler, frames, 1, crop_mode=mode, label_tiles=tiles)]
        hits = [t == k[0] for t, k in zip(top, keys)]
        report[name] = {
            "top1": _mean(hits),
            "top1_ge20": _mean([h for h, k in zip(hits, keys) if k[1] != "small"]),
            "by_size": {b: _mean([h for h, k in zip(hits, keys) if k[1] == b]) for b in bands},
            "by_background": {g: _mean([h for h, k in zip(hits, keys) if k[2] == g])
                              for g in sorted({k[2] for k in keys})},
            "by_position": {p: _mean([h for h, k in zip(hits, keys) if k[3] == p])
                            for p in ("centre", "side")},
            "top1_heldout": _mean([h for h, k in zip(hits, keys) if k[4]]),
            "n": len(hits), "n_side": sum(k[3] == "side" for k in keys)}
    return report


def match(detections, objects, iou_found: float = IOU_FOUND) -> Dict[int, int]:
    """Greedy one-to-one matching, best score first: detection index → object index (same phrase,
    IoU)."""
    taken, pairs = set(), {}
    for d in sorted(range(len(detections)), key=lambda i: -detections[i].score):
        best, best_iou = None, iou_found
        for o, obj in enumerate(objects):
            if o in taken or obj.phrase != detections[d].phrase:
                continue
            iou = float(box_iou([detections[d].box], [obj.box])[0, 0])
            if iou >= best_iou:
                best, best_iou = o, iou
        if best is not None:
            taken.add(best)
            pairs[d] = best
    return pairs


def _duplicates(detections, objects, pairs) -> int:
    """Unmatched detections of an object's phrase that lie mostly on an object already matched to
    another detection, or cover most of it (a second box on one object; a lone misplaced box is a
    miss instead)."""
    matched = set(pairs.values())
    count = 0
    for d, det in enumerate(detections):
        if d in pairs:
            continue
        for o, obj in enumerate(objects):
            if o not in matched or obj.phrase != det.phrase:
                continue
            smaller = min(box_area([det.box])[0], box_area([obj.box])[0])
            if box_intersection([det.box], [obj.box])[0, 0] >= 0.5 * smaller:
                count += 1
                break
    return count


def grounding(labeler, style: str, seed: int, n_scenes: int, config: PerceptionConfig,
              size: Tuple[int, int] = GROUNDING_SIZE) -> Dict[str, Optional[float]]:
    """Recall, precision, duplicates per object and the absent-phrase rate at ``config``'s
    settings."""
    rng = np.random.default_rng([seed, 2, STYLES.index(style)])
    found = correct = n_dets = duplicates = n_objects = 0
    absent_hits: List[bool] = []
    by_background: Dict[str, List[bool]] = {}
    for _ in range(n_scenes):
        scene = render(style, rng, n_objects=int(rng.integers(2, 5)), size=size,
                       size_range=GROUNDING_OBJECT_SIZE)
        objects = [o for o in scene.objects if o.visible_fraction >= MIN_VISIBLE]
        present = [o.phrase for o in scene.objects]
        others = [p for p in scenes.all_phrases() if p not in present]
        absent = others[int(rng.integers(len(others)))]
        dets = ground_with_clip(labeler, scene.image, present + [absent],
                                score_threshold=config.score_threshold)
        pairs = match(dets, objects)
        hit = set(pairs.values())
        found += len(hit)
        n_objects += len(objects)
        by_background.setdefault(scene.background,
                                 []).extend(o in hit for o in range(len(objects)))
        correct += len(pairs)
        n_dets += len(dets)
        duplicates += _duplicates(dets, objects, pairs)
        absent_hits.append(any(d.phrase == absent for d in dets))
    return {"recall": _ratio(found, n_objects), "precision": _ratio(correct, n_dets),
            "duplicates_per_object": _ratio(duplicates, n_objects),
            "absent_phrase_rate": _mean(absent_hits),
            "recall_by_background": {k: _mean(v) for k, v in sorted(by_background.items())},
            "n_objects": n_objects, "n_detections": n_dets}


def scene_labels(labeler, style: str, seed: int, n_scenes: int,
                 size: Tuple[int, int] = GROUNDING_SIZE) -> Dict[str, Optional[float]]:
    """Whole-frame labels of scenes with 2-4 objects: the share of the objects among the top-k
    labels (k: the scene's number of objects), at the labeler's ``label_tiles`` and with the frame
    alone."""
    rng = np.random.default_rng([seed, 4, STYLES.index(style)])
    frames, present = [], []
    for _ in range(n_scenes):
        scene = render(style, rng, n_objects=int(rng.integers(2, 5)), size=size,
                       size_range=GROUNDING_OBJECT_SIZE)
        frames.append(scene.image)
        present.append({o.phrase for o in scene.objects if o.visible_fraction >= MIN_VISIBLE})
    report = {}
    for name, tiles in (("objects_in_top_k", None), ("objects_in_top_k_frame_alone", 0)):
        tops = top_labels_at(labeler, frames, 4, label_tiles=tiles, chunk=16)
        report[name] = _mean([len({lb.phrase for lb in labels[:len(truth)]} & truth) / len(truth)
                              for labels, truth in zip(tops, present) if truth])
    report["n_scenes"] = n_scenes
    return report


def sequence(style: str, seed: int, n_frames: int, n_objects: int = 3,
             size: Tuple[int, int] = GROUNDING_SIZE) -> List[scenes.Scene]:
    """A ``style`` sequence of objects moving smoothly, touching and occluding now and then."""
    if style == "own":
        return scenes.render_sequence(seed, n_frames, n_objects=n_objects, size=size)
    return unseen.render_unseen_sequence(seed, n_frames, n_objects=n_objects, size=size)


def track_history(labeler, frames: Sequence[scenes.Scene], config: PerceptionConfig) -> Dict[int,
                                                                                             List]:
    """Object id → the track id of its matched detection in each frame where it is visible
    (``None``: missed)."""
    tracker = Tracker(config.track_iou, config.track_max_missed, config.track_min_hits)
    phrases = [o.phrase for o in frames[0].objects]
    history: Dict[int, List[Optional[int]]] = {o.object_id: [] for o in frames[0].objects}
    for frame in frames:
        dets = tracker.update(ground_with_clip(labeler, frame.image, phrases,
                                               score_threshold=config.score_threshold))
        visible = [o for o in frame.objects if o.visible_fraction >= MIN_VISIBLE]
        pairs = {o: d for d, o in match(dets, visible).items()}
        for o, obj in enumerate(visible):
            history[obj.object_id].append(dets[pairs[o]].track_id if o in pairs else None)
    return history


def tracking(labeler, style: str, seed: int, n_sequences: int, config: PerceptionConfig,
             n_frames: int = 40) -> Dict[str, Optional[float]]:
    """Track ids per object, id switches per object and frames found, over ``n_frames``-frame
    sequences."""
    ids_per_object, switches, found_share, shared = [], [], [], 0
    for k in range(n_sequences):
        history = track_history(labeler,
                                sequence(style, seed + 1000 * k + STYLES.index(style), n_frames),
                                config)
        owners: Dict[int, set] = {}
        for obj, ids in history.items():
            for i in ids:
                owners.setdefault(i, set()).add(obj)
        shared += sum(len(objs) > 1 for i, objs in owners.items() if i is not None)
        for ids in history.values():
            seen = [i for i in ids if i is not None]
            ids_per_object.append(len(set(seen)))
            switches.append(sum(a != b for a, b in zip(seen, seen[1:])))
            found_share.append(len(seen) / max(len(ids), 1))
    return {"ids_per_object": _mean(ids_per_object), "switches_per_object": _mean(switches),
            "max_switches": int(max(switches)) if switches else None,
            "frames_found": _mean(found_share), "ids_on_two_objects": shared,
            "objects": len(switches), "frames": n_frames}


def _ratio(a: int, b: int) -> Optional[float]:
    return round(a / b, 4) if b else None


def _mean(values) -> Optional[float]:
    return round(float(np.mean(values)), 4) if len(values) else None
