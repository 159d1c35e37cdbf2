"""Steps shared by the engines that load transformers checkpoints (PaliGemma, OWL): telling a path
from a hub id, reading and checking the config, shortening a library error to one line, and
building the network on its device."""

from __future__ import annotations

from pathlib import Path
from typing import Collection, Tuple

import torch

from ros_mm_perception.core.errors import ModelNotFoundError, UserError


def is_path(model: str) -> bool:
    """Whether ``model`` names a folder rather than a hub id (``owner/name``)."""
    return (
        model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or model.endswith("\\")
    )


def checkpoint_source(model: str, path: Path, family: str, alternatives: str) -> Tuple[str, bool]:
    """(what transformers loads, whether it is a local folder) for ``model``, found at ``path``.

    A path-like ``model`` whose folder does not exist is a :class:`ModelNotFoundError` that offers
    ``alternatives`` (e.g. ``" or a hub id such as owner/name"``).
    """
    local = path.exists()
    if not local and is_path(model):
        raise ModelNotFoundError(f"{family} model folder {model!r} does not exist; pass an "
                                 f"existing folder{alternatives}")
    return (str(path) if local else model), local


def checked_config(source: str, model: str, model_types: Collection[str], family: str):
    """The transformers config of ``source``; a :class:`UserError` unless its model type is one of
    ``model_types``."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source)
    if config.model_type not in model_types:
        raise UserError(f"{model} is a {config.model_type!r} model, not {family}")
    return config


def error_reason(err: Exception) -> str:
    """``Type: first line of the message`` (at most 200 characters), for one-line errors."""
    return (
        f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        if str(err)
        else type(err).__name__
    )


def build_network(net_cls, source: str, config, dtype: torch.dtype, device: torch.device,
                  random_weights: bool):
    """``net_cls`` from ``source`` (or its ``config`` with random weights), on ``device``, in eval
    mode, frozen."""
    if random_weights:
        with torch.device(device):
            net = net_cls._from_config(config, dtype=dtype)
    else:
        net = net_cls.from_pretrained(source, dtype=dtype)
    return net.to(device).eval().requires_grad_(False)
