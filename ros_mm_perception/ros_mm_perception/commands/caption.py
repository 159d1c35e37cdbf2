"""``ros-mm-perception caption IMAGE``: describe an image with PaliGemma."""

from __future__ import annotations

import json

from ros_mm_perception.commands.options import (add_paligemma_options, config_from_args,
                                                load_paligemma_engine)


def add_parser(sub) -> None:
    p = sub.add_parser("caption", help="caption an image with PaliGemma",
                       description="Describe an image with PaliGemma (prompt 'caption <lang>').")
    p.add_argument("image", help="image file (PNG, JPEG, ...)")
    add_paligemma_options(p)
    p.add_argument("--json", action="store_true", help='print one JSON object {"caption": str}')
    p.set_defaults(func=run)


def run(args) -> int:
    from ros_mm_perception.core.imaging.image_io import read_rgb

    image = read_rgb(args.image)
    caption = load_paligemma_engine(config_from_args(args)).caption(image)
    print(json.dumps({"caption": caption}, allow_nan=False) if args.json else caption)
    return 0
