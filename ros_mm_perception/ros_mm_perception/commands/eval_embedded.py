"""``ros-mm-perception eval-embedded [--json]``: what the embedded CLIP understands, on fresh scenes.

Renders scenes with :mod:`ros_mm_perception.synthetic.scenes` from a seed that training never uses and
reports:

* ``top1_seen`` / ``top1_heldout``: zero-shot top-1 accuracy of whole-frame classification of
  single-object 256x256 scenes (the object spans 30-60 % of the frame) over all colour-shape phrases,
  for combinations seen in training and for those held out (listed in the model folder's
  ``training.json``; ``null`` when the model has none);
* ``grounding_recall``: in multi-object 640x480 scenes (2-4 objects), the share of objects whose
  phrase's best CLIP-only detection scores at least the threshold and overlaps the object's box with
  IoU >= 0.5 (each scene is queried with the phrases of its objects plus one absent phrase);
* ``absent_false_positive_rate``: the share of those absent phrases that got any detection.

With ``--versus-precision P`` it also loads the model in precision ``P`` and reports, on the
single-object scenes and on altered copies the generator never makes (:func:`unseen_copy`: other
shades, sensor noise, JPEG), the cosine between the two precisions' image embeddings (mean and
least) and how often their top-1 labels agree (``versus_precision``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ros_mm_perception.commands.classify import add_clip_arguments

EVAL_SEED = 20261126
"""Default scene seed; the training script draws its scenes from other seeds."""

IOU_FOUND = 0.5
CLASSIFY_SIZE = (256, 256)
CLASSIFY_OBJECT_SIZE = (0.3, 0.6)
"""Diameter of the single object as a fraction of the frame (a photo *of* the object)."""
GROUNDING_SIZE = (480, 640)


def add_parser(sub) -> None:
    p = sub.add_parser("eval-embedded", help="measure the embedded CLIP on freshly rendered scenes",
                       description="Zero-shot top-1 accuracy (seen and held-out colour-shape combinations) "
                                   "and CLIP-only grounding recall on rendered scenes.")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help=f"scene seed (default {EVAL_SEED})")
    p.add_argument("--n", type=int, default=10, help="single-object scenes per colour-shape combination (default 10)")
    p.add_argument("--scenes", type=int, default=100, help="multi-object scenes for grounding (default 100)")
    add_clip_arguments(p)
    p.add_argument("--versus-precision", default="", metavar="P",
                   help="also compare with the model loaded in precision P (fp32, fp16 or bf16): embedding "
                        "cosine and top-1 agreement")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def heldout_combos(model_dir) -> List[Tuple[str, str]]:
    """The colour-shape combinations a model folder's ``training.json`` says were held out (else none)."""
    info = Path(model_dir) / "training.json"
    if not info.is_file():
        return []
    return [tuple(c) for c in json.loads(info.read_text()).get("heldout", [])]


def classification_accuracy(labeler, seed: int, per_combo: int,
                            heldout: Sequence[Tuple[str, str]]) -> Dict[str, Optional[float]]:
    """Top-1 accuracy over all phrases on single-object scenes, seen and held-out combinations apart."""
    from ros_mm_perception.synthetic.scenes import all_combos, all_phrases, phrase, render_scene

    rng = np.random.default_rng([seed, 1])
    phrases = all_phrases()
    combos = all_combos() * per_combo
    hits: Dict[bool, List[bool]] = {False: [], True: []}
    for start in range(0, len(combos), 64):
        chunk = combos[start:start + 64]
        scenes = [render_scene(rng, objects=[c], size=CLASSIFY_SIZE, size_range=CLASSIFY_OBJECT_SIZE)
                  for c in chunk]
        for combo, labels in zip(chunk, labeler.label_batch([s.image for s in scenes], 1, phrases)):
            hits[combo in heldout].append(labels[0].phrase == phrase(*combo))
    return {"top1_seen": _mean(hits[False]), "top1_heldout": _mean(hits[True]),
            "n_seen": len(hits[False]), "n_heldout": len(hits[True])}


def grounding_recall(labeler, seed: int, n_scenes: int, score_threshold: float,
                     heldout: Sequence[Tuple[str, str]] = ()) -> Dict[str, Optional[float]]:
    """Recall of named objects in multi-object scenes, and how often an absent phrase is detected."""
    from ros_mm_perception.core.perception.boxes import box_iou
    from ros_mm_perception.core.perception.clip_grounding import ground_with_clip
    from ros_mm_perception.synthetic.scenes import all_phrases, render_scene

    rng = np.random.default_rng([seed, 2])
    found: Dict[bool, List[bool]] = {False: [], True: []}
    ious, absent_hits = [], []
    for _ in range(n_scenes):
        scene = render_scene(rng, n_objects=int(rng.integers(2, 5)), size=GROUNDING_SIZE)
        present = [o.phrase for o in scene.objects]
        others = [p for p in all_phrases() if p not in present]
        absent = others[int(rng.integers(len(others)))]
        dets = ground_with_clip(labeler, scene.image, present + [absent], score_threshold=0.0)
        for obj in scene.objects:
            mine = [d for d in dets if d.phrase == obj.phrase]
            top = max(mine, key=lambda d: d.score) if mine else None
            iou = float(box_iou([top.box], [obj.box])[0, 0]) if top and top.score >= score_threshold else 0.0
            ious.append(iou)
            found[(obj.colour, obj.shape) in heldout].append(iou >= IOU_FOUND)
        absent_hits.append(any(d.phrase == absent and d.score >= score_threshold for d in dets))
    return {"grounding_recall": _mean(found[False] + found[True]),
            "grounding_recall_heldout": _mean(found[True]),
            "grounding_mean_iou": _mean(ious),
            "absent_false_positive_rate": _mean(absent_hits),
            "n_objects": len(ious)}


