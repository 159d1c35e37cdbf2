"""The one home of every setting: :class:`PerceptionConfig`.

Each field holds its default, a one-line description, and its range or choices. The ROS node
declares one parameter per field (:mod:`ros_mm_perception.ros.params`), the launch file one
argument per field marked ``launch``, the commands one option per field they expose
(:mod:`ros_mm_perception.commands.options`), and ``scripts/generate_param_surfaces.py`` writes
``config/perception.yaml`` and the parameter table of ``docs/ros2.md`` from them.
:meth:`PerceptionConfig.replace` validates a change before it takes effect, so a bad ``ros2 param
set`` is rejected with a reason and the old values are kept. This module needs only the standard
library (the launch file imports it).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List

from ros_mm_perception.core.errors import UserError

MAX_PHRASES = 256
MAX_PHRASE_CHARS = 200
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
"""100 megapixels: above every robot camera (8K is 33 MP, a 12000 x 8000 sensor 96 MP); the RGB
copy of such an image takes 300 MB. Checked from the header, before any decoding."""

GROUNDING_SOURCES = ("auto", "sam3", "owl", "paligemma", "clip", "off")
IMAGE_TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("best_effort", "reliable")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
FAST_PATHS = ("auto", "off", "static", "graph", "compile")
CLIP_FAST_PATHS = FAST_PATHS + ("freeze",)
CROP_MODES = ("letterbox", "center")


class ConfigError(UserError, ValueError):
    """A configuration value was rejected; the message says which and why."""


def _param(default, description: str, *, low=None, high=None, choices=None, read_only=False,
           launch=False):
    """A config field: its default and the metadata every derived surface reads (``launch``: the
    launch file declares an argument for it)."""
    meta = {"description": description}
    if read_only:
        meta["read_only"] = True
    if launch:
        meta["launch"] = True
    if low is not None:
        meta["range"] = (low, high)
    if choices is not None:
        meta["choices"] = tuple(choices)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class PerceptionConfig:
    """Settings of the perception pipeline and node. Every default lives here."""

    # Models
    device: str = _param("auto", "Compute device: auto (CUDA when available), cpu or cuda[:N].",
                         read_only=True, launch=True)
    precision: str = _param(
        "auto", "Model precision: auto (per device and model), fp32, fp16, bf16 or int8 (CPU).",
        choices=PRECISIONS, read_only=True)
    clip_model: str = _param(
        "", "open_clip model name or model folder; empty uses the embedded model.",
        read_only=True, launch=True)
    clip_pretrained: str = _param("",
                                  "open_clip pretrained tag (hub cache) or local checkpoint file.",
                                  read_only=True, launch=True)
    paligemma_model: str = _param("",
                                  "PaliGemma hub id or model folder; empty disables PaliGemma.",
                                  read_only=True, launch=True)
    paligemma_mask_decoder: str = _param(
        "", "PaliGemma mask decoder (vae-oid.npz) for PaliGemma's own masks; mask_model wins.",
        read_only=True)
    owl_model: str = _param(
        "", "OWLv2 / OWL-ViT hub id, model folder or 'embedded'; empty disables OWL.",
        read_only=True, launch=True)
    mask_model: str = _param(
        "", "SAM / SAM 2 hub id, model folder or 'embedded' giving each detection a mask; empty = "
        "no masks.",
        read_only=True, launch=True)
    sam3_model: str = _param(
        "", "SAM 3 hub id or model folder (boxes and masks per phrase); empty disables SAM 3.",
        read_only=True, launch=True)
    clip_fast_path: str = _param("auto",
                                 "CLIP image encoding path: auto (graph on CUDA, freeze on CPU).",
                                 choices=CLIP_FAST_PATHS, read_only=True)
    paligemma_fast_path: str = _param(
        "auto", "PaliGemma generation path: auto (graph on CUDA, off on CPU).",
        choices=FAST_PATHS, read_only=True)
    owl_fast_path: str = _param("auto",
                                "OWL image encoding path: auto (graph on CUDA, off on CPU).",
                                choices=FAST_PATHS, read_only=True)
    # Vocabulary and prompts
    labels: List[str] = _param(["person", "chair", "door", "cup"],
                               "Whole-frame zero-shot vocabulary (phrases).")
    prompt_templates: List[str] = _param(["a photo of {}."],
                                         "CLIP prompt templates; '{}' is replaced by each phrase.")
    detect_phrases: List[str] = _param(["person", "cup"], "Phrases to ground as detections.")
    # Behaviour
    enable_labels: bool = _param(True, "Publish whole-frame zero-shot labels.")
    foxglove: bool = _param(True,
                            "Publish Foxglove overlays on annotations and scene (foxglove_msgs).",
                            read_only=True)
    crop_mode: str = _param("letterbox", "How CLIP fits a frame or box to its square input.",
                            choices=CROP_MODES, launch=True)
    label_tiles: int = _param(
        3, "Rows of tiles whole-frame labels also look at; 0 = the frame alone.",
        low=0, high=8, launch=True)
    grounding_source: str = _param("auto",
                                   "Detection source: auto (SAM 3, else OWL, else PaliGemma, "
                                   "else CLIP).",
                                   choices=GROUNDING_SOURCES)
    top_k: int = _param(5, "How many labels to publish per frame.", low=1, high=MAX_PHRASES)
    score_threshold: float = _param(0.5, "Minimum score of CLIP and PaliGemma detections.",
                                    low=0.0, high=1.0)
    owl_score_threshold: float = _param(0.3, "Minimum score of OWL detections.", low=0.0, high=1.0,
                                        launch=True)
    nms_iou: float = _param(0.5,
                            "IoU above which same-phrase PaliGemma detections are suppressed.",
                            low=0.0, high=1.0)
    labels_rate_hz: float = _param(
        0.0, "Maximum rate of zero-shot labeling per camera; 0 = every frame.",
        low=0.0, high=1000.0)
    detect_rate_hz: float = _param(0.0, "Maximum rate of detection per camera; 0 = every frame.",
                                   low=0.0, high=1000.0)
    language: str = _param("en", "PaliGemma prompt language code.")
    max_new_tokens: int = _param(32, "PaliGemma generation budget per answer.", low=1, high=512)
    # Tracking
    track_iou: float = _param(0.3, "Least IoU between a detection and a track's predicted box.",
                              low=0.01, high=1.0)
    track_max_missed: int = _param(5,
                                   "Detection runs a track may go unmatched before it is deleted.",
                                   low=0, high=1000)
    track_min_hits: int = _param(1,
                                 "Consecutive detections a new track needs before it gets an id.",
                                 low=1, high=100)
    # Object memory
    memory_enabled: bool = _param(False,
                                  "Keep an object memory of 3D detections, queried by phrase.",
                                  read_only=True)
    memory_path: str = _param("", "SQLite file of the object memory; empty keeps it in RAM only.",
                              read_only=True)
    memory_frame: str = _param("", "Fixed frame of the object memory; empty uses target_frame.",
                               read_only=True)
    memory_gate_sigma: float = _param(
        3.0, "Most standard deviations between a detection and its object.",
        low=0.5, high=20.0)
    memory_gate_floor_m: float = _param(0.1, "Least position uncertainty (m) an object keeps.",
                                        low=0.0, high=5.0)
    memory_depth_noise: float = _param(0.005, "Depth noise (m) per square metre of range.",
                                       low=0.0, high=1.0)
    memory_embedding_threshold: float = _param(
        0.85, "Least embedding cosine for another phrase to join.",
        low=-1.0, high=1.0)
    memory_confirm_observations: int = _param(2,
                                              "Detections an object needs before it is confirmed.",
                                              low=1, high=100)
    memory_gone_views: int = _param(
        4, "Views of an object's place in a row, undetected, before it is gone.",
        low=1, high=1000)
    memory_max_range_m: float = _param(
        5.0, "Farthest range at which an undetected object counts as unseen.",
        low=0.1, high=100.0)
    # ROS node (read only: fixed when the node starts; list defaults stay non-empty, as ROS cannot
    # type [])
    cameras: List[str] = _param(["camera"],
                                "Camera names; several put each camera's topics under its name.",
                                read_only=True, launch=True)
    image_transport: str = _param(
        "raw", "Image subscription: raw (Image) or compressed (CompressedImage).",
        choices=IMAGE_TRANSPORTS, read_only=True, launch=True)
    use_depth: bool = _param(False,
                             "Subscribe depth and camera_info too and publish detections_3d.",
                             read_only=True, launch=True)
    depth_tolerance_s: float = _param(0.05,
                                      "Largest stamp difference between an image and its depth.",
                                      low=0.0, high=10.0)
    target_frame: str = _param("",
                               "Frame of detections_3d and markers; empty = the camera's frame.",
                               read_only=True, launch=True)
    transform_timeout_s: float = _param(0.05, "Longest wait for the transform to target_frame.",
                                        low=0.0, high=5.0)
    qos_reliability: str = _param("best_effort", "Camera subscription reliability (keep last 1).",
                                  choices=RELIABILITIES, read_only=True)
    max_batch: int = _param(4, "Most frames (one per camera) processed in one model call.",
                            low=1, high=64)
    max_image_pixels: int = _param(DEFAULT_MAX_IMAGE_PIXELS,
                                   "Largest image (width x height) decoded; larger ones are "
                                   "refused.",
                                   low=1, high=2**31 - 1)
    diagnostics_period_s: float = _param(1.0, "Period of the /diagnostics report.",
                                         low=0.1, high=60.0, read_only=True)
    autostart: bool = _param(True, "Configure and activate the lifecycle node at start-up.",
                             read_only=True)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            expected = type(f.default) if f.default is not dataclasses.MISSING else list
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                value = float(value)
            if expected is list:
                if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise ConfigError(f"{f.name} must be a list of strings, got {value!r}")
                object.__setattr__(self, f.name, [v.strip() for v in value])
                value = getattr(self, f.name)
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(f"{f.name} must be {expected.__name__}, got "
                                  f"{type(value).__name__} {value!r}")
            lo_hi = f.metadata.get("range")
            if lo_hi and not (lo_hi[0] <= value <= lo_hi[1]):
                raise ConfigError(f"{f.name}={value} is outside [{lo_hi[0]}, {lo_hi[1]}]")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"{f.name}={value!r} is not one of {', '.join(choices)}")
        for name in ("labels", "detect_phrases"):
            check_phrases(getattr(self, name), name, allow_empty=(name == "detect_phrases"))
        check_camera_names(self.cameras)
        if not self.prompt_templates or any("{}" not in t for t in self.prompt_templates):
            raise ConfigError("prompt_templates must be non-empty and each must contain '{}'")
        for name in ("target_frame", "memory_frame"):
            value = getattr(self, name)
            if value != value.strip() or " " in value:
                raise ConfigError(f"{name}={value!r} must be a frame id without spaces")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ConfigError(f"device={self.device!r} must be auto, cpu or cuda[:N]")

    def replace(self, **changes: Any) -> "PerceptionConfig":
        """Return a validated copy with ``changes``; raises :class:`ConfigError` and leaves
        ``self`` as is."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "PerceptionConfig":
        """Build from a mapping (e.g. the ``ros__parameters`` of a YAML file); unknown keys are
        errors."""
        return cls().replace(**values)

    @staticmethod
    def describe() -> Dict[str, Dict[str, Any]]:
        """Field name → {default, description, range?, choices?}: what the node declares as
        parameters."""
        out = {}
        for f in dataclasses.fields(PerceptionConfig):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out[f.name] = {"default": default, **f.metadata}
        return out


