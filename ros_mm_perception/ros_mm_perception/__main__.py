"""``python -m ros_mm_perception`` runs the command line."""

from ros_mm_perception.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
