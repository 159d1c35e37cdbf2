"""``ros-mm-perception bench``: time the real code paths, plain and fast side by side, as one JSON object.

Every figure is the median wall-clock time of ``--repeats`` calls after warm-up calls, with the GPU
synchronised after each call. Each model path is timed as users call it (``ClipLabeler.label``,
``PaliGemmaEngine.answer``/``ask_many``, ``PerceptionPipeline.process``), so preprocessing, host work
and copies are included. Under ``versus_plain`` each figure that has a plain-library equivalent is
timed beside that equivalent on the same weights, the two calls alternating (plain, ours, plain,
ours, ...), so load from other programs hits both alike; the ratio is ``speedup``. A figure that
fails or is skipped is ``null`` with the reason under ``errors``; the object always has the same
keys (see :func:`empty_result`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional

from ros_mm_perception.commands.bench_owl import OWL_PATHS, bench_owl, empty_owl

CLIP_PATHS = ("off", "graph", "compile", "freeze")
PALIGEMMA_PATHS = ("off", "static", "graph", "compile")
PIPELINE_PATHS = ("off", "graph")
CLIP_FIGURES = ("encode_b1_ms", "frame_to_labels_b1_ms", "encode_b64_ms", "encode_b64_img_per_s",
                "frames_to_labels_b64_img_per_s", "max_abs_diff_vs_off", "prepare_s")
PALIGEMMA_FIGURES = ("prefill_ms", "answer_20_ms", "answer_tokens", "eight_questions_ms", "answers_equal_static",
                     "prepare_s")
PIPELINE_FIGURES = ("labels_ms", "labels_and_detect_ms")
CONVERSION_FIGURES = ("rgb8_to_rgb_ms", "bgr8_to_rgb_ms", "yuv422_to_rgb_ms", "rgb_to_image_msg_ms",
                      "jpeg_to_rgb_ms")
VERSUS_PLAIN = {
    "clip.frame_to_labels": "one 640x480 frame to labels: open_clip's own transform (PIL) + encode_image in "
                            "open_clip's default precision, vs ClipLabeler.label at the defaults (auto precision "
                            "and fast path)",
    "clip.frame_to_labels_same_precision": "the same, plain open_clip in our precision (where that is not fp32)",
    "clip.preprocess_640x480": "one 640x480 frame to model input: open_clip's own transform (PIL) vs "
                               "ClipPreprocessor.frames",
    "clip.encode_b1": "one preprocessed image to its embedding: open_clip's encode_image vs ClipModel.encode_image "
                      "on the auto fast path, the same model and precision",
    "embedded_clip.frame_to_labels": "the same on the embedded model",
    "embedded_clip.preprocess_640x480": "the same on the embedded model",
    "embedded_clip.encode_b1": "the same on the embedded model",
    "paligemma.answer_20": "one answer of up to 20 tokens: processor + transformers generate, vs "
                           "PaliGemmaEngine.answer on the static path",
    "paligemma2.answer_20": "the same on PaliGemma 2",
}
"""Figures timed beside their plain-library equivalent (key → what is compared, its ``compares`` entry);
see :meth:`Bench.versus`."""
VERSUS_FIGURES = ("plain_ms", "ours_ms", "speedup", "plain_thread_cpu_ms", "ours_thread_cpu_ms", "thread_cpu_speedup",
                  "plain_precision", "ours_precision", "ours_fast_path")
PALIGEMMA_MODELS = {"paligemma": "paligemma-3b-224", "paligemma2": "paligemma2-3b-224"}
"""Result key → real-size architecture in :data:`~ros_mm_perception.core.models.random_models.PALIGEMMA_SIZES`."""
NEW_TOKENS = 20
VOCABULARY = ["person", "chair", "door", "cup", "red mug", "open door", "closed door", "table", "laptop",
              "bottle", "backpack", "plant", "window", "stairs", "box", "robot arm", "keyboard", "monitor",
              "book", "lamp"]
QUESTIONS = ["what color is the mug on the table?", "is the door on the left open?", "how many people are there?",
             "what is the person holding?", "is there a robot in the room?", "what is on the shelf?",
             "is the floor empty?", "where is the red box?"]
FRAME_SHAPE = (480, 640, 3)
CLIP_BATCH = 64
SIZES = ("tiny", "real", "real-clip")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time CLIP, PaliGemma and the pipeline, plain and fast paths",
                       description="Time the real code paths (plain and fast side by side) and print one JSON "
                                   "object. --random-weights needs no downloads: compute does not depend on "
                                   "weight values.")
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--random-weights", action="store_true",
                   help="build the architectures with random weights instead of loading checkpoints")
    p.add_argument("--sizes", choices=SIZES, default=None,
                   help="tiny test models, the real ViT-B/16 and PaliGemma 3B shapes, or real-clip: real-size "
                        "CLIP with tiny PaliGemma, what a CPU times in minutes (default: real on CUDA, tiny on "
                        "CPU; with --random-weights)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per figure (default: 10 on CUDA, 3 on CPU)")
    p.add_argument("--clip-model", default="", help="without --random-weights: open_clip model (default: embedded)")
    p.add_argument("--clip-pretrained", default="", help="without --random-weights: open_clip pretrained tag or file")
    p.add_argument("--paligemma", action="append", default=[], metavar="MODEL",
                   help="without --random-weights: PaliGemma model id or folder (repeat for a second one)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile paths (slow to prepare)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="skip the compile paths once this many seconds have passed (default: 420)")
    p.add_argument("--owl-only", action="store_true", help="time only the OWL section (see bench_owl)")
    p.add_argument("--output", default="", help="also write the JSON here, rewritten after every figure")
    p.set_defaults(func=run)


def empty_result() -> Dict:
    """The result object with every key present and every figure ``null``."""
    def paths(names, figures):
        return {name: dict.fromkeys(figures) for name in names}

    pg = {key: {"architecture": None, "params_M": None, "precision": None, "attention": None,
                "paths": paths(PALIGEMMA_PATHS, PALIGEMMA_FIGURES)} for key in PALIGEMMA_MODELS}
    return {
        "meta": dict.fromkeys(("date", "host", "device", "gpu", "cuda_graphs", "torch", "cuda", "transformers",
                               "open_clip", "python", "cpu_threads", "sizes", "random_weights", "repeats",
                               "elapsed_s")),
        "clip": {"architecture": None, "precision": None, "preprocess_640x480_ms": None,
                 "frame_to_labels_default_tiles_ms": None, "paths": paths(CLIP_PATHS, CLIP_FIGURES)},
        **pg,
        "embedded_clip": {"precision": None, "fast_path": None, "frame_to_labels_default_tiles_ms": None,
                          "grounding_640x480_4_phrases_ms": None, "grounding_640x480_4_phrases_thread_cpu_ms": None,
                          "grounding_proposals": None},
        "versus_plain": {key: {"compares": compares, **dict.fromkeys(VERSUS_FIGURES)}
                         for key, compares in VERSUS_PLAIN.items()},
        "pipeline": {"paligemma": None, "detect_tokens": None, "paths": paths(PIPELINE_PATHS, PIPELINE_FIGURES)},
        "owl": empty_owl(),
        "image_conversion": dict.fromkeys(CONVERSION_FIGURES),
        "errors": {},
    }


class _LastError(logging.Handler):
    """Keeps the last error the package logged (a fast path that failed and fell back says why)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.message = ""

    def emit(self, record) -> None:
        cause = record.exc_info[1] if record.exc_info else None
        self.message = record.getMessage() + (f" ({type(cause).__name__}: {str(cause)[:300]})" if cause else "")


