"""What the object memory costs (``ros-mm-perception eval-memory --bench``), as JSON.

* ``query``: :meth:`~ros_mm_perception.core.memory.objects.ObjectMemory.query` over a memory of
  ``n_objects`` confirmed records (48 phrases, the embedded CLIP's embedding width), by a phrase
  the detector never used and by a detected one (text embeddings from the running CLIP's cache,
  as in a running node), and by phrase evidence alone; the baseline is the plain numpy product of
  the same embeddings with the same text embeddings; ``query_512``: the same at ViT-B/16's
  width, 512, with fixed random text embeddings;
* ``per_frame``: on the rendered room of :mod:`.memory_eval`, the pipeline's time per frame (the
  baseline) and what :meth:`~ros_mm_perception.core.memory.objects.ObjectMemory.update` adds, with
  the memory in RAM and in an SQLite file.

Timings are medians of repeated runs in CPU time of the calling thread (``time.thread_time``, so a
machine shared with other work does not inflate them; run with one PyTorch thread), on the CPU
named in the output; nothing here is a test.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path
from typing import Dict

import numpy as np

from ros_mm_perception.core.memory.objects import ObjectMemory
from ros_mm_perception.core.memory.text import embedding_model_id, labeler_text_encoder
from ros_mm_perception.core.memory.views import CameraView
from ros_mm_perception.core.results import Detection, Frame, FrameResult, Stamp
from ros_mm_perception.offline.memory_eval import HW, K
from ros_mm_perception.synthetic.scenes import COLOURS, SHAPES
from ros_mm_perception.synthetic.world3d import build_world, drive, render


def cpu_name() -> str:
    """The CPU model and its vector extensions of note, from /proc/cpuinfo where there is one."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
        platform.machine(),
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({', '.join(wanted) or 'no AVX'})"


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return round(1000 * float(np.median(times)), 3)


