"""``ros-mm-perception bag IN``: run the perception pipeline over a recording, offline.

IN is a rosbag2 (folder, ``.mcap`` or ``.db3``), a folder of images or a video file. Every frame is
processed; the results go to an MCAP file with the live node's topics and types, and optionally to
JSON Lines and COCO files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ros_mm_perception.commands.options import (MASKS_HELP, add_config_options, add_memory_options,
                                                add_pipeline_options,
                                                add_input_options, add_threads_option,
                                                build_pipeline, config_from_args,
                                                configured_phrases, memory_outputs, open_outputs,
                                                open_source, set_threads, target_frame,
                                                warn_outside_world)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bag", help="label a rosbag2 recording, image folder or video offline",
        description="Run the perception pipeline on every frame of a rosbag2 recording (MCAP or "
                    "sqlite3), a folder of images or a video, and write the node's output topics "
                    "to an MCAP file.")
    p.add_argument("input", metavar="IN",
                   help="rosbag2 folder, .mcap or .db3 file, image folder or video file")
    p.add_argument("--out",
                   help="output MCAP file (default: <IN name>_perception.mcap in the current "
                        "folder, unless --jsonl or --coco is given)")
    p.add_argument("--jsonl", metavar="FILE", help="also write one JSON line per frame")
    p.add_argument("--coco", metavar="FILE",
                   help="also write a COCO detection file (categories = phrases)")
    p.add_argument("--debug-images", action="store_true",
                   help="also write annotated images on <ns>/debug_image")
    add_config_options(p, ("foxglove",))
    add_pipeline_options(p)
    p.add_argument("--masks", action="store_true", help=MASKS_HELP)
    add_threads_option(p)
    add_input_options(p)
    add_memory_options(p)
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ros_mm_perception.offline.atomic import OutputStaging
    from ros_mm_perception.offline.report import format_summary
    from ros_mm_perception.offline.runner import process_input

    config = config_from_args(args)
    warn_outside_world(config, configured_phrases(config))
    set_threads(args.threads)
    input_path = Path(args.input)
    source = open_source(args, config, input_path)
    staging = OutputStaging(inputs=[input_path, *source.paths])
    try:
        target = target_frame(source, config.target_frame)
        outputs = open_outputs(args, config, input_path, staging, target)
        outputs += memory_outputs(config, source, beside=outputs, staging=staging)
        pipeline = build_pipeline(config)
    except BaseException:
        staging.abort()
        source.close()
        raise
    try:
        summary = process_input(source, pipeline, outputs, staging, phrases=config.detect_phrases,
                                progress=False if args.no_progress else None)
    finally:
        pipeline.close()
    if target is not None and target.missing:
        lacking = ", ".join(f"{key} ({n} frames)" for key, n in target.missing.items())
        print(f"ros-mm-perception bag: no detections_3d in {target.target_frame} where a "
              f"transform was missing: {lacking}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary.as_json(), allow_nan=False))
    else:
        print(format_summary(summary))
    if summary.frames == 0:
        print(f"ros-mm-perception bag: no frame of {input_path} could be processed",
              file=sys.stderr)
        return 1
    return 0
