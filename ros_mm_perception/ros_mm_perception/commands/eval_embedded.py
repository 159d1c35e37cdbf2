"""``ros-mm-perception eval-embedded [--json]``: what a planner gets from the embedded CLIP, on
fresh scenes.

Renders scenes from a seed that training never uses, in two styles: ``own`` (the training renderer)
and ``unseen`` (shades, outlines, shadows, backgrounds, clutter, small and off-centre objects and
JPEG artefacts that training never made), and reports for each, at the default settings
(:class:`PerceptionConfig`): whole-frame classification by size band, background and position
(both crop modes, with and without tiles), CLIP-only grounding recall, precision, duplicates per
object and absent-phrase rate, whole-frame labels of multi-object scenes (objects among the
top-k), and tracking (ids per object, switches, frames found). See
:mod:`ros_mm_perception.synthetic.evaluation`.

With ``--versus-precision P`` it also loads the model in precision ``P`` and reports, on the
single-object scenes and on altered copies the generator never makes (:func:`unseen_copy`: other
shades, sensor noise, JPEG), the cosine between the two precisions' image embeddings (mean and
least) and how often their top-1 labels agree (``versus_precision``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ros_mm_perception.commands.options import CLIP_FIELDS, add_config_options, config_from_args

EVAL_SEED = 20261126
"""Default scene seed; the training script draws its scenes from other seeds."""
QUICK_SIZES = {"n": 2, "scenes": 10, "sequences": 1}
"""The default run's scenes (single-object scenes per colour-shape combination, multi-object
scenes, 40-frame tracking sequences, per style): about ten minutes on two busy CPU cores."""
FULL_SIZES = {"n": 10, "scenes": 100, "sequences": 3}
"""``--full``: the run behind the figures in the docs (close to an hour on two busy cores)."""
PART_COST = {"classification": 1.0, "grounding": 10.0, "scene_labels": 1.5, "tracking": 400.0}
"""Relative seconds per scene (per sequence for tracking), measured: the progress bar's weights."""
PRECISION_SCENE_SIZE = (256, 256)
PRECISION_OBJECT_SIZE = (0.3, 0.6)
"""Single-object scenes of the precision comparison (the object spans 30-60 % of the frame)."""


