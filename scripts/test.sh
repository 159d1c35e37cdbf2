#!/usr/bin/env bash
# Sets up .venv if needed, then runs the whole test suite (ROS-dependent tests skip without rclpy).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "${ROS_MM_VENV:-$root/.venv}/bin/python" -m pytest ros_mm_perception/test "$@"
