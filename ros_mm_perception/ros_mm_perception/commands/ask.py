"""``ros-mm-perception ask IMAGE "question"``: visual question answering with PaliGemma."""

from __future__ import annotations

import json

from ros_mm_perception.commands.options import (add_paligemma_options, config_from_args,
                                                load_paligemma_engine)


def add_parser(sub) -> None:
    p = sub.add_parser("ask", help="answer a question about an image with PaliGemma",
                       description="Ask PaliGemma a question about an image (prompt 'answer "
                                   "<lang> <question>').")
    p.add_argument("image", help="image file (PNG, JPEG, ...)")
    p.add_argument("question", help='the question, e.g. "what color is the mug?"')
    add_paligemma_options(p)
    p.add_argument("--json", action="store_true", help='print one JSON object {"answer": str}')
    p.set_defaults(func=run)


def run(args) -> int:
    from ros_mm_perception.core.imaging.image_io import read_rgb
    from ros_mm_perception.core.models.paligemma import check_prompt

    config = config_from_args(args)
    question = check_prompt(args.question, "question")
    image = read_rgb(args.image)
    answer = load_paligemma_engine(config).answer(image, question)
    print(json.dumps({"answer": answer}, allow_nan=False) if args.json else answer)
    return 0
