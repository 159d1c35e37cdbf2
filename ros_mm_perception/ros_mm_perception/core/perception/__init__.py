"""Perception: the pipeline, grounding sources, the labeler, tracking, 3D geometry, the scheduler,
boxes.

Changes here follow what planners need from the outputs. May import the core's root,
:mod:`..imaging`, :mod:`..models` and this group.
"""
