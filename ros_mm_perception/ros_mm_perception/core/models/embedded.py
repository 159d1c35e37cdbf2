"""The embedded models shipped as package data: the default CLIP and the OWL detector."""

from __future__ import annotations

from pathlib import Path

from ros_mm_perception.core.errors import ModelNotFoundError

EMBEDDED_CLIP_DIR = Path(__file__).resolve().parents[2] / "data" / "embedded_clip"
EMBEDDED_OWL_DIR = Path(__file__).resolve().parents[2] / "data" / "embedded_owl"


def embedded_clip_dir() -> Path:
    """Folder of the embedded model (open_clip format); a clear error if the package lacks it."""
    if not (EMBEDDED_CLIP_DIR / "open_clip_config.json").is_file():
        raise ModelNotFoundError(
            f"the embedded CLIP model is missing from {EMBEDDED_CLIP_DIR}; reinstall the package or "
            "retrain it with `python scripts/train_embedded_clip.py`, or name another CLIP model "
            "(command line: --model/--pretrained; ROS node: the clip_model/clip_pretrained parameters)"
        )
    return EMBEDDED_CLIP_DIR
