"""ros_mm_perception: language-grounded perception for ROS 2 robots.

The ROS-free core lives in :mod:`ros_mm_perception.core`; the rclpy node layer in
:mod:`ros_mm_perception.ros`; the offline command line in :mod:`ros_mm_perception.cli`.
"""

__version__ = "0.1.0"
