"""Labeling many recordings at once on Ray: one model copy per worker, outputs exactly once.

:mod:`.inputs` expands the command line into recordings, :mod:`.worker` is the Ray actor that
labels them, :mod:`.merge` joins the windows of a split recording, :mod:`.staging` makes each
recording's outputs appear in one rename, and :mod:`.engine` schedules, retries and reports.
"""
