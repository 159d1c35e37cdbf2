"""``ros-mm-perception fleet INPUT... --out DIR``: label many recordings in parallel on Ray.

Each recording gets what ``bag`` writes (the same pipeline options, the same functions), in its own
folder ``DIR/<name>/`` (``perception.mcap``, and ``detections.jsonl``/``coco.json`` when asked,
plus ``manifest.json``; ``objects.db``, the recording's object memory, with ``--memory``);
``DIR/fleet.json`` lists every recording. Needs the ``fleet`` extra (Ray).
"""

from __future__ import annotations

import importlib
import json
import sys
from argparse import Namespace
from pathlib import Path

from ros_mm_perception.commands.options import (MASKS_HELP, MEMORY_FIELDS, add_config_options,
                                                add_pipeline_options, memory_outputs,
                                                add_input_options, add_threads_option,
                                                build_pipeline, config_from_args,
                                                configured_phrases, open_outputs, open_source,
                                                target_frame, warn_outside_world)
from ros_mm_perception.core.errors import UserError

INSTALL_HINT = "fleet needs Ray: pip install 'ros_mm_perception[fleet]' (or pip install ray)"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fleet", help="label many recordings in parallel on Ray (this machine or a cluster)",
        description="Label every recording given (rosbag2 folders, .mcap/.db3 files, image "
                    "folders, videos, folders of them, globs, or .txt files listing them) on Ray "
                    "workers, each holding one model copy. Each recording gets the outputs `bag` "
                    "writes, in DIR/<name>/, exactly once; DIR/fleet.json lists them all. A "
                    "rerun skips recordings already complete.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="recordings, folders of recordings, globs or list files")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (one folder per recording)")
    p.add_argument("--jsonl", action="store_true",
                   help="also write detections.jsonl per recording")
    p.add_argument("--coco", action="store_true", help="also write coco.json per recording")
    p.add_argument("--debug-images", action="store_true",
                   help="also write annotated images on <ns>/debug_image")
    add_config_options(p, ("foxglove",))
    add_pipeline_options(p)
    p.add_argument("--masks", action="store_true", help=MASKS_HELP)
    add_threads_option(p)
    add_input_options(p)
    g = p.add_argument_group("object memory")
    g.add_argument("--memory", action="store_true",
                   help="also build each recording's object memory, objects.db in its folder "
                        "(needs depth, camera_info and /tf; its frame is --memory-frame, else "
                        "--target-frame)")
    add_config_options(g, MEMORY_FIELDS)
    g = p.add_argument_group("ray")
    g.add_argument("--address", default=None,
                   help="Ray cluster to join: auto or HOST:PORT (default: start Ray on this "
                        "machine)")
    g.add_argument("--connect-timeout", type=float, default=30.0, metavar="S",
                   help="give up joining the --address cluster after S seconds (default: 30)")
    g.add_argument("--workers", type=int, default=1,
                   help="workers, each with its own model copy (default: 1)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs Ray reserves per worker (default: 1)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="GPUs per worker, fractional allowed: 0.5 puts two workers on one GPU "
                        "(default: 0)")
    g.add_argument("--split-s", type=float, default=None, metavar="S",
                   help="cut recordings into windows of S seconds labeled in parallel (track ids "
                        "unique per window)")
    g.add_argument("--retries", type=int, default=2,
                   help="tries after a worker dies, per recording (default: 2)")
    g.add_argument("--force", action="store_true", help="label complete recordings again")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def label_tools(args):
    """The reading, pipeline and output functions ``bag`` uses, with this run's options."""
    from ros_mm_perception.fleet.worker import LabelTools

    input_args = Namespace(camera_topic=args.camera_topic, depth_topic=args.depth_topic,
                           no_depth=args.no_depth, fps=args.fps)
    return LabelTools(open_source=open_source, target_frame=target_frame,
                      open_outputs=open_outputs, build_pipeline=build_pipeline,
                      input_args=input_args, jsonl=args.jsonl, coco=args.coco,
                      debug_images=args.debug_images,
                      open_memory=memory_outputs if args.memory else None)


def format_fleet(summary) -> str:
    """One line per recording, then the totals."""
    rows = summary["per_recording"]
    width = max(len("recording"), *(len(Path(r["input"]).name) for r in rows))
    lines = [f"{'recording':<{width}}  {'status':<10}  {'frames':>6}  {'skipped':>7}  "
             f"{'detections':>10}  {'seconds':>7}  worker"]
    for r in rows:
        lines.append(f"{Path(r['input']).name:<{width}}  {r['status']:<10}  {r['frames']:>6}  "
                     f"{r['skipped']:>7}  {r['detections']:>10}  {r['seconds']:>7.1f}  "
                     f"{r['worker']}")
        if r.get("reason"):
            lines.append(f"  {r['reason']}")
    lines.append("")
    lines.append(f"{summary['done']} labeled, {summary['up_to_date']} already complete, "
                 f"{summary['failed']} failed; {summary['frames']} frames in "
                 f"{summary['seconds']:.1f} s ({summary['frames_per_s']:.1f} frames/s) on "
                 f"{summary['workers']} workers")
    lines.append(f"outputs in {summary['out']} (fleet.json)")
    return "\n".join(lines)


def run(args) -> int:
    try:
        importlib.import_module("ray")
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    from ros_mm_perception.fleet.engine import FleetOptions, run_fleet
    from ros_mm_perception.fleet.inputs import expand_inputs
    from ros_mm_perception.offline.runner import stderr_report

    config = config_from_args(args, **({"memory_enabled": True} if args.memory else {}))
    if args.memory and args.split_s:
        raise UserError("--memory builds each recording's memory in recording order; it cannot be "
                        "combined with --split-s")
    warn_outside_world(config, configured_phrases(config))
    options = FleetOptions(workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                           gpus_per_worker=args.gpus_per_worker, threads=args.threads,
                           retries=args.retries, split_s=args.split_s, address=args.address,
                           force=args.force, connect_timeout_s=args.connect_timeout)
    options.check()
    inputs = expand_inputs(args.inputs)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder")
    for path in inputs:
        if out_dir.resolve() == path or path in out_dir.resolve().parents:
            raise UserError(f"--out {out_dir} is inside the input {path}")
        if out_dir.resolve() in path.parents:
            raise UserError(f"input {path} is inside --out {out_dir}")
    summary = run_fleet(inputs, out_dir, config, label_tools(args), options,
                        progress=False if args.no_progress else None, report=stderr_report)
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_fleet(summary))
    if summary["failed"]:
        print(f"ros-mm-perception fleet: {summary['failed']} of {summary['recordings']} "
              f"recordings failed (see {out_dir / 'fleet.json'})", file=sys.stderr)
        return 1
    return 0
