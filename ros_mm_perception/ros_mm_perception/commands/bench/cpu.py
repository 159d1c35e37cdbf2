"""The CPU section of ``bench`` (``--cpu-only``): the int8 path and the CPU-class CLIP models.

For each model of :data:`CPU_MODELS` (random weights at the real size; ``embedded`` is the shipped
model) one 640x480 frame goes to labels three ways, the calls taking turns (plain, fp32, int8,
plain, ...): plain open_clip in fp32 (its own PIL transform and encoder), ours in fp32 and ours in
int8 (``ClipLabeler.label`` on the frame alone, ``freeze`` fast path); on a CPU with bf16 units
ours in bf16 too. Each row has wall-clock and
thread-CPU medians, the speedups over plain, frames per second on one core (from the thread CPU
time of the faster of ours), the cosine of the int8 image embeddings to fp32 on
:data:`COSINE_FRAMES` frames and the precision ``auto`` picks on this CPU. The embedded detector
gets the same three-way race (plain transformers, ours fp32, ours int8) and the embedded CLIP's
CLIP-only grounding of a rendered frame is timed. Run it with one thread (``--threads 1``); set
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` to time an
AVX2-only CPU on a larger one (``meta.cpu.isa_limits`` records them).
"""

from __future__ import annotations

import os
import time
from typing import Dict

from ros_mm_perception.commands.bench.clip import ClipBench
from ros_mm_perception.commands.bench.harness import VOCABULARY

CPU_MODELS = ("ViT-B-16", "ViT-B-32", "MobileCLIP-S1", "MobileCLIP-S2", "embedded")
"""open_clip architectures timed by ``--cpu-only`` (``embedded``: the model in the package)."""
COSINE_FRAMES = 8
CPU_FIGURES = ("auto_precision", "plain_ms", "fp32_ms", "int8_ms", "bf16_ms",
               "plain_thread_cpu_ms", "fp32_thread_cpu_ms", "int8_thread_cpu_ms",
               "bf16_thread_cpu_ms", "fp32_speedup", "int8_speedup", "bf16_speedup",
               "thread_cpu_fp32_speedup", "thread_cpu_int8_speedup", "thread_cpu_bf16_speedup",
               "frames_per_s_one_core", "int8_layers", "int8_cosine_min")
OWL_FIGURES = ("auto_precision", "plain_ms", "fp32_ms", "int8_ms", "plain_thread_cpu_ms",
               "fp32_thread_cpu_ms", "int8_thread_cpu_ms", "fp32_speedup", "int8_speedup",
               "thread_cpu_fp32_speedup", "thread_cpu_int8_speedup", "int8_max_score_diff")


def empty_cpu() -> Dict:
    """The ``cpu`` section with every figure ``null``."""
    return {"cpu": {"clip_frame_to_labels": {m: dict.fromkeys(CPU_FIGURES) for m in CPU_MODELS},
                    "embedded_owl_frame_to_detections": dict.fromkeys(OWL_FIGURES),
                    "embedded_grounding_640x480_4_phrases_thread_cpu_ms": None}}


