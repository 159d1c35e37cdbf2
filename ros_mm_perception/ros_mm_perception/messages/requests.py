"""Bounds on every field of a service request, checked before any model runs (ROS-free).

An image above ``max_image_pixels`` (from its ``width`` and ``height``, before its data is looked
at), more phrases or labels than a config may hold, a phrase or label longer than
:data:`~ros_mm_perception.core.config.MAX_PHRASE_CHARS`, a question longer than
:data:`MAX_QUESTION_CHARS`, a NaN score threshold: each is a :class:`UserError` the service answers
with ``success: false``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from ros_mm_perception.core.config import MAX_PHRASES, check_phrases
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.imaging.image_codec import check_pixels

MAX_QUESTION_CHARS = 1000
"""Longest question AskQuestion takes (PaliGemma reads a few hundred tokens of prompt at most)."""
MAX_TOP_K = MAX_PHRASES


def check_request(max_image_pixels: int, image=None, phrases: Optional[Sequence[str]] = None,
                  labels: Optional[Sequence[str]] = None, question: Optional[str] = None,
                  score_threshold: Optional[float] = None, top_k: Optional[int] = None) -> None:
    """Raise :class:`UserError` for the first request field out of bounds; fields left None are
    not in the request."""
    if image is not None and int(image.height) > 0:
        check_pixels(int(image.width), int(image.height), max_image_pixels, "request image")
    if phrases:
        check_phrases(list(phrases), "phrases")
    if labels:
        check_phrases(list(labels), "labels")
    if question is not None and len(question) > MAX_QUESTION_CHARS:
        raise UserError(f"question has {len(question)} characters; at most {MAX_QUESTION_CHARS} "
                        "are allowed")
    if score_threshold is not None and (math.isnan(score_threshold) or score_threshold > 1.0):
        raise UserError(f"score_threshold must be in [0, 1] (negative: the node's own), "
                        f"got {score_threshold}")
    if top_k is not None and not 0 <= int(top_k) <= MAX_TOP_K:
        raise UserError(f"top_k must be 0 (the node's own) to {MAX_TOP_K}, got {top_k}")
