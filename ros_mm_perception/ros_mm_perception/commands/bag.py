"""``ros-mm-perception bag IN``: run the perception pipeline over a recording, offline.

IN is a rosbag2 (folder, ``.mcap`` or ``.db3``), a folder of images or a video file. Every frame is
processed; the results go to an MCAP file with the live node's topics and types, and optionally to
JSON Lines and COCO files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ros_mm_perception.commands.classify import PHRASES_HELP, add_tiles_argument, warn_outside_world
from ros_mm_perception.core.config import CROP_MODES, GROUNDING_SOURCES, split_phrases
from ros_mm_perception.core.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bag", help="label a rosbag2 recording, image folder or video offline",
        description="Run the perception pipeline on every frame of a rosbag2 recording (MCAP or sqlite3), "
                    "a folder of images or a video, and write the node's output topics to an MCAP file.")
    p.add_argument("input", metavar="IN", help="rosbag2 folder, .mcap or .db3 file, image folder or video file")
    p.add_argument("--out", help="output MCAP file (default: <IN name>_perception.mcap in the current folder, "
                                 "unless --jsonl or --coco is given)")
    p.add_argument("--jsonl", metavar="FILE", help="also write one JSON line per frame")
    p.add_argument("--coco", metavar="FILE", help="also write a COCO detection file (categories = phrases)")
    p.add_argument("--debug-images", action="store_true", help="also write annotated images on <ns>/debug_image")
    add_pipeline_arguments(p)
    add_input_arguments(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def add_pipeline_arguments(p) -> None:
    """Vocabulary, grounding and model options shared by the offline commands."""
    g = p.add_argument_group("pipeline")
    g.add_argument("--labels", help=f"whole-frame vocabulary, {PHRASES_HELP} (default: the config's)")
    g.add_argument("--no-labels", action="store_true", help="no whole-frame labels (enable_labels false)")
    g.add_argument("--detect", help=f'phrases to detect, {PHRASES_HELP}, e.g. "red mug,person"')
    g.add_argument("--grounding", choices=GROUNDING_SOURCES, help="detection source (default: auto)")
    g.add_argument("--threshold", type=float, help="minimum detection score")
    g.add_argument("--nms", type=float, help="IoU above which same-phrase PaliGemma boxes are suppressed")
    g.add_argument("--crop-mode", choices=CROP_MODES, help="letterbox or center (default: the config's)")
    add_tiles_argument(g)
    g.add_argument("--model", default=None, help="PaliGemma model id or folder (enables PaliGemma grounding)")
    g.add_argument("--owl-model", default=None,
                   help="OWLv2 / OWL-ViT model id, folder or 'embedded' (enables OWL grounding)")
    g.add_argument("--clip-model", default=None, help="open_clip model name or model folder (default: embedded)")
    g.add_argument("--clip-pretrained", default=None, help="open_clip pretrained tag or checkpoint file")
    g.add_argument("--device", default=None, help="auto, cpu or cuda[:N]")
    g.add_argument("--precision", default=None, help="auto, fp32, fp16 or bf16")
    g.add_argument("--threads", type=int, default=0, help="PyTorch CPU threads (default: PyTorch's choice)")


def add_input_arguments(p) -> None:
    """How a recording is read (camera, depth topics, target frame, image folder rate), for ``bag`` and ``fleet``."""
    g = p.add_argument_group("bag topics")
    g.add_argument("--camera-topic", action="append", default=[], metavar="TOPIC",
                   help="image or compressed image topic to process (repeatable; default: every camera topic)")
    g.add_argument("--depth-topic", action="append", default=None, metavar="TOPIC",
                   help="depth image topic(s) to pair with the cameras (default: found by name)")
    g.add_argument("--no-depth", action="store_true", help="ignore depth (no detections_3d)")
    g.add_argument("--target-frame", default=None, metavar="FRAME",
                   help="publish detections_3d in this frame (e.g. base_link), with the bag's /tf and /tf_static "
                        "at each image's stamp (default: the camera's frame)")
    g.add_argument("--fps", type=float, default=None, help="frame rate that stamps the frames of an image folder")


def open_source(args, config, input_path: Path):
    """The frame source of ``input_path`` as the input options describe it."""
    from ros_mm_perception.offline.runner import stderr_report
    from ros_mm_perception.offline.sources import DEFAULT_FPS, open_input

    return open_input(input_path, fps=DEFAULT_FPS if args.fps is None else args.fps,
                      camera_topics=args.camera_topic, depth_topics=[] if args.no_depth else args.depth_topic,
                      depth_tolerance_s=config.depth_tolerance_s, warn=stderr_report)


def set_threads(threads: int) -> None:
    """Use ``threads`` PyTorch CPU threads (0 keeps PyTorch's choice)."""
    if threads < 0:
        raise UserError(f"--threads must be 0 (PyTorch's choice) or more, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)


def config_from_args(args):
    """The :class:`PerceptionConfig` the options describe (unset options keep the config's defaults)."""
    from ros_mm_perception.core.config import PerceptionConfig

    changes = {
        "labels": split_phrases(args.labels) if args.labels is not None else None,
        "detect_phrases": split_phrases(args.detect) if args.detect is not None else None,
        "grounding_source": args.grounding, "score_threshold": args.threshold,
        "owl_score_threshold": args.threshold, "nms_iou": args.nms,
        "crop_mode": args.crop_mode, "label_tiles": args.label_tiles,
        "enable_labels": False if args.no_labels else None,
        "paligemma_model": args.model, "clip_model": args.clip_model, "clip_pretrained": args.clip_pretrained,
        "owl_model": args.owl_model,
        "device": args.device, "precision": args.precision,
        "target_frame": getattr(args, "target_frame", None),
    }
    return PerceptionConfig().replace(**{k: v for k, v in changes.items() if v is not None})


def warn_phrases_outside_world(config) -> None:
    """On the embedded model, say once on stderr which configured phrases lie outside its world."""
    warn_outside_world(config.clip_model, (config.labels if config.enable_labels else []) + config.detect_phrases,
                       "--clip-model")


def build_pipeline(config):
    """The same pipeline as the live node, with the models the config names."""
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline

    return PerceptionPipeline(config)


def default_output(input_path: Path) -> Path:
    name = input_path.resolve().name
    stem = name[: -len(input_path.suffix)] if input_path.suffix and input_path.is_file() else name
    return Path.cwd() / f"{stem}_perception.mcap"


def open_outputs(args, config, input_path: Path, staging, target=None):
    """The outputs the options ask for (MCAP, JSON Lines, COCO), each a file staged in ``staging``
    (which refuses inputs and paths used twice).

    ``target`` (a :class:`~ros_mm_perception.offline.bag_transforms.TargetFrame`) moves the MCAP's 3D output.
    """
    from ros_mm_perception.offline.exports import CocoExport, JsonlExport
    from ros_mm_perception.offline.mcap_output import ResultsMcap

    out = args.out or (None if (args.jsonl or args.coco) else default_output(input_path))
    outputs = []
    if out:
        outputs.append(ResultsMcap(staging.stage(out).file, config, args.debug_images, target=target))
    if args.jsonl:
        outputs.append(JsonlExport(staging.stage(args.jsonl, "w").file))
    if args.coco:
        outputs.append(CocoExport(staging.stage(args.coco, "w").file, config.detect_phrases))
    return outputs


def target_frame(source, frame: str):
    """A :class:`~ros_mm_perception.offline.bag_transforms.TargetFrame` for ``frame`` from a bag's
    transforms; None when ``frame`` is empty (3D stays in the camera's frame)."""
    if not frame:
        return None
    from ros_mm_perception.offline.bag_transforms import TargetFrame
    from ros_mm_perception.offline.runner import stderr_report

    if not hasattr(source, "transform_tree"):
        raise UserError(f"--target-frame {frame} needs a rosbag2 recording with /tf or /tf_static")
    tree = source.transform_tree()
    if not tree.frames():
        raise UserError(f"--target-frame {frame}: the recording has no transforms on /tf or /tf_static")
    return TargetFrame(tree, frame, warn=stderr_report)


def run(args) -> int:
    from ros_mm_perception.offline.atomic import OutputStaging
    from ros_mm_perception.offline.report import format_summary
    from ros_mm_perception.offline.runner import process_input

    config = config_from_args(args)
    warn_phrases_outside_world(config)
    set_threads(args.threads)
    input_path = Path(args.input)
    source = open_source(args, config, input_path)
    staging = OutputStaging(inputs=[input_path, *source.paths])
    try:
        target = target_frame(source, config.target_frame)
        outputs = open_outputs(args, config, input_path, staging, target)
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
        print(f"ros-mm-perception bag: no detections_3d in {target.target_frame} where a transform was missing: "
              f"{lacking}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary.as_json(), allow_nan=False))
    else:
        print(format_summary(summary))
    if summary.frames == 0:
        print(f"ros-mm-perception bag: no frame of {input_path} could be processed", file=sys.stderr)
        return 1
    return 0
