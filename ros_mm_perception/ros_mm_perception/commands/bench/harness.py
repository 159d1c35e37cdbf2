"""What every section of ``bench`` shares: the inputs, the clock, the result object and its errors.

Every figure is the median wall-clock time of ``--repeats`` calls after warm-up calls, with the GPU
synchronised after each call. A figure timed beside its plain-library equivalent (:meth:`versus`)
alternates the two calls (plain, ours, plain, ours, ...), so load from other programs hits both
alike. A figure that fails or is skipped is ``null`` with the reason under ``errors``.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional

from ros_mm_perception.core.devices import CPU_FIELDS, cpu_info

FRAME_SHAPE = (480, 640, 3)
"""The camera frame every section times (random pixels unless a section renders a scene)."""
CLIP_BATCH = 64
"""Frames of the batched figures (``..._b64_...``)."""
VOCABULARY = ["person", "chair", "door", "cup", "red mug", "open door", "closed door", "table",
              "laptop", "bottle", "backpack", "plant", "window", "stairs", "box", "robot arm",
              "keyboard", "monitor", "book", "lamp"]
VERSUS_FIGURES = ("plain_ms", "ours_ms", "speedup", "plain_thread_cpu_ms", "ours_thread_cpu_ms",
                  "thread_cpu_speedup", "plain_precision", "ours_precision", "ours_fast_path")


def ratio(plain_ms: float, ours_ms: float) -> Optional[float]:
    """``plain_ms / ours_ms`` to two decimals (``None`` for a call too quick to time)."""
    return round(plain_ms / ours_ms, 2) if ours_ms else None


def precision_name(dtype) -> str:
    """``torch.bfloat16`` → ``bf16`` (the names of the ``precision`` setting)."""
    names = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
    return names[str(dtype).removeprefix("torch.")]


def empty_meta() -> Dict:
    """The ``meta`` section with every key present and ``null``, ``cpu`` included."""
    meta = dict.fromkeys(("date", "host", "device", "gpu", "cuda_graphs", "torch", "cuda",
                          "transformers", "open_clip", "python", "cpu", "torch_cpu_capability",
                          "cpu_threads", "sizes", "random_weights", "repeats", "elapsed_s"))
    meta["cpu"] = dict.fromkeys(CPU_FIELDS)
    return meta


def error_text(err: BaseException) -> str:
    """How an error is recorded under ``errors``."""
    return f"{type(err).__name__}: {str(err)[:300]}"


class _LastError(logging.Handler):
    """Keeps the last error the package logged (a fast path that failed and fell back says why)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.message = ""

    def emit(self, record) -> None:
        cause = record.exc_info[1] if record.exc_info else None
        self.message = record.getMessage() + (f" ({error_text(cause)})" if cause else "")


