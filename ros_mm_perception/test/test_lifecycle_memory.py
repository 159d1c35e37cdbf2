"""A pipeline loaded and closed again and again (the node's configure and cleanup) gives back what
it took, on every CLIP fast path: in a fresh process, the resident memory after the first close
stays where it is over more cycles. Before the fix, ``clip_fast_path: freeze`` kept about 80 MB of
frozen TorchScript per cycle of the embedded model."""

import json
import os
import subprocess
import sys

import pytest

CYCLES = """
import gc, json, sys
import numpy as np
import torch
torch.set_num_threads(1)
from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
from ros_mm_perception.core.results import Frame

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))

config = PerceptionConfig().replace(clip_fast_path=sys.argv[1], device="cpu", precision="fp32",
                                    detect_phrases=["red circle"], grounding_source="clip")
image = np.zeros((48, 64, 3), np.uint8)
after_close = []
for _ in range(int(sys.argv[2])):
    pipeline = PerceptionPipeline(config)
    pipeline.warm_up((1,))
    pipeline.process(Frame(image, camera="front"))
    pipeline.close()
    del pipeline
    gc.collect()
    after_close.append(rss_mib())
print(json.dumps(after_close))
"""


@pytest.mark.parametrize("fast_path", ["freeze", "off"])
def test_load_close_cycles_give_back_what_they_took(fast_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CYCLES, fast_path, "4"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    after_close = json.loads(done.stdout.strip().splitlines()[-1])
    growth = after_close[-1] - after_close[0]
    assert growth < 40, after_close  # MiB over three more cycles; about 240 before the fix