def check_camera_names(cameras) -> List[str]:
    """Validate camera names: at least one, unique, each a ROS name token (letters, digits,
    '_')."""
    if not cameras:
        raise ConfigError("cameras must name at least one camera")
    for name in cameras:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise ConfigError(f"camera name {name!r} must start with a letter and hold only "
                              "letters, digits and '_'")
    dupes = sorted({c for c in cameras if cameras.count(c) > 1})
    if dupes:
        raise ConfigError(f"cameras has duplicates: {', '.join(dupes)}")
    return list(cameras)


def split_phrases(text: str) -> List[str]:
    """A phrase list typed as one string, the rule of every command: ``;`` separates phrases;
    without any ``;``, commas do. So ``"red mug, person"`` and ``"red mug ; person"`` are two
    phrases, and a phrase may hold a comma when ``;`` separates: ``"cup, upside down ; door"``.
    Surrounding spaces and empty entries are dropped."""
    return [p.strip() for p in text.split(";" if ";" in text else ",") if p.strip()]


def check_phrases(phrases, what: str = "phrases", *, allow_empty: bool = False) -> List[str]:
    """Validate a list of phrases (non-empty strings, no duplicates, bounded size); return it
    stripped."""
    cleaned = [p.strip() for p in phrases]
    if not cleaned and not allow_empty:
        raise ConfigError(f"{what} must not be empty")
    if len(cleaned) > MAX_PHRASES:
        raise ConfigError(f"{what} has {len(cleaned)} entries; at most {MAX_PHRASES} are allowed")
    for p in cleaned:
        if not p:
            raise ConfigError(f"{what} contains an empty phrase")
        if len(p) > MAX_PHRASE_CHARS:
            raise ConfigError(f"{what} has a phrase of {len(p)} characters; at most "
                              f"{MAX_PHRASE_CHARS} are allowed")
        if not any(c.isalnum() for c in p):
            raise ConfigError(f"{what} has {p!r}, which is not a phrase: a phrase needs a letter "
                              "or digit")
    dupes = sorted({p for p in cleaned if cleaned.count(p) > 1})
    if dupes:
        raise ConfigError(f"{what} has duplicates: {', '.join(dupes)}")
    return cleaned