class Harness:
    """One run: the options, the device, the inputs, the clock and the result being filled.

    The sections (one class per engine) derive from it and fill their part of ``result``;
    errors are recorded, never raised.
    """

    def __init__(self, args, device, workdir: str, result: Dict):
        import numpy as np
        import torch

        self.args = args
        self.device = device
        self.cuda = device.type == "cuda"
        self.repeats = max(1, args.repeats or (10 if self.cuda else 3))
        self.sizes = args.sizes or ("real" if self.cuda else "tiny")
        self.workdir = workdir
        self.start = time.perf_counter()
        self.result = result
        self.last_error = _LastError()
        self.torch = torch
        rng = np.random.default_rng(0)
        self.frame = rng.integers(0, 256, FRAME_SHAPE, dtype="uint8")
        self.frames_batch = [rng.integers(0, 256, FRAME_SHAPE, dtype="uint8")
                             for _ in range(CLIP_BATCH)]

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable, repeats: Optional[int] = None, warmup: int = 2,
              clock: Callable[[], float] = time.perf_counter) -> float:
        """Median milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls (fewer
        for one repeat).

        ``clock`` is wall-clock time by default; ``time.thread_time`` gives the CPU time of this
        thread, which leaves out the time spent waiting for cores that other programs hold."""
        repeats = repeats or self.repeats
        for _ in range(min(warmup, repeats)):
            fn()
        self.sync()
        times = []
        for _ in range(repeats):
            start = clock()
            fn()
            self.sync()
            times.append((clock() - start) * 1e3)
        return round(statistics.median(times), 3)

    def versus(self, key: str, plain: Callable, ours: Callable, repeats: Optional[int] = None,
               **about) -> None:
        """Time ``plain`` and ``ours`` alternately into ``versus_plain[key]`` (medians and
        ``speedup``).

        On the CPU with one thread the CPU time of this thread is recorded too (``thread_cpu``):
        it leaves out the time spent waiting for cores that other programs hold."""
        compares = self.result["versus_plain"][key]["compares"]

        def measure():
            for _ in range(2):
                plain()
                ours()
            wall: Dict[Callable, List[float]] = {plain: [], ours: []}
            cpu: Dict[Callable, List[float]] = {plain: [], ours: []}
            for _ in range(repeats or max(self.repeats, 5)):
                for fn in (plain, ours):
                    start, start_cpu = time.perf_counter(), time.thread_time()
                    fn()
                    self.sync()
                    wall[fn].append((time.perf_counter() - start) * 1e3)
                    cpu[fn].append((time.thread_time() - start_cpu) * 1e3)
            out = {"compares": compares, **dict.fromkeys(VERSUS_FIGURES), **about}
            kinds = [("", wall)] + ([("thread_cpu_", cpu)] if self.thread_clock_valid() else [])
            for prefix, times in kinds:
                plain_ms, ours_ms = (round(statistics.median(times[f]), 3) for f in (plain, ours))
                out.update({f"plain_{prefix}ms": plain_ms, f"ours_{prefix}ms": ours_ms,
                            f"{prefix}speedup": round(plain_ms / ours_ms, 2) if ours_ms else None})
            return out

        self.measure(self.result["versus_plain"], key, f"versus_plain.{key}", measure)

    def race(self, calls: Dict[str, Callable], rounds: Optional[int] = None,
             warmup: int = 2) -> Dict:
        """Medians (wall clock and this thread's CPU time, ms) of ``calls`` taking turns.

        ``warmup`` untimed rounds, then ``rounds`` timed ones (default ``--repeats``, at least 5),
        each calling every function once in order, so load from other programs falls on all of
        them alike. Keys: ``{name}_ms``, ``{name}_thread_cpu_ms`` and, beside ``plain``,
        ``{name}_speedup`` and ``thread_cpu_{name}_speedup``."""
        for _ in range(warmup):
            for fn in calls.values():
                fn()
        self.sync()
        wall: Dict[str, List[float]] = {k: [] for k in calls}
        cpu: Dict[str, List[float]] = {k: [] for k in calls}
        for _ in range(rounds or max(self.repeats, 5)):
            for key, fn in calls.items():
                start, start_cpu = time.perf_counter(), time.thread_time()
                fn()
                self.sync()
                wall[key].append((time.perf_counter() - start) * 1e3)
                cpu[key].append((time.thread_time() - start_cpu) * 1e3)
        out = {}
        for key in calls:
            out[f"{key}_ms"] = round(statistics.median(wall[key]), 3)
            out[f"{key}_thread_cpu_ms"] = round(statistics.median(cpu[key]), 3)
        for key in calls:
            if key != "plain" and "plain" in calls:
                out[f"{key}_speedup"] = ratio(out["plain_ms"], out[f"{key}_ms"])
                out[f"thread_cpu_{key}_speedup"] = ratio(out["plain_thread_cpu_ms"],
                                                         out[f"{key}_thread_cpu_ms"])
        return out

    def thread_clock_valid(self) -> bool:
        """Whether this thread's CPU time covers the work: on the CPU with one PyTorch thread."""
        return not self.cuda and self.torch.get_num_threads() == 1

    def measure(self, where: Dict, key: str, path: str, fn: Callable) -> None:
        """``where[key] = fn()``; a failure leaves ``null`` and records ``errors[path]``."""
        try:
            where[key] = fn()
        except Exception as err:  # a benchmark reports every failure and goes on
            self.error(path, err)
            if self.cuda:
                self.torch.cuda.empty_cache()
        self.save()

    def error(self, path: str, err: BaseException) -> None:
        self.result["errors"][path] = error_text(err)

    def skip(self, path: str, reason: str) -> None:
        self.result["errors"][path] = f"skipped: {reason}"

    def fell_back(self, figures: Dict, path: str) -> None:
        """The fast path failed and the engine went back to the plain path: its figures are not
        this path's."""
        figures.update(dict.fromkeys(figures))
        why = self.last_error.message or "see the log"
        self.result["errors"][path] = f"fell back to the plain path: {why}"

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def compile_allowed(self, path: str) -> bool:
        if self.args.no_compile:
            self.skip(path, "--no-compile")
            return False
        if self.elapsed() > self.args.budget_s:
            self.skip(path, f"time budget of {self.args.budget_s:.0f} s spent")
            return False
        return True

    def save(self) -> None:
        self.result["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        if self.args.output:
            with open(self.args.output, "w") as fh:
                json.dump(self.result, fh, indent=1)

    def record_meta(self) -> None:
        """Fill ``meta``: date, host, device, library versions, the CPU (:func:`cpu_info`)."""
        import torch
        import transformers

        try:
            import open_clip
            open_clip_version = open_clip.__version__
        except ImportError:
            open_clip_version = None
        gpu = torch.cuda.get_device_name(self.device) if self.cuda else None
        self.result["meta"].update(
            date=datetime.now(timezone.utc).isoformat(timespec="seconds"), host=platform.node(),
            device=str(self.device), gpu=gpu, cuda_graphs=self.cuda, torch=torch.__version__,
            cuda=torch.version.cuda, transformers=transformers.__version__,
            open_clip=open_clip_version, python=platform.python_version(), cpu=cpu_info(),
            torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
            cpu_threads=torch.get_num_threads(), sizes=self.sizes,
            random_weights=self.args.random_weights, repeats=self.repeats)
