#!/usr/bin/env bash
# Sets up .venv if needed, then runs the main job on the embedded default model and bundled data.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "${ROS_MM_VENV:-$root/.venv}/bin/ros-mm-perception" demo "$@"
