"""``ros-mm-perception eval-grounding [--sources clip,owl] [--json]``: detection quality per grounding source.

Each source runs through :meth:`PerceptionPipeline.ground` at the default settings (threshold, NMS) on
two sets of multi-object scenes (2-4 objects each), queried with the phrases of their objects plus
one absent phrase:

* ``own``: 640x480 scenes of :mod:`ros_mm_perception.synthetic.scenes` from a seed that no training uses;
* ``unseen``: scenes the generator never makes, drawn here (:func:`render_unseen_scene`): other frame
  sizes and aspects, checkerboard / stripes / grey-clutter backgrounds, object shades outside the
  generator's jitter, rotations up to 45 degrees, no lighting model, JPEG compression.

Per set and source: ``recall`` (objects matched one-to-one by a detection of their phrase with
IoU >= 0.5), ``precision`` (detections of present phrases that match an object of their phrase),
``absent_rate`` (absent phrases that got any detection), ``mean_iou`` of the matches, and
``ms_per_frame`` (mean wall time of ``ground`` per frame with the torch threads in use).
"""

from __future__ import annotations

import json
import time
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from ros_mm_perception.core.errors import UserError

EVAL_SEED = 20261201
"""Scene seed; the training scripts draw their scenes from other seeds."""
IOU_MATCH = 0.5
UNSEEN_SIZES = ((360, 640), (600, 800), (480, 480), (540, 960), (768, 576))
"""(height, width) of unseen frames: wide, 4:3, square, 16:9 and portrait."""
SOURCES = ("clip", "owl")


