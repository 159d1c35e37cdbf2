"""``ros-mm-perception detect IMAGE "red mug ; person"``: language-grounded boxes, with 3D from
depth."""

from __future__ import annotations

import json
import math

from ros_mm_perception.commands.options import (MASKS_HELP, PHRASES_HELP, add_config_options,
                                                config_from_args, warn_outside_world)
from ros_mm_perception.core.errors import UserError

DETECT_FIELDS = ("paligemma_model", "paligemma_mask_decoder", "owl_model", "sam3_model",
                 "mask_model", "clip_model", "clip_pretrained", "device", "precision",
                 "score_threshold", "owl_score_threshold", "nms_iou", "crop_mode")
"""The config fields detect takes as options."""


def add_parser(sub) -> None:
    p = sub.add_parser("detect",
                       help="find phrases in an image: boxes, scores and optional 3D positions",
                       description="Ground phrases in an image. With --owl-model, OWL detects; "
                                   "with --paligemma-model, PaliGemma detects and CLIP re-scores "
                                   "each box; without either, CLIP-only grounding runs on the "
                                   "CLIP model.")
    p.add_argument("image", help="image file (PNG, JPEG, ...)")
    p.add_argument("phrases", help=f'phrases {PHRASES_HELP}, e.g. "red mug ; person"')
    add_config_options(p, DETECT_FIELDS)
    p.add_argument("--depth",
                   help="depth image aligned to IMAGE: 16-bit PNG/TIFF in millimetres, 32-bit "
                        "float TIFF or .npy in metres; adds 3D positions (needs --intrinsics)")
    p.add_argument("--intrinsics", help="pinhole intrinsics fx,fy,cx,cy in pixels (CameraInfo K)")
    p.add_argument("--masks", action="store_true", help=MASKS_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def parse_intrinsics(text: str):
    """``"fx,fy,cx,cy"`` → :class:`Intrinsics`; a :class:`UserError` naming the problem
    otherwise."""
    from ros_mm_perception.core.results import Intrinsics

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise UserError(f"--intrinsics must be four numbers fx,fy,cx,cy, got {text!r}")
    fx, fy, cx, cy = values
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"--intrinsics must be finite numbers, got {text!r}")
    if not (fx > 0 and fy > 0):
        raise UserError(f"--intrinsics focal lengths must be positive, got fx={fx} fy={fy}")
    return Intrinsics(fx, fy, cx, cy)


def run(args) -> int:
    from ros_mm_perception.core.config import check_phrases, split_phrases
    from ros_mm_perception.core.imaging.masks import encode_rle, mask_area
    from ros_mm_perception.core.perception.geometry import read_depth
    from ros_mm_perception.core.imaging.image_io import read_rgb
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
    from ros_mm_perception.core.results import Frame

    phrases = check_phrases(split_phrases(args.phrases), "phrases")
    if bool(args.depth) != bool(args.intrinsics):
        raise UserError("--depth and --intrinsics go together: 3D positions need both")
    config = config_from_args(args, detect_phrases=phrases, enable_labels=False)
    image = read_rgb(args.image, config.max_image_pixels)
    warn_outside_world(config, phrases)
    frame = Frame(image, depth=read_depth(args.depth) if args.depth else None,
                  intrinsics=parse_intrinsics(args.intrinsics) if args.intrinsics else None)
    pipeline = PerceptionPipeline(config)
    try:
        detections = pipeline.ground(frame, phrases).detections
        threshold = pipeline.detection_threshold()
    finally:
        pipeline.close()
    rows = []
    for det in detections:
        row = {"label": det.phrase, "score": det.score, "box": [float(v) for v in det.box]}
        if frame.depth is not None:
            row["xyz"] = list(det.xyz) if det.xyz is not None else None
            row["size"] = list(det.size_xyz) if det.size_xyz is not None else None
        if det.mask is not None:
            row["mask"] = encode_rle(det.mask)
        rows.append(row)
    if args.json:
        print(json.dumps({"detections": rows}, allow_nan=False))
    elif not rows:
        print(f"no detections at score >= {threshold}")
    else:
        width = max(len(r["label"]) for r in rows)
        for r in rows:
            where = "" if "xyz" not in r else (
                "  xyz=(no valid depth)" if r["xyz"] is None
                else "  xyz=({:.3f}, {:.3f}, {:.3f}) m".format(*r["xyz"]))
            box = ", ".join(f"{v:.1f}" for v in r["box"])
            area = f"  mask={mask_area(r['mask'])} px" if "mask" in r else ""
            print(f"{r['label']:<{width}}  {r['score']:.3f}  [{box}]{where}{area}")
    return 0
