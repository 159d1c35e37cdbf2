"""Drawing results on frames (OpenCV): boxes, phrases, scores and track ids; contact sheets.

Shared by the node's debug images and the offline outputs, so a box looks the same in both.
"""

from __future__ import annotations

import colorsys
import zlib
from typing import Sequence, Tuple

import numpy as np

from ros_mm_perception.core.results import FrameResult


def phrase_colour(phrase: str) -> Tuple[float, float, float]:
    """A stable, saturated RGB colour in [0, 1] for a phrase (the same in markers and debug
    images)."""
    hue = (zlib.crc32(phrase.encode("utf-8")) % 360) / 360.0
    return colorsys.hsv_to_rgb(hue, 0.85, 1.0)


def detection_text(phrase: str, score: float, track_id) -> str:
    """``red circle 0.87 #3`` (the track id only when tracked)."""
    return f"{phrase} {score:.2f}" + ("" if track_id is None else f" #{track_id}")


def annotate(image: np.ndarray, result: FrameResult) -> np.ndarray:
    """A copy of the RGB ``image`` with each detection's mask (tinted), box and ``phrase score
    #track``."""
    import cv2

    from ros_mm_perception.core.imaging.masks import overlay_masks

    out = np.ascontiguousarray(image).copy()
    if any(det.mask is not None for det in result.detections):
        out = overlay_masks(out, [det.mask for det in result.detections],
                            [[255 * c for c in phrase_colour(det.phrase)]
                             for det in result.detections])
    scale = max(out.shape[0], out.shape[1]) / 640.0
    # readable on small images too
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, 0.5 * scale)
    thickness = max(1, int(round(2 * scale)))
    for det in result.detections:
        colour = tuple(int(255 * c) for c in phrase_colour(det.phrase))
        x0, y0, x1, y1 = (int(round(v)) for v in det.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness)
        text = detection_text(det.phrase, det.score, det.track_id)
        (tw, th), base = cv2.getTextSize(text, font, font_scale, max(1, thickness // 2))
        ty = y0 - 2 if y0 - th - base - 2 >= 0 else min(y1 + th + base + 2, out.shape[0] - 1)
        tx = max(0, min(x0, out.shape[1] - tw - 4))  # keep the label inside the image
        cv2.rectangle(out, (tx, ty - th - base), (tx + tw + 4, ty + 2), colour, -1)
        cv2.putText(out, text, (tx + 2, ty - base + 2), font, font_scale, (0, 0, 0),
                    max(1, thickness // 2), cv2.LINE_AA)
    return out


def contact_sheet(tiles: Sequence[np.ndarray], captions: Sequence[str], columns: int = 4,
                  tile_width: int = 320) -> np.ndarray:
    """RGB images side by side in a grid, each scaled to ``tile_width`` with a caption bar above
    it.

    A tile with an empty caption leaves its cell blank.
    """
    import cv2

    if not tiles:
        raise ValueError("a contact sheet needs at least one image")
    bar = 22
    scaled = [cv2.resize(t, (tile_width, int(round(t.shape[0] * tile_width / t.shape[1]))),
                         interpolation=cv2.INTER_AREA) for t in tiles]
    cell_h = max(s.shape[0] for s in scaled) + bar
    columns = min(columns, len(scaled))
    rows = -(-len(scaled) // columns)
    gap = 4
    sheet = np.full((rows * (cell_h + gap) + gap, columns * (tile_width + gap) + gap, 3), 255,
                    np.uint8)
    for i, (tile, text) in enumerate(zip(scaled, captions)):
        if not text:  # an empty cell
            continue
        y, x = gap + (i // columns) * (cell_h + gap), gap + (i % columns) * (tile_width + gap)
        sheet[y:y + bar, x:x + tile_width] = 40
        cv2.putText(sheet, text, (x + 4, y + bar - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
        sheet[y + bar:y + bar + tile.shape[0], x:x + tile_width] = tile
    return sheet
