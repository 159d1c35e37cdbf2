"""ROS 2's Python style: flake8 with the package's setup.cfg over every .py file of the repository.

The settings (line length 99, what is excluded) live in setup.cfg's ``[flake8]`` section, so
``python -m flake8 --config ros_mm_perception/setup.cfg .`` from the repository root reports the
same findings as this test.
"""

import pathlib
import subprocess
import sys

import pytest

PKG_DIR = pathlib.Path(__file__).resolve().parents[1]
REPO_ROOT = PKG_DIR.parent


def test_flake8_finds_nothing():
    pytest.importorskip("flake8", reason="flake8 comes with the test extra")
    run = subprocess.run(
        [sys.executable, "-m", "flake8", "--config", str(PKG_DIR / "setup.cfg"), "."],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, f"flake8 found style errors:\n{run.stdout}{run.stderr}"
