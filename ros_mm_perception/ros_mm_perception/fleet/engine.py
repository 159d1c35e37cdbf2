"""The fleet driver: plan the recordings, run them on Ray workers, publish each once, report.

Engine: Ray core actors, not Ray Data. Each :class:`~.worker.LabelWorker` actor holds one pipeline
(one model copy) for its whole life and labels a recording (or a window of one) in frame order,
which tracking and depth pairing need; Ray Data would cut recordings into blocks of rows and
schedule them freely, and its actor pools hide which worker did what, which retries and per
recording bookkeeping need here.

Per recording: skipped when its manifest matches (input size, mtime, options) unless ``force``;
else read once on the driver for its frame count (and time span, with windows); an unreadable one
is failed there. Tasks go to idle workers; a worker that dies has its task retried on another
(``retries`` times, then the recording fails with the reason); a recording that fails on a worker
fails alone. Complete recordings are published from staging in one rename, and ``fleet.json``
lists every recording at the end.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ros_mm_perception.core.errors import UserError
from ros_mm_perception.fleet.inputs import fingerprint, output_names
from ros_mm_perception.fleet.lock import RunLock
from ros_mm_perception.fleet.manifest import matching_manifest, write_manifest
from ros_mm_perception.fleet.merge import merge_windows
from ros_mm_perception.fleet.ray_session import CONNECT_TIMEOUT_S, ray_session
from ros_mm_perception.fleet.staging import Staging
from ros_mm_perception.fleet.worker import LabelTools, LabelWorker, Task
from ros_mm_perception.offline.atomic import OutputStaging

SUMMARY_NAME = "fleet.json"
TRACK_ID_STRIDE = 1_000_000
"""Track ids of window k (from 0) of a split recording are k * TRACK_ID_STRIDE + its own ids."""
COUNTS = ("frames", "skipped", "detections")


@dataclass(frozen=True)
class FleetOptions:
    """How the fleet runs (the ``fleet`` command's Ray options; pipeline settings are the
    config's)."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    threads: int = 0
    """PyTorch threads per worker; 0: one per CPU of the worker (at least one)."""
    retries: int = 2
    """Times a recording is tried again after its worker died."""
    split_s: Optional[float] = None
    """Cut recordings into windows of this many seconds of recording time, labeled in parallel."""
    address: Optional[str] = None
    """Ray cluster to join (``auto`` or ``HOST:PORT``); None starts a local Ray."""
    force: bool = False
    """Label recordings again even when their outputs are complete."""
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    """How long joining the Ray cluster at ``address`` may take."""

    def check(self) -> None:
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if not self.cpus_per_worker > 0 or not math.isfinite(self.cpus_per_worker):
            raise UserError(f"--cpus-per-worker must be positive, got {self.cpus_per_worker}")
        if not self.gpus_per_worker >= 0 or not math.isfinite(self.gpus_per_worker):
            raise UserError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise UserError(f"--gpus-per-worker above 1 must be whole, got {self.gpus_per_worker}")
        if self.retries < 0:
            raise UserError(f"--retries must be 0 or more, got {self.retries}")
        if self.split_s is not None and not (self.split_s > 0 and math.isfinite(self.split_s)):
            raise UserError(f"--split-s must be positive, got {self.split_s}")
        if self.threads < 0:
            raise UserError(f"--threads must be 0 or more, got {self.threads}")
        if not (self.connect_timeout_s > 0 and math.isfinite(self.connect_timeout_s)):
            raise UserError(f"--connect-timeout must be a positive number of seconds, "
                            f"got {self.connect_timeout_s}")

    def worker_threads(self) -> int:
        return self.threads or max(1, int(self.cpus_per_worker))


@dataclass
class Recording:
    """One input and what became of it (a row of ``fleet.json``)."""

    input: str
    name: str
    status: str = "pending"
    """``done``, ``up-to-date`` (complete from an earlier run), ``failed``."""
    reason: str = ""
    frames: int = 0
    skipped: int = 0
    damaged: List[str] = field(default_factory=list)
    """What was damaged in the input (a cut-off file, a damaged chunk), one line each, as ``bag``
    says."""
    transforms_rejected: Dict[str, int] = field(default_factory=dict)
    """Transforms of /tf and /tf_static left out, per reason (with a target frame), as ``bag``."""
    detections: int = 0
    seconds: float = 0.0
    worker: str = ""
    attempts: int = 0
    expected_frames: int = 0
    identity: Dict = field(default_factory=dict)
    parts: Dict[int, Dict] = field(default_factory=dict)
    windows: int = 1
    span: tuple = (0, 0)
    """First and last recording time (ns), when it is cut into windows."""

    def row(self, out_dir: Path) -> Dict:
        row = {"input": self.input,
               "output": str(out_dir / self.name) if self.status != "failed" else None,
               "status": self.status, **{k: getattr(self, k) for k in COUNTS},
               "damaged": self.damaged, "transforms_rejected": self.transforms_rejected,
               "seconds": round(self.seconds, 3), "worker": self.worker, "attempts": self.attempts}
        if self.reason:
            row["reason"] = self.reason
        return row


def fleet_summary(recordings: Sequence[Recording], out_dir: Path, seconds: float,
                  ray_start_s: float, workers: int) -> Dict:
    """The object ``--json`` prints and ``fleet.json`` holds."""
    statuses = [r.status for r in recordings]
    labeled = [r for r in recordings if r.status == "done"]
    frames = sum(r.frames for r in labeled)
    return {"recordings": len(recordings), "done": statuses.count("done"),
            "up_to_date": statuses.count("up-to-date"), "failed": statuses.count("failed"),
            **{k: sum(getattr(r, k) for r in labeled) for k in COUNTS},
            "damaged": sum(bool(r.damaged) for r in labeled),
            "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 3) if seconds > 0 else 0.0,
            "ray_start_s": round(ray_start_s, 3), "workers": workers, "out": str(out_dir),
            "per_recording": [r.row(out_dir) for r in recordings]}


def options_identity(config, tools: LabelTools, options: FleetOptions) -> Dict:
    """What a rerun must share with the run that made an output for it to count as complete."""
    input_args = {k: v for k, v in sorted(vars(tools.input_args).items())}
    return {"config": asdict(config), "input": input_args, "outputs": tools.output_names(),
            "debug_images": tools.debug_images, "split_s": options.split_s}


def run_fleet(inputs: Sequence[Path], out_dir: Path, config, tools: LabelTools,
              options: FleetOptions, progress: Optional[bool] = None,
              report: Callable[[str], None] = lambda _m: None) -> Dict:
    """Label ``inputs`` into ``out_dir`` (one folder per recording); return the summary object.

    ``progress=None`` shows the bar only when stderr is a terminal. Uses the running Ray when one
    is initialised, else starts one (``options.address``) and shuts it down at the end.
    """
    options.check()
    check_input_args(tools.input_args)
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir, report):
        return _run_locked(inputs, out_dir, config, tools, options, progress, report, started)


