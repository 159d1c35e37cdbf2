"""What every offline frame source yields, and the protocol the sources follow.

Every source yields one :class:`InputFrame` per input image, in input order: either a decoded
:class:`~ros_mm_perception.core.results.Frame` or the reason it could not be read (a corrupt
message or file), so the caller can count and skip it. ``len(source)`` is the expected number of
input images (for progress bars).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Protocol

from ros_mm_perception.core.results import Frame

DEFAULT_NAMESPACE = "/camera"
"""Output namespace of inputs that have no topics (image folders, videos)."""


@dataclass
class InputFrame:
    """One input image: the decoded frame, or ``error`` saying why it was skipped."""

    index: int
    """Position among the input images (0-based, skipped ones included)."""
    name: str
    """Where it came from: a file path relative to the input, ``video.mp4#12`` or ``/topic#12``."""
    namespace: str
    """Output topic namespace, e.g. ``/camera`` → ``/camera/detections``."""
    log_time_ns: int
    """Recording time in a bag; the frame's stamp for folders and videos."""
    frame: Optional[Frame] = None
    error: str = ""


def camera_name(namespace: str) -> str:
    """The pipeline's camera key for an output namespace (``/front/color`` → ``front/color``)."""
    return namespace.strip("/") or DEFAULT_NAMESPACE.strip("/")


class FrameSource(Protocol):
    """A recording, folder or video read as :class:`InputFrame` items (see the module docstring).

    ``paths`` are the files it reads (no output may be written to them). A source may also count
    ``aux_skipped`` (unusable depth/camera_info), ``lost`` (images known to be in the input that
    could not be read) and list ``damaged`` (one line per damaged part); the runner reports them.
    """

    paths: List[Path]

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[InputFrame]: ...

    def close(self) -> None: ...
