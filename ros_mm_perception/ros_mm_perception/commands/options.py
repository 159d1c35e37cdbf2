"""The options and helpers every command shares: one vocabulary, from :class:`PerceptionConfig`.

A config field ``name`` is the option ``--name`` with dashes (``clip_model`` → ``--clip-model``,
the ROS parameter of the same name): its type comes from the default (a bool is ``--name`` /
``--no-name``, a phrase list one string split by :func:`split_phrases`), its choices and range from
the field, its help from the first sentence of the description, and an option left out keeps the
config's value. :func:`config_from_args` builds the config from the parsed options. No command
imports another command; what two commands share lives here.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, Iterable, Optional

from ros_mm_perception.core.config import PerceptionConfig, split_phrases
from ros_mm_perception.core.errors import UserError

PHRASES_HELP = 'separated by ";" or, when no ";" is present, by commas'
CLIP_FIELDS = ("clip_model", "clip_pretrained", "device", "precision")
"""What loads CLIP: every command that runs CLIP alone takes these."""
PALIGEMMA_FIELDS = ("paligemma_model", "device", "precision", "language", "max_new_tokens")
"""What loads and prompts PaliGemma (ask, caption)."""
PIPELINE_FIELDS = ("labels", "enable_labels", "detect_phrases", "grounding_source",
                   "score_threshold", "owl_score_threshold", "nms_iou", "crop_mode", "label_tiles",
                   "paligemma_model", "paligemma_mask_decoder", "owl_model", "sam3_model",
                   "mask_model", "clip_model", "clip_pretrained", "device", "precision")
"""The pipeline settings of the offline commands that process recordings (bag, fleet)."""
MASKS_HELP = ("give each detection a mask (COCO compressed RLE in JSON, instance_mask in the "
              "MCAP): from --mask-model, or SAM 3's own, or PaliGemma's own with "
              "--paligemma-mask-decoder, else the embedded mask model")


MEMORY_FIELDS = ("memory_frame", "memory_gate_sigma", "memory_gate_floor_m", "memory_depth_noise",
                 "memory_embedding_threshold", "memory_confirm_observations", "memory_gone_views",
                 "memory_max_range_m")
"""The object memory's settings of the commands that build one (bag, fleet); ``--memory FILE``
sets ``memory_path`` and turns the memory on."""


def option_name(field: str) -> str:
    """``clip_model`` → ``--clip-model``."""
    return "--" + field.replace("_", "-")


def first_sentence(text: str) -> str:
    """The description's first sentence, without its full stop (an option's help)."""
    return re.split(r"(?<=\.)\s+(?=[A-Z])", text.strip(), maxsplit=1)[0].rstrip(".")


def _shown(value) -> str:
    if isinstance(value, list):
        return ", ".join(value)
    return str(value).lower() if isinstance(value, bool) else (str(value) or "empty")


def add_config_options(parser, fields: Iterable[str], defaults: Optional[Dict] = None,
                       required: Iterable[str] = ()) -> None:
    """One option per config field in ``fields`` (module docstring); ``defaults`` replaces the
    config's default of a field for this command, ``required`` makes options mandatory."""
    described = PerceptionConfig.describe()
    defaults = defaults or {}
    for name in fields:
        spec = described[name]
        value = spec["default"]
        default = defaults.get(name)
        help_text = first_sentence(spec["description"])
        kwargs = {"dest": name, "default": default}
        if isinstance(value, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(value, list):
            kwargs["metavar"] = "PHRASES"
            help_text += f", {PHRASES_HELP}"
        else:
            kwargs["type"] = type(value)
            if "choices" in spec:
                kwargs["choices"] = spec["choices"]
            elif not isinstance(value, str):
                kwargs["metavar"] = "{}..{}".format(*spec["range"]) if "range" in spec else "N"
        if name in required:
            kwargs["required"] = True
        else:
            help_text += f" (default: {_shown(value if default is None else default)})"
        parser.add_argument(option_name(name), help=help_text.replace("%", "%%"), **kwargs)


def add_pipeline_options(parser) -> None:
    """The pipeline settings of the commands that process recordings (:data:`PIPELINE_FIELDS`)."""
    add_config_options(parser.add_argument_group("pipeline"), PIPELINE_FIELDS)


def config_from_args(args, **fixed) -> PerceptionConfig:
    """The :class:`PerceptionConfig` the parsed options describe: each config field given as an
    option replaces the default (phrase lists split by :func:`split_phrases`), then ``fixed``."""
    changes = {}
    for name, spec in PerceptionConfig.describe().items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if value == "" and name.endswith("_model"):  # a model option given, but no model named
            raise UserError(f"--{name.replace('_', '-')} is empty: give a model id or folder, or "
                            "leave the option out")
        changes[name] = split_phrases(value) if isinstance(spec["default"], list) else value
    if changes.get("memory_path"):
        changes.setdefault("memory_enabled", True)
    changes.update(fixed)
    config = PerceptionConfig().replace(**changes)
    return with_masks(config) if getattr(args, "masks", False) else config


def with_masks(config: PerceptionConfig) -> PerceptionConfig:
    """``config`` with a mask source: itself when it has one (``mask_model``, SAM 3 grounding, or
    PaliGemma grounding with ``paligemma_mask_decoder``), else with the embedded mask model."""
    source, auto = config.grounding_source, config.grounding_source == "auto"
    sam3 = source == "sam3" or (auto and config.sam3_model)
    paligemma = source == "paligemma" or (
        auto and config.paligemma_model and not (config.owl_model or config.sam3_model)
    )
    own_masks = sam3 or (paligemma and config.paligemma_mask_decoder)
    return config if config.mask_model or own_masks else config.replace(mask_model="embedded")


def add_threads_option(parser, default: int = 0) -> None:
    """``--threads``: PyTorch CPU threads (0: PyTorch's choice)."""
    parser.add_argument("--threads", type=int, default=default,
                        help="PyTorch CPU threads; 0 = PyTorch's choice (default: %(default)s)")


def set_threads(threads: int) -> None:
    """Use ``threads`` PyTorch CPU threads (0 keeps PyTorch's choice)."""
    if threads < 0:
        raise UserError(f"--threads must be 0 (PyTorch's choice) or more, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)


def warn_outside_world(config: PerceptionConfig, phrases: Iterable[str]) -> None:
    """On the embedded CLIP (``clip_model`` empty), say on stderr which phrases it cannot know."""
    from ros_mm_perception.core.models.embedded import outside_world_message

    message = None if config.clip_model else outside_world_message(list(phrases), "--clip-model")
    if message:
        print(f"ros-mm-perception: warning: {message}", file=sys.stderr)


def configured_phrases(config: PerceptionConfig):
    """The phrases a pipeline run uses: labels (when enabled) and detect phrases."""
    return (config.labels if config.enable_labels else []) + config.detect_phrases


# ------------------------------------------------------------------ recordings (bag and fleet)

def add_input_options(parser) -> None:
    """How a recording is read (cameras, depth topics, target frame, image folder rate)."""
    g = parser.add_argument_group("recording")
    g.add_argument("--camera-topic", action="append", default=[], metavar="TOPIC",
                   help="image or compressed image topic to process (repeatable; default: "
                        "every camera topic)")
    g.add_argument("--depth-topic", action="append", default=None, metavar="TOPIC",
                   help="depth image topic(s) to pair with the cameras (default: found by name)")
    g.add_argument("--no-depth", action="store_true", help="ignore depth (no detections_3d)")
    add_config_options(g, ("target_frame",))
    g.add_argument("--fps", type=float, default=None,
                   help="frame rate that stamps the frames of an image folder")


def open_source(args, config, input_path: Path):
    """The frame source of ``input_path`` as the input options describe it."""
    from ros_mm_perception.offline.runner import stderr_report
    from ros_mm_perception.offline.sources import DEFAULT_FPS, open_input

    return open_input(input_path, fps=DEFAULT_FPS if args.fps is None else args.fps,
                      camera_topics=args.camera_topic,
                      depth_topics=[] if args.no_depth else args.depth_topic,
                      depth_tolerance_s=config.depth_tolerance_s, warn=stderr_report,
                      max_pixels=config.max_image_pixels)


def add_memory_options(parser) -> None:
    """``--memory FILE`` and the memory's settings (:data:`MEMORY_FIELDS`)."""
    g = parser.add_argument_group("object memory")
    g.add_argument("--memory", dest="memory_path", metavar="FILE",
                   help="build or extend the object memory in this SQLite file (needs depth, "
                        "camera_info and /tf; its frame is --memory-frame, else --target-frame)")
    add_config_options(g, MEMORY_FIELDS)


def memory_outputs(config, source, path=None, beside=(), staging=None):
    """``[MemoryOutput]`` folding a recording into the memory file ``path`` (default: the
    config's ``memory_path``), or ``[]`` when no memory is asked for. An MCAP output among the
    recording's other outputs ``beside`` also gets the memory's Foxglove scene; ``staging`` (the
    run's :class:`~ros_mm_perception.offline.atomic.OutputStaging`) refuses a memory file that is
    an input or one of the run's outputs."""
    path = path or config.memory_path
    if not path:
        return []
    if staging is not None:
        staging.check(path)
    from ros_mm_perception.offline.mcap_output import ResultsMcap
    from ros_mm_perception.offline.memory_output import MemoryOutput, memory_frame, open_memory
    from ros_mm_perception.offline.runner import stderr_report

    frame = memory_frame(config)
    if not hasattr(source, "transform_tree") or not source.transform_tree().frames():
        raise UserError(f"--memory needs a rosbag2 recording with /tf or /tf_static (to place "
                        f"objects in {frame})")
    scene = next((o for o in beside if isinstance(o, ResultsMcap)), None)
    return [MemoryOutput(open_memory(config, str(path)), source.transform_tree(),
                         config.detect_phrases, warn=stderr_report, scene=scene)]


def build_pipeline(config):
    """The same pipeline as the live node, with the models the config names."""
    from ros_mm_perception.core.perception.pipeline import PerceptionPipeline

    return PerceptionPipeline(config)


def default_output(input_path: Path) -> Path:
    """``<IN name>_perception.mcap`` in the current folder."""
    name = input_path.resolve().name
    stem = name[: -len(input_path.suffix)] if input_path.suffix and input_path.is_file() else name
    return Path.cwd() / f"{stem}_perception.mcap"


def open_outputs(args, config, input_path: Path, staging, target=None):
    """The outputs the options ask for (MCAP, JSON Lines, COCO), each a file staged in ``staging``
    (which refuses inputs and paths used twice).

    ``target`` (a :class:`~ros_mm_perception.offline.bag_transforms.TargetFrame`) moves the MCAP's
    3D output.
    """
    from ros_mm_perception.offline.exports import CocoExport, JsonlExport
    from ros_mm_perception.offline.mcap_output import ResultsMcap

    out = args.out or (None if (args.jsonl or args.coco) else default_output(input_path))
    outputs = []
    if out:
        outputs.append(ResultsMcap(staging.stage(out).file, config, args.debug_images,
                                   target=target))
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
    return TargetFrame.of(source.transform_tree(), frame, warn=stderr_report)


# ------------------------------------------------------------------------ PaliGemma (ask, caption)

def add_paligemma_options(parser) -> None:
    """The PaliGemma options of ask and caption (the model: the suggested checkpoint)."""
    from ros_mm_perception.core.models.paligemma import DEFAULT_MODEL

    add_config_options(parser, PALIGEMMA_FIELDS, defaults={"paligemma_model": DEFAULT_MODEL})


def load_paligemma_engine(config: PerceptionConfig):
    """The PaliGemma engine the config names, prompting in its language."""
    from ros_mm_perception.core.models.paligemma import check_language, load_paligemma

    language = check_language(config.language)
    engine = load_paligemma(config.paligemma_model, config.device, config.precision,
                            max_new_tokens=config.max_new_tokens)
    engine.language = language
    return engine