def check_input_args(input_args) -> None:
    """The reading options every recording shares, checked once before anything starts."""
    from ros_mm_perception.offline.sources import frame_period_ns

    if getattr(input_args, "fps", None) is not None:
        frame_period_ns(input_args.fps, 1)


def _run_locked(inputs, out_dir, config, tools, options, progress, report, started) -> Dict:
    staging = Staging(out_dir)
    staging.clear()
    chosen = options_identity(config, tools, options)
    recordings = [Recording(str(path), name)
                  for path, name in zip(inputs, output_names(inputs, reserved=(SUMMARY_NAME,)))]
    todo = []
    for rec in recordings:
        size, mtime = fingerprint(Path(rec.input))
        rec.identity = json.loads(json.dumps({"input": rec.input, "size": size, "mtime_ns": mtime,
                                              "options": chosen}))  # as a manifest reads back
        manifest = None if options.force else matching_manifest(out_dir / rec.name, rec.identity)
        if manifest is not None:
            rec.status = "up-to-date"
            for key in (*COUNTS, "damaged", "seconds", "worker", "attempts"):
                setattr(rec, key, manifest["summary"][key])
            rec.transforms_rejected = manifest["summary"].get("transforms_rejected", {})
        elif _plan(rec, config, tools, options):
            todo.append(rec)
        else:
            report(f"{rec.input}: failed: {rec.reason}")
    ray_start_s = 0.0
    try:
        if todo:
            ray_start_s = _Run(todo, out_dir, staging, config, tools, options, progress,
                               report).go()
    finally:
        staging.remove()
    summary = fleet_summary(recordings, out_dir, time.perf_counter() - started, ray_start_s,
                            min(options.workers, sum(r.windows for r in todo)) if todo else 0)
    written = OutputStaging()
    written.stage(out_dir / SUMMARY_NAME, "w").file.write(
        json.dumps(summary, indent=1, allow_nan=False) + "\n"
    )
    written.commit()
    return summary