def add_parser(sub) -> None:
    from ros_mm_perception.core.models.owl import EMBEDDED

    p = sub.add_parser("eval-grounding", help="recall, precision and absent-phrase rate of grounding sources",
                       description="Measure grounding sources on rendered scenes: the project's own and "
                                   "scenes the generator never makes.")
    p.add_argument("--sources", default=",".join(SOURCES), help="comma-separated sources (default: %(default)s)")
    p.add_argument("--scenes", type=int, default=100, help="scenes per set (default %(default)s)")
    p.add_argument("--sets", default="own,unseen", help="own, unseen or both (default: %(default)s)")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help=f"scene seed (default {EVAL_SEED})")
    p.add_argument("--owl-model", default=EMBEDDED, help="OWL model for the owl source (default: %(default)s)")
    p.add_argument("--clip-model", default="", help="open_clip model or folder (default: embedded)")
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N] (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------ unseen scenes

def _unseen_background(rng: np.random.Generator, hw: Tuple[int, int]) -> np.ndarray:
    h, w = hw
    grey = lambda: rng.uniform(40, 215) + rng.uniform(-12, 12, 3)  # noqa: E731 - low saturation
    kind = int(rng.integers(3))
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 0:  # checkerboard
        cell = int(rng.integers(12, 80))
        a, b = grey(), grey()
        img = np.where((((yy // cell) + (xx // cell)) % 2 == 0)[..., None], a, b)
    elif kind == 1:  # stripes at an angle
        angle, period = rng.uniform(0, np.pi), rng.uniform(10, 60)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
        a, b = grey(), grey()
        img = np.where(((phase % 1.0) < 0.5)[..., None], a, b)
    else:  # grey clutter: rectangles and ellipses
        img = np.broadcast_to(grey(), (h, w, 3)).copy()
        for _ in range(int(rng.integers(15, 40))):
            colour = tuple(float(v) for v in grey())
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            s = int(rng.integers(8, max(9, min(h, w) // 5)))
            if rng.random() < 0.5:
                cv2.rectangle(img, (x, y), (x + s, y + int(s * rng.uniform(0.3, 2))), colour, -1)
            else:
                cv2.ellipse(img, (x, y), (s, int(s * rng.uniform(0.3, 1))), float(rng.uniform(0, 180)), 0, 360,
                            colour, -1)
    return img.astype(np.float32)


def _unseen_shade(rng: np.random.Generator, colour: str) -> np.ndarray:
    """The colour with more hue, saturation and value spread than the generator's jitter."""
    from ros_mm_perception.synthetic.scenes import COLOURS

    hsv = cv2.cvtColor(np.uint8([[COLOURS[colour]]]), cv2.COLOR_RGB2HSV)[0, 0].astype(np.float64)
    hsv[0] = (hsv[0] + rng.uniform(-6, 6)) % 180
    hsv[1] *= rng.uniform(0.65, 1.0)
    hsv[2] *= rng.uniform(0.7, 1.0)
    return cv2.cvtColor(np.uint8([[np.round(hsv)]]), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def render_unseen_scene(rng: np.random.Generator, n_objects: int):
    """A :class:`~ros_mm_perception.synthetic.scenes.Scene` in a style the generator never renders."""
    from ros_mm_perception.synthetic.scenes import Scene, SceneObject, all_combos, caption, shape_mask

    hw = UNSEEN_SIZES[int(rng.integers(len(UNSEEN_SIZES)))]
    h, w = hw
    img = _unseen_background(rng, hw)
    combos = all_combos()
    chosen = [combos[i] for i in rng.choice(len(combos), n_objects, replace=False)]
    objects, taken = [], []
    for colour, shape in chosen:
        for _ in range(50):
            radius = rng.uniform(0.06, 0.26) * min(h, w)
            cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
            if all(abs(cx - x) > radius + r + 4 or abs(cy - y) > radius + r + 4 for x, y, r in taken):
                break
        else:
            continue
        taken.append((cx, cy, radius))
        mask = shape_mask(shape, (cx, cy), radius, float(np.radians(rng.uniform(-45, 45))), hw)
        img = img * (1 - mask[..., None]) + _unseen_shade(rng, colour) * mask[..., None]
        ys, xs = np.nonzero(mask > 0.5)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        objects.append(SceneObject(colour, shape, box, 1.0, len(objects)))
    img = np.clip(img + rng.normal(0, rng.uniform(1, 5), img.shape), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 86))])
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    return Scene(img, objects, caption([(o.colour, o.shape) for o in objects]), "unseen")


def evaluation_scenes(kind: str, seed: int, n: int) -> List[Tuple[object, List[str], str]]:
    """``n`` (scene, present phrases, absent phrase) of set ``kind`` (own or unseen)."""
    from ros_mm_perception.synthetic.scenes import all_phrases, render_scene

    if kind not in ("own", "unseen"):
        raise UserError(f"unknown scene set {kind!r}: use own or unseen")
    rng = np.random.default_rng([seed, 0 if kind == "own" else 1])
    out = []
    for _ in range(n):
        k = int(rng.integers(2, 5))
        scene = render_scene(rng, n_objects=k, size=(480, 640)) if kind == "own" else render_unseen_scene(rng, k)
        present = list(dict.fromkeys(o.phrase for o in scene.objects))
        others = [p for p in all_phrases() if p not in present]
        out.append((scene, present, others[int(rng.integers(len(others)))]))
    return out


# ---------------------------------------------------------------------------------------------- scoring

def match_scene(objects, detections, present: Sequence[str], absent: str) -> Dict[str, float]:
    """One-to-one greedy matching (highest score first) of detections to objects of the same phrase."""
    from ros_mm_perception.core.perception.boxes import box_iou

    dets = sorted((d for d in detections if d.phrase in present), key=lambda d: -d.score)
    free = list(range(len(objects)))
    ious = []
    for d in dets:
        same = [i for i in free if objects[i].phrase == d.phrase]
        if not same:
            continue
        overlaps = box_iou([d.box], [objects[i].box for i in same])[0]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= IOU_MATCH:
            free.remove(same[best])
            ious.append(float(overlaps[best]))
    return {"objects": len(objects), "detections": len(dets), "matched": len(ious), "iou_sum": sum(ious),
            "absent_hit": float(any(d.phrase == absent for d in detections))}


def evaluate(pipeline, scenes) -> Dict[str, float]:
    """Recall, precision, absent-phrase rate, mean IoU and ms per frame of ``pipeline.ground`` on ``scenes``."""
    from ros_mm_perception.core.results import Frame

    totals = {"objects": 0, "detections": 0, "matched": 0, "iou_sum": 0.0, "absent_hit": 0.0}
    seconds = 0.0
    for scene, present, absent in scenes:
        start = time.perf_counter()
        dets = pipeline.ground(Frame(scene.image), present + [absent]).detections
        seconds += time.perf_counter() - start
        for key, value in match_scene(scene.objects, dets, present, absent).items():
            totals[key] += value
    n = max(1, len(scenes))
    return {"recall": round(totals["matched"] / max(1, totals["objects"]), 4),
            "precision": round(totals["matched"] / max(1, totals["detections"]), 4),
            "absent_rate": round(totals["absent_hit"] / n, 4),
            "mean_iou": round(totals["iou_sum"] / max(1, totals["matched"]), 4),
            "ms_per_frame": round(1000 * seconds / n, 1), "objects": totals["objects"], "scenes": len(scenes)}


def run(args) -> int:
    import torch

    from ros_mm_perception.core.config import PerceptionConfig
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if not sources or any(s not in SOURCES for s in sources):
        raise UserError(f"--sources must list some of {', '.join(SOURCES)}, got {args.sources!r}")
    if args.scenes < 1 or args.threads < 1:
        raise UserError("--scenes and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    scene_sets = {kind: evaluation_scenes(kind, args.seed, args.scenes) for kind in sets}
    report: Dict[str, Dict] = {}
    for source in sources:
        config = PerceptionConfig(device=args.device, clip_model=args.clip_model, enable_labels=False,
                                  grounding_source=source, owl_model=args.owl_model if source == "owl" else "")
        pipeline = PerceptionPipeline(config)
        try:
            report[source] = {kind: evaluate(pipeline, scenes) for kind, scenes in scene_sets.items()}
        finally:
            pipeline.close()
    defaults = PerceptionConfig()
    out = {"sources": report, "score_threshold": defaults.score_threshold, "nms_iou": defaults.nms_iou,
           "seed": args.seed, "threads": args.threads, "device": args.device}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{'source':<8}{'set':<8}{'recall':>8}{'precision':>11}{'absent':>8}{'IoU':>7}{'ms/frame':>10}")
        for source, sets_ in report.items():
            for kind, r in sets_.items():
                print(f"{source:<8}{kind:<8}{r['recall']:>8.3f}{r['precision']:>11.3f}{r['absent_rate']:>8.3f}"
                      f"{r['mean_iou']:>7.3f}{r['ms_per_frame']:>10.1f}")
    return 0