class CpuBench(ClipBench):
    """Fills ``cpu`` (see the module docstring)."""

    def cpu_section(self) -> None:
        for name in CPU_MODELS:
            self.measure(self.result["cpu"]["clip_frame_to_labels"], name, f"cpu.{name}",
                         lambda: self.cpu_clip(name))
        self.measure(self.result["cpu"], "embedded_owl_frame_to_detections", "cpu.embedded_owl",
                     self.cpu_owl)
        self.measure(self.result["cpu"], "embedded_grounding_640x480_4_phrases_thread_cpu_ms",
                     "cpu.embedded_grounding", self.cpu_grounding)

    def cpu_model_folder(self, name: str) -> str:
        """A folder holding ``name`` with random weights (the embedded model's own folder)."""
        import open_clip

        from ros_mm_perception.core.models.clip_model import save_clip
        from ros_mm_perception.core.models.embedded import embedded_clip_dir

        if name == "embedded":
            return str(embedded_clip_dir())
        self.torch.manual_seed(0)
        model = open_clip.create_model(name)
        return str(save_clip(model, open_clip.get_model_config(name),
                             os.path.join(self.workdir, "cpu", name)))

    def cpu_clip(self, name: str) -> Dict:
        from ros_mm_perception.core.devices import resolve_precision, runs_bf16_natively
        from ros_mm_perception.core.models.clip_model import (load_clip, open_clip_config,
                                                              transformer_width)
        from ros_mm_perception.core.models.fast_clip import enable_fast_clip
        from ros_mm_perception.core.models.int8 import quantized_layers
        from ros_mm_perception.core.perception.labeler import ClipLabeler

        torch = self.torch
        folder = self.cpu_model_folder(name)
        config = open_clip_config(f"local-dir:{folder}")
        out = dict.fromkeys(CPU_FIGURES)
        out["auto_precision"] = resolve_precision(
            "auto", self.device, width=config.get("embed_dim"),
            int8_width=transformer_width(config))
        plain, _ = self.plain_open_clip(f"local-dir:{folder}", None)
        calls = {"plain": plain}
        models = {}
        for precision in ("fp32", "int8") + (("bf16",) if runs_bf16_natively() else ()):
            clip = load_clip(folder, device="cpu", precision=precision)
            if clip.precision != precision:  # a tower without linear layers: int8 is fp32
                continue
            enable_fast_clip(clip, "freeze", warm_up=[1])
            labeler = ClipLabeler(clip, VOCABULARY, label_tiles=0)
            calls[precision] = lambda labeler=labeler: labeler.label(self.frame)
            models[precision] = clip
        out.update(self.race(calls))
        ours = min(out.get(f"{p}_thread_cpu_ms") or float("inf") for p in models)
        out["frames_per_s_one_core"] = round(1e3 / ours, 2)
        if "int8" in models:
            out["int8_layers"] = quantized_layers(models["int8"].model.visual)
            with torch.inference_mode():
                pixels = models["fp32"].preprocessor.frames(self.frames_batch[:COSINE_FRAMES])
                a, b = (models[p].encode_image(pixels).float() for p in ("fp32", "int8"))
            cosine = torch.nn.functional.cosine_similarity(a, b).min()
            out["int8_cosine_min"] = round(float(cosine), 6)
        return out

    def cpu_owl(self) -> Dict:
        from ros_mm_perception.core.devices import resolve_precision
        from ros_mm_perception.core.models.owl import EMBEDDED, load_owl

        torch = self.torch
        phrases = ["red cube", "blue ball", "green cylinder", "yellow ring"]
        engines = {p: load_owl(EMBEDDED, "cpu", p) for p in ("fp32", "int8")}
        fp32 = engines["fp32"]
        width = fp32.model.config.vision_config.hidden_size
        frames = [self.frame]

        def plain():
            inputs = fp32.processor(text=[phrases], images=frames, return_tensors="pt")
            with torch.inference_mode():
                outputs = fp32.model(**inputs)
            return fp32.processor.image_processor.post_process_object_detection(
                outputs, threshold=0.0, target_sizes=[self.frame.shape[:2]])

        calls = {"plain": plain, **{p: (lambda e=e: e.detect_batch(frames, phrases))
                                    for p, e in engines.items()}}
        out = dict.fromkeys(OWL_FIGURES)
        out["auto_precision"] = resolve_precision("auto", self.device, width=width,
                                                  int8_width=width)
        out.update(self.race(calls))
        a, b = (e.raw_detections(self.frames_batch[:COSINE_FRAMES], phrases)
                for e in engines.values())
        out["int8_max_score_diff"] = round(max(float((x[0] - y[0]).abs().max())
                                               for x, y in zip(a, b)), 6)
        return out

    def cpu_grounding(self) -> float:
        from ros_mm_perception.core.models.clip_model import load_clip
        from ros_mm_perception.core.models.fast_clip import enable_fast_clip
        from ros_mm_perception.core.perception.clip_grounding import ground_with_clip
        from ros_mm_perception.core.perception.labeler import ClipLabeler

        clip = load_clip("", device="cpu")
        enable_fast_clip(clip, "auto", warm_up=[1, 64])
        labeler = ClipLabeler(clip)
        scene, phrases = self.grounding_scene()
        return self.timed(lambda: ground_with_clip(labeler, scene, phrases),
                          max(self.repeats, 5), clock=time.thread_time)
