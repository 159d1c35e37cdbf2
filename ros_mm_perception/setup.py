"""ament_python package setup: works under colcon and with plain pip (extras for the ML stack)."""

from glob import glob

from setuptools import find_namespace_packages, setup

package_name = "ros_mm_perception"
# Every folder is a package (the data folders too, e.g. the embedded model), so current setuptools
# install the data without the "Package would be ignored" warning; the data folders' files are
# package data.
packages = find_namespace_packages(
    include=[package_name, package_name + ".*"], exclude=["*.__pycache__"]
)
data_packages = [
    p for p in packages if p == package_name + ".data" or p.startswith(package_name + ".data.")
]

setup(
    name=package_name,
    version="0.1.0",
    packages=packages,
    # The package sits at the project root: an editable install then puts this folder on sys.path
    # (no import hook), so from the repository root the real package wins over the ament folder
    # of the same name, which Python would otherwise import as a namespace package.
    package_dir={"": "."},
    package_data={p: ["*"] for p in data_packages},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    # colcon builds with ROS's own numpy/OpenCV (rosdep keys in package.xml);
    # pip users pick extras.
    install_requires=["setuptools", "numpy", "pyyaml", "scipy"],
    extras_require={
        "ml": [
            "torch>=2.1",
            "torchvision",
            "open_clip_torch>=2.24",
            "timm",  # merges MobileCLIP's training-time branches (open_clip needs it too)
            "transformers>=4.45",
            "tokenizers",
            "safetensors",
            "opencv-python-headless>=4.8",
            "pillow",
            "tqdm",
            "pycocotools>=2.0.8",
        ],
        "bag": ["mcap>=1.1", "mcap-ros2-support>=0.5", "rosbags>=0.11.9"],
        "fleet": ["ray>=2.59"],  # token authentication on by default for local Ray
        # Sample photographs for training the embedded models and the unseen evaluation style.
        "photos": ["scikit-image"],
        "test": ["pytest>=7", "hypothesis>=6", "catkin_pkg>=1.0", "flake8>=6"],
    },
    zip_safe=False,
    maintainer="ros_mm_perception maintainers",
    maintainer_email="maintainers@ros-mm-perception.invalid",
    description=(
        "Language-grounded perception for ROS 2: CLIP zero-shot labels, PaliGemma VQA and"
        " detection."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "ros-mm-perception = ros_mm_perception.cli:main",
            "perception_node = ros_mm_perception.ros.perception_node:main",
        ],
    },
)
