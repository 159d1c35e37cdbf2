"""The ROS-free core: models, pre/post-processing, parsing, tracking and geometry.

Nothing in this package imports rclpy or any ROS message package.
"""
