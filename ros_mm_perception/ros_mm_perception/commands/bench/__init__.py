"""``ros-mm-perception bench``: time the real code paths, plain and fast side by side, as one JSON
object.

One module per engine (:mod:`.clip`, :mod:`.paligemma`, :mod:`.owl`, :mod:`.pipeline`,
:mod:`.fleet`), each a section class on the shared :mod:`.harness` (clock, inputs, result and
errors); :class:`Bench` runs them in order. Each model path is timed as users call it, so
preprocessing, host work and copies are included; under ``versus_plain`` each figure that has a
plain-library equivalent is timed beside it on the same weights. The object always has the same
keys (see :func:`empty_result`); ``meta.cpu`` records the CPU model and its instruction sets.
"""

from __future__ import annotations

import json
import logging
import tempfile
from typing import Dict, List

from ros_mm_perception.commands.bench import clip, paligemma
from ros_mm_perception.commands.options import add_config_options, add_threads_option
from ros_mm_perception.commands.bench.clip import CLIP_PATHS, ClipBench, empty_clip
from ros_mm_perception.commands.bench.cpu import CpuBench, empty_cpu
from ros_mm_perception.commands.bench.fleet import FleetBench, empty_fleet
from ros_mm_perception.commands.bench.harness import VERSUS_FIGURES, empty_meta
from ros_mm_perception.commands.bench.owl import OWL_PATHS, OwlBench, empty_owl
from ros_mm_perception.commands.bench.paligemma import (PALIGEMMA_MODELS, PALIGEMMA_PATHS,
                                                        PaliGemmaBench, empty_paligemma)
from ros_mm_perception.commands.bench.pipeline import PipelineBench, empty_pipeline
from ros_mm_perception.core.config import PRECISIONS

SIZES = ("tiny", "real", "real-clip")
VERSUS_PLAIN = {**clip.VERSUS_PLAIN, **paligemma.VERSUS_PLAIN}
"""Figures timed beside their plain-library equivalent (key → what is compared, its ``compares``
entry); see :meth:`.harness.Harness.versus`."""


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time CLIP, PaliGemma, OWL, the pipeline and the fleet",
                       description="Time the real code paths (plain and fast side by side) and "
                                   "print one JSON object. --random-weights needs no downloads: "
                                   "compute does not depend on weight values.")
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.add_argument("--random-weights", action="store_true",
                   help="build the architectures with random weights instead of loading "
                        "checkpoints")
    p.add_argument("--sizes", choices=SIZES, default=None,
                   help="tiny test models, the real ViT-B/16 and PaliGemma 3B shapes, or "
                        "real-clip: real-size CLIP with tiny PaliGemma, what a CPU times in "
                        "minutes (default: real on CUDA, tiny on CPU; with --random-weights)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls per figure (default: 10 on CUDA, 3 on CPU)")
    # --device, --clip-model and --clip-pretrained (the latter two without --random-weights)
    add_config_options(p, ("device", "clip_model", "clip_pretrained"),
                       defaults={"device": "auto", "clip_model": "", "clip_pretrained": ""})
    p.add_argument("--paligemma-model", dest="paligemma", action="append", default=[],
                   metavar="MODEL",
                   help="without --random-weights: PaliGemma model id or folder (repeat for a "
                        "second one)")
    add_threads_option(p)
    p.add_argument("--owl-precision", choices=PRECISIONS, default="auto",
                   help="precision of ours in the owl section; on the CPU int8 is raced beside "
                        "it and plain runs fp32 where ours is int8 (default: auto)")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the torch.compile paths (slow to prepare)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="skip the compile paths once this many seconds have passed (default: 420)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--owl-only", action="store_true", help="time only the OWL section")
    only.add_argument("--fleet-only", action="store_true",
                      help="time only the fleet section: fleet on a local Ray against bag, over "
                           "rendered recordings (needs the fleet extra; not part of a full run)")
    only.add_argument("--cpu-only", action="store_true",
                      help="time only the cpu section: plain, fp32 and int8 frame to labels of "
                           "the CPU-class CLIP models and the embedded detector (see bench.cpu)")
    p.add_argument("--output", default="",
                   help="also write the JSON here, rewritten after every figure")
    p.set_defaults(func=run)


def empty_result() -> Dict:
    """The result object with every key present and every figure ``null``."""
    return {
        "meta": empty_meta(),
        **empty_clip(),
        **empty_paligemma(),
        "versus_plain": {key: {"compares": compares, **dict.fromkeys(VERSUS_FIGURES)}
                         for key, compares in VERSUS_PLAIN.items()},
        **empty_pipeline(),
        **empty_owl(),
        **empty_fleet(),
        **empty_cpu(),
        "errors": {},
    }


