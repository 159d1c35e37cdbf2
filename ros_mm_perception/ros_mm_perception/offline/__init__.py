"""Offline processing of recorded data without ROS: rosbag2 files, image folders and videos.

The same :class:`~ros_mm_perception.core.perception.pipeline.PerceptionPipeline` as the live node
runs on every frame (nothing is dropped offline); results go to an MCAP file with the node's topics
and message types, and optionally to JSON Lines and COCO files for dataset creation.
"""
