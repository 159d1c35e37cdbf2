"""The object memory: one record per physical object in a fixed frame, fused from 3D detections.

:mod:`.views` turns a frame's detections into observations with a position uncertainty and tells
whether a remembered place was in view and not hidden; :mod:`.objects` holds the records
(association, fusion, negative evidence) and answers queries by phrase; :mod:`.store` keeps them in
SQLite. Changes here follow what planners ask of the world. May import the core's root,
:mod:`..imaging`, :mod:`..models`, :mod:`..perception` and this group.
"""
