"""``ros-mm-perception detect IMAGE "red mug ; person"``: language-grounded boxes, with 3D from depth."""

from __future__ import annotations

import json
import math

from ros_mm_perception.commands.classify import add_crop_argument, warn_outside_world
from ros_mm_perception.core.errors import UserError


def add_parser(sub) -> None:
    from ros_mm_perception.core.config import PerceptionConfig

    defaults = PerceptionConfig()
    p = sub.add_parser("detect", help="find phrases in an image: boxes, scores and optional 3D positions",
                       description="Ground phrases in an image. With --owl-model, OWL detects; with --model, "
                                   "PaliGemma detects and CLIP re-scores each box; without either, CLIP-only "
                                   "grounding runs on the CLIP model.")
    p.add_argument("image", help="image file (PNG, JPEG, ...)")
    p.add_argument("phrases", help='phrases separated by ";" or, when no ";" is present, by commas, '
                                   'e.g. "red mug ; person"')
    p.add_argument("--model", default="", help="PaliGemma hub id (Hugging Face cache) or local model folder; "
                                               "default: none (CLIP-only grounding)")
    p.add_argument("--owl-model", default=defaults.owl_model,
                   help="OWLv2 / OWL-ViT hub id, local model folder, or 'embedded' (the detector shipped in the "
                        "package); when set, OWL detects (ahead of --model)")
    p.add_argument("--clip-model", default=defaults.clip_model,
                   help="open_clip model name or model folder (default: embedded model)")
    p.add_argument("--clip-pretrained", default=defaults.clip_pretrained,
                   help="open_clip pretrained tag or local checkpoint file")
    p.add_argument("--device", default=defaults.device, help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", default=defaults.precision, help="auto, fp32, fp16 or bf16")
    p.add_argument("--threshold", type=float, default=None,
                   help=f"minimum detection score in [0, 1] (default: {defaults.score_threshold}, "
                        f"{defaults.owl_score_threshold} for OWL detectors)")
    p.add_argument("--nms", type=float, default=defaults.nms_iou,
                   help="IoU above which same-phrase PaliGemma boxes are suppressed (default: %(default)s)")
    add_crop_argument(p)
    p.add_argument("--depth", help="depth image aligned to IMAGE: 16-bit PNG/TIFF in millimetres, 32-bit float "
                                   "TIFF or .npy in metres; adds 3D positions (needs --intrinsics)")
    p.add_argument("--intrinsics", help="pinhole intrinsics fx,fy,cx,cy in pixels (CameraInfo K)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def parse_intrinsics(text: str):
    """``"fx,fy,cx,cy"`` → :class:`Intrinsics`; a :class:`UserError` naming the problem otherwise."""
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
    from ros_mm_perception.core.config import PerceptionConfig, check_phrases, split_phrases
    from ros_mm_perception.core.perception.geometry import read_depth
    from ros_mm_perception.core.imaging.image_io import read_rgb
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
    from ros_mm_perception.core.results import Frame

    phrases = check_phrases(split_phrases(args.phrases), "phrases")
    if bool(args.depth) != bool(args.intrinsics):
        raise UserError("--depth and --intrinsics go together: 3D positions need both")
    config = PerceptionConfig(
        device=args.device, precision=args.precision, clip_model=args.clip_model,
        clip_pretrained=args.clip_pretrained, paligemma_model=args.model, owl_model=args.owl_model,
        detect_phrases=phrases, enable_labels=False, grounding_source="auto",
        nms_iou=args.nms, crop_mode=args.crop_mode,
        **({} if args.threshold is None else {"score_threshold": args.threshold, "owl_score_threshold": args.threshold}))
    image = read_rgb(args.image)
    warn_outside_world(args.clip_model, phrases, "--clip-model")
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
        rows.append(row)
    if args.json:
        print(json.dumps({"detections": rows}, allow_nan=False))
    elif not rows:
        print(f"no detections at score >= {threshold}")
    else:
        width = max(len(r["label"]) for r in rows)
        for r in rows:
            where = "" if "xyz" not in r else (
                "  xyz=(no valid depth)" if r["xyz"] is None else "  xyz=({:.3f}, {:.3f}, {:.3f}) m".format(*r["xyz"]))
            box = ", ".join(f"{v:.1f}" for v in r["box"])
            print(f"{r['label']:<{width}}  {r['score']:.3f}  [{box}]{where}")
    return 0
