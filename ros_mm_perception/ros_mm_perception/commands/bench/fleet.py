"""The fleet section of ``bench`` (``--fleet-only``): ``fleet`` against ``bag`` run one recording
after the other over the same recordings.

Makes :data:`RECORDINGS` small two-camera recordings (the demo's rendered scenes: /front raw +
depth + camera_info, /overhead JPEG) and labels them with the embedded CLIP, one PyTorch thread
per process: first with ``bag`` once per recording (each run loads the model, as the command
does), then with ``fleet`` for each of :data:`WORKERS` on a local Ray. Figures: wall time and
frames per second (Ray start-up and model loading included), the ratio to the ``bag`` runs, the
Ray start-up time, and the peak resident memory of each worker process (and of this process).
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import threading
import time
from pathlib import Path
from typing import Dict, List

from ros_mm_perception.commands.bench.harness import Harness

RECORDINGS = 8
FRAMES = 6
"""Frames per camera per recording."""
SIZE = (120, 160)
"""Height and width of the rendered frames."""
WORKERS = (1, 2)
"""Worker counts timed."""
BAG_FIGURES = ("frames", "seconds", "frames_per_s", "process_peak_rss_mib")
FLEET_FIGURES = ("frames", "seconds", "frames_per_s", "speedup_vs_bag", "labeling_s_per_worker",
                 "start_and_scheduling_s", "slowest_recording_s", "worker_peak_rss_mib")


def empty_fleet() -> Dict:
    """The ``fleet`` section with every figure ``null``."""
    return {"fleet": {"recordings": None, "frames_per_camera": None, "size": None,
                      "ray_init_s": None, "bag_sequential": dict.fromkeys(BAG_FIGURES),
                      **{f"workers_{n}": dict.fromkeys(FLEET_FIGURES) for n in WORKERS}}}


class WorkerMemory:
    """Peak resident memory (MiB) of each Ray worker process labeling recordings, from /proc."""

    def __init__(self, period_s: float = 0.2):
        self.peaks: Dict[str, float] = {}
        self.period_s = period_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self) -> None:
        while not self.stop.wait(self.period_s):
            for proc in Path("/proc").iterdir():
                try:
                    if b"LabelWorker" not in (proc / "cmdline").read_bytes():
                        continue
                    status = (proc / "status").read_text()
                except OSError:
                    continue
                rss = next((int(line.split()[1]) for line in status.splitlines()
                            if line.startswith("VmRSS:")), 0)
                self.peaks[proc.name] = max(self.peaks.get(proc.name, 0), rss / 1024)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run_cli(argv: List[str]) -> Dict:
    """Run ``ros-mm-perception ARGV --json`` in this process; its JSON summary."""
    from ros_mm_perception.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--json"])
    if code != 0:
        last = (err.getvalue().strip().splitlines() or [""])[-1]
        raise RuntimeError(f"{argv[0]} exited with status {code}: {last}")
    return json.loads(out.getvalue())


class FleetBench(Harness):
    """Fills ``fleet`` (see the module docstring)."""

    def fleet(self) -> None:
        try:
            import ray
        except ImportError:
            self.skip("fleet", "needs Ray: pip install 'ros_mm_perception[fleet]'")
            return
        from ros_mm_perception.offline.demo import demo_phrases, demo_recordings, demo_scenes
        from ros_mm_perception.offline.recording import write_recording

        section = self.result["fleet"]
        section.update(recordings=RECORDINGS, frames_per_camera=FRAMES,
                       size="x".join(map(str, SIZE)))
        pipeline = ["--device", str(self.device), "--threads", "1",
                    "--detect-phrases", ",".join(demo_phrases()), "--no-progress"]
        tmp = Path(self.workdir) / "fleet"
        (tmp / "in").mkdir(parents=True)
        recordings = [str(write_recording(tmp / "in" / f"robot{i}.mcap",
                                          demo_recordings(demo_scenes(FRAMES, SIZE, seed=10 * i))))
                      for i in range(RECORDINGS)]
        start = time.perf_counter()
        frames = sum(run_cli(["bag", recording, "--out", str(tmp / f"bag{i}.mcap"), *pipeline])
                     ["frames"] for i, recording in enumerate(recordings))
        bag_s = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        section["bag_sequential"] = {"frames": frames, "seconds": round(bag_s, 2),
                                     "frames_per_s": round(frames / bag_s, 2),
                                     "process_peak_rss_mib": round(peak)}
        self.save()
        start = time.perf_counter()
        ray.init(num_cpus=max(WORKERS), include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
        section["ray_init_s"] = round(time.perf_counter() - start, 2)
        try:
            for workers in WORKERS:
                with WorkerMemory() as memory:
                    start = time.perf_counter()
                    summary = run_cli(["fleet", *recordings, "--out", str(tmp / f"fleet{workers}"),
                                       "--workers", str(workers), *pipeline])
                    seconds = time.perf_counter() - start
                labeling = [r["seconds"] for r in summary["per_recording"]]
                per_worker = sum(labeling) / workers
                section[f"workers_{workers}"] = {
                    "frames": summary["frames"], "seconds": round(seconds, 2),
                    "frames_per_s": round(summary["frames"] / seconds, 2),
                    "speedup_vs_bag": round(bag_s / seconds, 2),
                    "labeling_s_per_worker": round(per_worker, 2),
                    "start_and_scheduling_s": round(seconds - per_worker, 2),
                    "slowest_recording_s": round(max(labeling), 2),
                    "worker_peak_rss_mib": sorted(round(v) for v in memory.peaks.values()),
                }
                self.save()
        finally:
            ray.shutdown()
