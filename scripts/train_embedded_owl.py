#!/usr/bin/env python3
"""Train the embedded OWL detector: see :mod:`training.train_owl` (``--help``)."""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the checkout's training package

from training.train_owl import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
