#!/usr/bin/env python3
"""Train the embedded default CLIP: see :mod:`training.train_clip` (``--help``)."""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the checkout's training package

from training.train_clip import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