def add_parser(sub) -> None:
    p = sub.add_parser("eval-embedded",
                       help="measure the embedded CLIP on freshly rendered scenes",
                       description="Whole-frame top-1, CLIP-only grounding precision and recall, "
                                   "and tracking on rendered scenes of the training style and of "
                                   "an unseen style.")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help=f"scene seed (default {EVAL_SEED})")
    p.add_argument("--full", action="store_true",
                   help="the full run: {n} scenes per combination, {scenes} scenes, {sequences} "
                        "sequences (default: {q})".format(**FULL_SIZES, q=", ".join(
                            f"{v}" for v in QUICK_SIZES.values())))
    p.add_argument("--n", type=int, default=None,
                   help="single-object scenes per colour-shape combination (default: "
                        f"{QUICK_SIZES['n']}, {FULL_SIZES['n']} with --full)")
    p.add_argument("--scenes", type=int, default=None,
                   help="multi-object scenes for grounding and scene labels (default: "
                        f"{QUICK_SIZES['scenes']}, {FULL_SIZES['scenes']} with --full)")
    p.add_argument("--sequences", type=int, default=None,
                   help="40-frame tracking sequences per style (default: "
                        f"{QUICK_SIZES['sequences']}, {FULL_SIZES['sequences']} with --full)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_options(p, CLIP_FIELDS)
    p.add_argument("--versus-precision", default="", metavar="P",
                   help="also compare with the model loaded in precision P (fp32, fp16 or bf16): "
                        "embedding cosine and top-1 agreement")
    p.add_argument("--masks", action="store_true",
                   help="measure the mask model instead (--mask-model, default: the embedded "
                        "one): mask IoU against the renderer's exact masks on --scenes scenes per "
                        "style, and the 3D error with masks and with the box window on ring, "
                        "cross and star shapes")
    add_config_options(p, ("mask_model",), defaults={"mask_model": "embedded"})  # with --masks
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def heldout_combos(model_dir) -> List[Tuple[str, str]]:
    """The colour-shape combinations a model folder's ``training.json`` says were held out (else
    none)."""
    info = Path(model_dir) / "training.json"
    if not info.is_file():
        return []
    return [tuple(c) for c in json.loads(info.read_text()).get("heldout", [])]


def unseen_copy(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """``image`` altered in ways the scene generator never applies: hue, saturation and brightness
    shifted, sensor noise added, saved as a JPEG of quality 35 and decoded again."""
    import cv2

    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-5, 5)) % 180
    hsv[..., 1] *= rng.uniform(0.6, 1.0)
    hsv[..., 2] *= rng.uniform(0.7, 1.2)
    shifted = cv2.cvtColor(hsv.clip(0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    noisy = (shifted + rng.normal(0, 6, image.shape)).clip(0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", noisy[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 35])
    return np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1])


def precision_agreement(
    labeler, other, seed: int, per_combo: int
) -> Dict[str, Dict[str, Optional[float]]]:
    """Embedding cosine and top-1 agreement between two labelers of one model on the single-object
    scenes (``rendered``) and on :func:`unseen_copy` of them (``unseen``); top-1 accuracy of each
    too."""
    from ros_mm_perception.synthetic.scenes import all_combos, all_phrases, phrase, render_scene

    rng = np.random.default_rng([seed, 3])
    phrases = all_phrases()
    combos = all_combos() * per_combo
    rows: Dict[str, Dict[str, list]] = {kind: {"cos": [], "agree": [], "ours": [], "other": []}
                                        for kind in ("rendered", "unseen")}
    for start in range(0, len(combos), 64):
        chunk = combos[start:start + 64]
        rendered = [render_scene(rng, objects=[c], size=PRECISION_SCENE_SIZE,
                                 size_range=PRECISION_OBJECT_SIZE).image
                    for c in chunk]
        for kind, images in (("rendered", rendered),
                             ("unseen", [unseen_copy(rng, im) for im in rendered])):
            a, b = (lb.encode_image(lb.clip.preprocessor.frames(images))
                    for lb in (labeler, other))
            top_a, top_b = (lb.logits(emb, lb.encode_text(phrases)).argmax(dim=-1).tolist()
                            for lb, emb in ((labeler, a), (other, b)))
            truth = [phrases.index(phrase(*c)) for c in chunk]
            out = rows[kind]
            out["cos"] += (a * b).sum(dim=-1).tolist()
            out["agree"] += [x == y for x, y in zip(top_a, top_b)]
            out["ours"] += [x == t for x, t in zip(top_a, truth)]
            out["other"] += [y == t for y, t in zip(top_b, truth)]
    return {kind: {"embedding_cosine_mean": round(float(np.mean(r["cos"])), 6),
                   "embedding_cosine_min": round(min(r["cos"]), 6),
                   "top1_agreement": _mean(r["agree"]), "top1": _mean(r["ours"]),
                   "top1_other": _mean(r["other"]), "n": len(r["cos"])}
            for kind, r in rows.items()}


def mask_report(args, config) -> Dict:
    """The ``--masks`` figures of :mod:`ros_mm_perception.synthetic.mask_evaluation`, per style."""
    import torch

    from ros_mm_perception.core.devices import cpu_info
    from ros_mm_perception.core.models.sam import load_mask_model
    from ros_mm_perception.synthetic import mask_evaluation

    engine = load_mask_model(args.mask_model, config.device, config.precision)
    report = {"seed": args.seed, "mask_model": engine.name,
              "precision": str(engine.dtype).removeprefix("torch."),
              "crop_margin": engine.crop_margin, "box_jitter": mask_evaluation.BOX_JITTER,
              "device": str(engine.device), "threads": torch.get_num_threads(),
              "cpu": cpu_info()}
    for style in ("own", "unseen"):
        report[style] = {
            "masks": mask_evaluation.mask_quality(engine, style, args.seed, args.scenes),
            "depth": mask_evaluation.depth_error(engine, style, args.seed,
                                                 max(1, args.scenes // 5))}
    return report


def _mean(values) -> Optional[float]:
    return round(float(np.mean(values)), 4) if len(values) else None


def run(args) -> int:
    from tqdm import tqdm

    from ros_mm_perception.core.errors import UserError
    from ros_mm_perception.core.models.clip_model import load_clip
    from ros_mm_perception.core.perception.labeler import ClipLabeler
    from ros_mm_perception.synthetic import evaluation
    from ros_mm_perception.synthetic.scenes import all_combos, require_photos

    sizes = FULL_SIZES if args.full else QUICK_SIZES
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.n < 1 or args.scenes < 1 or args.sequences < 0:
        raise UserError("--n and --scenes must be at least 1, --sequences at least 0")
    require_photos()  # the unseen style's, before the minutes of the own style
    start = time.time()
    config = config_from_args(args)
    if args.masks:
        report = mask_report(args, config)
        report["seconds"] = round(time.time() - start, 1)
        if args.json:
            print(json.dumps(report))
        else:
            _print(report)
        return 0
    clip = load_clip(config.clip_model, config.clip_pretrained, config.device, config.precision)
    labeler = ClipLabeler(clip, crop_mode=config.crop_mode, label_tiles=config.label_tiles)
    heldout = heldout_combos(clip.name) if Path(clip.name).is_dir() else []
    report = {"settings": {k: getattr(config, k)
                           for k in ("score_threshold", "nms_iou", "crop_mode", "label_tiles",
                                     "track_iou")},
              "seed": args.seed, "model": clip.name,
              "precision": str(clip.dtype).removeprefix("torch."),
              "sizes": {"n": args.n, "scenes": args.scenes, "sequences": args.sequences}}
    seed, n, scenes, sequences = args.seed, args.n, args.scenes, args.sequences
    parts = {  # name: (scenes or sequences, the measure of a style)
        "classification": (len(all_combos()) * n,
                           lambda s: evaluation.classification(labeler, s, seed, n, heldout)),
        "grounding": (scenes, lambda s: evaluation.grounding(labeler, s, seed, scenes, config)),
        "scene_labels": (scenes, lambda s: evaluation.scene_labels(labeler, s, seed, scenes)),
        "tracking": (sequences, lambda s: evaluation.tracking(labeler, s, seed, sequences, config)
                     if sequences else None),
    }
    total = len(evaluation.STYLES) * sum(PART_COST[k] * count for k, (count, _) in parts.items())
    with tqdm(total=round(total), file=sys.stderr, disable=True if args.no_progress else None,
              bar_format="{desc:<24}{percentage:3.0f}%|{bar}| {elapsed}<{remaining}") as bar:
        for style in evaluation.STYLES:
            report[style] = {}
            for name, (count, measure) in parts.items():
                bar.set_description(f"{style} {name}")
                report[style][name] = measure(style)
                bar.update(round(PART_COST[name] * count))
    if args.versus_precision:
        other = ClipLabeler(load_clip(config.clip_model, config.clip_pretrained, config.device,
                                      args.versus_precision))
        report["versus_precision"] = {"precision": str(other.clip.dtype).removeprefix("torch."),
                                      **precision_agreement(labeler, other, args.seed, args.n)}
    report["seconds"] = round(time.time() - start, 1)
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return 0


def _print(value, prefix: str = "") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict):
                print(f"{prefix}{key}:")
                _print(item, prefix + "  ")
            else:
                print(f"{prefix}{key:<24} {item}")
