"""The Ray actor that labels recordings: one pipeline (one model copy) per worker, many recordings.

A task is a whole recording or one time window of it. The worker reads it in order, runs the
pipeline with fresh tracks (ids from 1, offset per window), and writes the ``bag`` outputs into the
task's staging folder; it never publishes. :meth:`LabelWorker.label` is a streaming generator: it
yields ``("frames", n)`` as frames are done, then ``("done", result)``. A recording that cannot be
read is a ``failed`` result with the reason (the worker goes on with the next one); a worker that
dies is noticed by the driver, which retries the task elsewhere.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ros_mm_perception.core.errors import UserError

MCAP_NAME = "perception.mcap"
JSONL_NAME = "detections.jsonl"
COCO_NAME = "coco.json"
MEMORY_NAME = "objects.db"


@dataclass(frozen=True)
class LabelTools:
    """How workers read a recording, build the pipeline and open outputs: the ``bag`` command's own
    functions, so ``fleet`` writes exactly what ``bag`` writes.

    ``open_source(input_args, config, path)``, ``target_frame(source, config.target_frame)`` and
    ``open_outputs(files, config, path, staging, target)``, where ``files`` has ``out``, ``jsonl``,
    ``coco`` (paths or None) and ``debug_images`` and ``staging`` is an
    :class:`~ros_mm_perception.offline.atomic.OutputStaging`; ``build_pipeline(config)`` returns an
    object with ``process(frame)`` and ``reset(restart_ids=True)``; ``open_memory(config, source,
    path, outputs)`` (when set) returns the outputs that build the recording's object memory at
    ``path`` (and write its scene into the MCAP output among ``outputs``).
    """

    open_source: Callable
    target_frame: Callable
    open_outputs: Callable
    build_pipeline: Callable
    input_args: Namespace
    jsonl: bool = False
    coco: bool = False
    debug_images: bool = False
    open_memory: Optional[Callable] = None

    def output_names(self):
        """The file names a recording's folder holds."""
        return ([MCAP_NAME] + [JSONL_NAME] * self.jsonl + [COCO_NAME] * self.coco
                + [MEMORY_NAME] * (self.open_memory is not None))


@dataclass
class Task:
    """One recording, or one window [start_ns, stop_ns) of its recording time, for one attempt."""

    recording: int
    input: str
    staging: str
    window: int = 0
    windows: int = 1
    start_ns: Optional[int] = None
    stop_ns: Optional[int] = None
    track_offset: int = 0
    attempt: int = 1


class TaskSource:
    """The frames of ``source`` whose recording time lies in the task's window, reported one by
    one.

    The whole recording is read, so depth pairing and camera_info are as in one pass; what the
    source lost or found damaged, and unusable depth and camera_info, count in the first window
    only.
    """

    def __init__(self, source, task: Task, report: Callable[[int], None]):
        self.source, self.task, self.report = source, task, report
        self.paths = source.paths

    def __len__(self) -> int:
        return len(self.source) if self.task.windows == 1 else 0

    def __iter__(self) -> Iterator:
        start, stop = self.task.start_ns, self.task.stop_ns
        for item in self.source:
            if (start is None or item.log_time_ns >= start) and (
                stop is None or item.log_time_ns < stop
            ):
                yield item
                self.report(1)

    @property
    def aux_skipped(self) -> int:
        return getattr(self.source, "aux_skipped", 0) if self.task.window == 0 else 0

    @property
    def lost(self) -> int:
        return getattr(self.source, "lost", 0) if self.task.window == 0 else 0

    @property
    def damaged(self) -> List[str]:
        return list(getattr(self.source, "damaged", ())) if self.task.window == 0 else []

    @property
    def transforms_rejected(self) -> Dict[str, int]:
        return (
            dict(getattr(self.source, "transforms_rejected", {})) if self.task.window == 0 else {}
        )

    def close(self) -> None:
        self.source.close()


class OffsetTracks:
    """The pipeline with every track id moved up by ``offset`` (unique ids across windows)."""

    def __init__(self, pipeline, offset: int):
        self.pipeline, self.offset = pipeline, offset

    def process(self, frame):
        result = self.pipeline.process(frame)
        for det in result.detections:
            if det.track_id is not None:
                det.track_id += self.offset
        return result


class LabelWorker:
    """Loads the pipeline once (``threads`` PyTorch threads) and labels tasks one at a time."""

    def __init__(self, config, tools: LabelTools, threads: int):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.config, self.tools = config, tools
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.error = ""
        try:
            self.pipeline = tools.build_pipeline(config)
        except UserError as err:
            self.error = str(err)
        except Exception as err:  # told to the driver as one line, not as a dead actor's traceback
            self.error = f"{type(err).__name__}: {err}"

    def identity(self) -> Tuple[str, str]:
        """``host:pid`` of this worker and why its pipeline could not be built ("" when it was);
        answered once the model is loaded."""
        return self.name, self.error

    def label(self, task: Task):
        """Label ``task``; yields ``("frames", n)`` while going, then ``("done", result dict)``."""
        events: "queue.Queue[Optional[int]]" = queue.Queue()
        outcome: Dict[str, Any] = {}

        def run():
            try:
                outcome["result"] = self._label(task, events.put)
            except BaseException as err:  # handed to the generator, which raises it to the driver
                outcome["error"] = err
            finally:
                events.put(None)

        thread = threading.Thread(target=run, name="label", daemon=True)
        thread.start()
        while True:
            n = events.get()
            if n is None:
                break
            while True:  # coalesce what is already waiting
                try:
                    more = events.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    events.put(None)
                    break
                n += more
            yield ("frames", n)
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        yield ("done", outcome["result"])

    def _label(self, task: Task, report: Callable[[int], None]) -> Dict:
        """Label one task into its staging folder; a window without frames writes nothing."""
        from ros_mm_perception.offline.atomic import OutputStaging
        from ros_mm_perception.offline.runner import process_input

        tools, config, path, staging = (self.tools, self.config, Path(task.input),
                                        Path(task.staging))
        files = Namespace(out=staging / MCAP_NAME,
                          jsonl=staging / JSONL_NAME if tools.jsonl else None,
                          coco=staging / COCO_NAME if tools.coco else None,
                          debug_images=tools.debug_images)
        self.pipeline.reset(restart_ids=True)
        pipeline = (
            OffsetTracks(self.pipeline, task.track_offset) if task.track_offset else self.pipeline
        )
        try:
            source = tools.open_source(tools.input_args, config, path)
            staged = OutputStaging(inputs=[path, *source.paths])
            try:
                target = tools.target_frame(source, config.target_frame)
                outputs = tools.open_outputs(files, config, path, staged, target)
                if tools.open_memory is not None:
                    outputs += tools.open_memory(config, source, staging / MEMORY_NAME, outputs)
            except BaseException:
                staged.abort()
                source.close()
                raise
            summary = process_input(TaskSource(source, task, report), pipeline, outputs, staged,
                                    phrases=config.detect_phrases, progress=False)
        except UserError as err:
            return {"status": "failed", "reason": str(err), "worker": self.name}
        except Exception as err:  # a recording that breaks the pipeline must not stop the fleet
            return {"status": "failed", "reason": f"{type(err).__name__}: {err}",
                    "worker": self.name}
        return {"status": "done", "worker": self.name, "frames": summary.frames,
                "skipped": summary.skipped, "damaged": summary.damaged,
                "transforms_rejected": summary.transforms_rejected,
                "detections": summary.detections, "per_label": dict(summary.per_label),
                "seconds": summary.seconds}
