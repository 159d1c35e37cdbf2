"""Train the embedded default CLIP on rendered scenes of coloured shapes (CPU, about 26 minutes).

    .venv/bin/python scripts/train_embedded_clip.py            # writes the package's model
    .venv/bin/python scripts/train_embedded_clip.py --steps 50 --out /tmp/clip_try

A small open_clip CLIP (custom config, 64 px images) learns from crops of scenes drawn by
:mod:`ros_mm_perception.synthetic.scenes` (most of them ``varied``: wider shades, more backgrounds,
saturated grounds and photographs, clutter, edges, shadows, JPEG) paired with captions, through
CLIP's symmetric contrastive loss (image→text and text→image cross-entropy, learned temperature)
with these additions:

* multi-positive targets: captions that say the same thing ("a red circle", "a photo of red
  circle.") are positives of each other; captions true of a crop but saying something else ("a
  circle" for a crop captioned "a red circle") are left out of its softmax instead of counted as
  wrong;
* every batch also contrasts against the whole known vocabulary (each seen phrase, colour, shape);
* some single objects are captioned by one attribute ("a red shape", "a star"), which teaches the
  text tower to compose colour and shape words;
* null captions: "an object" takes a share of each object crop's target (more when the crop is
  loose around the object) and the whole target of crops that cut an object; crops without objects
  are captioned "background". CLIP-only grounding scores regions against these same null prompts,
  so an absent object gets a low score and tight boxes beat loose ones.

Some colour-shape combinations never appear in training (:data:`HELDOUT`), to measure how well the
model composes colour and shape words it has only seen apart. The run is deterministic given
``--seed``: the data of step ``k`` comes from the seed and ``k`` alone (a second process renders it
a few steps ahead), and torch uses a fixed thread count.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

# Idle OpenMP threads sleep instead of spinning: on a shared CPU spinning threads steal the time
# slices their siblings need, which makes small tensor ops many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ros_mm_perception.core.perception.boxes import box_area  # noqa: E402
from ros_mm_perception.core.models.clip_model import save_clip  # noqa: E402
from ros_mm_perception.core.models.embedded import EMBEDDED_CLIP_DIR  # noqa: E402
from ros_mm_perception.core.imaging.preprocess import ClipPreprocessor, crop_windows  # noqa: E402
from ros_mm_perception.synthetic.scenes import (COLOURS, SHAPES, all_combos,  # noqa: E402
                                                caption, phrase, render_scene)
from training.common import (adamw_cosine, prefetched_batches, training_main,  # noqa: E402
                             write_training_info)

MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [2, 2, 2, 2], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
"""A 64 px ModifiedResNet (CLIP's RN50 design, narrow) and a two-layer, 64-wide text transformer
(its 49408-token embedding table dominates the size)."""

HELDOUT = [(c, SHAPES[(i + 3) % len(SHAPES)]) for i, c in enumerate(COLOURS)]
"""One combination per colour, never shown in training (red star, orange cross, yellow ring,
...)."""

NULL_TEXTS = ("a photo of an object.", "an object")
OBJECT_SHARE = (0.1, 0.6)
"""Target share of "an object" for an object crop, from tight crops (the object spans at least 80 %
of the crop's side) to loose ones (40 % or less): the phrase's score then tells a tight box from a
loose one."""
MIN_RELATIVE_SIZE = 0.12
"""Crops holding a whole object smaller than this share of the crop's longer side are left out
(ambiguous)."""
VARIED_SCENES = 0.7
"""Share of training scenes rendered with ``varied=True`` (wider shades, more backgrounds,
saturated grounds and photographs, clutter, edges, shadows, JPEG); the rest are plain."""
LETTERBOX_FRAMES = 0.6
"""Share of whole-frame crops fitted by letterbox (the labeler's default) rather than centre
crop."""
OBJECT_CROP_LOOSEST = 3.5
"""A square around an object is 1 to this many times the object's size (log-uniform), so objects
are seen at every share of the input that whole frames give them, from 30 % to all of it."""
TIGHT_CROPS = 0.3
"""Chance per object of one more crop: its box with a small margin, letterboxed, as grounding
scores a fitted box on its own pixels."""

ATTRIBUTE_CAPTIONS = 0.4
"""Share of single-object crops captioned by colour alone ("a red shape") or shape alone ("a
circle")."""

Content = Optional[Tuple[Tuple[str, str], ...]]
"""The whole objects in a crop, sorted; () for background; None for a crop that cuts an object."""
Key = Tuple[Tuple[Optional[str], Optional[str]], ...]
"""What a caption says: (colour, shape) items, either may be None (not mentioned); () =
background."""


@dataclass
class Sample:
    content: Content
    key: Optional[Key]
    """What the caption says (None: no caption, the crop cuts an object)."""
    text: Optional[str]
    object_share: float
    """Target share of the "an object" captions."""


def says_truly(key: Key, content: Content) -> bool:
    """Whether a caption with ``key`` is true of a crop with ``content``."""
    if content is None:
        return False
    if key == ():
        return content == ()
    return all(any(c in (None, oc) and s in (None, os) for oc, os in content) for c, s in key)


# ------------------------------------------------------------------------------------------------
# data

def centre_square(box):
    """The square the preprocessor keeps of a crop (shortest side, centred), in image pixels."""
    x0, y0, x1, y1 = box
    side = min(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def square_inside(cx: float, cy: float, side: float, width: int, height: int):
    """A square of ``side`` centred near (cx, cy), shifted to lie inside the image where it
    fits."""
    side = min(side, width, height)
    x0 = float(np.clip(cx - side / 2, 0, width - side))
    y0 = float(np.clip(cy - side / 2, 0, height - side))
    return (x0, y0, x0 + side, y0 + side)


def crop_content(crop, objects) -> Tuple[Content, float]:
    """(content, "an object" share) of what the model sees of a crop, or (None, -1) when it is
    ambiguous.

    An object is whole in the crop when 85 % of its box is inside and it is not tiny there (its
    longer side under :data:`MIN_RELATIVE_SIZE` of the crop's); it is cut when less of it is inside
    but it still covers part of the crop.
    """
    side = max(crop[2] - crop[0], crop[3] - crop[1])
    area = (crop[2] - crop[0]) * (crop[3] - crop[1])
    whole, cut, rel = [], [], {}
    for i, o in enumerate(objects):
        ix0, iy0 = max(crop[0], o.box[0]), max(crop[1], o.box[1])
        ix1, iy1 = min(crop[2], o.box[2]), min(crop[3], o.box[3])
        inter = max(ix1 - ix0, 0) * max(iy1 - iy0, 0)
        inside = inter / max(float(box_area([o.box])[0]), 1e-6)
        rel[i] = max(o.box[2] - o.box[0], o.box[3] - o.box[1]) / side
        if inside >= 0.85:
            whole.append(i)
        elif inside > 0.3 or inter > 0.3 * area:
            cut.append((i, inside))
    if any(rel[i] < MIN_RELATIVE_SIZE for i in whole):
        return None, -1.0
    if whole:
        tight = min(rel[i] for i in whole)
        share = OBJECT_SHARE[0] + (OBJECT_SHARE[1] - OBJECT_SHARE[0]) * float(np.clip((0.8 - tight)
                                                                                      / 0.4, 0, 1))
        return tuple(sorted((objects[i].colour, objects[i].shape) for i in whole)), share
    if not cut:
        return (), 0.0
    if all(inside < 0.7 for _, inside in cut):
        return None, 1.0
    return None, -1.0


def caption_key(rng: np.random.Generator, content: Content) -> Optional[Key]:
    """What the caption of a crop will say: everything, or for some single objects one
    attribute."""
    if content is None or len(content) != 1 or rng.random() >= ATTRIBUTE_CAPTIONS:
        return content
    (colour, shape), = content
    return ((colour, None),) if rng.random() < 0.5 else ((None, shape),)


def caption_text(rng: np.random.Generator, key: Key) -> str:
    """One of several wordings of a caption key."""
    if key == ():
        forms = ("background", "a photo of background.", "a photo of the background.")
    elif len(key) == 1 and key[0][1] is None:
        colour = key[0][0]
        forms = (f"a {colour} shape", f"something {colour}", f"a photo of a {colour} shape.")
    elif len(key) == 1 and key[0][0] is None:
        shape = key[0][1]
        forms = (shape, f"a {shape}", f"a photo of a {shape}.")
    else:
        order = list(key)
        rng.shuffle(order)
        natural = caption(order)  # "a red circle and a blue star"
        bare = " and ".join(phrase(c, s) for c, s in order)  # "red circle and blue star"
        forms = (f"a photo of {bare}.", bare, natural, f"a photo of {natural}.")
    return forms[rng.integers(len(forms))]


def scene_crops(rng: np.random.Generator, scene, width: int,
                height: int) -> List[Tuple[tuple, str]]:
    """Candidate ``(crop, crop mode)`` of one scene: the frame, a square around each object, for
    some objects a tight box, and two random squares."""
    frame_mode = "letterbox" if rng.random() < LETTERBOX_FRAMES else "center"
    crops = [((0.0, 0.0, float(width), float(height)), frame_mode)]
    for o in scene.objects:
        bw, bh = o.box[2] - o.box[0], o.box[3] - o.box[1]
        side = max(bw, bh) * float(np.exp(rng.uniform(0.0, np.log(OBJECT_CROP_LOOSEST))))
        jitter = rng.uniform(-0.25, 0.25, 2) * (side - max(bw, bh))
        crops.append((square_inside((o.box[0] + o.box[2]) / 2 + jitter[0],
                                    (o.box[1] + o.box[3]) / 2 + jitter[1], side, width, height),
                      "center"))
        if rng.random() < TIGHT_CROPS:
            mx, my = rng.uniform(0.0, 0.15, 2) * (bw, bh)
            crops.append(((max(0.0, o.box[0] - mx), max(0.0, o.box[1] - my),
                           min(float(width), o.box[2] + mx), min(float(height), o.box[3] + my)),
                          "letterbox"))
    short = min(width, height)
    for _ in range(2):
        side = short * rng.uniform(0.15, 0.9)
        crops.append(
            (
                square_inside(rng.uniform(0, width), rng.uniform(0, height), side, width, height),
                "center",
            )
        )
    return crops


def seen_area(crop, mode: str):
    """The part of a crop the model sees: all of it letterboxed, its centre square otherwise."""
    return crop if mode == "letterbox" else centre_square(crop)


def make_batch(rng: np.random.Generator, batch_size: int, allowed: Sequence[Tuple[str, str]],
               preprocessor: ClipPreprocessor) -> Tuple[torch.Tensor, List[Sample]]:
    """Pixels and samples of one batch of crops of freshly rendered scenes."""
    pixels, samples = [], []
    quota = {"background": 0.12 * batch_size, "part": 0.12 * batch_size}
    count = {"background": 0, "part": 0}
    while len(samples) < batch_size:
        n = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.25, 0.2, 0.15]))
        short = int(rng.integers(64, 193))
        height, width = (short, int(short * rng.uniform(1.0, 1.8)))[::1 if rng.random() < 0.7
                                                                    else -1]
        size_range = (0.12, 0.7) if n == 1 else (0.12, 0.45)
        scene = render_scene(rng, n, (height, width), combos=allowed, size_range=size_range,
                             varied=bool(rng.random() < VARIED_SCENES))
        boxes = {"center": [], "letterbox": []}
        kept = {"center": [], "letterbox": []}
        for crop, mode in scene_crops(rng, scene, width, height):
            content, share = crop_content(seen_area(crop, mode), scene.objects)
            if share < 0:
                continue
            kind = "part" if content is None else "background" if content == () else "object"
            if kind in count:
                if count[kind] >= quota[kind]:
                    continue
                count[kind] += 1
            key = caption_key(rng, content)
            boxes[mode].append(crop)
            kept[mode].append(Sample(content, key, None if key is None else caption_text(rng, key),
                                     share))
        chw = torch.from_numpy(scene.image).permute(2, 0, 1).contiguous()  # planar: fast crops
        for mode in boxes:
            if boxes[mode]:
                pixels.append(preprocessor([chw[:, y0:y1, x0:x1] for x0, y0, x1, y1 in
                                            crop_windows(scene.image.shape, boxes[mode])], mode))
                samples += kept[mode]
    return torch.cat(pixels)[:batch_size], samples[:batch_size]


# ------------------------------------------------------------------------------------------------
# loss

def vocabulary(allowed: Sequence[Tuple[str, str]]) -> List[Tuple[str, Key]]:
    """(text, key) of every caption the batch contrasts against besides its own: each allowed
    phrase, each colour and shape alone, and the background, in the labeler's default prompt
    wording."""
    entries = [(f"a photo of {phrase(c, s)}.", ((c, s),)) for c, s in allowed]
    entries += [(f"a photo of a {c} shape.", ((c, None),)) for c in COLOURS]
    entries += [(f"a photo of a {s}.", ((None, s),)) for s in SHAPES]
    return entries + [("a photo of background.", ())]


def contrastive_loss(model, pixels: torch.Tensor, samples: Sequence[Sample],
                     vocab: Sequence[Tuple[str, Key]], tokenizer) -> torch.Tensor:
    """CLIP's symmetric cross-entropy, with multi-positive targets, the vocabulary and null
    captions.

    The texts are the batch's captions plus ``vocab`` (so every crop is told apart from every known
    phrase, not only from those that happen to be in its batch). Positives of a crop are the texts
    that say the same thing as its own caption; texts that are true of it but say something else
    ("a circle" for a crop captioned "a red circle") are left out of its softmax rather than
    counted as wrong. The "an object" captions take the crop's object share.
    """
    by_text = dict(vocab)
    for s in samples:
        if s.text is not None:
            by_text.setdefault(s.text, s.key)
    texts, keys = list(by_text), list(by_text.values())
    img = F.normalize(model.encode_image(pixels), dim=-1)
    txt = F.normalize(model.encode_text(tokenizer(texts + list(NULL_TEXTS))), dim=-1)
    logits = model.logit_scale.exp() * img @ txt.T  # B x (T + nulls)
    same = torch.tensor([[s.key is not None and s.key == k for k in keys] for s in samples])
    true = torch.tensor([[says_truly(k, s.content) for k in keys] for s in samples])
    ignore = true & ~same
    n_null = len(NULL_TEXTS)
    share = torch.tensor([s.object_share for s in samples], dtype=torch.float32)[:, None]
    pos = same.float() / same.float().sum(1, keepdim=True).clamp(min=1)
    target = torch.cat([pos * (1 - share), share.expand(-1, n_null) / n_null], dim=1)
    mask = torch.cat([ignore, torch.zeros(len(samples), n_null, dtype=torch.bool)], dim=1)
    image_loss = _soft_cross_entropy(logits.masked_fill(mask, float("-inf")), target)
    shown = same.any(0)  # texts with a positive crop in the batch
    text_logits = logits[:, :len(texts)].T[shown].masked_fill(ignore.T[shown], float("-inf"))
    text_target = same.T[shown].float()
    text_loss = _soft_cross_entropy(text_logits, text_target / text_target.sum(1, keepdim=True))
    return (image_loss + text_loss) / 2


def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(dim=1)
    return -torch.where(target > 0, target * logp, torch.zeros_like(logp)).sum(1).mean()


# -----------------------------------------------------------------------------------------------
# train

def batch_maker(image_size: int, batch_size: int):
    """``make(rng)`` → one training batch (what :func:`prefetched_batches` calls in its
    process)."""
    from functools import partial

    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    preprocessor = ClipPreprocessor(image_size, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD,
                                    torch.device("cpu"))
    allowed = [c for c in all_combos() if c not in HELDOUT]
    return partial(make_batch, batch_size=batch_size, allowed=allowed, preprocessor=preprocessor)


def train(seed: int, steps: int, batch_size: int, lr: float, out: Path, threads: int) -> dict:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**MODEL_CFG)
    tokenizer = SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt, sched = adamw_cosine(decay, rest, lr, steps, eps=1e-6)
    allowed = [c for c in all_combos() if c not in HELDOUT]
    vocab = vocabulary(allowed)
    curve, start = [], time.time()
    model.train()
    data = prefetched_batches(batch_maker, (MODEL_CFG["vision_cfg"]["image_size"], batch_size),
                              seed, steps)
    for step, (pixels, samples) in enumerate(data):
        loss = contrastive_loss(model, pixels, samples, vocab, tokenizer)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        curve.append(round(loss.item(), 5))
        if step % 25 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  scale "
                  f"{model.logit_scale.exp().item():6.2f}  {time.time() - start:7.1f}s",
                  flush=True)
    model.eval()
    save_clip(model, MODEL_CFG, out, half=True)
    return write_training_info(out, seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                               threads=threads, started=start, loss_curve=curve,
                               heldout=[list(c) for c in HELDOUT],
                               world={"colours": list(COLOURS), "shapes": list(SHAPES)},
                               null_texts=list(NULL_TEXTS))


def main(argv=None) -> int:
    return training_main(__doc__.split("\n\n")[0], train, EMBEDDED_CLIP_DIR, steps=3600,
                         batch_size=128, lr=2e-3, threads=2, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