def _plan(rec: Recording, config, tools: LabelTools, options: FleetOptions) -> bool:
    """Count the frames (and windows) of a recording; False (and failed) when it cannot be read."""
    try:
        source = tools.open_source(tools.input_args, config, Path(rec.input))
    except UserError as err:
        rec.status, rec.reason = "failed", str(err)
        return False
    try:
        rec.expected_frames = len(source)
        if options.split_s:
            start, end = time_span(source)
            rec.windows = max(1, math.ceil((end - start + 1) / (options.split_s * 1e9)))
            rec.span = (start, end)
    finally:
        source.close()
    return True


def time_span(source):
    """(first, last) recording time in ns of a source: a bag's own, else frame count × period."""
    reader = getattr(source, "reader", None)
    if reader is not None:
        return reader.start_time, reader.end_time
    return 0, max(len(source) - 1, 0) * source.period_ns


def tasks_of(rec: Recording, index: int, options: FleetOptions) -> List[Task]:
    if rec.windows == 1:
        return [Task(index, rec.input, staging="")]
    start = rec.span[0]
    width = int(options.split_s * 1e9)
    return [Task(index, rec.input, staging="", window=k, windows=rec.windows,
                 start_ns=None if k == 0 else start + k * width,
                 stop_ns=None if k == rec.windows - 1 else start + (k + 1) * width,
                 track_offset=k * TRACK_ID_STRIDE) for k in range(rec.windows)]


