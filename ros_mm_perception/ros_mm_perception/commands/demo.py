"""``ros-mm-perception demo``: record a sample bag of rendered scenes, process it, show the
results.

Uses the embedded default CLIP with CLIP-only grounding (no PaliGemma, no downloads), so it runs on
a fresh machine in about a minute on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

from ros_mm_perception.commands.options import (add_config_options, add_threads_option,
                                                config_from_args, set_threads)
from ros_mm_perception.core.errors import UserError

THREADS = 1
"""PyTorch CPU threads of the demo. The embedded model is small, so one thread loses little, while
several threads stall on every small operation when other programs share the cores (measured on a
busy 2-core machine: 16 frames in 3 s with one thread, 73 s with two)."""

OUTPUT_FILES = (
    ("sample_scenes.mcap",
     "input recording: /front raw images + depth + camera_info, /overhead JPEG images"),
    ("perception.mcap",
     "output topics per camera: detections, detections_3d, labels, label_info, instance_mask, "
     "debug_image, annotations, scene"),
    ("detections.jsonl", "one JSON line per frame"),
    ("contact_sheet.png", "annotated frames: boxes, masks, phrases, scores, track ids"),
)


def add_parser(sub) -> None:
    p = sub.add_parser("demo",
                       help="process a sample bag of rendered scenes with the embedded model",
                       description="Create a small rosbag2 (MCAP) of moving coloured shapes seen "
                                   "by two cameras, run the perception pipeline on every frame "
                                   "with the embedded CLIP model, and write the output bag, JSON "
                                   "lines and an annotated contact sheet.")
    p.add_argument("--out", default="demo_output", help="output folder (default: ./demo_output)")
    p.add_argument("--frames", type=int, default=12, help="frames per camera (default: 12)")
    p.add_argument("--size", default="240x320", help="image size HEIGHTxWIDTH (default: 240x320)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    add_config_options(p, ("score_threshold", "owl_score_threshold", "clip_model", "owl_model",
                           "device"))
    add_threads_option(p, THREADS)
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_size(text: str):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must be HEIGHTxWIDTH, e.g. 240x320; got {text!r}") from None
    if min(h, w) < 32:
        raise UserError(f"--size {text} is too small; at least 32x32")
    return h, w


def run(args) -> int:
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
    from ros_mm_perception.synthetic.scenes import all_phrases, phrase
    from ros_mm_perception.offline import demo
    from ros_mm_perception.offline.atomic import OutputStaging
    from ros_mm_perception.offline.contact_sheet import ContactSheetOutput
    from ros_mm_perception.offline.bag_source import BagSource
    from ros_mm_perception.offline.exports import JsonlExport
    from ros_mm_perception.offline.mcap_output import ResultsMcap
    from ros_mm_perception.offline.recording import record
    from ros_mm_perception.offline.report import format_summary
    from ros_mm_perception.offline.runner import process_input, stderr_report

    if args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    size = parse_size(args.size)
    set_threads(args.threads)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output folder {out}: {err.strerror}") from None
    config = config_from_args(args, grounding_source="owl" if args.owl_model else "clip",
                              detect_phrases=demo.demo_phrases(), labels=all_phrases(),
                              mask_model="embedded")
    scenes = demo.demo_scenes(args.frames, size, args.seed)
    truth = demo.GroundTruthCheck(scenes)
    with OutputStaging() as staging:
        bag, mcap, jsonl, sheet = (staging.stage(out / name,
                                                 "w" if name.endswith(".jsonl") else "wb",
                                                 keep_suffix=name.endswith(".mcap"))
                                   for name, _ in OUTPUT_FILES)
        record(bag.file, demo.demo_recordings(scenes))
        bag.finish()  # read back below, committed with the outputs
        outputs = [ResultsMcap(mcap.file, config, debug_images=True), JsonlExport(jsonl.file),
                   ContactSheetOutput(sheet.file), truth]
        pipeline = PerceptionPipeline(config)
        try:
            summary = process_input(BagSource(bag.tmp_path, warn=stderr_report), pipeline, outputs,
                                    staging, phrases=config.detect_phrases,
                                    progress=False if args.no_progress else None)
        finally:
            pipeline.close()
    if args.json:
        print(json.dumps({**summary.as_json(), "ground_truth_recall": truth.recall,
                          "ground_truth_precision": truth.precision,
                          "output_dir": str(out.resolve())},
                         allow_nan=False))
        return 0
    model = config.clip_model or "embedded CLIP"
    grounding = f"OWL detector {config.owl_model}" if config.owl_model else "CLIP-only grounding"
    print(f"demo: {len(scenes)} cameras x {args.frames} frames of rendered scenes, {model}, "
          f"{grounding}")
    print(format_summary(summary, outputs=False))
    print(f"\nground truth (IoU >= {truth.iou} with the same phrase; '{phrase(*demo.ABSENT)}' is "
          f"in no scene):\n  objects found       {truth.found}/{truth.objects} "
          f"({100 * (truth.recall or 0):.0f}%)\n  correct detections  "
          f"{truth.correct}/{truth.detections} ({100 * (truth.precision or 0):.0f}%)")
    print(f"\noutputs in {out.resolve()}:")
    width = max(len(name) for name, _ in OUTPUT_FILES)
    for name, what in OUTPUT_FILES:
        print(f"  {name:<{width}}  {what}")
    return 0
