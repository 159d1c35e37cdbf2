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

``--compare-precision P`` runs the ``owl`` source a second time in precision ``P`` and reports,
per set, its figures beside those of ``--precision`` and their agreement
(:func:`precision_agreement`): ``top1_agreement`` (share of the patches the reference detects,
score above the threshold, whose best phrase ``P`` keeps), ``max_score_diff`` and
``class_embedding_cosine_min``.
"""

from __future__ import annotations

import json
import time
from typing import Dict, List, Tuple

import numpy as np

from ros_mm_perception.commands.options import (add_config_options, add_threads_option,
                                                config_from_args)
from ros_mm_perception.core.config import PRECISIONS
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
    p.add_argument("--compare-precision", choices=PRECISIONS, default=None,
                   help="also run the owl source in this precision and report its agreement "
                        "with --precision's run (top-1 phrase, scores, embeddings)")
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


def precision_agreement(reference, compared, scenes, threshold: float) -> Dict[str, float]:
    """Agreement of OWL engine ``compared`` with ``reference`` on ``scenes``: per patch whose best
    score under ``reference`` exceeds ``threshold``, whether ``compared`` gives it the same
    phrase; the largest difference of best scores and the least cosine of class embeddings over
    all patches."""
    import torch

    agree = total = 0
    score_diff, cosine = 0.0, 1.0
    for scene, present, absent in scenes:
        phrases = present + [absent]
        outputs = []
        for owl in (reference, compared):
            pixels = owl.preprocessor(
                [torch.from_numpy(scene.image).permute(2, 0, 1).to(owl.device)])
            with torch.inference_mode():
                encoded = owl.encode_image(pixels)
                logits = owl.decode(encoded, owl.encode_text(phrases))[0].float()
            outputs.append((encoded.class_embeds[0].float(),
                            torch.sigmoid(logits.max(-1).values), logits.argmax(-1)))
        (emb_a, score_a, top_a), (emb_b, score_b, top_b) = outputs
        keep = score_a > threshold
        agree += int((top_a[keep] == top_b[keep]).sum())
        total += int(keep.sum())
        score_diff = max(score_diff, float((score_a - score_b).abs().max()))
        cosine = min(cosine, float(torch.nn.functional.cosine_similarity(emb_a, emb_b).min()))
    return {"detected_patches": total, "top1_agreement": round(agree / max(1, total), 4),
            "max_score_diff": round(score_diff, 5), "class_embedding_cosine_min": round(cosine, 5)}


def compare_precision(pipeline, precision: str, scene_sets, threshold) -> Dict:
    """The ``compare_precision`` report: ``pipeline`` (the owl source) run again in
    ``precision``, per set its figures and :func:`precision_agreement`."""
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline

    other = PerceptionPipeline(pipeline.config.replace(precision=precision))
    try:
        least = pipeline.detection_threshold() if threshold is None else threshold
        return {"precisions": {"reference": pipeline.owl.precision,
                               "compared": other.owl.precision},
                "sets": {kind: {**evaluate(other, scenes, threshold),
                                **precision_agreement(pipeline.owl, other.owl, scenes, least)}
                         for kind, scenes in scene_sets.items()}}
    finally:
        other.close()


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
    if args.compare_precision and "owl" not in sources:
        raise UserError("--compare-precision compares the owl source: add owl to --sources")
    scene_sets = {kind: evaluation_scenes(kind, args.seed, args.scenes) for kind in sets}
    report: Dict[str, Dict] = {}
    compared: Dict = {}
    thresholds: Dict[str, float] = {}
    for source in sources:
        config = base.replace(grounding_source=source,
                              owl_model=base.owl_model if source == "owl" else "")
        pipeline = PerceptionPipeline(config)
        try:
            report[source] = {kind: evaluate(pipeline, scenes, args.threshold)
                              for kind, scenes in scene_sets.items()}
            if source == "owl" and args.compare_precision:
                compared = compare_precision(pipeline, args.compare_precision, scene_sets,
                                             args.threshold)
            thresholds[source] = (
                pipeline.detection_threshold() if args.threshold is None else args.threshold
            )
        finally:
            pipeline.close()
    out = {"sources": report, "score_thresholds": thresholds, "nms_iou": base.nms_iou,
           "seed": args.seed, "threads": args.threads, "device": base.device}
    if compared:
        out["compare_precision"] = compared
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{'source':<8}{'set':<8}{'recall':>8}{'precision':>11}{'absent':>8}{'IoU':>7}"
              f"{'ms/frame':>10}")
        for source, sets_ in report.items():
            for kind, r in sets_.items():
                print(f"{source:<8}{kind:<8}{r['recall']:>8.3f}{r['precision']:>11.3f}"
                      f"{r['absent_rate']:>8.3f}{r['mean_iou']:>7.3f}{r['ms_per_frame']:>10.1f}")
        if compared:
            names = compared["precisions"]
            for kind, r in compared["sets"].items():
                print(f"owl {names['compared']} vs {names['reference']}, {kind}: recall "
                      f"{r['recall']:.3f} precision {r['precision']:.3f}, top-1 agreement "
                      f"{r['top1_agreement']:.2%} of {r['detected_patches']} patches, largest "
                      f"score difference {r['max_score_diff']}, least embedding cosine "
                      f"{r['class_embedding_cosine_min']}")
    return 0
