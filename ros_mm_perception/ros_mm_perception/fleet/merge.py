"""One recording's outputs from the outputs of its time windows, in window (recording time) order.

MCAP messages are copied as they are (channels and schemas registered again, sequence numbers per
topic renumbered); ``<ns>/label_info``, which ``bag`` writes once per namespace, is kept from its
first window only. JSON Lines are concatenated; COCO images and annotations are numbered again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

from ros_mm_perception import __version__
from ros_mm_perception.fleet.worker import COCO_NAME, JSONL_NAME, MCAP_NAME


def merge_windows(parts: Sequence[Path], into: Path, names: Sequence[str]) -> None:
    """Write each file of ``names`` into folder ``into`` from the same file of every part
    folder."""
    for name in names:
        sources = [part / name for part in parts]
        if name == MCAP_NAME:
            merge_mcap(sources, into / name)
        elif name == JSONL_NAME:
            with open(into / name, "wb") as out:
                for source in sources:
                    out.write(source.read_bytes())
        elif name == COCO_NAME:
            merge_coco(sources, into / name)
        else:
            raise ValueError(f"no merge for {name}")


def merge_mcap(sources: Sequence[Path], target: Path) -> None:
    from mcap.reader import NonSeekingReader
    from mcap.writer import CompressionType, Writer

    with open(target, "wb") as f:
        writer = Writer(f, compression=CompressionType.ZSTD)
        writer.start(profile="ros2", library=f"ros_mm_perception {__version__}")
        schemas: Dict[str, int] = {}
        channels: Dict[str, int] = {}
        counts: Dict[str, int] = {}
        for source in sources:
            with open(source, "rb") as part:
                for schema, channel, message in NonSeekingReader(part).iter_messages():
                    topic = channel.topic
                    if topic.endswith("/label_info") and topic in channels:
                        continue
                    if topic not in channels:
                        if schema.name not in schemas:
                            schemas[schema.name] = writer.register_schema(
                                schema.name, schema.encoding, schema.data
                            )
                        channels[topic] = writer.register_channel(topic, channel.message_encoding,
                                                                  schemas[schema.name])
                    writer.add_message(channels[topic], log_time=message.log_time,
                                       publish_time=message.publish_time,
                                       sequence=counts.get(topic, 0), data=message.data)
                    counts[topic] = counts.get(topic, 0) + 1
        writer.finish()


def merge_coco(sources: Sequence[Path], target: Path) -> None:
    merged: Dict = {"images": [], "annotations": [], "categories": []}
    names: Dict[str, int] = {}
    for source in sources:
        data = json.loads(source.read_text(encoding="utf-8"))
        merged.setdefault("info", data.get("info"))
        category_of: Dict[int, int] = {}
        for category in data["categories"]:
            if category["name"] not in names:
                names[category["name"]] = len(names) + 1
                merged["categories"].append({**category, "id": names[category["name"]]})
            category_of[category["id"]] = names[category["name"]]
        image_of: Dict[int, int] = {}
        for image in data["images"]:
            image_of[image["id"]] = len(merged["images"]) + 1
            merged["images"].append({**image, "id": image_of[image["id"]]})
        annotations: List[Dict] = merged["annotations"]
        for ann in data["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1,
                                "image_id": image_of[ann["image_id"]],
                                "category_id": category_of[ann["category_id"]]})
    with open(target, "w", encoding="utf-8") as f:
        json.dump({"info": merged["info"], "images": merged["images"],
                   "annotations": merged["annotations"], "categories": merged["categories"]}, f)
