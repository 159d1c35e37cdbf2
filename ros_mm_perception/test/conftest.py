"""Shared fixtures: tiny models with random weights, saved and loaded through the real loaders."""

import logging
import os
import sys
from pathlib import Path

# Tests never reach a model hub: fail fast instead of retrying the network (read at import time).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The embedded models' training lives outside the installed package, in the checkout's training/.
sys.path.append(str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny open_clip model folder (random weights) written by the package's own saver."""
    from ros_mm_perception.core.models.random_models import build_random_clip

    return build_random_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_dir):
    """The tiny CLIP loaded through :func:`load_clip` on the CPU in fp32."""
    from ros_mm_perception.core.models.clip_model import load_clip

    return load_clip(str(tiny_clip_dir), device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def tiny_paligemma_dir(tmp_path_factory):
    """A tiny PaliGemma folder (random weights, small custom tokenizer) written by
    ``save_pretrained``."""
    from ros_mm_perception.core.models.random_models import build_random_paligemma

    return build_random_paligemma(tmp_path_factory.mktemp("tiny_paligemma"))


@pytest.fixture(autouse=True)
def package_logs_propagate():
    """Let caplog see the package's log records under a sourced ROS 2 too.

    ROS 2's launch (imported by its pytest plugin, as in ``colcon test``) makes every logger
    created after it non-propagating, so records would never reach pytest's handler on the root
    logger.
    """
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.split(".")[0] == "ros_mm_perception" and isinstance(logger, logging.Logger):
            logger.propagate = True


@pytest.fixture
def rng():
    return np.random.default_rng(0)
