"""Run the perception pipeline over every frame of an input and feed the results to outputs.

Nothing is dropped offline: each readable input image is processed (``pipeline.process``) and
handed to every output; an unreadable one is reported, counted in ``skipped`` and left out. The
outputs write to files staged in one :class:`~.atomic.OutputStaging`, committed all together after
the last frame; any exception, Ctrl-C or a run without any processable frame commits none of them.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Set, Tuple

from ros_mm_perception.core.errors import ImageFormatError
from ros_mm_perception.core.results import FrameResult
from ros_mm_perception.offline.atomic import OutputStaging
from ros_mm_perception.offline.input_frame import FrameSource, InputFrame


class Output(Protocol):
    """Where results go: ``add`` per processed frame, then ``finish`` (write what is left to its
    stream)."""

    def add(self, item: InputFrame, result: FrameResult) -> None: ...

    def finish(self) -> None: ...


@dataclass
class Summary:
    """Counts of one offline run. :meth:`as_json` is the ``--json`` object."""

    frames: int = 0
    detections: int = 0
    skipped: int = 0
    per_label: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    score_sums: Dict[str, float] = field(default_factory=dict)
    tracks: Dict[str, Set[Tuple[str, int]]] = field(default_factory=dict)
    aux_skipped: int = 0
    """Depth or camera_info messages that could not be used (their images were still processed)."""
    damaged: List[str] = field(default_factory=list)
    """What was damaged in the input (a cut-off file, a damaged chunk or page), one line each."""
    transforms_rejected: Dict[str, int] = field(default_factory=dict)
    """Transforms of /tf and /tf_static left out, per reason (read with a target frame only)."""
    outputs: List[Path] = field(default_factory=list)

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        self.detections += len(result.detections)
        for det in result.detections:
            self.per_label[det.phrase] += 1
            self.score_sums[det.phrase] = self.score_sums.get(det.phrase, 0.0) + float(det.score)
            if det.track_id is not None:
                self.tracks.setdefault(det.phrase, set()).add((result.camera, det.track_id))

    def as_json(self) -> Dict:
        return {"frames": self.frames, "detections": self.detections, "skipped": self.skipped,
                "per_label": dict(self.per_label), "seconds": round(self.seconds, 3),
                "damaged": list(self.damaged),
                "transforms_rejected": dict(self.transforms_rejected)}

    def rows(self) -> List[Tuple[str, int, int, float]]:
        """(phrase, detections, distinct tracks, mean score) per phrase, most detected first."""
        return [(p, n, len(self.tracks.get(p, ())), self.score_sums.get(p, 0.0) / n if n else 0.0)
                for p, n in sorted(self.per_label.items(), key=lambda kv: (-kv[1], kv[0]))]


def stderr_report(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def process_input(source: FrameSource, pipeline, outputs: Sequence[Output],
                  staging: OutputStaging, *, phrases: Sequence[str] = (),
                  progress: Optional[bool] = None,
                  report: Callable[[str], None] = stderr_report) -> Summary:
    """Process every frame of ``source`` with ``pipeline`` into ``outputs``; return the summary.

    ``outputs`` write to files of ``staging``: committed when at least one frame was processed
    (``summary.outputs`` lists them), aborted otherwise and on any exception. ``phrases`` start
    ``per_label`` at zero so absent phrases show up. ``progress=None`` shows the bar only when
    stderr is a terminal. The source is closed at the end.
    """
    from tqdm import tqdm

    summary = Summary(per_label=Counter({p: 0 for p in phrases}))
    start = time.perf_counter()
    bar = tqdm(total=len(source) or None, unit="frame", file=sys.stderr, desc="perception",
               disable=None if progress is None else not progress)
    try:
        for item in source:
            bar.update(1)
            result = None
            if not item.error:
                try:
                    result = pipeline.process(item.frame)
                except ImageFormatError as err:
                    item.error = str(err)
            if result is None:
                summary.skipped += 1
                report(f"skipped {item.name}: {item.error}")
                continue
            summary.add(result)
            for output in outputs:
                output.add(item, result)
        bar.close()
        summary.aux_skipped = getattr(source, "aux_skipped", 0)
        summary.skipped += getattr(source, "lost", 0)
        summary.damaged = list(getattr(source, "damaged", ()))
        summary.transforms_rejected = dict(getattr(source, "transforms_rejected", {}))
        summary.seconds = time.perf_counter() - start
        if summary.frames:
            for output in outputs:
                output.finish()
            summary.outputs = staging.commit()
        else:
            staging.abort()
    except BaseException:
        bar.close()
        staging.abort()
        raise
    finally:
        source.close()
    return summary
