"""The CLIP sections of ``bench``: the paths of a CLIP model, the embedded model, plain open_clip.

Each path is timed as users call it (``ClipLabeler.label``), so preprocessing, host work and
copies are included; ``versus_plain`` times open_clip's own transform and encoder on the same
weights beside ours.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, Optional

from ros_mm_perception.commands.bench.harness import VOCABULARY, Harness

CLIP_PATHS = ("off", "graph", "compile", "freeze")
CLIP_FIGURES = ("encode_b1_ms", "frame_to_labels_b1_ms", "encode_b64_ms", "encode_b64_img_per_s",
                "frames_to_labels_b64_img_per_s", "max_abs_diff_vs_off", "prepare_s")
VERSUS_PLAIN = {
    "clip.frame_to_labels": "one 640x480 frame to labels: open_clip's own transform (PIL) + "
                            "encode_image in open_clip's default precision, vs ClipLabeler.label "
                            "at the defaults (auto precision and fast path)",
    "clip.frame_to_labels_same_precision": "the same, plain open_clip in our precision (where "
                                           "that is not fp32)",
    "clip.preprocess_640x480": "one 640x480 frame to model input: open_clip's own transform (PIL) "
                               "vs ClipPreprocessor.frames",
    "clip.encode_b1": "one preprocessed image to its embedding: open_clip's encode_image vs "
                      "ClipModel.encode_image on the auto fast path, the same model and precision",
    "embedded_clip.frame_to_labels": "the same on the embedded model",
    "embedded_clip.preprocess_640x480": "the same on the embedded model",
    "embedded_clip.encode_b1": "the same on the embedded model",
}
"""The CLIP figures timed beside their plain-library equivalent (key → what is compared)."""


def empty_clip() -> Dict:
    """The ``clip`` and ``embedded_clip`` sections with every figure ``null``."""
    return {
        "clip": {"architecture": None, "precision": None, "preprocess_640x480_ms": None,
                 "frame_to_labels_default_tiles_ms": None,
                 "paths": {name: dict.fromkeys(CLIP_FIGURES) for name in CLIP_PATHS}},
        "embedded_clip": {"precision": None, "fast_path": None,
                          "frame_to_labels_default_tiles_ms": None,
                          "grounding_640x480_4_phrases_ms": None,
                          "grounding_640x480_4_phrases_thread_cpu_ms": None,
                          "grounding_proposals": None},
    }


class ClipBench(Harness):
    """Fills ``clip``, ``embedded_clip`` and their ``versus_plain`` figures."""

    def batched(self) -> bool:
        """Whether the batch figures run: on CUDA, or on the CPU with the tiny model."""
        return self.cuda or self.sizes == "tiny"

    def load_clip(self):
        """The CLIP model of this run and a labeler on the frame alone; fills ``clip``'s head."""
        from ros_mm_perception.core.models.clip_model import load_clip
        from ros_mm_perception.core.models.random_models import build_random_clip
        from ros_mm_perception.core.perception.labeler import ClipLabeler

        section = self.result["clip"]
        if self.args.random_weights:
            real = self.sizes in ("real", "real-clip")
            architecture = "ViT-B-16" if real else "tiny"
            folder = build_random_clip(os.path.join(self.workdir, "clip"),
                                       "ViT-B-16" if real else None)
            clip = load_clip(str(folder), device=str(self.device))
        else:
            architecture = self.args.clip_model or "embedded"
            clip = load_clip(self.args.clip_model, self.args.clip_pretrained,
                             device=str(self.device))
        loaded = Path(clip.name.removeprefix("local-dir:"))
        # What plain open_clip is given to load the same weights.
        self.clip_source = ((f"local-dir:{loaded}", None) if loaded.is_dir()
                            else (clip.name, self.args.clip_pretrained))
        section.update(architecture=architecture,
                       precision=clip.precision)
        # The frame alone, as plain open_clip sees it.
        labeler = ClipLabeler(clip, VOCABULARY, label_tiles=0)
        self.measure(section, "preprocess_640x480_ms", "clip.preprocess_640x480_ms",
                     lambda: self.timed(lambda: clip.preprocessor.frames([self.frame])))
        if self.batched():
            tiled = ClipLabeler(clip, VOCABULARY)
            self.measure(section, "frame_to_labels_default_tiles_ms",
                         "clip.frame_to_labels_default_tiles_ms",
                         lambda: self.timed(lambda: tiled.label(self.frame)))
        else:
            self.skip("clip.frame_to_labels_default_tiles_ms",
                      "a real-size CLIP on 13 views takes too long on the CPU")
        return clip, labeler

    def plain_open_clip(self, model_id: str, pretrained: Optional[str], precision: str = "fp32"):
        """Frame → top-5 labels the way open_clip's README does it: its own transform, model and
        text features. Returns that function and the transform."""
        import open_clip
        from PIL import Image

        torch = self.torch
        model, _, transform = open_clip.create_model_and_transforms(
            model_id, pretrained=pretrained, device=self.device, precision=precision)
        model.eval()
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        prompts = [f"a photo of {p}." for p in VOCABULARY]
        tokens = open_clip.get_tokenizer(model_id)(prompts).to(self.device)
        with torch.no_grad():
            text = model.encode_text(tokens)
            text = text / text.norm(dim=-1, keepdim=True)

        def label():
            with torch.no_grad():
                pixels = transform(Image.fromarray(self.frame)).unsqueeze(0).to(self.device, dtype)
                image = model.encode_image(pixels)
                image = image / image.norm(dim=-1, keepdim=True)
                probs = (100.0 * image @ text.T).softmax(dim=-1)
                return probs.topk(5).indices.tolist()

        return label, transform

    def clip_versus_plain(self, clip, key: str, source) -> None:
        """``versus_plain[key]``: ClipLabeler.label on the frame alone against plain open_clip on
        the same weights; the preprocessing alone against open_clip's transform; the encoder alone
        against open_clip's."""
        from PIL import Image

        from ros_mm_perception.core.models.fast_clip import enable_fast_clip
        from ros_mm_perception.core.perception.labeler import ClipLabeler

        ours = clip.precision
        encoder = enable_fast_clip(clip, "auto", warm_up=[1])
        mode = encoder.mode if encoder is not None else "off"
        # The frame alone: the same work as plain open_clip.
        labeler = ClipLabeler(clip, VOCABULARY, label_tiles=0)
        try:
            for name, plain_precision in ((key, "fp32"), (f"{key}_same_precision", ours)):
                if name != key and ours in ("fp32", "int8"):
                    self.skip(f"versus_plain.{name}", f"our precision is {ours}: open_clip "
                                                      "has fp32 and no int8")
                    continue
                try:
                    plain, transform = self.plain_open_clip(*source, precision=plain_precision)
                except Exception as err:  # e.g. open_clip cannot load this source
                    self.error(f"versus_plain.{name}", err)
                    continue
                self.versus(name, plain, lambda: labeler.label(self.frame),
                            plain_precision=plain_precision, ours_precision=ours,
                            ours_fast_path=mode)
                if name == key:
                    self.versus(key.replace("frame_to_labels", "preprocess_640x480"),
                                lambda: transform(Image.fromarray(self.frame)),
                                lambda: clip.preprocessor.frames([self.frame]),
                                max(self.repeats, 20), plain_precision="fp32",
                                ours_precision=ours)
            pixels = clip.preprocessor.frames([self.frame])
            with self.torch.inference_mode():
                self.versus(key.replace("frame_to_labels", "encode_b1"),
                            lambda: clip.model.encode_image(pixels),
                            lambda: clip.encode_image(pixels), plain_precision=ours,
                            ours_precision=ours, ours_fast_path=mode)
        finally:
            enable_fast_clip(clip, "off")

    def embedded_clip(self) -> None:
        """The embedded model: frame → labels against plain open_clip, and CLIP-only grounding
        per frame."""
        from ros_mm_perception.core.models.clip_model import load_clip
        from ros_mm_perception.core.models.fast_clip import enable_fast_clip
        from ros_mm_perception.core.perception.clip_grounding import (ground_with_clip,
                                                                      propose_regions)
        from ros_mm_perception.core.perception.labeler import ClipLabeler

        section = self.result["embedded_clip"]
        clip = load_clip("", device=str(self.device))
        section["precision"] = clip.precision
        self.clip_versus_plain(clip, "embedded_clip.frame_to_labels",
                               (f"local-dir:{clip.name}", None))
        encoder = enable_fast_clip(clip, "auto", warm_up=[1, len(self.frames_batch)])
        section["fast_path"] = encoder.mode if encoder is not None else "off"
        tiled = ClipLabeler(clip, VOCABULARY)
        self.measure(section, "frame_to_labels_default_tiles_ms",
                     "embedded_clip.frame_to_labels_default_tiles_ms",
                     lambda: self.timed(lambda: tiled.label(self.frame)))
        labeler = ClipLabeler(clip)
        scene, phrases = self.grounding_scene()
        section["grounding_proposals"] = len(propose_regions(scene).boxes)
        figure = "grounding_640x480_4_phrases_ms"
        self.measure(section, figure, f"embedded_clip.{figure}",
                     lambda: self.timed(lambda: ground_with_clip(labeler, scene, phrases)))
        figure = "grounding_640x480_4_phrases_thread_cpu_ms"
        if self.thread_clock_valid():
            self.measure(section, figure, f"embedded_clip.{figure}",
                         lambda: self.timed(lambda: ground_with_clip(labeler, scene, phrases),
                                            clock=time.thread_time))
        else:
            self.skip(f"embedded_clip.{figure}", "needs the CPU and --threads 1")
        enable_fast_clip(clip, "off")

    def grounding_scene(self):
        """A rendered scene of the frame's size with three objects, and four phrases: theirs
        and one absent.

        Random pixels would not do: they give edge and colour boxes everywhere."""
        import numpy as np

        from ros_mm_perception.synthetic.scenes import all_phrases, render_scene

        scene = render_scene(np.random.default_rng(0), n_objects=3, size=self.frame.shape[:2])
        present = [o.phrase for o in scene.objects]
        return scene.image, present + [next(p for p in all_phrases() if p not in present)]

    def clip_path(self, clip, labeler, path: str, reference=None):
        """Time one CLIP path; returns its batch embeddings (``None`` when it failed)."""
        from ros_mm_perception.core.models.fast_clip import enable_fast_clip

        out = self.result["clip"]["paths"][path]
        batch = len(self.frames_batch)
        with self.torch.inference_mode():
            one = clip.preprocessor.frames([self.frame])
            many = clip.preprocessor.frames(self.frames_batch)
        start = time.perf_counter()
        name = f"clip.paths.{path}"
        try:
            enable_fast_clip(clip, path, warm_up=[1, batch] if self.batched() else [1])
            clip.encode_image(one)
            self.sync()
            out["prepare_s"] = round(time.perf_counter() - start, 2)
        except Exception as err:  # e.g. a failed capture: record it, leave the figures empty
            self.error(name, err)
            enable_fast_clip(clip, "off")
            return None
        with self.torch.inference_mode():
            self.measure(out, "encode_b1_ms", f"{name}.encode_b1_ms",
                         lambda: self.timed(lambda: clip.encode_image(one)))
            self.measure(out, "frame_to_labels_b1_ms", f"{name}.frame_to_labels_b1_ms",
                         lambda: self.timed(lambda: labeler.label(self.frame)))
            if self.batched():
                self.measure(out, "encode_b64_ms", f"{name}.encode_b64_ms",
                             lambda: self.timed(lambda: clip.encode_image(many)))
                if out["encode_b64_ms"]:
                    out["encode_b64_img_per_s"] = round(batch * 1e3 / out["encode_b64_ms"], 1)
                self.measure(out, "frames_to_labels_b64_img_per_s",
                             f"{name}.frames_to_labels_b64_img_per_s",
                             lambda: round(batch * 1e3 / self.timed(
                                 lambda: labeler.label_batch(self.frames_batch)), 1))
            else:
                self.skip(f"{name}.encode_b64_ms",
                          "batch 64 of a real-size CLIP takes too long on the CPU")
            embeddings = clip.encode_image(many if self.batched() else many[:4]).float()
        if path != "off" and clip.fast_encoder is None:
            self.fell_back(out, name)
            return None
        if reference is not None:
            out["max_abs_diff_vs_off"] = float((embeddings - reference).abs().max())
        enable_fast_clip(clip, "off")
        return embeddings