class Bench:
    """Runs the sections in order, filling :func:`empty_result`; errors are recorded, never raised."""

    def __init__(self, args, device, workdir: str):
        import torch

        self.args = args
        self.device = device
        self.cuda = device.type == "cuda"
        self.repeats = max(1, args.repeats or (10 if self.cuda else 3))
        self.sizes = args.sizes or ("real" if self.cuda else "tiny")
        self.workdir = workdir
        self.start = time.perf_counter()
        self.result = empty_result()
        self.last_error = _LastError()
        self.torch = torch
        rng = __import__("numpy").random.default_rng(0)
        self.frame = rng.integers(0, 256, FRAME_SHAPE, dtype="uint8")
        self.frames64 = [rng.integers(0, 256, FRAME_SHAPE, dtype="uint8") for _ in range(CLIP_BATCH)]

    # ---- helpers ---------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable, repeats: Optional[int] = None, warmup: int = 2,
              clock: Callable[[], float] = time.perf_counter) -> float:
        """Median milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls (fewer for one repeat).

        ``clock`` is wall-clock time by default; ``time.thread_time`` gives the CPU time of this thread,
        which leaves out the time spent waiting for cores that other programs hold."""
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

    def versus(self, key: str, plain: Callable, ours: Callable, repeats: Optional[int] = None, **about) -> None:
        """Time ``plain`` and ``ours`` alternately into ``versus_plain[key]`` (medians and ``speedup``).

        On the CPU with one thread the CPU time of this thread is recorded too (``thread_cpu``): it
        leaves out the time spent waiting for cores that other programs hold."""
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
            out = {"compares": VERSUS_PLAIN[key], **dict.fromkeys(VERSUS_FIGURES), **about}
            kinds = [("", wall)] + ([("thread_cpu_", cpu)] if self.thread_clock_valid() else [])
            for prefix, times in kinds:
                plain_ms, ours_ms = (round(statistics.median(times[fn]), 3) for fn in (plain, ours))
                out.update({f"plain_{prefix}ms": plain_ms, f"ours_{prefix}ms": ours_ms,
                            f"{prefix}speedup": round(plain_ms / ours_ms, 2) if ours_ms else None})
            return out

        self.measure(self.result["versus_plain"], key, f"versus_plain.{key}", measure)

    def thread_clock_valid(self) -> bool:
        """Whether this thread's CPU time covers the work: on the CPU with one PyTorch thread."""
        return not self.cuda and self.torch.get_num_threads() == 1

    def measure(self, where: Dict, key: str, path: str, fn: Callable) -> None:
        """``where[key] = fn()``; a failure leaves ``null`` and records ``errors[path]``."""
        try:
            where[key] = fn()
        except Exception as err:  # a benchmark reports every failure and goes on
            self.result["errors"][path] = f"{type(err).__name__}: {str(err)[:300]}"
            if self.cuda:
                self.torch.cuda.empty_cache()
        self.save()

    def skip(self, path: str, reason: str) -> None:
        self.result["errors"][path] = f"skipped: {reason}"

    def fell_back(self, figures: Dict, path: str) -> None:
        """The fast path failed and the engine went back to the plain path: its figures are not this path's."""
        figures.update(dict.fromkeys(figures))
        self.result["errors"][path] = f"fell back to the plain path: {self.last_error.message or 'see the log'}"

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

    # ---- sections --------------------------------------------------------------------------------
    def meta(self) -> None:
        import torch
        import transformers

        try:
            import open_clip
            open_clip_version = open_clip.__version__
        except ImportError:
            open_clip_version = None
        self.result["meta"].update(
            date=datetime.now(timezone.utc).isoformat(timespec="seconds"), host=platform.node(),
            device=str(self.device), gpu=torch.cuda.get_device_name(self.device) if self.cuda else None,
            cuda_graphs=self.cuda, torch=torch.__version__, cuda=torch.version.cuda,
            transformers=transformers.__version__, open_clip=open_clip_version, python=platform.python_version(),
            cpu_threads=torch.get_num_threads(), sizes=self.sizes, random_weights=self.args.random_weights,
            repeats=self.repeats)

    def conversion(self) -> None:
        import cv2

        from ros_mm_perception.core.imaging.image_codec import compressed_to_rgb, image_to_rgb, numpy_to_image

        out = self.result["image_conversion"]
        msg = lambda array, enc: numpy_to_image(array, enc, msg_factory=SimpleNamespace)  # noqa: E731
        rgb, bgr = msg(self.frame, "rgb8"), msg(self.frame[..., ::-1], "bgr8")
        yuv = msg(cv2.cvtColor(self.frame, cv2.COLOR_RGB2YUV_YUYV), "yuv422_yuy2")
        ok, jpeg = cv2.imencode(".jpg", self.frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        compressed = SimpleNamespace(format="jpeg", data=jpeg.tobytes())
        for key, fn in [("rgb8_to_rgb_ms", lambda: image_to_rgb(rgb)), ("bgr8_to_rgb_ms", lambda: image_to_rgb(bgr)),
                        ("yuv422_to_rgb_ms", lambda: image_to_rgb(yuv)),
                        ("rgb_to_image_msg_ms", lambda: msg(self.frame, "rgb8")),
                        ("jpeg_to_rgb_ms", lambda: compressed_to_rgb(compressed))]:
            self.measure(out, key, f"image_conversion.{key}", lambda fn=fn: self.timed(fn, max(self.repeats, 20)))

    def clip(self):
        from ros_mm_perception.core.models.clip_model import load_clip
        from ros_mm_perception.core.perception.labeler import ClipLabeler
        from ros_mm_perception.core.models.random_models import build_random_clip

        section = self.result["clip"]
        if self.args.random_weights:
            real = self.sizes in ("real", "real-clip")
            architecture = "ViT-B-16" if real else "tiny"
            folder = build_random_clip(os.path.join(self.workdir, "clip"), "ViT-B-16" if real else None)
            clip = load_clip(str(folder), device=str(self.device))
        else:
            architecture = self.args.clip_model or "embedded"
            clip = load_clip(self.args.clip_model, self.args.clip_pretrained, device=str(self.device))
        loaded = Path(clip.name.removeprefix("local-dir:"))
        # What plain open_clip is given to load the same weights.
        self.clip_source = ((f"local-dir:{loaded}", None) if loaded.is_dir()
                            else (clip.name, self.args.clip_pretrained))
        section.update(architecture=architecture, precision=str(clip.dtype).replace("torch.", ""))
        labeler = ClipLabeler(clip, VOCABULARY, label_tiles=0)  # the frame alone, as plain open_clip sees it
        self.measure(section, "preprocess_640x480_ms", "clip.preprocess_640x480_ms",
                     lambda: self.timed(lambda: clip.preprocessor.frames([self.frame])))
        if self.cuda or self.sizes == "tiny":
            tiled = ClipLabeler(clip, VOCABULARY)
            self.measure(section, "frame_to_labels_default_tiles_ms", "clip.frame_to_labels_default_tiles_ms",
                         lambda: self.timed(lambda: tiled.label(self.frame)))
        else:
            self.skip("clip.frame_to_labels_default_tiles_ms", "a real-size CLIP on 13 views takes too long on the CPU")
        return clip, labeler

    def plain_open_clip(self, model_id: str, pretrained: Optional[str], precision: str = "fp32"):
        """Frame → top-5 labels the way open_clip's README does it: its own transform, model and text features.

        Returns that function and the transform."""
        import open_clip
        from PIL import Image

        torch = self.torch
        model, _, transform = open_clip.create_model_and_transforms(model_id, pretrained=pretrained,
                                                                    device=self.device, precision=precision)
        model.eval()
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        tokens = open_clip.get_tokenizer(model_id)([f"a photo of {p}." for p in VOCABULARY]).to(self.device)
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
        """``versus_plain[key]``: ClipLabeler.label on the frame alone against plain open_clip on the same weights;
        the preprocessing alone against open_clip's transform; the encoder alone against open_clip's."""
        from PIL import Image

        from ros_mm_perception.core.models.fast_clip import enable_fast_clip
        from ros_mm_perception.core.perception.labeler import ClipLabeler

        torch = self.torch
        ours = precision_name(clip.dtype)
        encoder = enable_fast_clip(clip, "auto", warm_up=[1])
        mode = encoder.mode if encoder is not None else "off"
        labeler = ClipLabeler(clip, VOCABULARY, label_tiles=0)  # the frame alone: the same work as plain open_clip
        try:
            for name, plain_precision in ((key, "fp32"), (f"{key}_same_precision", ours)):
                if name != key and ours == "fp32":
                    self.skip(f"versus_plain.{name}", "our precision is fp32 too")
                    continue
                try:
                    plain, transform = self.plain_open_clip(*source, precision=plain_precision)
                except Exception as err:  # e.g. open_clip cannot load this source
                    self.result["errors"][f"versus_plain.{name}"] = f"{type(err).__name__}: {str(err)[:300]}"
                    continue
                self.versus(name, plain, lambda: labeler.label(self.frame), plain_precision=plain_precision,
                            ours_precision=ours, ours_fast_path=mode)
                if name == key:
                    self.versus(key.replace("frame_to_labels", "preprocess_640x480"),
                                lambda: transform(Image.fromarray(self.frame)),
                                lambda: clip.preprocessor.frames([self.frame]), max(self.repeats, 20),
                                plain_precision="fp32", ours_precision=ours)
            pixels = clip.preprocessor.frames([self.frame])
            with torch.inference_mode():
                self.versus(key.replace("frame_to_labels", "encode_b1"), lambda: clip.model.encode_image(pixels),
                            lambda: clip.encode_image(pixels), plain_precision=ours, ours_precision=ours,
                            ours_fast_path=mode)
        finally:
            enable_fast_clip(clip, "off")

    def embedded_clip(self) -> None:
        """The embedded model: frame → labels against plain open_clip, and CLIP-only grounding per frame."""
        from ros_mm_perception.core.models.clip_model import load_clip
        from ros_mm_perception.core.models.fast_clip import enable_fast_clip
        from ros_mm_perception.core.perception.clip_grounding import ground_with_clip, propose_regions
        from ros_mm_perception.core.perception.labeler import ClipLabeler

        section = self.result["embedded_clip"]
        clip = load_clip("", device=str(self.device))
        section["precision"] = precision_name(clip.dtype)
        self.clip_versus_plain(clip, "embedded_clip.frame_to_labels", (f"local-dir:{clip.name}", None))
        encoder = enable_fast_clip(clip, "auto", warm_up=[1, CLIP_BATCH])
        section["fast_path"] = encoder.mode if encoder is not None else "off"
        tiled = ClipLabeler(clip, VOCABULARY)
        self.measure(section, "frame_to_labels_default_tiles_ms", "embedded_clip.frame_to_labels_default_tiles_ms",
                     lambda: self.timed(lambda: tiled.label(self.frame)))
        labeler = ClipLabeler(clip)
        scene, phrases = self.grounding_scene()
        section["grounding_proposals"] = len(propose_regions(scene).boxes)
        self.measure(section, "grounding_640x480_4_phrases_ms", "embedded_clip.grounding_640x480_4_phrases_ms",
                     lambda: self.timed(lambda: ground_with_clip(labeler, scene, phrases)))
        if self.thread_clock_valid():
            self.measure(section, "grounding_640x480_4_phrases_thread_cpu_ms",
                         "embedded_clip.grounding_640x480_4_phrases_thread_cpu_ms",
                         lambda: self.timed(lambda: ground_with_clip(labeler, scene, phrases), clock=time.thread_time))
        else:
            self.skip("embedded_clip.grounding_640x480_4_phrases_thread_cpu_ms", "needs the CPU and --threads 1")
        enable_fast_clip(clip, "off")

    def grounding_scene(self):
        """A rendered 640x480 scene of three objects and four phrases: theirs and one absent.

        Random pixels would not do: they give edge and colour boxes everywhere."""
        import numpy as np

        from ros_mm_perception.synthetic.scenes import all_phrases, render_scene

        scene = render_scene(np.random.default_rng(0), n_objects=3, size=FRAME_SHAPE[:2])
        present = [o.phrase for o in scene.objects]
        return scene.image, present + [next(p for p in all_phrases() if p not in present)]

    def clip_path(self, clip, labeler, path: str, reference=None):
        """Time one CLIP path; returns its batch-64 embeddings (``None`` when it failed)."""
        from ros_mm_perception.core.models.fast_clip import enable_fast_clip

        out = self.result["clip"]["paths"][path]
        torch = self.torch
        with torch.inference_mode():
            one = clip.preprocessor.frames([self.frame])
            many = clip.preprocessor.frames(self.frames64)
        start = time.perf_counter()
        try:
            enable_fast_clip(clip, path, warm_up=[1, CLIP_BATCH] if self.cuda or self.sizes == "tiny" else [1])
            clip.encode_image(one)
            self.sync()
            out["prepare_s"] = round(time.perf_counter() - start, 2)
        except Exception as err:  # e.g. a failed capture: record it and leave this path's figures empty
            self.result["errors"][f"clip.paths.{path}"] = f"{type(err).__name__}: {str(err)[:300]}"
            enable_fast_clip(clip, "off")
            return None
        name = f"clip.paths.{path}"
        with torch.inference_mode():
            self.measure(out, "encode_b1_ms", f"{name}.encode_b1_ms",
                         lambda: self.timed(lambda: clip.encode_image(one)))
            self.measure(out, "frame_to_labels_b1_ms", f"{name}.frame_to_labels_b1_ms",
                         lambda: self.timed(lambda: labeler.label(self.frame)))
            if self.cuda or self.sizes == "tiny":
                self.measure(out, "encode_b64_ms", f"{name}.encode_b64_ms",
                             lambda: self.timed(lambda: clip.encode_image(many)))
                if out["encode_b64_ms"]:
                    out["encode_b64_img_per_s"] = round(CLIP_BATCH * 1e3 / out["encode_b64_ms"], 1)
                self.measure(out, "frames_to_labels_b64_img_per_s", f"{name}.frames_to_labels_b64_img_per_s",
                             lambda: round(CLIP_BATCH * 1e3 / self.timed(lambda: labeler.label_batch(self.frames64)),
                                           1))
            else:
                self.skip(f"{name}.encode_b64_ms", "batch 64 of a real-size CLIP takes too long on the CPU")
            embeddings = clip.encode_image(many if self.cuda or self.sizes == "tiny" else many[:4]).float()
        if path != "off" and clip.fast_encoder is None:
            self.fell_back(out, name)
            return None
        if reference is not None:
            out["max_abs_diff_vs_off"] = float((embeddings - reference).abs().max())
        enable_fast_clip(clip, "off")
        return embeddings

    def load_paligemma(self, key: str):
        from ros_mm_perception.core.models.paligemma import load_paligemma
        from ros_mm_perception.core.models.random_models import build_random_paligemma

        section = self.result[key]
        index = list(PALIGEMMA_MODELS).index(key)
        if self.args.random_weights:
            size = PALIGEMMA_MODELS[key] if self.sizes == "real" else "tiny"
            folder = build_random_paligemma(os.path.join(self.workdir, key), size)
            engine = load_paligemma(str(folder), str(self.device), random_weights=self.sizes == "real",
                                    max_new_tokens=NEW_TOKENS, fast_path="off")
        elif index < len(self.args.paligemma):
            size = self.args.paligemma[index]
            engine = load_paligemma(size, str(self.device), max_new_tokens=NEW_TOKENS, fast_path="off")
        else:
            self.skip(key, "no --paligemma model given (or use --random-weights)")
            return None
        section.update(architecture=size, params_M=round(sum(p.numel() for p in engine.model.parameters()) / 1e6, 1),
                       precision=str(engine.dtype).replace("torch.", ""),
                       attention=str(engine.model.config._attn_implementation))
        return engine

    def paligemma_path(self, key: str, engine, path: str, answers: Dict[str, List[str]]) -> None:
        out = self.result[key]["paths"][path]
        name = f"{key}.paths.{path}"
        question = QUESTIONS[0]
        # The compile path prepares batch 1 first; batch 8 compiles on its first call, if time allows.
        batches = [1] if path == "compile" else [1, len(QUESTIONS)]
        start = time.perf_counter()
        try:
            engine.fast_path = path
            engine.max_new_tokens = NEW_TOKENS
            engine.warm_up(batches)
            engine.answer(self.frame, question)
            self.sync()
            out["prepare_s"] = round(time.perf_counter() - start, 2)
        except Exception as err:  # e.g. a failed capture or compile: record it, leave the figures empty
            self.result["errors"][name] = f"{type(err).__name__}: {str(err)[:300]}"
            engine.fast_path = "off"
            return
        slow = max(1, self.repeats // 2) if path in ("off", "static") else None
        try:
            engine.max_new_tokens = 1
            self.measure(out, "prefill_ms", f"{name}.prefill_ms",
                         lambda: self.timed(lambda: engine.answer(self.frame, question), slow))
            engine.max_new_tokens = NEW_TOKENS
            self.measure(out, "answer_20_ms", f"{name}.answer_20_ms",
                         lambda: self.timed(lambda: engine.answer(self.frame, question), slow))
            self.measure(out, "answer_tokens", f"{name}.answer_tokens", lambda: len(
                engine._generate([self.frame], [f"answer {engine.language} {question}"])[0].logprobs))
            if path == "compile" and self.elapsed() > self.args.budget_s:
                self.skip(f"{name}.eight_questions_ms", f"time budget of {self.args.budget_s:.0f} s spent")
                return
            self.measure(out, "eight_questions_ms", f"{name}.eight_questions_ms",
                         lambda: self.timed(lambda: engine.ask_many(self.frame, QUESTIONS), slow, warmup=1))
            answers[path] = engine.ask_many(self.frame, QUESTIONS)
            if engine.fast_path != path:
                self.fell_back(out, name)
            elif path not in ("off", "static") and "static" in answers:
                out["answers_equal_static"] = answers[path] == answers["static"]
        finally:
            engine.fast_path = "off"

    def paligemma_versus_plain(self, key: str, engine) -> None:
        """``versus_plain[key.answer_20]``: processor + transformers ``generate`` against the static path."""
        from PIL import Image

        from ros_mm_perception.core.models.paligemma import IMAGE_TOKEN

        torch, processor, model = self.torch, engine.processor, engine.model
        question = QUESTIONS[0]

        def plain():
            inputs = processor(images=Image.fromarray(self.frame), text=f"{IMAGE_TOKEN}answer en {question}",
                               return_tensors="pt").to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(engine.dtype)
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
            return processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

        try:
            engine.fast_path = "static"
            engine.max_new_tokens = NEW_TOKENS
            engine.warm_up([1])
            precision = precision_name(engine.dtype)
            self.versus(f"{key}.answer_20", plain, lambda: engine.answer(self.frame, question),
                        max(1, self.repeats // 2) if self.sizes == "real" else None, plain_precision=precision,
                        ours_precision=precision, ours_fast_path=engine.fast_path)
        finally:
            engine.fast_path = "off"

    def pipeline(self, clip, engine, key: str) -> None:
        from ros_mm_perception.core.config import PerceptionConfig
        from ros_mm_perception.core.models.fast_clip import enable_fast_clip
        from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
        from ros_mm_perception.core.results import Frame, Stamp

        section = self.result["pipeline"]
        section["paligemma"] = self.result[key]["architecture"]
        config = PerceptionConfig(device=str(self.device), labels=VOCABULARY[:8], detect_phrases=["person", "cup"],
                                  grounding_source="paligemma", max_new_tokens=32)
        frames = iter(range(10 ** 9))
        frame = lambda: Frame(image=self.frame, camera="camera", stamp=Stamp(next(frames), 0))  # noqa: E731
        for path in PIPELINE_PATHS:
            out = section["paths"][path]
            name = f"pipeline.paths.{path}"
            try:
                enable_fast_clip(clip, path)
                engine.fast_path = path
                labels = PerceptionPipeline(config.replace(grounding_source="off"), clip=clip, paligemma=engine)
                both = PerceptionPipeline(config, clip=clip, paligemma=engine)
                self.measure(out, "labels_ms", f"{name}.labels_ms", lambda: self.timed(lambda: labels.process(frame())))
                self.measure(out, "labels_and_detect_ms", f"{name}.labels_and_detect_ms",
                             lambda: self.timed(lambda: both.process(frame()), max(1, self.repeats // 2)))
                if section["detect_tokens"] is None:
                    gen = engine._generate([self.frame], ["detect " + " ; ".join(config.detect_phrases)])[0]
                    section["detect_tokens"] = len(gen.logprobs)
                if path != "off" and (engine.fast_path != path or clip.fast_encoder is None):
                    self.fell_back(out, name)
            except Exception as err:  # record and go on with the next path
                self.result["errors"][name] = f"{type(err).__name__}: {str(err)[:300]}"
            finally:
                enable_fast_clip(clip, "off")
                engine.fast_path = "off"

    def run(self) -> Dict:
        package_log = logging.getLogger("ros_mm_perception")
        package_log.addHandler(self.last_error)
        try:
            return self._run()
        finally:
            package_log.removeHandler(self.last_error)

    def _run(self) -> Dict:
        self.meta()
        if self.args.owl_only:
            bench_owl(self)
            return self.result
        self.conversion()
        self.save()
        clip, labeler = self.clip()
        self.clip_versus_plain(clip, "clip.frame_to_labels", self.clip_source)
        self.save()
        reference = self.clip_path(clip, labeler, "off")
        self.clip_path(clip, labeler, "graph", reference)
        self.clip_path(clip, labeler, "freeze", reference)
        if self.compile_allowed("clip.paths.compile"):
            self.clip_path(clip, labeler, "compile", reference)
        self.save()
        self.embedded_clip()
        self.save()
        bench_owl(self)
        # PaliGemma 2 first (the pipeline uses it), then PaliGemma, whose compile path comes last: its
        # batch-8 shapes compile only while the time budget lasts.
        for key in ("paligemma2", "paligemma"):
            engine = None
            try:
                engine = self.load_paligemma(key)
            except Exception as err:  # e.g. out of memory
                self.result["errors"][key] = f"{type(err).__name__}: {str(err)[:300]}"
            if engine is None:
                continue
            answers: Dict[str, List[str]] = {}
            self.paligemma_versus_plain(key, engine)
            for path in ("off", "static", "graph"):
                self.paligemma_path(key, engine, path, answers)
                self.save()
            if key == "paligemma2":
                self.pipeline(clip, engine, key)
                self.skip(f"{key}.paths.compile", "compile is timed on PaliGemma-3B only")
            elif self.compile_allowed(f"{key}.paths.compile"):
                self.paligemma_path(key, engine, "compile", answers)
            engine.close()
            self.save()
        return self.result


def precision_name(dtype) -> str:
    """``torch.bfloat16`` → ``bf16`` (the names of the ``precision`` setting)."""
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[str(dtype).removeprefix("torch.")]


def run(args) -> int:
    from ros_mm_perception.core.devices import resolve_device
    from ros_mm_perception.core.errors import UserError

    if args.repeats is not None and args.repeats < 1:
        raise UserError("--repeats must be at least 1")
    if not args.random_weights and args.sizes:
        raise UserError("--sizes applies to --random-weights only")
    if args.threads < 0:
        raise UserError("--threads must be 0 (torch's choice) or more")
    device = resolve_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ros_mm_perception_bench_") as workdir:
        result = Bench(args, device, workdir).run()
    if not args.json:
        print(summary(result))
    print(json.dumps(result))
    return 0


def summary(result: Dict) -> str:
    """A short human-readable table of the headline figures (the JSON follows it)."""
    meta = result["meta"]
    lines = [f"{meta['device']} {meta['gpu'] or ''} torch {meta['torch']} transformers {meta['transformers']} "
             f"sizes {meta['sizes']} ({meta['elapsed_s']} s)"]
    clip = result["clip"]["paths"]
    for figure in ("frame_to_labels_b1_ms", "encode_b1_ms", "encode_b64_img_per_s"):
        lines.append(f"  clip {figure:<28}" + "".join(f"{p}={clip[p][figure]}  " for p in CLIP_PATHS))
    for key in PALIGEMMA_MODELS:
        paths = result[key]["paths"]
        for figure in ("prefill_ms", "answer_20_ms", "eight_questions_ms"):
            lines.append(f"  {key} {figure:<22}" + "".join(f"{p}={paths[p][figure]}  " for p in PALIGEMMA_PATHS))
    owl = result["owl"]["paths"]
    for figure in ("frame_to_detections_b1_ms", "frames_to_detections_b4_ms"):
        lines.append(f"  owl {figure:<30}" + "".join(f"{p}={owl[p][figure]}  " for p in OWL_PATHS))
    for path, figures in result["pipeline"]["paths"].items():
        lines.append(f"  pipeline {path:<6} " + "  ".join(f"{k}={v}" for k, v in figures.items()))
    for key, figures in result["versus_plain"].items():
        lines.append(f"  versus plain {key:<38} plain={figures['plain_ms']} ms  ours={figures['ours_ms']} ms  "
                     f"speedup={figures['speedup']}x")
    embedded = result["embedded_clip"]
    lines.append(f"  embedded clip grounding 640x480, 4 phrases: {embedded['grounding_640x480_4_phrases_ms']} ms")
    lines += [f"  error {k}: {v}" for k, v in result["errors"].items()]
    return "\n".join(lines)