def unseen_copy(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """``image`` altered in ways the scene generator never applies: hue, saturation and brightness
    shifted, sensor noise added, saved as a JPEG of quality 35 and decoded again."""
    import cv2

    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-5, 5)) % 180
    hsv[..., 1] *= rng.uniform(0.6, 1.0)
    hsv[..., 2] *= rng.uniform(0.7, 1.2)
    shifted = cv2.cvtColor(hsv.clip(0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    noisy = (shifted + rng.normal(0, 6, image.shape)).clip(0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", noisy[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 35])
    return np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1])


def precision_agreement(labeler, other, seed: int, per_combo: int) -> Dict[str, Dict[str, Optional[float]]]:
    """Embedding cosine and top-1 agreement between two labelers of one model on the single-object scenes
    (``rendered``) and on :func:`unseen_copy` of them (``unseen``); top-1 accuracy of each too."""
    from ros_mm_perception.synthetic.scenes import all_combos, all_phrases, phrase, render_scene

    rng = np.random.default_rng([seed, 3])
    phrases = all_phrases()
    combos = all_combos() * per_combo
    rows: Dict[str, Dict[str, list]] = {kind: {"cos": [], "agree": [], "ours": [], "other": []}
                                        for kind in ("rendered", "unseen")}
    for start in range(0, len(combos), 64):
        chunk = combos[start:start + 64]
        rendered = [render_scene(rng, objects=[c], size=CLASSIFY_SIZE, size_range=CLASSIFY_OBJECT_SIZE).image
                    for c in chunk]
        for kind, images in (("rendered", rendered), ("unseen", [unseen_copy(rng, im) for im in rendered])):
            a, b = (lb.encode_pixels(lb.clip.preprocessor.frames(images)) for lb in (labeler, other))
            top_a, top_b = (lb.logits(emb, lb.text_embeddings(phrases)).argmax(dim=-1).tolist()
                            for lb, emb in ((labeler, a), (other, b)))
            truth = [phrases.index(phrase(*c)) for c in chunk]
            out = rows[kind]
            out["cos"] += (a * b).sum(dim=-1).tolist()
            out["agree"] += [x == y for x, y in zip(top_a, top_b)]
            out["ours"] += [x == t for x, t in zip(top_a, truth)]
            out["other"] += [y == t for y, t in zip(top_b, truth)]
    return {kind: {"embedding_cosine_mean": round(float(np.mean(r["cos"])), 6),
                   "embedding_cosine_min": round(min(r["cos"]), 6),
                   "top1_agreement": _mean(r["agree"]), "top1": _mean(r["ours"]), "top1_other": _mean(r["other"]),
                   "n": len(r["cos"])}
            for kind, r in rows.items()}


def _mean(values) -> Optional[float]:
    return round(float(np.mean(values)), 4) if len(values) else None


def run(args) -> int:
    from ros_mm_perception.core.models.clip_model import load_clip
    from ros_mm_perception.core.config import PerceptionConfig
    from ros_mm_perception.core.errors import UserError
    from ros_mm_perception.core.perception.labeler import ClipLabeler

    if args.n < 1 or args.scenes < 1:
        raise UserError("--n and --scenes must be at least 1")
    start = time.time()
    clip = load_clip(args.model, args.pretrained, args.device, args.precision)
    labeler = ClipLabeler(clip)
    heldout = heldout_combos(clip.name) if Path(clip.name).is_dir() else []
    threshold = PerceptionConfig().score_threshold
    report = {**classification_accuracy(labeler, args.seed, args.n, heldout),
              **grounding_recall(labeler, args.seed, args.scenes, threshold, heldout),
              "score_threshold": threshold, "seed": args.seed, "model": clip.name,
              "precision": str(clip.dtype).removeprefix("torch.")}
    if args.versus_precision:
        other = ClipLabeler(load_clip(args.model, args.pretrained, args.device, args.versus_precision))
        report["versus_precision"] = {"precision": str(other.clip.dtype).removeprefix("torch."),
                                      **precision_agreement(labeler, other, args.seed, args.n)}
    report["seconds"] = round(time.time() - start, 1)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:<28} {value}")
    return 0
