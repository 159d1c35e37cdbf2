"""ament_python package setup: works under colcon and with plain pip (extras for the ML stack)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "ros_mm_perception"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    package_data={package_name: ["data/*", "data/**/*"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    python_requires=">=3.10",
    # colcon builds with ROS's own numpy/OpenCV (rosdep keys in package.xml); pip users pick extras.
    install_requires=["setuptools", "numpy", "pyyaml", "scipy"],
    extras_require={
        "ml": [
            "torch>=2.1",
            "torchvision",
            "open_clip_torch>=2.24",
            "transformers>=4.45",
            "tokenizers",
            "safetensors",
            "opencv-python-headless>=4.8",
            "pillow",
            "tqdm",
        ],
        "bag": ["mcap>=1.1", "mcap-ros2-support>=0.5", "rosbags>=0.10"],
        "test": ["pytest>=7", "hypothesis>=6", "catkin_pkg>=1.0"],
    },
    zip_safe=False,
    maintainer="ros_mm_perception maintainers",
    maintainer_email="maintainers@ros-mm-perception.invalid",
    description="Language-grounded perception for ROS 2: CLIP zero-shot labels, PaliGemma VQA and detection.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "ros-mm-perception = ros_mm_perception.cli:main",
            "perception_node = ros_mm_perception.ros.perception_node:main",
        ],
    },
)