class _Run:
    """One scheduling loop over Ray workers."""

    def __init__(self, recordings, out_dir, staging, config, tools, options, progress, report):
        self.recordings, self.out_dir, self.staging = recordings, out_dir, staging
        self.config, self.tools, self.options, self.report = config, tools, options, report
        self.progress = progress
        self.pending = deque(task for i, rec in enumerate(recordings)
                             for task in tasks_of(rec, i, options))

    def go(self) -> float:
        """Run every task; return the Ray start-up time in seconds."""
        t0 = time.perf_counter()
        with ray_session(self.options.address, self.options.connect_timeout_s) as ray:
            self._check_resources(ray)
            ray_start_s = time.perf_counter() - t0
            self._loop(ray)
        return ray_start_s

    def _check_resources(self, ray) -> None:
        total = ray.cluster_resources()
        opts = self.options
        if opts.gpus_per_worker > total.get("GPU", 0):
            raise UserError(f"--gpus-per-worker {opts.gpus_per_worker}: the Ray cluster has "
                            f"{total.get('GPU', 0):g} GPUs")
        if opts.cpus_per_worker > total.get("CPU", 0):
            raise UserError(f"--cpus-per-worker {opts.cpus_per_worker}: the Ray cluster has "
                            f"{total.get('CPU', 0):g} CPUs")

    def _new_worker(self, ray):
        opts = self.options
        actor = ray.remote(LabelWorker).options(num_cpus=opts.cpus_per_worker,
                                                num_gpus=opts.gpus_per_worker, max_restarts=0,
                                                max_concurrency=1)
        worker = actor.remote(self.config, self.tools, opts.worker_threads())
        self.starting[worker.identity.remote()] = worker
        return worker

    def _loop(self, ray) -> None:
        from tqdm import tqdm

        from ray.exceptions import RayActorError, RayTaskError

        self.starting: Dict = {}
        self.running: Dict = {}
        self.counted: Dict[int, int] = {}
        """Frames shown on the bar per running task (taken back when its worker dies)."""
        idle: List = []
        names: Dict = {}
        self.bar = tqdm(total=sum(r.expected_frames for r in self.recordings) or None,
                        unit="frame", file=sys.stderr, desc="fleet",
                        disable=None if self.progress is None else not self.progress)
        self.finished = 0
        self._postfix()
        workers = [self._new_worker(ray)
                   for _ in range(min(self.options.workers, len(self.pending)))]
        try:
            while self.pending or self.running:
                while idle and self.pending:
                    task = self.pending.popleft()
                    rec = self.recordings[task.recording]
                    task.staging = str(self.staging.new(f"{rec.name}.w{task.window}"))
                    worker = idle.pop()
                    self.running[worker.label.remote(task)] = (worker, task)
                    self.counted[id(task)] = 0
                ready, _ = ray.wait([*self.starting, *self.running], num_returns=1)
                for ref in ready:
                    if ref in self.starting:
                        worker = self.starting.pop(ref)
                        try:
                            names[worker], error = ray.get(ref)
                        except RayActorError as err:
                            raise UserError(f"a worker could not start: {_short(err)}") from None
                        if error:
                            raise UserError(error)
                        idle.append(worker)
                        continue
                    worker, task = self.running[ref]
                    try:
                        kind, value = ray.get(next(ref))
                    except RayActorError as err:
                        del self.running[ref]
                        self.bar.update(-self.counted.pop(id(task)))
                        ray.kill(worker, no_restart=True)
                        workers.remove(worker)
                        self._worker_died(task, names.get(worker, "a worker"), err)
                        if self.pending:
                            workers.append(self._new_worker(ray))
                        continue
                    except RayTaskError as err:
                        del self.running[ref]
                        idle.append(worker)
                        self._task_done(task, {"status": "failed", "reason": _short(err),
                                               "worker": names.get(worker, "")})
                        continue
                    if kind == "frames":
                        self.bar.update(value)
                        self.counted[id(task)] += value
                        continue
                    del self.running[ref]
                    idle.append(worker)
                    self._task_done(task, value)
        finally:
            self.bar.close()
            for worker in workers:
                ray.kill(worker, no_restart=True)

    def _postfix(self) -> None:
        failed = sum(r.status == "failed" for r in self.recordings)
        self.bar.set_postfix_str(f"recordings {self.finished}/{len(self.recordings)}"
                                 + (f", {failed} failed" if failed else ""), refresh=False)

    def _worker_died(self, task: Task, worker: str, err: Exception) -> None:
        self.staging.discard(Path(task.staging))
        rec = self.recordings[task.recording]
        if task.attempt > self.options.retries:
            self._task_done(task, {"status": "failed", "worker": worker,
                                   "reason": f"its worker died, {task.attempt} of {task.attempt} "
                                             f"attempts ({_short(err)})"})
            return
        self.report(f"{rec.input}: worker {worker} died; trying again ({_short(err)})")
        self.pending.appendleft(Task(**{**asdict(task), "attempt": task.attempt + 1,
                                        "staging": ""}))

    def _task_done(self, task: Task, result: Dict) -> None:
        rec = self.recordings[task.recording]
        rec.parts[task.window] = {**result, "staging": task.staging, "attempt": task.attempt}
        if len(rec.parts) < rec.windows:
            return
        parts = [rec.parts[k] for k in range(rec.windows)]
        rec.attempts = max(p["attempt"] for p in parts)
        rec.worker = ", ".join(dict.fromkeys(p["worker"] for p in parts if p["worker"]))
        failed = [p for p in parts if p["status"] != "done"]
        if not failed and not any(p["frames"] for p in parts):
            damage = [line for p in parts for line in p["damaged"]]
            failed = [{"reason": "no frame could be processed"
                       + (f" ({damage[0]})" if damage else "")}]
        if failed:
            rec.status, rec.reason = "failed", failed[0]["reason"]
            self.report(f"{rec.input}: failed: {rec.reason}")
        else:
            self._publish(rec, parts)
        for part in parts:
            self.staging.discard(Path(part["staging"]))
        self.finished += 1
        self._postfix()
        self.bar.refresh()

    def _publish(self, rec: Recording, parts: List[Dict]) -> None:
        for key in COUNTS:
            setattr(rec, key, sum(p[key] for p in parts))
        rec.damaged = [line for p in parts for line in p["damaged"]]
        rec.transforms_rejected = {reason: n for p in parts
                                   for reason, n in p["transforms_rejected"].items()}
        rec.seconds = sum(p["seconds"] for p in parts)
        names = self.tools.output_names()
        if len(parts) == 1:
            folder = Path(parts[0]["staging"])
        else:  # windows without frames wrote nothing
            folder = self.staging.new(f"{rec.name}.merged")
            merge_windows([Path(p["staging"]) for p in parts if p["frames"]], folder, names)
        summary = {key: getattr(rec, key) for key in (*COUNTS, "damaged", "transforms_rejected",
                                                      "seconds", "worker", "attempts")}
        write_manifest(folder, {**rec.identity, "outputs": names, "summary": summary})
        self.staging.publish(folder, self.out_dir / rec.name)
        rec.status = "done"


def _short(err: Exception) -> str:
    """The first line of a Ray error's message."""
    text = str(getattr(err, "cause", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__
