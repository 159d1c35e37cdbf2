"""``ros-mm-perception eval-embedded [--json]``: what a planner gets from the embedded CLIP, on fresh scenes.

Renders scenes from a seed that training never uses, in two styles: ``own`` (the training renderer)
and ``unseen`` (shades, outlines, shadows, backgrounds, clutter, small and off-centre objects and
JPEG artefacts that training never made), and reports for each, at the default settings
(:class:`PerceptionConfig`): whole-frame classification by size band, background and position
(both crop modes), CLIP-only grounding recall, precision, duplicates per object and absent-phrase
rate, and tracking (ids per object, switches, frames found). See :mod:`ros_mm_perception.synthetic.evaluation`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Tuple

from ros_mm_perception.commands.classify import add_clip_arguments

EVAL_SEED = 20261126
"""Default scene seed; the training script draws its scenes from other seeds."""


def add_parser(sub) -> None:
    p = sub.add_parser("eval-embedded", help="measure the embedded CLIP on freshly rendered scenes",
                       description="Whole-frame top-1, CLIP-only grounding precision and recall, and tracking "
                                   "on rendered scenes of the training style and of an unseen style.")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help=f"scene seed (default {EVAL_SEED})")
    p.add_argument("--n", type=int, default=10, help="single-object scenes per colour-shape combination (default 10)")
    p.add_argument("--scenes", type=int, default=100, help="multi-object scenes for grounding (default 100)")
    p.add_argument("--sequences", type=int, default=3, help="40-frame tracking sequences per style (default 3)")
    add_clip_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def heldout_combos(model_dir) -> List[Tuple[str, str]]:
    """The colour-shape combinations a model folder's ``training.json`` says were held out (else none)."""
    info = Path(model_dir) / "training.json"
    if not info.is_file():
        return []
    return [tuple(c) for c in json.loads(info.read_text()).get("heldout", [])]


def run(args) -> int:
    from ros_mm_perception.core.config import PerceptionConfig
    from ros_mm_perception.core.errors import UserError
    from ros_mm_perception.core.models.clip_model import load_clip
    from ros_mm_perception.core.perception.labeler import ClipLabeler
    from ros_mm_perception.synthetic import evaluation

    if args.n < 1 or args.scenes < 1 or args.sequences < 0:
        raise UserError("--n and --scenes must be at least 1, --sequences at least 0")
    start = time.time()
    config = PerceptionConfig()
    clip = load_clip(args.model, args.pretrained, args.device, args.precision)
    labeler = ClipLabeler(clip, crop_mode=config.crop_mode)
    heldout = heldout_combos(clip.name) if Path(clip.name).is_dir() else []
    report = {"settings": {k: getattr(config, k) for k in ("score_threshold", "nms_iou", "crop_mode", "track_iou")},
              "seed": args.seed, "model": clip.name}
    for style in evaluation.STYLES:
        report[style] = {
            "classification": evaluation.classification(labeler, style, args.seed, args.n, heldout),
            "grounding": evaluation.grounding(labeler, style, args.seed, args.scenes, config),
            "tracking": evaluation.tracking(labeler, style, args.seed, args.sequences, config)
            if args.sequences else None}
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
