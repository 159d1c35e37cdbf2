#!/usr/bin/env python3
"""Train the embedded box-prompted mask model: see :mod:`training.train_sam` (``--help``)."""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the checkout's training package

from training.train_sam import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
