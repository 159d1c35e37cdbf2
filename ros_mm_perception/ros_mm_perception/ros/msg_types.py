"""The rclpy message classes as a types namespace for :mod:`ros_mm_perception.messages.convert`."""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Optional

from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import ColorRGBA, Header
from vision_msgs.msg import (BoundingBox2D, BoundingBox3D, Classification, Detection2D, Detection2DArray,
                             Detection3D, Detection3DArray, LabelInfo, ObjectHypothesis, ObjectHypothesisWithPose,
                             Point2D, Pose2D, VisionClass)
from visualization_msgs.msg import Marker, MarkerArray, MeshFile

from ros_mm_perception.messages.names import FOXGLOVE_TYPE_NAMES


def rclpy_types() -> SimpleNamespace:
    """Every class named in :data:`ros_mm_perception.messages.names.TYPE_NAMES`, from the ROS install."""
    return SimpleNamespace(
        Time=Time, Duration=Duration, Header=Header, ColorRGBA=ColorRGBA,
        Point=Point, Quaternion=Quaternion, Vector3=Vector3, Pose=Pose, PoseWithCovariance=PoseWithCovariance,
        Image=Image, CompressedImage=CompressedImage, CameraInfo=CameraInfo,
        Point2D=Point2D, Pose2D=Pose2D, BoundingBox2D=BoundingBox2D, BoundingBox3D=BoundingBox3D,
        ObjectHypothesis=ObjectHypothesis, ObjectHypothesisWithPose=ObjectHypothesisWithPose,
        Detection2D=Detection2D, Detection2DArray=Detection2DArray, Detection3D=Detection3D,
        Detection3DArray=Detection3DArray, Classification=Classification, VisionClass=VisionClass,
        LabelInfo=LabelInfo, Marker=Marker, MarkerArray=MarkerArray, MeshFile=MeshFile,
        KeyValue=KeyValue, DiagnosticStatus=DiagnosticStatus, DiagnosticArray=DiagnosticArray,
    )


def foxglove_rclpy_types() -> Optional[SimpleNamespace]:
    """The classes of :data:`ros_mm_perception.messages.names.FOXGLOVE_TYPE_NAMES` from the ROS
    install; None when foxglove_msgs (an optional run dependency) is not installed."""
    classes = {}
    for attr, name in FOXGLOVE_TYPE_NAMES.items():
        package, _, message = name.split("/")
        try:
            classes[attr] = getattr(importlib.import_module(f"{package}.msg"), message)
        except (ImportError, AttributeError):
            return None
    return SimpleNamespace(**classes)