def filled_memory(n_objects: int, dim: int, seed: int = 0) -> ObjectMemory:
    """A memory of ``n_objects`` confirmed records 0.6 m apart on a grid, each seen twice from
    2 m straight ahead."""
    from ros_mm_perception.core.perception.transforms import RigidTransform
    from ros_mm_perception.core.results import Intrinsics

    rng = np.random.default_rng(seed)
    phrases = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    memory = ObjectMemory("map")
    k = Intrinsics(100.0, 100.0, 50.0, 50.0)
    upright = RigidTransform.identity().rotation
    for i in range(n_objects):
        emb = rng.normal(size=dim).astype(np.float32)
        det = Detection(phrases[rng.integers(len(phrases))], 0.9, (40, 40, 60, 60),
                        xyz=(0.0, 0.0, 2.0), size_xyz=(0.2, 0.2, 0.1),
                        embedding=emb / np.linalg.norm(emb))
        pose = RigidTransform(np.array([0.6 * (i % 100), 0.6 * (i // 100), 0.0]), upright)
        result = FrameResult("cam", "cam", Stamp(i, 0), 100, 100, detections=[det])
        for second in (0, 1):  # twice: confirmed
            memory.update(result, CameraView(pose, k, (100, 100), 2 * i + second, []))
    return memory


def random_text_encoder(dim: int, seed: int = 1):
    """Fixed random unit vectors per phrase: a text encoder of width ``dim`` whose embeddings are
    cached, as a running CLIP's are (for widths the embedded CLIP does not have)."""
    rng, cache = np.random.default_rng(seed), {}

    def encode(phrases):
        for p in phrases:
            if p not in cache:
                v = rng.normal(size=dim).astype(np.float32)
                cache[p] = v / np.linalg.norm(v)
        return np.stack([cache[p] for p in phrases])

    return encode


def bench_query(encode, scale: float, n_objects: int = 10_000, repeats: int = 50) -> Dict:
    """Queries of a memory of ``n_objects`` whose embeddings have ``encode``'s width."""
    dim = int(encode(["red circle"]).shape[1])
    start = time.thread_time()
    memory = filled_memory(n_objects, dim)
    build_s = time.thread_time() - start
    vocabulary = memory.vocabulary()
    asked = "red thing"
    encode([asked, *vocabulary, "background", "an object"])  # the running CLIP's cache
    found = len(memory.query(asked, encode_text=encode, logit_scale=scale, min_match=0.0))
    memory.query(asked, encode_text=encode, logit_scale=scale)  # the first query fills the cache
    images = np.stack([r.embedding for r in memory.objects()])
    text = encode([asked, *vocabulary])
    return {
        "objects": len(memory),
        "phrases": len(vocabulary),
        "embedding_dim": dim,
        "found": found,
        "build_s": round(build_s, 2),
        "query_new_phrase_ms": _median_ms(
            lambda: memory.query(asked, encode_text=encode, logit_scale=scale), repeats
        ),
        "query_detected_phrase_ms": _median_ms(
            lambda: memory.query("red circle", encode_text=encode, logit_scale=scale), repeats
        ),
        "query_phrase_only_ms": _median_ms(lambda: memory.query("red circle"), repeats),
        "query_near_point_ms": _median_ms(
            lambda: memory.query("red circle", near=(0.0, 0.0, 2.0), radius=2.0), repeats
        ),
        "baseline_numpy_product_ms": _median_ms(lambda: images @ text.T, repeats),
        "goal_ms": 5.0,
    }


def bench_frames(pipeline, frames: int = 24) -> Dict:
    world = build_world(1, 8, "own")
    config = pipeline.config.replace(detect_phrases=[o.phrase for o in world.objects])
    pipeline.update_config(config)
    k, hw = K, HW
    encode, scale = labeler_text_encoder(pipeline.labeler)
    rendered = [(pose, *render(world, pose, k, hw)[:2]) for pose in drive(world, frames)]
    timings = {"pipeline": [], "memory_ram": [], "memory_file": []}
    with tempfile.TemporaryDirectory() as folder:
        memories = {
            "memory_ram": ObjectMemory(
                "map",
                config,
                encode_text=encode,
                logit_scale=scale,
                embedding_model=embedding_model_id(config),
            ),
            "memory_file": ObjectMemory(
                "map",
                config,
                path=str(Path(folder) / "bench.db"),
                encode_text=encode,
                logit_scale=scale,
                embedding_model=embedding_model_id(config),
            ),
        }
        for i, (pose, image, depth) in enumerate(rendered):
            stamp = i * 100_000_000
            frame = Frame(
                image,
                camera="cam",
                frame_id="cam_optical",
                stamp=Stamp.from_ns(stamp),
                depth=depth,
                intrinsics=k,
            )
            start = time.thread_time()
            result = pipeline.process(frame)
            timings["pipeline"].append(time.thread_time() - start)
            view = CameraView(pose, k, hw, stamp, config.detect_phrases, depth)
            for name, memory in memories.items():
                start = time.thread_time()
                memory.update(result, view)
                timings[name].append(time.thread_time() - start)
        for memory in memories.values():
            memory.close()
    ms = {name: round(1000 * float(np.median(values[2:])), 3) for name, values in timings.items()}
    return {
        "frames": frames,
        "pipeline_ms": ms["pipeline"],
        "memory_ram_ms": ms["memory_ram"],
        "memory_file_ms": ms["memory_file"],
        "memory_file_share": round(ms["memory_file"] / ms["pipeline"], 4),
        "goal_share": 0.10,
    }


def bench(pipeline, n_objects: int = 10_000) -> Dict:
    """Both benchmarks, with the CPU they ran on."""
    return {
        "cpu": cpu_name(),
        "clock": "thread CPU time",
        "query": bench_query(*labeler_text_encoder(pipeline.labeler), n_objects),
        "query_512": bench_query(random_text_encoder(512), 100.0, n_objects),
        "per_frame": bench_frames(pipeline),
    }
