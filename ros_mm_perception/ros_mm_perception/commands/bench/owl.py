"""The OWL section of ``bench``: frame → detections at batch 1 and 4 cameras, plain transformers
beside ours, the calls taking turns.

The model is the embedded detector, or with ``--random-weights`` OWLv2-base (``--sizes real``, the
960 px ViT-B/16 of ``google/owlv2-base-patch16-ensemble``) or the tiny test model, built from its
config with random weights. Paths:

* ``plain``: the transformers call users write: ``processor(text=..., images=...)``, the model's
  forward on the device, ``post_process_object_detection`` (text re-encoded on every call), in
  fp32 where ours runs int8;
* ``off``: :meth:`OwlEngine.detect_batch` (cached queries, device-side preprocessing, one tower
  call) at ``--owl-precision`` (default ``auto``);
* ``int8``: the same with the image tower's linear layers in int8 (CPU only, where ``off`` is not
  int8 already);
* ``graph`` / ``compile``: ``off`` through the fast path (on the CPU ``graph`` runs its static
  buffers uncaptured, so it is named ``static`` there).

``plain``, ``off`` and ``int8`` are timed in one race (:meth:`Harness.race`: plain, off, int8,
plain, ..., medians), and each fast path in a race of its own beside ``plain``, so load from other
programs falls on plain and ours alike; ``plain``'s figures are those of the first race. On the CPU
with one thread the thread's CPU time is recorded too (``..._thread_cpu_ms``). OWLv2-base at its
real size takes seconds per frame on a CPU: there only ``plain``, ``off`` and ``int8`` run, at
batch 1, ``--repeats`` timed rounds (default 2) after one warm-up call each.

``max_abs_score_diff_vs_plain`` compares the scores of each path with the plain call's on the same
frames.
"""

from __future__ import annotations

import os
import time
from typing import Dict, List

from ros_mm_perception.commands.bench.harness import Harness

OWL_FIGURES = ("frame_to_detections_b1_ms", "frames_to_detections_b4_ms",
               "frame_to_detections_b1_thread_cpu_ms", "frames_to_detections_b4_thread_cpu_ms",
               "max_abs_score_diff_vs_plain", "prepare_s")
OWL_PATHS = ("plain", "off", "int8", "static", "graph", "compile")
PHRASES = ["person", "cup", "red mug", "chair"]
CAMERAS = 4


def empty_owl() -> Dict:
    """The ``owl`` section with every figure ``null``."""
    return {"owl": {"architecture": None, "precision": None, "image_size": None,
                    "paths": {name: dict.fromkeys(OWL_FIGURES) for name in OWL_PATHS}}}


