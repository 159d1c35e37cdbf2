"""The demo's contact sheet: a PNG of annotated frames, one row per camera."""

from __future__ import annotations

import numpy as np

from ros_mm_perception.core.imaging.drawing import annotate, contact_sheet
from ros_mm_perception.core.results import FrameResult


class ContactSheetOutput:
    """An offline output that writes a PNG contact sheet: one row per camera of annotated frames.

    Every frame is kept as a small annotated tile; at :meth:`finish` ``per_camera`` of them, evenly
    spread over the run, are laid out per camera and the PNG is written to ``stream`` by
    :meth:`finish`.
    """

    def __init__(self, stream, per_camera: int = 4, tile_width: int = 320):
        self.stream = stream
        self.per_camera = per_camera
        self.tile_width = tile_width
        self.tiles = {}

    def add(self, item, result: FrameResult) -> None:
        import cv2

        image = item.frame.image
        scale = self.tile_width / image.shape[1]
        small = cv2.resize(image, (self.tile_width, int(round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        shrunk = FrameResult(
            result.camera,
            result.frame_id,
            result.stamp,
            small.shape[1],
            small.shape[0],
            detections=[_scaled(d, scale, small.shape[:2]) for d in result.detections],
        )
        caption = f"{item.namespace or '/'} frame {len(self.tiles.get(item.namespace, []))}: " \
                  f"{len(result.detections)} detections"
        self.tiles.setdefault(item.namespace, []).append((annotate(small, shrunk), caption))

    def finish(self) -> None:
        import cv2

        tiles, captions = [], []
        for _, frames in sorted(self.tiles.items()):
            picks = np.unique(np.linspace(0, len(frames) - 1,
                                          min(self.per_camera, len(frames))).round().astype(int))
            row = [frames[i] for i in picks]
            row += [(np.zeros_like(row[0][0]), "")] * (self.per_camera - len(row))
            tiles += [t for t, _ in row]
            captions += [c for _, c in row]
        if not tiles:
            raise ValueError("no frame was processed, so there is no contact sheet")
        sheet = contact_sheet(tiles, captions, columns=self.per_camera, tile_width=self.tile_width)
        ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        self.stream.write(png.tobytes())


def _scaled(det, scale: float, hw):
    """``det`` on the tile: its box scaled, its mask (if any) resized to the tile's ``hw``."""
    from dataclasses import replace

    import cv2

    mask = None if det.mask is None else cv2.resize(det.mask.astype(np.uint8), (hw[1], hw[0]),
                                                    interpolation=cv2.INTER_NEAREST).astype(bool)
    return replace(det, box=tuple(v * scale for v in det.box), mask=mask)