class Bench(CpuBench, ClipBench, PaliGemmaBench, OwlBench, PipelineBench, FleetBench):
    """Runs the sections in order, filling :func:`empty_result`; errors are recorded, never
    raised."""

    def __init__(self, args, device, workdir: str):
        super().__init__(args, device, workdir, empty_result())

    def run(self) -> Dict:
        package_log = logging.getLogger("ros_mm_perception")
        package_log.addHandler(self.last_error)
        try:
            self.record_meta()
            if self.args.owl_only:
                self.owl()
            elif self.args.cpu_only:
                self.cpu_section()
            elif self.args.fleet_only:
                try:
                    self.fleet()
                except Exception as err:  # a benchmark reports every failure
                    self.error("fleet", err)
                self.save()
            else:
                self.all_sections()
            return self.result
        finally:
            package_log.removeHandler(self.last_error)

    def all_sections(self) -> None:
        """Every section but the fleet (which needs Ray and minutes of its own)."""
        self.conversion()
        self.save()
        clip_model, labeler = self.load_clip()
        self.clip_versus_plain(clip_model, "clip.frame_to_labels", self.clip_source)
        self.save()
        reference = self.clip_path(clip_model, labeler, "off")
        self.clip_path(clip_model, labeler, "graph", reference)
        self.clip_path(clip_model, labeler, "freeze", reference)
        if self.compile_allowed("clip.paths.compile"):
            self.clip_path(clip_model, labeler, "compile", reference)
        self.save()
        self.embedded_clip()
        self.save()
        self.owl()
        # PaliGemma 2 first (the pipeline uses it), then PaliGemma, whose compile path comes
        # last: its batch-8 shapes compile only while the time budget lasts.
        for key in ("paligemma2", "paligemma"):
            engine = None
            try:
                engine = self.load_paligemma(key)
            except Exception as err:  # e.g. out of memory
                self.error(key, err)
            if engine is None:
                continue
            answers: Dict[str, List[str]] = {}
            self.paligemma_versus_plain(key, engine)
            for path in ("off", "static", "graph"):
                self.paligemma_path(key, engine, path, answers)
                self.save()
            if key == "paligemma2":
                self.pipeline(clip_model, engine, key)
                self.skip(f"{key}.paths.compile", "compile is timed on PaliGemma-3B only")
            elif self.compile_allowed(f"{key}.paths.compile"):
                self.paligemma_path(key, engine, "compile", answers)
            engine.close()
            self.save()


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
    cpu = meta["cpu"]
    isa = [name for name in ("avx2", "avx512", "avx512_bf16", "amx", "neon") if cpu[name]]
    lines = [f"{meta['device']} {meta['gpu'] or ''} torch {meta['torch']} transformers "
             f"{meta['transformers']} sizes {meta['sizes']} ({meta['elapsed_s']} s)",
             f"  cpu {cpu['model']} ({cpu['cores']} cores; {' '.join(isa) or 'no vector flags'}"
             f"{'; ' + cpu['isa_limits'] if cpu['isa_limits'] else ''})"]
    clip_paths = result["clip"]["paths"]
    for figure in ("frame_to_labels_b1_ms", "encode_b1_ms", "encode_b64_img_per_s"):
        lines.append(f"  clip {figure:<28}"
                     + "".join(f"{p}={clip_paths[p][figure]}  " for p in CLIP_PATHS))
    for key in PALIGEMMA_MODELS:
        paths = result[key]["paths"]
        for figure in ("prefill_ms", "answer_20_ms", "eight_questions_ms"):
            lines.append(f"  {key} {figure:<22}"
                         + "".join(f"{p}={paths[p][figure]}  " for p in PALIGEMMA_PATHS))
    owl = result["owl"]["paths"]
    for figure in ("frame_to_detections_b1_ms", "frames_to_detections_b4_ms"):
        lines.append(f"  owl {figure:<30}" + "".join(f"{p}={owl[p][figure]}  " for p in OWL_PATHS))
    for path, figures in result["pipeline"]["paths"].items():
        lines.append(f"  pipeline {path:<6} " + "  ".join(f"{k}={v}" for k, v in figures.items()))
    for key, figures in result["versus_plain"].items():
        lines.append(f"  versus plain {key:<38} plain={figures['plain_ms']} ms  "
                     f"ours={figures['ours_ms']} ms  speedup={figures['speedup']}x")
    embedded = result["embedded_clip"]
    lines.append("  embedded clip grounding 640x480, 4 phrases: "
                 f"{embedded['grounding_640x480_4_phrases_ms']} ms")
    for key, figures in result["fleet"].items():
        if isinstance(figures, dict) and figures.get("frames_per_s") is not None:
            lines.append(f"  fleet {key:<16} {figures['frames']} frames in {figures['seconds']} s "
                         f"({figures['frames_per_s']} frames/s)")
    lines += [f"  error {k}: {v}" for k, v in result["errors"].items()]
    return "\n".join(lines)