class OwlBench(Harness):
    """Fills ``owl`` (see the module docstring)."""

    def owl_source(self):
        """(model, random_weights) of this run's OWL model (builds the random folder once)."""
        from ros_mm_perception.core.models.owl import EMBEDDED
        from ros_mm_perception.core.models.random_models import build_random_owl

        if not self.args.random_weights:
            return EMBEDDED, False
        size = "owlv2-base-patch16" if self.sizes == "real" else "tiny"
        folder = os.path.join(self.workdir, "owl")
        if not os.path.isdir(folder):
            build_random_owl(folder, "owlv2", size)
        return folder, size != "tiny"

    def load_owl(self, precision: str = ""):
        """The OWL engine of this run in ``precision`` (``None`` when it cannot load); without
        one, ours at ``--owl-precision``, filling ``owl``'s head."""
        from ros_mm_perception.core.models.owl import load_owl

        try:
            model, random_weights = self.owl_source()
            owl = load_owl(model, str(self.device), precision or self.args.owl_precision,
                           random_weights=random_weights)
        except Exception as err:  # a benchmark reports every failure and goes on
            self.error(f"owl.{precision}" if precision else "owl", err)
            return None
        if not precision:
            size = ("owlv2-base-patch16" if self.sizes == "real" else "tiny"
                    ) if self.args.random_weights else model
            self.result["owl"].update(architecture=size, image_size=owl.image_size,
                                      precision=owl.precision)
        return owl

    def owl_heavy(self) -> bool:
        """Whether this run times OWLv2-base at its real size on the CPU (seconds per frame)."""
        return self.args.random_weights and self.sizes == "real" and not self.cuda

    def owl(self) -> None:
        owl = self.load_owl()
        if owl is None:
            return
        heavy = self.owl_heavy()
        plain_engine = self.load_owl("fp32") if owl.precision == "int8" else owl
        ours = {"off": owl}
        if not self.cuda and owl.precision == "int8":
            self.skip("owl.paths.int8", "off runs int8 already")
        elif not self.cuda:
            ours["int8"] = self.load_owl("int8")
        engines = [owl] + [e for e in (plain_engine, ours.get("int8"))
                           if e is not None and e is not owl]
        try:
            if plain_engine is not None and all(ours.values()):
                self.owl_races(plain_engine, ours, heavy)
        finally:
            for engine in engines:
                engine.close()

    def owl_races(self, plain_engine, ours: Dict, heavy: bool) -> None:
        """Fill ``owl.paths``: plain, off (and int8) in one race, then each fast path beside
        plain."""
        from ros_mm_perception.core.models.fast_owl import enable_fast_owl

        torch = self.torch
        frames = self.frames_batch[:CAMERAS]
        batches = {"b1": (frames[:1], "frame_to_detections_b1")}
        if heavy:
            self.skip("owl.b4", "OWLv2-base at its real size on the CPU: batch 1 only")
        else:
            batches["b4"] = (frames, "frames_to_detections_b4")
        # OWLv2-base on the CPU: the reference and prepare calls are the warm-up
        rounds, warmup = (self.args.repeats or 2, 0) if heavy else (None, 2)
        scored = frames[:1] if heavy else frames
        paths = self.result["owl"]["paths"]

        def plain(images):
            owl = plain_engine
            inputs = owl.processor(text=[PHRASES] * len(images), images=images,
                                   return_tensors="pt")
            inputs = {k: v.to(owl.device) for k, v in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(owl.dtype)
            with torch.inference_mode():
                outputs = owl.model(**inputs)
            return owl.processor.image_processor.post_process_object_detection(
                outputs, threshold=0.0, target_sizes=[im.shape[:2] for im in images])

        def race(engines: Dict, figures_of: List[str]) -> None:
            for images, figure in batches.values():
                calls = {"plain": lambda images=images: plain(images),
                         **{p: (lambda e=e, images=images: e.detect_batch(images, PHRASES))
                            for p, e in engines.items()}}
                times = self.race(calls, rounds, warmup)
                for path in figures_of:
                    paths[path][f"{figure}_ms"] = times[f"{path}_ms"]
                    if self.thread_clock_valid():
                        paths[path][f"{figure}_thread_cpu_ms"] = times[f"{path}_thread_cpu_ms"]

        reference = [r["scores"].float().cpu() for r in plain(scored)]

        def prepare(path: str, engine) -> None:
            start = time.perf_counter()
            if path not in ours:
                enable_fast_owl(engine, path, warm_up=[1, CAMERAS])
            engine.detect_batch(frames[:1], PHRASES)
            self.sync()
            paths[path]["prepare_s"] = round(time.perf_counter() - start, 2)
            scores = [r[0].float().cpu()
                      for r in engine.raw_detections(scored, PHRASES, threshold=0.0)]
            paths[path]["max_abs_score_diff_vs_plain"] = max(
                float((a - b).abs().max()) if a.shape == b.shape else float("inf")
                for a, b in zip(scores, reference))

        try:
            for path, engine in ours.items():
                prepare(path, engine)
            race(ours, ["plain", *ours])
        except Exception as err:  # a benchmark reports every failure and goes on
            self.error("owl.race", err)
        self.save()
        owl = ours["off"]
        fast = ["graph", "compile"] if self.cuda else [] if heavy else ["static"]
        for path in fast:
            name = f"owl.paths.{path}"
            if path == "compile" and not self.compile_allowed(name):
                continue
            try:
                prepare(path, owl)
                race({path: owl}, [path])
                if owl.fast_encoder is None:
                    self.fell_back(paths[path], name)
            except Exception as err:  # e.g. a failed capture: record it, go on with the next
                self.error(name, err)
            finally:
                enable_fast_owl(owl, "off")
            self.save()
