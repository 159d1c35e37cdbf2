"""``python -m ros_mm_perception`` runs the command line (Ctrl-C while it starts prints no
traceback)."""

import sys

if __name__ == "__main__":
    try:
        from ros_mm_perception.cli import main
    except KeyboardInterrupt:
        print("ros-mm-perception: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(main())
