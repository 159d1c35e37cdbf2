#!/usr/bin/env python3
"""Train the embedded default CLIP: see :mod:`ros_mm_perception.synthetic.train_clip` (``--help``)."""

from ros_mm_perception.synthetic.train_clip import main

if __name__ == "__main__":
    raise SystemExit(main())
