#!/usr/bin/env bash
# Creates the virtual environment .venv (once) and installs ros_mm_perception with its ML, bag, fleet
# (Ray), photos (scikit-image: training and the unseen evaluation) and test extras into it.
# Re-running is cheap: nothing is reinstalled unless setup.py changed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${ROS_MM_VENV:-$root/.venv}
stamp=$venv/.ros_mm_perception_installed
want=$(cat "$root/ros_mm_perception/setup.py" "$root/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
echo "setting up $venv (first run takes a few minutes)" >&2
"$venv/bin/python" -m pip install -q --upgrade pip
# This torch pair is the CUDA build that also runs on the CPU; open_clip needs torchvision.
"$venv/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
# setup.py's package_dir makes this editable install put the source folder on sys.path, so running
# from the repository root finds the real package, not the ament package folder of the same name.
"$venv/bin/python" -m pip install -q -e "$root/ros_mm_perception[ml,bag,fleet,photos,test]"
echo "$want" > "$stamp"
