"""The OWL section of ``bench``: frame → detections at batch 1 and 4 cameras, plain transformers
beside ours.

The model is the embedded detector, or with ``--random-weights`` OWLv2-base (``--sizes real``, the
960 px ViT-B/16 of ``google/owlv2-base-patch16-ensemble``) or the tiny test model, built from its
config with random weights. Paths:

* ``plain``: the transformers call users write: ``processor(text=..., images=...)``, the model's
  forward on the device, ``post_process_object_detection`` (text re-encoded on every call);
* ``off``: :meth:`OwlEngine.detect_batch` (cached queries, device-side preprocessing, one tower
  call);
* ``graph`` / ``compile``: the same through the fast path (on the CPU ``graph`` runs its static
  buffers uncaptured, so it is named ``static`` there).

OWLv2-base at its real size takes seconds per frame on a CPU: there only ``plain`` and ``off`` run,
one timed call per figure without warm-up.

``max_abs_score_diff_vs_plain`` compares the scores of each path with the plain call's on the same
frames.
"""

from __future__ import annotations

import os
import time
from typing import Dict

from ros_mm_perception.commands.bench.harness import Harness

OWL_FIGURES = ("frame_to_detections_b1_ms", "frames_to_detections_b4_ms",
               "max_abs_score_diff_vs_plain", "prepare_s")
OWL_PATHS = ("plain", "off", "static", "graph", "compile")
PHRASES = ["person", "cup", "red mug", "chair"]
CAMERAS = 4


def empty_owl() -> Dict:
    """The ``owl`` section with every figure ``null``."""
    return {"owl": {"architecture": None, "precision": None, "image_size": None,
                    "paths": {name: dict.fromkeys(OWL_FIGURES) for name in OWL_PATHS}}}


class OwlBench(Harness):
    """Fills ``owl`` (see the module docstring)."""

    def load_owl(self):
        """The OWL engine of this run (``None`` when it cannot load); fills ``owl``'s head."""
        from ros_mm_perception.core.models.owl import EMBEDDED, load_owl
        from ros_mm_perception.core.models.random_models import build_random_owl

        try:
            if self.args.random_weights:
                size = "owlv2-base-patch16" if self.sizes == "real" else "tiny"
                folder = build_random_owl(os.path.join(self.workdir, "owl"), "owlv2", size)
                owl = load_owl(str(folder), str(self.device), random_weights=size != "tiny")
            else:
                size = EMBEDDED
                owl = load_owl(EMBEDDED, str(self.device))
        except Exception as err:  # a benchmark reports every failure and goes on
            self.error("owl", err)
            return None
        self.result["owl"].update(architecture=size, image_size=owl.image_size,
                                  precision=owl.precision)
        return owl

    def owl(self) -> None:
        from ros_mm_perception.core.models.fast_owl import enable_fast_owl

        owl = self.load_owl()
        if owl is None:
            return
        torch = self.torch
        frames = self.frames_batch[:CAMERAS]
        one = frames[:1]

        def plain(images):
            inputs = owl.processor(text=[PHRASES] * len(images), images=images,
                                   return_tensors="pt")
            inputs = {k: v.to(owl.device) for k, v in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(owl.dtype)
            with torch.inference_mode():
                outputs = owl.model(**inputs)
            return owl.processor.image_processor.post_process_object_detection(
                outputs, threshold=0.0, target_sizes=[im.shape[:2] for im in images])

        reference = [r["scores"].float().cpu() for r in plain(frames)]
        # OWLv2-base on the CPU: seconds per frame.
        heavy = self.args.random_weights and self.sizes == "real" and not self.cuda
        fast = ["graph", "compile"] if self.cuda else [] if heavy else ["static"]
        slow, warmup = (1, 0) if heavy else (None, 2)
        for path in ["plain", "off"] + fast:
            out = self.result["owl"]["paths"][path]
            name = f"owl.paths.{path}"
            if path == "compile" and not self.compile_allowed(name):
                continue
            if path == "plain":
                self.measure(out, "frame_to_detections_b1_ms", f"{name}.b1",
                             lambda: self.timed(lambda: plain(one), slow, warmup))
                self.measure(out, "frames_to_detections_b4_ms", f"{name}.b4",
                             lambda: self.timed(lambda: plain(frames), slow, warmup))
                continue
            start = time.perf_counter()
            try:
                if path != "off":
                    enable_fast_owl(owl, path, warm_up=[1, CAMERAS])
                owl.detect_batch(one, PHRASES)
                self.sync()
                out["prepare_s"] = round(time.perf_counter() - start, 2)
                self.measure(out, "frame_to_detections_b1_ms", f"{name}.b1",
                             lambda: self.timed(lambda: owl.detect_batch(one, PHRASES), slow,
                                                warmup))
                self.measure(out, "frames_to_detections_b4_ms", f"{name}.b4",
                             lambda: self.timed(lambda: owl.detect_batch(frames, PHRASES), slow,
                                                warmup))
                ours = [r[0].float().cpu()
                        for r in owl.raw_detections(frames, PHRASES, threshold=0.0)]
                out["max_abs_score_diff_vs_plain"] = max(
                    float((a - b).abs().max()) if a.shape == b.shape else float("inf")
                    for a, b in zip(ours, reference))
                if path != "off" and owl.fast_encoder is None:
                    self.fell_back(out, name)
            except Exception as err:  # e.g. a failed capture: record it, go on with the next
                self.error(name, err)
            finally:
                enable_fast_owl(owl, "off")
            self.save()
        owl.close()
