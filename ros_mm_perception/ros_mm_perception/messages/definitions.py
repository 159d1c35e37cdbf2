"""Bundled ``.msg`` definitions of vision_msgs 4.x (the release shipped with Humble and Jazzy) and
of foxglove_msgs.

The standard ROS 2 messages (std_msgs, sensor_msgs, geometry_msgs, visualization_msgs,
diagnostic_msgs) come with the rosbags type stores; vision_msgs and foxglove_msgs do not, so their
definitions are kept in the package and registered by
:func:`ros_mm_perception.messages.typestore.typestore`.
"""

from pathlib import Path
from typing import Dict

FOXGLOVE_MSGS_DIR = Path(__file__).resolve().parents[1] / "data" / "foxglove_msgs"
"""The official foxglove_msgs ROS 2 ``.msg`` files (copied unchanged; the folder's README names the
release)."""

VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/BoundingBox2DArray": "std_msgs/Header header\nvision_msgs/BoundingBox2D[] "
                                          "boxes\n",
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/BoundingBox3DArray": "std_msgs/Header header\nvision_msgs/BoundingBox3D[] "
                                          "boxes\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Classification": "std_msgs/Header header\nvision_msgs/ObjectHypothesis[] "
                                      "results\n",
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] "
                                        "detections\n",
    "vision_msgs/msg/Detection3D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection3DArray": "std_msgs/Header header\nvision_msgs/Detection3D[] "
                                        "detections\n",
    "vision_msgs/msg/VisionClass": "uint16 class_id\nstring class_name\n",
    "vision_msgs/msg/LabelInfo": (
        "std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n"
    ),
    "vision_msgs/msg/VisionInfo": (
        "std_msgs/Header header\nstring method\nstring database_location\nint32 database_version\n"
    ),
}
"""ROS type name → ``.msg`` text (fields only), for every message of vision_msgs 4.x."""


def foxglove_msgs() -> Dict[str, str]:
    """ROS type name → official ``.msg`` text, for the bundled foxglove_msgs messages."""
    return {f"foxglove_msgs/msg/{path.stem}": path.read_text(encoding="utf-8")
            for path in sorted(FOXGLOVE_MSGS_DIR.glob("*.msg"))}
