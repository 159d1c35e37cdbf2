"""``ros-mm-perception ask IMAGE "question"``: visual question answering with PaliGemma."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("ask", help="answer a question about an image with PaliGemma",
                       description="Ask PaliGemma a question about an image (prompt 'answer <lang> <question>').")
    p.add_argument("image", help="image file (PNG, JPEG, ...)")
    p.add_argument("question", help='the question, e.g. "what color is the mug?"')
    add_paligemma_arguments(p)
    p.add_argument("--json", action="store_true", help='print one JSON object {"answer": str}')
    p.set_defaults(func=run)


def add_paligemma_arguments(p) -> None:
    """The PaliGemma options shared by every command that loads PaliGemma."""
    from ros_mm_perception.core.config import PerceptionConfig
    from ros_mm_perception.core.models.paligemma import DEFAULT_MODEL

    defaults = PerceptionConfig()
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"hub id (from the Hugging Face cache) or local model folder (default: {DEFAULT_MODEL})")
    p.add_argument("--device", default=defaults.device, help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", default=defaults.precision, help="auto (bf16 on CUDA and on CPUs with native bf16, else fp32), fp32, fp16, bf16")
    p.add_argument("--language", default=defaults.language, help="prompt language code (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens,
                   help="generation budget (default: %(default)s)")


def load_engine(args):
    """Load the engine named by the options of :func:`add_paligemma_arguments`."""
    from ros_mm_perception.core.config import PerceptionConfig
    from ros_mm_perception.core.models.paligemma import check_language, load_paligemma

    settings = PerceptionConfig().replace(language=check_language(args.language),
                                          max_new_tokens=args.max_new_tokens)
    engine = load_paligemma(args.model, args.device, args.precision, max_new_tokens=settings.max_new_tokens)
    engine.language = settings.language
    return engine


def run(args) -> int:
    from ros_mm_perception.core.imaging.image_io import read_rgb
    from ros_mm_perception.core.models.paligemma import check_prompt

    question = check_prompt(args.question, "question")
    image = read_rgb(args.image)
    answer = load_engine(args).answer(image, question)
    print(json.dumps({"answer": answer}, allow_nan=False) if args.json else answer)
    return 0
