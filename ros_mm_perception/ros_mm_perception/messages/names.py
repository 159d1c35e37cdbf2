"""Names shared by the node and the offline tools: message type names and output topics."""

TYPE_NAMES = {
    "Time": "builtin_interfaces/msg/Time",
    "Duration": "builtin_interfaces/msg/Duration",
    "Header": "std_msgs/msg/Header",
    "ColorRGBA": "std_msgs/msg/ColorRGBA",
    "Point": "geometry_msgs/msg/Point",
    "Quaternion": "geometry_msgs/msg/Quaternion",
    "Vector3": "geometry_msgs/msg/Vector3",
    "Pose": "geometry_msgs/msg/Pose",
    "PoseWithCovariance": "geometry_msgs/msg/PoseWithCovariance",
    "Image": "sensor_msgs/msg/Image",
    "CompressedImage": "sensor_msgs/msg/CompressedImage",
    "CameraInfo": "sensor_msgs/msg/CameraInfo",
    "Point2D": "vision_msgs/msg/Point2D",
    "Pose2D": "vision_msgs/msg/Pose2D",
    "BoundingBox2D": "vision_msgs/msg/BoundingBox2D",
    "BoundingBox3D": "vision_msgs/msg/BoundingBox3D",
    "ObjectHypothesis": "vision_msgs/msg/ObjectHypothesis",
    "ObjectHypothesisWithPose": "vision_msgs/msg/ObjectHypothesisWithPose",
    "Detection2D": "vision_msgs/msg/Detection2D",
    "Detection2DArray": "vision_msgs/msg/Detection2DArray",
    "Detection3D": "vision_msgs/msg/Detection3D",
    "Detection3DArray": "vision_msgs/msg/Detection3DArray",
    "Classification": "vision_msgs/msg/Classification",
    "VisionClass": "vision_msgs/msg/VisionClass",
    "LabelInfo": "vision_msgs/msg/LabelInfo",
    "Marker": "visualization_msgs/msg/Marker",
    "MarkerArray": "visualization_msgs/msg/MarkerArray",
    "MeshFile": "visualization_msgs/msg/MeshFile",
    "KeyValue": "diagnostic_msgs/msg/KeyValue",
    "DiagnosticStatus": "diagnostic_msgs/msg/DiagnosticStatus",
    "DiagnosticArray": "diagnostic_msgs/msg/DiagnosticArray",
}
"""Attribute name in a types namespace → full ROS type name (the same on Humble and Jazzy)."""

OUTPUT_TYPES = {
    "detections": "vision_msgs/msg/Detection2DArray",
    "detections_3d": "vision_msgs/msg/Detection3DArray",
    "labels": "vision_msgs/msg/Classification",
    "label_info": "vision_msgs/msg/LabelInfo",
    "debug_image": "sensor_msgs/msg/Image",
    "instance_mask": "sensor_msgs/msg/Image",
    "markers": "visualization_msgs/msg/MarkerArray",
}
"""Output topic (relative name) → message type, as published by the node and the offline tools."""
