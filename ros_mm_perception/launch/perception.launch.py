"""Launch the perception node.

    ros2 launch ros_mm_perception perception.launch.py image_topic:=/camera/image_raw
    ros2 launch ros_mm_perception perception.launch.py cameras:=front,rear \
        image_topic:=/front/image_raw,/rear/image_raw device:=cuda namespace:=robot1
    ros2 launch ros_mm_perception perception.launch.py image_topic:=/camera/image_raw \
        image_transport:=compressed
        # subscribes /camera/image_raw/compressed

Parameters come from ``params_file`` (default: the package's config/perception.yaml); every
argument left empty keeps the file's value. The parameter arguments are the config fields marked
``launch`` in ``ros_mm_perception/core/config.py``, described by the fields themselves. Topic
arguments remap the node's relative inputs; with several cameras, give one topic per camera, in the
order of ``cameras``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from ros_mm_perception.core.config import PerceptionConfig

PARAMETER_ARGUMENTS = {name: spec for name, spec in PerceptionConfig.describe().items()
                       if spec.get("launch")}
"""The config fields marked ``launch``: one argument each, described by the field itself."""
TOPIC_ARGUMENTS = {
    "image_topic": ("image", "Camera image topic(s), comma-separated, one per camera."),
    "depth_topic": ("depth", "Aligned depth topic(s) (with use_depth), one per camera."),
    "camera_info_topic": ("camera_info",
                          "camera_info topic(s) of the colour camera(s), one per camera."),
}


def _split(text: str):
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse(name: str, text: str):
    """A launch argument's text as the type of the field's default; ValueError naming the field."""
    default = PARAMETER_ARGUMENTS[name]["default"]
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{name} must be true or false, got {text!r}")
        return text.lower() == "true"
    if isinstance(default, list):
        return _split(text)
    try:
        return type(default)(text)
    except ValueError:
        kind = "a whole number" if isinstance(default, int) else "a number"
        raise ValueError(f"{name} must be {kind}, got {text!r}") from None


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in
             ("use_sim_time", *PARAMETER_ARGUMENTS, *TOPIC_ARGUMENTS)}
    overrides = {"use_sim_time": value["use_sim_time"].lower() == "true"}
    parsed = {n: _parse(n, value[n]) for n in PARAMETER_ARGUMENTS if value[n]}
    overrides.update({n: v for n, v in parsed.items() if v != []})  # ROS cannot type an empty list
    cameras = overrides.get("cameras", [])
    remappings = []
    for arg, (base, _) in TOPIC_ARGUMENTS.items():
        topics = _split(value[arg])
        if not topics:
            continue
        if len(topics) > 1 and len(topics) != len(cameras):
            raise ValueError(f"{arg} lists {len(topics)} topics: give cameras:=name1,name2,... "
                             "with as many names")
        prefixes = [""] if len(topics) == 1 and len(cameras) <= 1 else [f"{c}/" for c in cameras]
        # Only the base name is remapped: with image_transport compressed the node subscribes
        # <remapped image topic>/compressed, as image_transport subscribers do.
        remappings += [(prefix + base, topic) for prefix, topic in zip(prefixes, topics)]
    return [Node(
        package="ros_mm_perception",
        executable="perception_node",
        name="perception",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=remappings,
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("ros_mm_perception"), "config",
                                           "perception.yaml"])
    arguments = [
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node and its topics."),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="Parameter YAML file."),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use the /clock topic's time."),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="Logging level of the node."),
    ]
    arguments += [DeclareLaunchArgument(n, default_value="", description=spec["description"])
                  for n, spec in PARAMETER_ARGUMENTS.items()]
    arguments += [DeclareLaunchArgument(n, default_value="", description=d)
                  for n, (_, d) in TOPIC_ARGUMENTS.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])
