"""The memory's text side: which CLIP made its crop embeddings, and that CLIP's text encoder.

A memory file records the CLIP model and prompt templates of its embeddings
(:func:`embedding_model_id`), so a query years later encodes phrases in the same space:
:func:`load_text_encoder` loads that model, :func:`labeler_text_encoder` reuses a running one.
"""

from __future__ import annotations

import json
from typing import Tuple

import torch

from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.memory.objects import TextEncoder
from ros_mm_perception.core.perception.labeler import ClipLabeler


def embedding_model_id(config: PerceptionConfig) -> str:
    """The CLIP model, checkpoint and prompt templates of ``config`` as one string (JSON)."""
    return json.dumps({"clip_model": config.clip_model, "clip_pretrained": config.clip_pretrained,
                       "prompt_templates": list(config.prompt_templates)}, sort_keys=True)


def labeler_text_encoder(labeler: ClipLabeler) -> Tuple[TextEncoder, float]:
    """``(encode, logit_scale)`` of a running labeler (its text cache is shared)."""

    def encode(phrases):
        return labeler.encode_text(list(phrases)).float().cpu().numpy()

    with torch.inference_mode():
        scale = float(labeler.clip.model.logit_scale.exp())
    return encode, scale


def load_text_encoder(model_id: str, device: str = "cpu") -> Tuple[TextEncoder, float]:
    """``(encode, logit_scale)`` of the CLIP that :func:`embedding_model_id` named."""
    from ros_mm_perception.core.models.clip_model import load_clip

    try:
        spec = json.loads(model_id)
        name, pretrained = spec["clip_model"], spec["clip_pretrained"]
        templates = spec["prompt_templates"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"the memory names no CLIP model for its embeddings ({model_id!r})") \
            from None
    clip = load_clip(name, pretrained, device, "fp32")
    return labeler_text_encoder(ClipLabeler(clip, (), templates))
