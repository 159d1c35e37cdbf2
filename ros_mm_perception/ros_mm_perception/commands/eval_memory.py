"""``ros-mm-perception eval-memory [--json]``: the object memory on rendered rooms, two styles.

A room of shapes at known places is driven through twice (the second time some objects are
removed, one moved and one hidden); the memory is built from the embedded models' detections
with depth and the camera's pose. See :mod:`ros_mm_perception.offline.memory_eval` for the figures.
"""

from __future__ import annotations

import json
import sys
import time

from ros_mm_perception.commands.options import add_threads_option, set_threads
from ros_mm_perception.core.errors import UserError


def add_parser(sub) -> None:
    from ros_mm_perception.offline.memory_eval import EVAL_SEED, FRAMES_PER_PASS

    p = sub.add_parser(
        "eval-memory",
        help="measure the object memory on rendered rooms",
        description="Objects recorded once, duplicates, false objects, position error, "
        "queries, removed objects marked gone and hidden ones kept, on "
        "rendered rooms in the project's own style and an unseen one.",
    )
    p.add_argument("--seed", type=int, default=EVAL_SEED, help=f"room seed (default {EVAL_SEED})")
    p.add_argument(
        "--frames",
        type=int,
        default=FRAMES_PER_PASS,
        help=f"frames per drive through the room (default {FRAMES_PER_PASS})",
    )
    p.add_argument(
        "--style",
        choices=("own", "unseen", "both"),
        default="both",
        help="which style (default: both)",
    )
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument(
        "--bench",
        action="store_true",
        help="measure the memory's cost instead (a query among 10,000 objects, the share "
        "of the per-frame time) and print it as JSON",
    )
    p.add_argument(
        "--clip-check",
        action="store_true",
        help="give the memory CLIP's text encoder: an object is confirmed only where CLIP "
        "prefers its phrase to 'background' on its crops",
    )
    p.add_argument(
        "--mask-model",
        default="",
        metavar="MODEL",
        help="give each detection a mask from MODEL ('embedded', a SAM / SAM 2 id or folder), "
        "so its 3D position comes from the mask's pixels (default: none, the default setting)",
    )
    add_threads_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
    from ros_mm_perception.offline.memory_eval import eval_config, evaluate

    set_threads(args.threads)
    if args.frames < 8:
        raise UserError("--frames must be at least 8")
    styles = ("own", "unseen") if args.style == "both" else (args.style,)
    start = time.perf_counter()
    pipeline = PerceptionPipeline(eval_config(mask_model=args.mask_model))
    if args.bench:
        from ros_mm_perception.offline.memory_bench import bench

        try:
            print(json.dumps(bench(pipeline), allow_nan=False))
        finally:
            pipeline.close()
        return 0
    try:

        def progress(message):
            print(
                f"\r{message} ({time.perf_counter() - start:.0f} s)   ",
                end="",
                file=sys.stderr,
                flush=True,
            )

        figures = evaluate(pipeline, styles, args.seed, args.frames, progress, args.clip_check)
    finally:
        pipeline.close()
    print(file=sys.stderr)
    figures["mask_model"] = args.mask_model
    figures["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        print(json.dumps(figures, allow_nan=False))
        return 0
    for style in styles:
        f = figures[style]
        print(
            f"{style}: recorded once {f['recorded_once']:.2f} of {f['objects']} (missed "
            f"{f['missed']}, duplicates {f['duplicates']}), false objects per object "
            f"{f['false_objects_per_object']:.2f}, position error median "
            f"{f['position_error_median_m']} m p90 {f['position_error_p90_m']} m, query top-1 "
            f"{f['query_top1']:.2f}, absent phrases answered {len(f['absent_phrases_answered'])}"
            f"/{f['absent_phrases_asked']}, removed marked gone {f['removed_marked_gone']}"
            f"/{f['removed_recorded']} after {f['views_until_gone']} views, wrongly gone "
            f"{len(f['wrongly_gone'])}, hidden object gone {f['hidden_object_marked_gone']}"
        )
    print(f"{figures['seconds']} s")
    return 0
