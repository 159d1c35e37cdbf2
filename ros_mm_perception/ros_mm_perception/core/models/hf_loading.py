"""Steps shared by the engines that load transformers checkpoints (PaliGemma, OWL): telling a path
from a hub id, shortening a library error to one line, and building the network on its device."""

from __future__ import annotations

import torch


def is_path(model: str) -> bool:
    """Whether ``model`` names a folder rather than a hub id (``owner/name``)."""
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or model.endswith("\\")


def error_reason(err: Exception) -> str:
    """``Type: first line of the message`` (at most 200 characters), for one-line errors."""
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}" if str(err) else type(err).__name__


def build_network(net_cls, source: str, config, dtype: torch.dtype, device: torch.device, random_weights: bool):
    """``net_cls`` from ``source`` (or its ``config`` with random weights), on ``device``, in eval mode, frozen."""
    if random_weights:
        with torch.device(device):
            net = net_cls._from_config(config, dtype=dtype)
    else:
        net = net_cls.from_pretrained(source, dtype=dtype)
    return net.to(device).eval().requires_grad_(False)
