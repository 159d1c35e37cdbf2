#!/usr/bin/env python3
"""Benchmark of ``fleet`` against ``bag`` run sequentially over the same recordings; prints JSON.

Makes N small two-camera recordings (the demo's rendered scenes: /front raw + depth + camera_info,
/overhead JPEG), labels them with the embedded CLIP on the CPU (one PyTorch thread per process):
first with ``bag`` once per recording (each run loads the model, as the command does), then with
``fleet`` for each worker count on a local Ray with 2 CPUs. Figures: wall time and frames per
second (Ray start-up and model loading included), the ratio to the sequential ``bag`` run, the Ray
start-up time, and the peak resident memory of each worker process (and of the ``bag`` process).

    PYTHONPATH=ros_mm_perception python benchmarks/fleet_bench.py --json-out benchmarks/fleet.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path


def make_recordings(folder: Path, count: int, frames: int, size):
    from ros_mm_perception.offline.demo import demo_recordings, demo_scenes
    from ros_mm_perception.offline.recording import write_recording

    return [write_recording(folder / f"robot{i}.mcap", demo_recordings(demo_scenes(frames, size, seed=10 * i)))
            for i in range(count)]


class WorkerMemory:
    """Peak resident memory (MiB) of each Ray worker process labeling recordings, polled from /proc."""

    def __init__(self, period_s: float = 0.2):
        self.peaks = {}
        self.period_s = period_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self):
        while not self.stop.wait(self.period_s):
            for proc in Path("/proc").iterdir():
                try:
                    if b"LabelWorker" not in (proc / "cmdline").read_bytes():
                        continue
                    status = (proc / "status").read_text()
                except OSError:
                    continue
                rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
                self.peaks[proc.name] = max(self.peaks.get(proc.name, 0), rss / 1024)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--frames", type=int, default=6, help="frames per camera per recording")
    parser.add_argument("--size", default="120x160", help="HEIGHTxWIDTH")
    parser.add_argument("--workers", default="1,2", help="worker counts to time")
    parser.add_argument("--json-out", default=None, help="also write the JSON object to this file")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray
    import torch

    from ros_mm_perception.cli import main as cli
    from ros_mm_perception.offline.demo import demo_phrases

    torch.set_num_threads(1)
    size = tuple(int(v) for v in args.size.split("x"))
    pipeline = ["--device", "cpu", "--threads", "1", "--detect", ",".join(demo_phrases()), "--no-progress", "--json"]
    result = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
              "cpus": os.cpu_count(), "note": "busy shared 2-core machine (other jobs running); embedded CLIP, "
                                             "CPU, one PyTorch thread per process",
              "recordings": args.recordings, "frames_per_camera": args.frames, "size": args.size}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        recordings = make_recordings(tmp / "in", args.recordings, args.frames, size)
        start = time.perf_counter()
        frames = 0
        for i, recording in enumerate(recordings):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert cli(["bag", str(recording), "--out", str(tmp / f"bag{i}.mcap"), *pipeline]) == 0
            frames += json.loads(out.getvalue())["frames"]
        bag_s = time.perf_counter() - start
        result["bag_sequential"] = {"frames": frames, "seconds": round(bag_s, 2),
                                    "frames_per_s": round(frames / bag_s, 2),
                                    "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                                  / 1024)}

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
        result["ray_init_s"] = round(time.perf_counter() - start, 2)
        try:
            for workers in (int(w) for w in args.workers.split(",")):
                out = io.StringIO()
                with WorkerMemory() as memory, contextlib.redirect_stdout(out):
                    start = time.perf_counter()
                    code = cli(["fleet", *map(str, recordings), "--out", str(tmp / f"fleet{workers}"),
                                "--workers", str(workers), *pipeline])
                    seconds = time.perf_counter() - start
                assert code == 0
                summary = json.loads(out.getvalue())
                labeling = max(r["seconds"] for r in summary["per_recording"])
                per_worker = sum(r["seconds"] for r in summary["per_recording"]) / workers
                result[f"fleet_{workers}_workers"] = {
                    "frames": summary["frames"], "seconds": round(seconds, 2),
                    "frames_per_s": round(summary["frames"] / seconds, 2),
                    "speedup_vs_bag": round(bag_s / seconds, 2),
                    "labeling_s_per_worker": round(per_worker, 2),
                    "start_and_scheduling_s": round(seconds - per_worker, 2),
                    "slowest_recording_s": round(labeling, 2),
                    "worker_peak_rss_mib": sorted(round(v) for v in memory.peaks.values()),
                }
        finally:
            ray.shutdown()
    text = json.dumps(result, indent=1)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
