"""Launch the perception node.

    ros2 launch ros_mm_perception perception.launch.py image_topic:=/camera/image_raw
    ros2 launch ros_mm_perception perception.launch.py cameras:=front,rear \
        image_topic:=/front/image_raw,/rear/image_raw device:=cuda namespace:=robot1
    ros2 launch ros_mm_perception perception.launch.py image_topic:=/camera/image_raw image_transport:=compressed
        # subscribes /camera/image_raw/compressed

Parameters come from ``params_file`` (default: the package's config/perception.yaml); every
argument left empty keeps the file's value. Topic arguments remap the node's relative inputs; with
several cameras, give one topic per camera, in the order of ``cameras``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PARAMETER_ARGUMENTS = {
    "device": "Compute device: auto, cpu or cuda[:N].",
    "clip_model": "open_clip model name or model folder (empty: the params file's value).",
    "clip_pretrained": "open_clip pretrained tag or checkpoint path.",
    "paligemma_model": "PaliGemma model id or local directory.",
    "owl_model": "OWLv2 / OWL-ViT model id, local directory or 'embedded'.",
    "image_transport": "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage).",
    "use_depth": "true: also subscribe depth + camera_info and publish detections_3d.",
    "target_frame": "Frame of detections_3d and markers, e.g. base_link (empty: the camera's frame).",
    "crop_mode": "How CLIP sees a frame: letterbox (the whole frame, padded) or center (open_clip's centre crop).",
    "label_tiles": "Rows of tiles (and full-height squares) whole-frame labels also look at (0: the frame alone).",
}
TOPIC_ARGUMENTS = {
    "image_topic": ("image", "Camera image topic(s), comma-separated, one per camera."),
    "depth_topic": ("depth", "Aligned depth topic(s) (with use_depth), one per camera."),
    "camera_info_topic": ("camera_info", "camera_info topic(s) of the colour camera(s), one per camera."),
}


def _split(text: str):
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse(name: str, text: str):
    if name == "use_depth":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"use_depth must be true or false, got {text!r}")
        return text.lower() == "true"
    if name == "label_tiles":
        if not text.isdigit():
            raise ValueError(f"label_tiles must be a whole number of rows (0: none), got {text!r}")
        return int(text)
    return text


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in
             ("cameras", "use_sim_time", *PARAMETER_ARGUMENTS, *TOPIC_ARGUMENTS)}
    overrides = {"use_sim_time": value["use_sim_time"].lower() == "true"}
    overrides.update({n: _parse(n, value[n]) for n in PARAMETER_ARGUMENTS if value[n]})
    cameras = _split(value["cameras"])
    if cameras:
        overrides["cameras"] = cameras
    remappings = []
    for arg, (base, _) in TOPIC_ARGUMENTS.items():
        topics = _split(value[arg])
        if not topics:
            continue
        if len(topics) > 1 and len(topics) != len(cameras):
            raise ValueError(f"{arg} lists {len(topics)} topics: give cameras:=name1,name2,... with as many names")
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
    default_params = PathJoinSubstitution([FindPackageShare("ros_mm_perception"), "config", "perception.yaml"])
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics."),
        DeclareLaunchArgument("params_file", default_value=default_params, description="Parameter YAML file."),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use the /clock topic's time."),
        DeclareLaunchArgument("cameras", default_value="", description="Camera names, comma-separated."),
        DeclareLaunchArgument("log_level", default_value="info", description="Logging level of the node."),
    ]
    arguments += [DeclareLaunchArgument(n, default_value="", description=d) for n, d in PARAMETER_ARGUMENTS.items()]
    arguments += [DeclareLaunchArgument(n, default_value="", description=d) for n, (_, d) in TOPIC_ARGUMENTS.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])
