"""``ros-mm-perception eval-grounding [--sources clip,owl] [--json]``: detection quality per
grounding source.

Each source runs through :meth:`PerceptionPipeline.ground` (at its default threshold,
``score_threshold`` or ``owl_score_threshold``, unless ``--threshold`` is given) on two sets of
multi-object scenes (2-4 objects each), queried with the phrases of their objects plus one absent
phrase, drawn by :func:`ros_mm_perception.synthetic.evaluation.render` as ``eval-embedded`` draws
them:

* ``own``: 640x480 scenes of :mod:`ros_mm_perception.synthetic.scenes` from a seed that no training
  uses;
* ``unseen``: :mod:`ros_mm_perception.synthetic.unseen` scenes, a style the generator never makes
  (other shades, outlines, shadows, backgrounds, clutter, JPEG), at frame sizes of several aspects.

Per set and source: ``recall`` (objects matched one-to-one by a detection of their phrase with
IoU >= 0.5, :func:`~ros_mm_perception.synthetic.evaluation.match`), ``precision`` (detections so
matched, among all detections), ``absent_rate`` (absent phrases that got any detection),
``mean_iou`` of the matches, and ``ms_per_frame`` (mean wall time of ``ground`` per frame).
"""

from __future__ import annotations

import json
import time
from typing import Dict, List, Tuple

import numpy as np

from ros_mm_perception.commands.options import (add_config_options, add_threads_option,
                                                config_from_args)
from ros_mm_perception.core.errors import UserError

EVAL_SEED = 20261201
"""Scene seed; the training scripts draw their scenes from other seeds."""
UNSEEN_SIZES = ((360, 640), (600, 800), (480, 480), (540, 960), (768, 576))
"""(height, width) of unseen frames: wide, 4:3, square, 16:9 and portrait."""
SOURCES = ("clip", "owl")


def add_parser(sub) -> None:
    from ros_mm_perception.core.models.owl import EMBEDDED

    p = sub.add_parser("eval-grounding",
                       help="recall, precision and absent-phrase rate of grounding sources",
                       description="Measure grounding sources on rendered scenes: the project's "
                                   "own and scenes the generator never makes.")
    p.add_argument("--sources", default=",".join(SOURCES),
                   help="comma-separated sources (default: %(default)s)")
    p.add_argument("--scenes", type=int, default=100, help="scenes per set (default %(default)s)")
    p.add_argument("--sets", default="own,unseen",
                   help="own, unseen or both (default: %(default)s)")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help=f"scene seed (default {EVAL_SEED})")
    p.add_argument("--threshold", type=float, default=None,
                   help="least detection score of every source (default: each source's own, "
                        "score_threshold or owl_score_threshold)")
    add_config_options(p, ("owl_model", "clip_model", "device", "precision"),
                       defaults={"owl_model": EMBEDDED, "device": "cpu"})
    add_threads_option(p, 1)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def evaluation_scenes(kind: str, seed: int, n: int) -> List[Tuple[object, List[str], str]]:
    """``n`` (scene, present phrases, absent phrase) of set ``kind`` (own or unseen)."""
    from ros_mm_perception.synthetic import evaluation
    from ros_mm_perception.synthetic.scenes import all_phrases

    if kind not in evaluation.STYLES:
        raise UserError(f"unknown scene set {kind!r}: use {' or '.join(evaluation.STYLES)}")
    rng = np.random.default_rng([seed, evaluation.STYLES.index(kind)])
    out = []
    for _ in range(n):
        size = (
            evaluation.GROUNDING_SIZE
            if kind == "own"
            else UNSEEN_SIZES[int(rng.integers(len(UNSEEN_SIZES)))]
        )
        scene = evaluation.render(kind, rng, n_objects=int(rng.integers(2, 5)), size=size,
                                  size_range=evaluation.GROUNDING_OBJECT_SIZE)
        present = list(dict.fromkeys(o.phrase for o in scene.objects))
        others = [p for p in all_phrases() if p not in present]
        out.append((scene, present, others[int(rng.integers(len(others)))]))
    return out


def evaluate(pipeline, scenes, threshold) -> Dict[str, float]:
    """Recall, precision, absent-phrase rate, mean IoU and ms per frame of ``pipeline.ground`` on
    ``scenes``."""
    from ros_mm_perception.core.perception.boxes import box_iou
    from ros_mm_perception.core.results import Frame
    from ros_mm_perception.synthetic.evaluation import MIN_VISIBLE, match

    objects_n = detections_n = matched = absent_hits = 0
    ious: List[float] = []
    seconds = 0.0
    for scene, present, absent in scenes:
        start = time.perf_counter()
        dets = pipeline.ground(Frame(scene.image), present + [absent],
                               score_threshold=threshold).detections
        seconds += time.perf_counter() - start
        objects = [o for o in scene.objects if o.visible_fraction >= MIN_VISIBLE]
        pairs = match(dets, objects)
        ious += [float(box_iou([dets[d].box], [objects[o].box])[0, 0]) for d, o in pairs.items()]
        objects_n += len(objects)
        detections_n += len(dets)
        matched += len(pairs)
        absent_hits += any(d.phrase == absent for d in dets)
    n = max(1, len(scenes))
    return {"recall": round(matched / max(1, objects_n), 4),
            "precision": round(matched / max(1, detections_n), 4),
            "absent_rate": round(absent_hits / n, 4),
            "mean_iou": round(float(np.mean(ious)) if ious else 0.0, 4),
            "ms_per_frame": round(1000 * seconds / n, 1), "objects": objects_n,
            "scenes": len(scenes)}


def run(args) -> int:
    import torch

    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if not sources or any(s not in SOURCES for s in sources):
        raise UserError(f"--sources must list some of {', '.join(SOURCES)}, got {args.sources!r}")
    base = config_from_args(args, enable_labels=False)
    if args.scenes < 1 or args.threads < 1:
        raise UserError("--scenes and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold must be in [0, 1], got {args.threshold}")
    scene_sets = {kind: evaluation_scenes(kind, args.seed, args.scenes) for kind in sets}
    report: Dict[str, Dict] = {}
    thresholds: Dict[str, float] = {}
    for source in sources:
        config = base.replace(grounding_source=source,
                              owl_model=base.owl_model if source == "owl" else "")
        pipeline = PerceptionPipeline(config)
        try:
            report[source] = {kind: evaluate(pipeline, scenes, args.threshold)
                              for kind, scenes in scene_sets.items()}
            thresholds[source] = (
                pipeline.detection_threshold() if args.threshold is None else args.threshold
            )
        finally:
            pipeline.close()
    out = {"sources": report, "score_thresholds": thresholds, "nms_iou": base.nms_iou,
           "seed": args.seed, "threads": args.threads, "device": base.device}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{'source':<8}{'set':<8}{'recall':>8}{'precision':>11}{'absent':>8}{'IoU':>7}"
              f"{'ms/frame':>10}")
        for source, sets_ in report.items():
            for kind, r in sets_.items():
                print(f"{source:<8}{kind:<8}{r['recall']:>8.3f}{r['precision']:>11.3f}"
                      f"{r['absent_rate']:>8.3f}{r['mean_iou']:>7.3f}{r['ms_per_frame']:>10.1f}")
    return 0
