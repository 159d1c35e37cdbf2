"""Dataset exports of offline results: JSON Lines (one line per frame) and COCO detection files.

Both write to a stream, in offline runs a staged file of :class:`~.atomic.OutputStaging` (the file
appears only when the whole input was processed). Boxes are in pixels of the original image; a 3D
value that is not finite is ``null``, and no NaN or Infinity is ever written.
"""

from __future__ import annotations

import json
import math
from typing import Dict, List, Optional, Sequence

from ros_mm_perception.core.imaging.masks import encode_rle, mask_area
from ros_mm_perception.core.results import Detection, FrameResult
from ros_mm_perception.offline.input_frame import InputFrame


def finite_list(values) -> Optional[List[float]]:
    """``values`` as floats, or None if any is NaN or infinite."""
    out = [float(v) for v in values]
    return out if all(math.isfinite(v) for v in out) else None


def detection_record(det: Detection) -> Dict:
    """A detection as JSON: ``label``, ``score``, ``box`` [x0, y0, x1, y1], ``track_id``, 3D when
    known and ``mask`` (COCO compressed RLE, :func:`~.core.imaging.masks.encode_rle`) when it has
    one."""
    record = {"label": det.phrase, "score": float(det.score), "box": [float(v) for v in det.box],
              "track_id": det.track_id}
    if det.xyz is not None:
        record["xyz"] = finite_list(det.xyz)
    if det.size_xyz is not None:
        record["size_xyz"] = finite_list(det.size_xyz)
    if det.mask is not None:
        record["mask"] = encode_rle(det.mask)
    return record


def frame_record(item: InputFrame, result: FrameResult) -> Dict:
    """One JSON Lines record: where the frame came from, its header, labels and detections."""
    return {
        "index": item.index,
        "name": item.name,
        "camera": result.camera,
        "frame_id": result.frame_id,
        "stamp": {"sec": result.stamp.sec, "nanosec": result.stamp.nanosec},
        "width": result.width,
        "height": result.height,
        "labels": [{"label": lb.phrase, "score": float(lb.score)} for lb in result.labels],
        "detections": [detection_record(d) for d in result.detections],
    }


class JsonlExport:
    """Writes one JSON object per processed frame, one per line, in processing order."""

    def __init__(self, stream):
        self.stream = stream

    def add(self, item: InputFrame, result: FrameResult) -> None:
        self.stream.write(json.dumps(frame_record(item, result), allow_nan=False) + "\n")

    def finish(self) -> None:
        """Nothing left to write."""


class CocoExport:
    """Collects a COCO detection data set: images (one per processed frame), annotations,
    categories.

    Categories are the detection phrases (ids from 1, in the given order); ``bbox`` is
    [x, y, width, height] in pixels; each annotation also keeps ``score`` and ``track_id``. A
    detection with a mask gets ``segmentation`` (compressed RLE) and its pixel count as ``area``;
    one without keeps the box area.
    ``file_name`` is the frame's name (a file of an image folder, ``/topic#n`` in a bag,
    ``video#n``).
    """

    def __init__(self, stream, phrases: Sequence[str]):
        self.stream = stream
        self.categories: Dict[str, int] = {p: i + 1 for i, p in enumerate(phrases)}
        self.images: List[Dict] = []
        self.annotations: List[Dict] = []

    def add(self, item: InputFrame, result: FrameResult) -> None:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": item.name, "width": result.width,
                            "height": result.height, "frame_id": result.frame_id,
                            "stamp_ns": result.stamp.to_ns()})
        for det in result.detections:
            x0, y0, x1, y1 = (float(v) for v in det.box)
            category = self.categories.setdefault(det.phrase, len(self.categories) + 1)
            annotation = {
                "id": len(self.annotations) + 1, "image_id": image_id, "category_id": category,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                "score": float(det.score), "track_id": det.track_id,
            }
            if det.mask is not None:
                annotation["segmentation"] = encode_rle(det.mask)
                annotation["area"] = mask_area(annotation["segmentation"])
            self.annotations.append(annotation)

    def finish(self) -> None:
        """Write the data set."""
        categories = [{"id": i, "name": p, "supercategory": "object"}
                      for p, i in self.categories.items()]
        self.stream.write(json.dumps({"info": {"description": "ros_mm_perception offline "
                                                              "detections"},
                                      "images": self.images, "annotations": self.annotations,
                                      "categories": categories}, allow_nan=False))
