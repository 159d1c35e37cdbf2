#!/usr/bin/env python3
"""Train the embedded OWL detector: see :mod:`ros_mm_perception.synthetic.train_owl` (``--help``)."""

from ros_mm_perception.synthetic.train_owl import main

if __name__ == "__main__":
    raise SystemExit(main())
