"""Parse PaliGemma's location answers into boxes in original-image pixels.

PaliGemma answers ``detect a ; b`` with entries ``<locY0><locX0><locY1><locX1> label`` joined by
`` ; `` and ``segment a`` with the same entries plus 16 ``<segNNN>`` mask codebook tokens after the
four locations. Locations are on a 1024 grid of the model's square input. The processor stretches
the whole frame to that square (the aspect ratio is not kept), so each axis maps back on its own:
``x = X / 1024 * width`` and ``y = Y / 1024 * height``.

Malformed output never raises; an entry is skipped unless it has exactly four location tokens, each
on the grid (0..1023), then either no or exactly 16 segmentation tokens (each 0..127), then a
non-empty label, and a box of non-zero width and height. Reversed corners are put in order. Stray
text, unknown ``<...>`` tokens and empty answers yield no entries; good entries around bad ones are
kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Tuple

from ros_mm_perception.core.results import Box

LOC_GRID = 1024
"""Number of location bins per axis (``<loc0000>`` .. ``<loc1023>``)."""
SEG_TOKENS = 16
"""Number of ``<segNNN>`` tokens that describe one mask."""
SEG_CODEBOOK = 128
"""Number of mask codebook entries (``<seg000>`` .. ``<seg127>``)."""

_TOKENS = re.compile(r"<loc(\d{4})>|<seg(\d{3})>|(<[^<>]*>)|(;)|([^<;]+|<)")
_LOC, _SEG, _OTHER_TAG, _SEP, _TEXT = range(5)

Span = Tuple[int, int]


@dataclass(frozen=True)
class ParsedObject:
    """One well-formed entry of a PaliGemma location answer."""

    label: str
    """The entry's label with whitespace collapsed (as generated; not matched to any phrase)."""
    box: Box
    """``(x0, y0, x1, y1)`` in pixels of the original image."""
    grid: Tuple[int, int, int, int]
    """``(y0, x0, y1, x1)`` on the 1024 grid, corners in order."""
    seg_codes: Tuple[int, ...]
    """The 16 mask codebook indices, or ``()`` when the entry has none."""
    loc_span: Span
    """Character range of the four location tokens in the parsed text."""
    label_span: Span
    """Character range of the label in the parsed text."""


def _lex(text: str):
    for m in _TOKENS.finditer(text):
        kind = m.lastindex - 1
        yield kind, m.group(m.lastindex), m.start(), m.end()


def _run(tokens, i: int, kind: int):
    """Collect consecutive tokens of ``kind`` from ``i`` (whitespace between them allowed)."""
    run = []
    while i < len(tokens):
        k = tokens[i][0]
        if k == kind:
            run.append(tokens[i])
            i += 1
        elif (k == _TEXT and not tokens[i][1].strip() and i + 1 < len(tokens)
              and tokens[i + 1][0] == kind and run):
            i += 1
        else:
            break
    return run, i


def parse_detections(text: str, width: int, height: int) -> List[ParsedObject]:
    """Parse ``text`` (a decoded PaliGemma answer) for a ``width`` x ``height`` image.

    Returns the well-formed entries in the order they appear; see the module docstring for what is
    skipped. Only ``width``/``height`` that are not positive raise (``ValueError``).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not isinstance(text, str):
        return []
    tokens = list(_lex(text))
    out: List[ParsedObject] = []
    i = 0
    while i < len(tokens):
        if tokens[i][0] != _LOC:
            i += 1
            continue
        locs, i = _run(tokens, i, _LOC)
        segs, i = _run(tokens, i, _SEG)
        label_parts = []
        while i < len(tokens) and tokens[i][0] == _TEXT:
            label_parts.append(tokens[i])
            i += 1
        parsed = _entry(locs, segs, label_parts, width, height)
        if parsed is not None:
            out.append(parsed)
    return out


def _entry(locs, segs, label_parts, width: int, height: int):
    if len(locs) != 4 or len(segs) not in (0, SEG_TOKENS):
        return None
    values = [int(t[1]) for t in locs]
    codes = tuple(int(t[1]) for t in segs)
    if any(v >= LOC_GRID for v in values) or any(c >= SEG_CODEBOOK for c in codes):
        return None
    raw = "".join(t[1] for t in label_parts)
    label = " ".join(raw.split())
    if not label:
        return None
    y0, y1 = sorted(values[0::2])
    x0, x1 = sorted(values[1::2])
    if y0 == y1 or x0 == x1:
        return None
    start = label_parts[0][2] + (len(raw) - len(raw.lstrip()))
    end = label_parts[0][2] + len(raw.rstrip())
    box = (x0 / LOC_GRID * width, y0 / LOC_GRID * height, x1 / LOC_GRID * width,
           y1 / LOC_GRID * height)
    return ParsedObject(label=label, box=box, grid=(y0, x0, y1, x1), seg_codes=codes,
                        loc_span=(locs[0][2], locs[-1][3]), label_span=(start, end))
