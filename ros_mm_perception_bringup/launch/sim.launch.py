"""Gazebo (gz sim) camera → ros_gz_bridge → perception node, on simulation time.

    ros2 launch ros_mm_perception_bringup sim.launch.py        # gz-sim's camera_sensor.sdf world
    ros2 launch ros_mm_perception_bringup sim.launch.py world:=my_world.sdf image_topic:=/my_camera
    rviz:=true

The bridge carries the camera image and camera_info and /clock from Gazebo to ROS (one way);
the node runs with ``use_sim_time`` so its diagnostics and LabelInfo follow simulation time, and
its detections keep the stamps Gazebo put on the images.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    image = LaunchConfiguration("image_topic")
    info = LaunchConfiguration("camera_info_topic")
    gz_sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("ros_gz_sim"),
                                                            "launch",
                                                            "gz_sim.launch.py"])),
        launch_arguments={"gz_args": ["-r ", LaunchConfiguration("world")]}.items(),
    )
    bridge = Node(
        package="ros_gz_bridge",
        executable="parameter_bridge",
        arguments=[
            [image, "@sensor_msgs/msg/Image[gz.msgs.Image"],
            [info, "@sensor_msgs/msg/CameraInfo[gz.msgs.CameraInfo"],
            "/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock",
        ],
        output="screen",
    )
    perception = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("ros_mm_perception"),
                                                            "launch",
                                                            "perception.launch.py"])),
        launch_arguments={
            "use_sim_time": "true",
            "image_topic": image,
            "camera_info_topic": info,
            "device": LaunchConfiguration("device"),
        }.items(),
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d",
                   PathJoinSubstitution([FindPackageShare("ros_mm_perception_bringup"), "config",
                                         "perception.rviz"])],
        parameters=[{"use_sim_time": True}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([
        DeclareLaunchArgument("world", default_value="camera_sensor.sdf",
                              description="Gazebo world (file name on GZ_SIM_RESOURCE_PATH or a "
                                          "path)."),
        DeclareLaunchArgument("image_topic", default_value="/camera",
                              description="Gazebo camera image topic."),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera_info",
                              description="Gazebo camera_info topic."),
        DeclareLaunchArgument("device", default_value="",
                              description="Compute device (empty: params file)."),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="Open RViz with the debug view."),
        gz_sim,
        bridge,
        perception,
        rviz,
    ])
