"""``ros-mm-perception classify IMAGE --labels "a,b,c"``: whole-frame zero-shot labels."""

from __future__ import annotations

import json

from ros_mm_perception.commands.options import (CLIP_FIELDS, add_config_options, config_from_args,
                                                warn_outside_world)


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="zero-shot label an image with CLIP",
                       description="Score an image against a vocabulary of phrases with CLIP.")
    p.add_argument("image", help="image file (PNG, JPEG, ...)")
    add_config_options(p, ("labels",), required=("labels",))
    add_config_options(p, (*CLIP_FIELDS, "crop_mode", "label_tiles"))
    p.add_argument("--top-k", type=int, default=None,
                   help="how many labels to print (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from ros_mm_perception.core.config import check_phrases
    from ros_mm_perception.core.errors import UserError
    from ros_mm_perception.core.imaging.image_io import read_rgb
    from ros_mm_perception.core.models.clip_model import load_clip
    from ros_mm_perception.core.perception.labeler import ClipLabeler

    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be at least 1 (leave it out for all labels), "
                        f"got {args.top_k}")
    config = config_from_args(args)
    phrases = check_phrases(config.labels, "--labels")
    image = read_rgb(args.image)
    warn_outside_world(config, phrases)
    clip = load_clip(config.clip_model, config.clip_pretrained, config.device, config.precision)
    labeler = ClipLabeler(clip, phrases, crop_mode=config.crop_mode,
                          label_tiles=config.label_tiles)
    labels = labeler.label(image, top_k=args.top_k or len(phrases))
    if args.json:
        print(json.dumps({"labels": [{"label": lb.phrase, "score": lb.score} for lb in labels]},
                         allow_nan=False))
    else:
        width = max(len(lb.phrase) for lb in labels)
        for lb in labels:
            print(f"{lb.phrase:<{width}}  {lb.score:.3f}")
    return 0
