"""OWLv2-base at its real size (960 px, ViT-B/16, random weights) on one CPU thread: the plain
transformers call, ``OwlEngine.detect_batch`` in fp32 and in int8, calls taking turns.

Prints one JSON object: wall-clock and thread-CPU medians (seconds) per path, the CPU
(``cpu_info``) and torch's CPU capability. Each call takes tens of seconds on one thread: run
with ``--repeats 1`` or 2 (after one warm-up call per path). Add ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` to time an AVX2-only CPU.
"""

import argparse
import copy
import json
import statistics
import tempfile
import time

import numpy as np
import torch

from ros_mm_perception.commands.bench.harness import cpu_info
from ros_mm_perception.core.models.int8 import quantize_linear_layers
from ros_mm_perception.core.models.owl import load_owl
from ros_mm_perception.core.models.random_models import build_random_owl

PHRASES = ["person", "cup", "red mug", "chair"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as workdir:
        folder = build_random_owl(workdir, "owlv2", "owlv2-base-patch16")
        fp32 = load_owl(str(folder), "cpu", "fp32", random_weights=True)
    int8 = copy.deepcopy(fp32)  # the same weights, then int8
    quantize_linear_layers(int8.model.owlv2.vision_model.encoder)
    int8.precision = "int8"
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)

    def plain():
        inputs = fp32.processor(text=[PHRASES], images=[frame], return_tensors="pt")
        with torch.inference_mode():
            outputs = fp32.model(**inputs)
        return fp32.processor.image_processor.post_process_object_detection(
            outputs, threshold=0.0, target_sizes=[frame.shape[:2]])

    calls = {"plain_fp32": plain, "ours_fp32": lambda: fp32.detect_batch([frame], PHRASES),
             "ours_int8": lambda: int8.detect_batch([frame], PHRASES)}
    wall = {k: [] for k in calls}
    cpu = {k: [] for k in calls}
    for fn in calls.values():
        fn()
    for _ in range(args.repeats):
        for key, fn in calls.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            fn()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.thread_time() - start_cpu)
    a, b = (e.raw_detections([frame], PHRASES)[0][0] for e in (fp32, int8))
    print(json.dumps({
        "cpu": cpu_info(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "image_size": fp32.image_size, "repeats": args.repeats,
        "wall_s": {k: round(statistics.median(v), 2) for k, v in wall.items()},
        "thread_cpu_s": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
        "int8_max_score_diff_vs_fp32": round(float((a - b).abs().max()), 5)}))


if __name__ == "__main__":
    main()
