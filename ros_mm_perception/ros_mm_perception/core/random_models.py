"""Models with random weights built from real configs, saved and loaded through the real loaders.

Tests use tiny configs; the benchmark uses real-size ones (compute does not depend on weight values).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch

TINY_CLIP_CONFIG: Dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def build_random_clip(directory, model_cfg: Optional[Dict[str, Any]] = None, *, seed: int = 0) -> Path:
    """Create an open_clip CLIP from ``model_cfg`` (default: tiny) with random weights in ``directory``.

    ``model_cfg`` may also be the name of a built-in open_clip architecture (e.g. ``"ViT-B-16"``).
    """
    import open_clip

    from ros_mm_perception.core.clip_model import save_clip

    if isinstance(model_cfg, str):
        model_cfg = open_clip.get_model_config(model_cfg)
    model_cfg = model_cfg or TINY_CLIP_CONFIG
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    return save_clip(model, model_cfg, directory)
