"""The one home of every default: :class:`PerceptionConfig`.

The ROS node declares one parameter per field (with the description and range kept in the field
metadata), ``config/perception.yaml`` mirrors these defaults, launch files override them, and the
command line builds the same dataclass. :meth:`PerceptionConfig.replace` validates a change before
it takes effect, so a bad ``ros2 param set`` is rejected with a reason and the old values are kept.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List

from ros_mm_perception.core.errors import UserError

MAX_PHRASES = 256
MAX_PHRASE_CHARS = 200

GROUNDING_SOURCES = ("auto", "owl", "paligemma", "clip", "off")
IMAGE_TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("best_effort", "reliable")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
FAST_PATHS = ("auto", "off", "static", "graph", "compile")
CLIP_FAST_PATHS = FAST_PATHS + ("freeze",)
CROP_MODES = ("letterbox", "center")


class ConfigError(UserError, ValueError):
    """A configuration value was rejected; the message says which and why."""


def _param(default, description: str, *, low=None, high=None, choices=None, read_only=False):
    meta = {"description": description}
    if read_only:
        meta["read_only"] = True
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
    device: str = _param("auto", "Compute device: auto (CUDA when available), cpu or cuda[:N].", read_only=True)
    precision: str = _param("auto", "Model precision: auto (fp16/bf16 on CUDA; on the CPU bf16 where it has AMX or "
                            "AVX-512 BF16 and the model is wide enough to gain, else fp32), fp32, fp16, bf16.",
                            choices=PRECISIONS, read_only=True)
    clip_model: str = _param("", "open_clip model name; empty uses the embedded default model.", read_only=True)
    clip_pretrained: str = _param("", "open_clip pretrained tag (hub cache) or a local checkpoint path.",
                                  read_only=True)
    paligemma_model: str = _param("", "PaliGemma model id (hub cache) or local directory; empty disables PaliGemma.",
                                  read_only=True)
    owl_model: str = _param("", "OWLv2 / OWL-ViT model id (hub cache), local directory, or 'embedded' (the detector "
                            "shipped in the package); empty disables OWL.", read_only=True)
    clip_fast_path: str = _param("auto", "CLIP image encoding: auto (graph on CUDA, freeze on CPU), off, static (fixed "
                                 "batch buckets), graph (+ CUDA graphs), compile (+ torch.compile) or freeze "
                                 "(+ frozen TorchScript with oneDNN fusion, for the CPU).",
                                 choices=CLIP_FAST_PATHS, read_only=True)
    paligemma_fast_path: str = _param("auto", "PaliGemma generation: auto (graph on CUDA, off on CPU), off "
                                      "(transformers generate), static (static KV cache, fixed shapes), graph "
                                      "(+ CUDA graphs) or compile (+ torch.compile).", choices=FAST_PATHS,
                                      read_only=True)
    owl_fast_path: str = _param("auto", "OWL image encoding: auto (graph on CUDA, off on CPU), off, static (fixed "
                                "batch buckets), graph (+ CUDA graphs) or compile (+ torch.compile).",
                                choices=FAST_PATHS, read_only=True)
    # Vocabulary and prompts
    labels: List[str] = _param(["person", "chair", "door", "cup"],
                               "Whole-frame zero-shot vocabulary (phrases).")
    prompt_templates: List[str] = _param(["a photo of {}."],
                                         "CLIP prompt templates; '{}' is replaced by each phrase.")
    detect_phrases: List[str] = _param(["person", "cup"], "Phrases to ground as detections.")
    # Behaviour
    enable_labels: bool = _param(True, "Publish whole-frame zero-shot labels.")
    crop_mode: str = _param("letterbox", "How CLIP sees a frame or box: letterbox (all of it, padded to a square "
                            "with the model's mean colour) or center (open_clip's centre square; drops a 4:3 "
                            "frame's side bands).", choices=CROP_MODES)
    label_tiles: int = _param(3, "Whole-frame labels also look at squares as tall as the frame and at overlapping "
                              "square tiles, this many down the frame's short side (3: a 4 x 3 grid on a 4:3 "
                              "frame, 15 views with the frame and its two squares), each view weighted by how sure "
                              "it is, so an object too small to tell in the whole frame is labelled from the view "
                              "that sees it; 0 = the frame alone (one CLIP image per frame, fastest).",
                              low=0, high=8)
    grounding_source: str = _param("auto", "Detection source: auto (OWL when configured, else PaliGemma when "
                                   "configured, else CLIP), owl, paligemma, clip, or off.", choices=GROUNDING_SOURCES)
    top_k: int = _param(5, "How many labels to publish per frame.", low=1, high=MAX_PHRASES)
    score_threshold: float = _param(0.5, "Minimum detection score in [0, 1] (0.5: the phrase holds most of the "
                                    "box's probability).", low=0.0, high=1.0)
    owl_score_threshold: float = _param(0.3, "Minimum score of OWL detections in [0, 1] (OWL's per-query sigmoid "
                                        "scores run lower than the CLIP-based scores).", low=0.0, high=1.0)
    nms_iou: float = _param(0.5, "IoU above which same-phrase PaliGemma detections are suppressed (CLIP-only "
                            "grounding publishes one box per group of overlapping same-phrase boxes).",
                            low=0.0, high=1.0)
    labels_rate_hz: float = _param(0.0, "Maximum rate of zero-shot labeling per camera; 0 = every frame.",
                                   low=0.0, high=1000.0)
    detect_rate_hz: float = _param(0.0, "Maximum rate of detection per camera; 0 = every frame.",
                                   low=0.0, high=1000.0)
    language: str = _param("en", "PaliGemma prompt language code.")
    max_new_tokens: int = _param(32, "PaliGemma generation budget per answer.", low=1, high=512)
    # Tracking
    track_iou: float = _param(0.3, "Least IoU between a detection and a track's predicted box to continue the "
                              "track.", low=0.01, high=1.0)
    track_max_missed: int = _param(5, "Detection runs a track may go unmatched before it is deleted.",
                                   low=0, high=1000)
    track_min_hits: int = _param(1, "Consecutive detections a new track needs before it gets an id (1 = at once).",
                                 low=1, high=100)
    # ROS node (read only: fixed when the node starts; list defaults stay non-empty, as ROS cannot type [])
    cameras: List[str] = _param(["camera"], "Camera names. One camera uses the topics image, depth, camera_info, "
                                "detections, ...; several use <camera>/image, <camera>/detections, ...",
                                read_only=True)
    image_transport: str = _param("raw", "raw subscribes sensor_msgs/Image on image; compressed subscribes "
                                  "sensor_msgs/CompressedImage on image/compressed.", choices=IMAGE_TRANSPORTS,
                                  read_only=True)
    use_depth: bool = _param(False, "Subscribe depth and camera_info too and publish detections_3d.", read_only=True)
    depth_tolerance_s: float = _param(0.05, "Largest stamp difference between an image and the depth paired with it.",
                                      low=0.0, high=10.0)
    target_frame: str = _param("", "Frame of detections_3d and markers (e.g. base_link, odom, map), transformed "
                               "with tf at each image's stamp; empty = the camera's frame.", read_only=True)
    transform_timeout_s: float = _param(0.05, "Longest wait for the transform to target_frame at an image's stamp; "
                                        "without it that frame's 3D outputs are not published.", low=0.0, high=5.0)
    qos_reliability: str = _param("best_effort", "Camera subscription reliability (keep last 1): best_effort "
                                  "or reliable.", choices=RELIABILITIES, read_only=True)
    max_batch: int = _param(4, "Most frames (one per camera) processed in one model call.", low=1, high=64)
    diagnostics_period_s: float = _param(1.0, "Period of the /diagnostics report.", low=0.1, high=60.0,
                                         read_only=True)
    autostart: bool = _param(True, "Configure and activate the lifecycle node at start-up.", read_only=True)

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
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{f.name} must be a list of strings, got {value!r}")
                object.__setattr__(self, f.name, [v.strip() for v in value])
                value = getattr(self, f.name)
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(f"{f.name} must be {expected.__name__}, got {type(value).__name__} {value!r}")
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
        if self.target_frame != self.target_frame.strip() or " " in self.target_frame:
            raise ConfigError(f"target_frame={self.target_frame!r} must be a frame id without spaces")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ConfigError(f"device={self.device!r} must be auto, cpu or cuda[:N]")

    def replace(self, **changes: Any) -> "PerceptionConfig":
        """Return a validated copy with ``changes``; raises :class:`ConfigError` and leaves ``self`` as is."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "PerceptionConfig":
        """Build from a mapping (e.g. the ``ros__parameters`` of a YAML file); unknown keys are errors."""
        return cls().replace(**values)

    @staticmethod
    def describe() -> Dict[str, Dict[str, Any]]:
        """Field name → {default, description, range?, choices?}: what the node declares as parameters."""
        out = {}
        for f in dataclasses.fields(PerceptionConfig):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out[f.name] = {"default": default, **f.metadata}
        return out


