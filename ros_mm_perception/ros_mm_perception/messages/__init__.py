"""ROS-free conversions between core results and ROS messages (rclpy or rosbags classes).

Nothing here imports rclpy or any ``*_msgs`` module: the caller injects the message classes as a
``types`` namespace (see :data:`names.TYPE_NAMES`). The node passes real rclpy classes; the
offline tools pass ``rosbags_types(typestore())``.
"""
