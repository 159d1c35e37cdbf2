"""The rclpy node layer: the only part of the package that imports rclpy and ROS message
packages."""
