"""What the offline-tool tests share: small frames, camera intrinsics, and the options that run the
tools on the tiny random CLIP on the CPU with CLIP-only grounding."""

from typing import List, Optional

import numpy as np

K = [60.0, 0.0, 32.0, 0.0, 60.0, 24.0, 0.0, 0.0, 1.0]
"""Intrinsics of the 64x48 test frames."""


def noise_images(n: int, seed: int = 0) -> List[np.ndarray]:
    """``n`` 64x48 frames of uniform noise."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


def rendered_images(n: int, seed: int = 0) -> List[np.ndarray]:
    """``n`` 64x48 frames of two coloured shapes moving smoothly."""
    from ros_mm_perception.synthetic.scenes import render_sequence

    return [s.image for s in render_sequence(seed, n, n_objects=2, size=(48, 64))]


def tiny_clip_options(clip_dir, detect: str, labels: str,
                      threshold: Optional[float] = None) -> List[str]:
    """``bag`` / ``fleet`` options for the tiny CLIP in ``clip_dir``, CPU, fp32, CLIP-only
    grounding."""
    options = ["--clip-model", str(clip_dir), "--device", "cpu", "--precision", "fp32",
               "--grounding-source", "clip", "--detect-phrases", detect, "--labels", labels,
               "--no-progress"]
    return options + (["--score-threshold", str(threshold)] if threshold is not None else [])