def check_camera_names(cameras) -> List[str]:
    """Validate camera names: at least one, unique, each a ROS name token (letters, digits, '_')."""
    if not cameras:
        raise ConfigError("cameras must name at least one camera")
    for name in cameras:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise ConfigError(f"camera name {name!r} must start with a letter and hold only letters, digits and '_'")
    dupes = sorted({c for c in cameras if cameras.count(c) > 1})
    if dupes:
        raise ConfigError(f"cameras has duplicates: {', '.join(dupes)}")
    return list(cameras)


def split_phrases(text: str) -> List[str]:
    """A phrase list typed as one string, the rule of every command: ``;`` separates phrases; without
    any ``;``, commas do. So ``"red mug, person"`` and ``"red mug ; person"`` are two phrases, and a
    phrase may hold a comma when ``;`` separates: ``"cup, upside down ; door"``. Surrounding spaces and
    empty entries are dropped."""
    return [p.strip() for p in text.split(";" if ";" in text else ",") if p.strip()]


def check_phrases(phrases, what: str = "phrases", *, allow_empty: bool = False) -> List[str]:
    """Validate a list of phrases (non-empty strings, no duplicates, bounded size); return it stripped."""
    cleaned = [p.strip() for p in phrases]
    if not cleaned and not allow_empty:
        raise ConfigError(f"{what} must not be empty")
    if len(cleaned) > MAX_PHRASES:
        raise ConfigError(f"{what} has {len(cleaned)} entries; at most {MAX_PHRASES} are allowed")
    for p in cleaned:
        if not p:
            raise ConfigError(f"{what} contains an empty phrase")
        if len(p) > MAX_PHRASE_CHARS:
            raise ConfigError(f"{what} has a phrase of {len(p)} characters; at most {MAX_PHRASE_CHARS} are allowed")
    dupes = sorted({p for p in cleaned if cleaned.count(p) > 1})
    if dupes:
        raise ConfigError(f"{what} has duplicates: {', '.join(dupes)}")
    return cleaned
