"""``ros-mm-perception classify IMAGE --labels "a,b,c"``: whole-frame zero-shot labels."""

from __future__ import annotations

import json
import sys

PHRASES_HELP = 'separated by ";" or, when no ";" is present, by commas'

from ros_mm_perception.core.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="zero-shot label an image with CLIP",
                       description="Score an image against a vocabulary of phrases with CLIP.")
    p.add_argument("image", help="image file (PNG, JPEG, ...)")
    p.add_argument("--labels", required=True, help=f'phrases {PHRASES_HELP}, e.g. "red mug,person,door"')
    add_clip_arguments(p)
    add_crop_argument(p)
    add_tiles_argument(p)
    p.add_argument("--top-k", type=int, default=None, help="how many labels to print (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def add_clip_arguments(p) -> None:
    """The CLIP model options shared by every command that loads CLIP."""
    p.add_argument("--model", default="", help="open_clip model name or model folder (default: embedded model)")
    p.add_argument("--pretrained", default="", help="open_clip pretrained tag or local checkpoint file")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", default="auto", help="auto, fp32, fp16 or bf16")


def add_crop_argument(p, default=None) -> None:
    """``--crop-mode``: how CLIP fits a frame or box to its square input (default: the config's)."""
    from ros_mm_perception.core.config import CROP_MODES, PerceptionConfig

    p.add_argument("--crop-mode", choices=CROP_MODES, default=default or PerceptionConfig().crop_mode,
                   help="letterbox: the whole frame, padded to a square; center: open_clip's centre crop "
                        "(drops a wide frame's side bands) (default: %(default)s)")


def add_tiles_argument(p, default=None) -> None:
    """``--label-tiles``: rows of tiles whole-frame labels look at besides the frame."""
    from ros_mm_perception.core.config import PerceptionConfig

    p.add_argument("--label-tiles", type=int, metavar="ROWS", default=default,
                   help="rows of overlapping tiles that whole-frame labels also look at (with squares as tall "
                        "as the frame), weighted by how sure each view is; 0: the frame alone "
                        f"(default: {PerceptionConfig().label_tiles})")


def warn_outside_world(model: str, phrases, option: str) -> None:
    """On the embedded model (``model`` empty), say once on stderr which phrases it cannot know."""
    from ros_mm_perception.core.models.embedded import outside_world_message

    message = outside_world_message(phrases, option) if not model else None
    if message:
        print(f"ros-mm-perception: warning: {message}", file=sys.stderr)


def run(args) -> int:
    from ros_mm_perception.core.models.clip_model import load_clip
    from ros_mm_perception.core.config import PerceptionConfig, check_phrases, split_phrases
    from ros_mm_perception.core.imaging.image_io import read_rgb
    from ros_mm_perception.core.perception.labeler import ClipLabeler

    phrases = check_phrases(split_phrases(args.labels), "--labels")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be at least 1 (leave it out for all labels), got {args.top_k}")
    image = read_rgb(args.image)
    warn_outside_world(args.model, phrases, "--model")
    config = PerceptionConfig().replace(**({} if args.label_tiles is None else {"label_tiles": args.label_tiles}))
    labeler = ClipLabeler(load_clip(args.model, args.pretrained, args.device, args.precision), phrases,
                          crop_mode=args.crop_mode, label_tiles=config.label_tiles)
    labels = labeler.label(image, top_k=args.top_k or len(phrases))
    if args.json:
        print(json.dumps({"labels": [{"label": lb.phrase, "score": lb.score} for lb in labels]}, allow_nan=False))
    else:
        width = max(len(lb.phrase) for lb in labels)
        for lb in labels:
            print(f"{lb.phrase:<{width}}  {lb.score:.3f}")
    return 0
