"""The embedded models shipped as package data: the default CLIP and the OWL detector."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

from ros_mm_perception.core.errors import ModelNotFoundError

EMBEDDED_CLIP_DIR = Path(__file__).resolve().parents[2] / "data" / "embedded_clip"
EMBEDDED_OWL_DIR = Path(__file__).resolve().parents[2] / "data" / "embedded_owl"
EMBEDDED_SAM_DIR = Path(__file__).resolve().parents[2] / "data" / "embedded_sam"


def embedded_clip_dir() -> Path:
    """Folder of the embedded model (open_clip format); a clear error if the package lacks it."""
    if not (EMBEDDED_CLIP_DIR / "open_clip_config.json").is_file():
        raise ModelNotFoundError(
            f"the embedded CLIP model is missing from {EMBEDDED_CLIP_DIR}; reinstall the package "
            "or retrain it with `python scripts/train_embedded_clip.py`, or name another CLIP "
            "model (command line: --clip-model/--clip-pretrained; ROS node: the "
            "clip_model/clip_pretrained parameters)"
        )
    return EMBEDDED_CLIP_DIR


FILLER_WORDS = ("a", "an", "the", "of", "photo", "shape")


def phrases_outside_world(phrases: Sequence[str], model_dir=EMBEDDED_CLIP_DIR) -> List[str]:
    """The phrases a model folder's world does not cover (each once): any word that is not one of
    its colours or shapes.

    The world (``{"colours": [...], "shapes": [...]}``) comes from the folder's ``training.json``;
    a folder without one has no known world, and nothing is reported.
    """
    info = Path(model_dir) / "training.json"
    world = json.loads(info.read_text()).get("world") if info.is_file() else None
    if not world:
        return []
    words = {w.lower() for w in [*world["colours"], *world["shapes"]]} | set(FILLER_WORDS)
    return [p
            # each once: labels and detect phrases often share some
            for p in dict.fromkeys(phrases)
            if not set(p.lower().replace(",", " ").replace(".", " ").split()) <= words]


def outside_world_message(phrases: Sequence[str], option: str) -> Optional[str]:
    """One line saying which ``phrases`` the embedded model cannot know and how to select a real
    model, or None.

    ``option`` names the setting that selects another CLIP model (``--clip-model``, the
    ``clip_model`` parameter).
    """
    outside = phrases_outside_world(phrases)
    if not outside:
        return None
    world = json.loads((EMBEDDED_CLIP_DIR / "training.json").read_text())["world"]
    return (f"the embedded CLIP model knows only coloured shapes ({', '.join(world['colours'])} x "
            f"{', '.join(world['shapes'])}); outside its world: {', '.join(outside)}. Its scores "
            f"for these mean nothing: select a real CLIP model with {option}")
