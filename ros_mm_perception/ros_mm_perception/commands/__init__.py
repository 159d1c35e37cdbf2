"""Subcommands of ``ros-mm-perception``; each module has ``add_parser(subparsers)``."""
