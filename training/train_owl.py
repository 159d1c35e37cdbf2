"""Train the embedded open-vocabulary detector (OWLv2 format) on rendered scenes (CPU, about 21
minutes).

    .venv/bin/python scripts/train_embedded_owl.py            # writes the package's model
    .venv/bin/python scripts/train_embedded_owl.py --steps 50 --out /tmp/owl_try

The model is a transformers ``Owlv2ForObjectDetection``: a small ViT (128 px input, 8 px patches,
so a 16 x 16 grid of patches over the padded square frame) with OWLv2's heads, and a text tower
copied from the embedded CLIP (:mod:`.train_clip`; same BPE vocabulary, kept frozen) so that
queries are embedded as the CLIP labeler embeds them. It is saved with ``save_pretrained`` together
with an ``Owlv2Processor``, and loads through :func:`~ros_mm_perception.core.models.owl.load_owl`
like any OWLv2 checkpoint.

Training data: scenes of :mod:`ros_mm_perception.synthetic.scenes` (seven in ten ``varied``) with
0-4 objects at random sizes and aspect ratios (the frame's short side 180-360 px, objects 10-50 %
of it), some JPEG-compressed, preprocessed by the same device-side OWLv2 preprocessing as at
inference. Queries are every colour-shape phrase plus the attribute phrases ``"<colour> shape"``
and ``"<shape>"``; a patch's target for a query is 1 when the patch is assigned to an object the
query describes.

Assignment and losses, per object: the patches whose centres lie in the middle of its box (within
:data:`CENTRE_RADIUS` of the box's half-size from its centre, at least the one nearest the centre)
are its positives; other patches inside the box are ignored by the class loss, all remaining
(patch, query) pairs are negatives. Class: varifocal loss (a positive's target is the IoU of its
own predicted box with the object's, so the score rates the box; negatives weighted by
``alpha * p^gamma``); boxes (positives only): L1 on ``(cx, cy, w, h)`` plus generalised IoU;
objectness (OWLv2's head): binary cross-entropy, 1 on positives. Each sum is divided by the number
of positives.

The run is deterministic given ``--seed``: the data of step ``k`` comes from the seed and ``k``
alone (a second process renders it a few steps ahead), torch uses a fixed thread count and
deterministic algorithms.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

# Idle OpenMP threads sleep instead of spinning (see train_clip).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import cv2  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ros_mm_perception.core.imaging.owl_preprocess import Owlv2Preprocessor  # noqa: E402
from ros_mm_perception.core.models.embedded import (EMBEDDED_CLIP_DIR,  # noqa: E402
                                                    EMBEDDED_OWL_DIR)
from ros_mm_perception.core.models.owl import image_heads  # noqa: E402
from ros_mm_perception.core.models.random_models import owl_config, owl_processor  # noqa: E402
from ros_mm_perception.synthetic.scenes import COLOURS, SHAPES, phrase, render_scene  # noqa: E402
from training.common import (adamw_cosine, optimise, prefetched_batches,  # noqa: E402
                             training_main, write_training_info)

VISION = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
              image_size=128, patch_size=8)
"""The ViT: 4 layers, 64 wide, 128 px input in 8 px patches."""
TEXT_FROM_CLIP = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, hidden_act="gelu")
"""The embedded CLIP's text transformer (open_clip: width 64, 4 heads, 2 layers, GELU)."""

SHORT_SIDE = (180, 360)
ASPECT = (0.75, 1.8)
OBJECT_SIZE = (0.1, 0.5)
JPEG_SHARE = 0.3
"""Share of plain scenes saved as JPEG (``varied`` scenes bring their own compression)."""
VARIED_SCENES = 0.7
"""Share of scenes rendered with ``varied=True`` (as for the embedded CLIP)."""
EMPTY_SHARE = 0.1
CENTRE_RADIUS = 0.5
FOCAL_ALPHA, FOCAL_GAMMA = 0.75, 2.0
LOSS_WEIGHTS = {"class": 4.0, "l1": 5.0, "giou": 2.0, "objectness": 1.0}
SHIFT_PRIOR = -4.0
"""Initial logit shift and objectness: every score starts near sigmoid(-4) = 0.02."""


def queries() -> List[Tuple[str, Tuple[str, str] | None, str | None]]:
    """Training queries: (text, colour-or-None, shape-or-None)."""
    out = [(phrase(c, s), c, s) for c in COLOURS for s in SHAPES]
    out += [(f"{c} shape", c, None) for c in COLOURS]
    out += [(s, None, s) for s in SHAPES]
    return out


def query_targets(objects, query_list) -> np.ndarray:
    """``len(objects) x Q`` 0/1: which queries describe each object."""
    return np.array([[float((c is None or o.colour == c) and (s is None or o.shape == s))
                      for _, c, s in query_list]
                     for o in objects], np.float32).reshape(len(objects), len(query_list))


def render_training_scene(rng: np.random.Generator):
    """One scene of random size, aspect, object count and size; mostly ``varied``, otherwise
    sometimes JPEG-compressed."""
    short = int(rng.integers(SHORT_SIDE[0], SHORT_SIDE[1] + 1))
    aspect = float(rng.uniform(*ASPECT))
    h, w = (short,
            int(round(short * aspect))) if rng.random() < 0.8 else (int(round(short * aspect)),
                                                                    short)
    n = 0 if rng.random() < EMPTY_SHARE else int(rng.integers(1, 5))
    lo = float(rng.uniform(OBJECT_SIZE[0], 0.3))
    hi = float(rng.uniform(lo + 0.05, OBJECT_SIZE[1]))
    varied = bool(rng.random() < VARIED_SCENES)
    scene = render_scene(rng, n_objects=n, size=(h, w), size_range=(lo, hi), varied=varied)
    if not varied and rng.random() < JPEG_SHARE:
        ok, data = cv2.imencode(".jpg", scene.image[:, :, ::-1],
                                [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        scene.image = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    return scene


def assign(boxes_rel: np.ndarray, grid: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per patch: index of its object (-1 none) and whether the class loss ignores it.

    ``boxes_rel`` are ``(x0, y0, x1, y1)`` relative to the model input square. A patch that is
    positive for several objects goes to the smallest; patches inside a box but not positive are
    ignored.
    """
    centres = (np.arange(grid) + 0.5) / grid
    px, py = np.meshgrid(centres, centres, indexing="xy")
    px, py = px.ravel(), py.ravel()
    owner = np.full(grid * grid, -1, np.int64)
    inside_any = np.zeros(grid * grid, bool)
    areas = (boxes_rel[:, 2] - boxes_rel[:, 0]) * (boxes_rel[:, 3] - boxes_rel[:, 1])
    for k in np.argsort(-areas, kind="stable"):          # largest first, so smaller ones overwrite
        x0, y0, x1, y1 = boxes_rel[k]
        cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        inside = (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)
        positive = inside & (np.abs(px - cx) <= CENTRE_RADIUS * hw) & (np.abs(py - cy)
                                                                       <= CENTRE_RADIUS * hh)
        positive[int(np.argmin((px - cx) ** 2 + (py - cy) ** 2))] = True
        owner[positive] = k
        inside_any |= inside
    return owner, inside_any & (owner < 0)


def make_batch(rng: np.random.Generator, batch_size: int, preprocessor: Owlv2Preprocessor,
               query_list, grid: int):
    """Pixels, class targets and masks, box targets for one step."""
    from ros_mm_perception.core.imaging.preprocess import upload

    images, cls_t, cls_mask, box_t, pos = [], [], [], [], []
    q = len(query_list)
    for _ in range(batch_size):
        scene = render_training_scene(rng)
        h, w = scene.image.shape[:2]
        side = float(max(h, w))
        images.append(upload(scene.image, torch.device("cpu")))
        boxes = np.array([o.box for o in scene.objects], np.float64).reshape(-1, 4) / side
        owner, ignore = assign(boxes, grid)
        targets = query_targets(scene.objects, query_list)
        t = np.zeros((grid * grid, q), np.float32)
        t[owner >= 0] = targets[owner[owner >= 0]]
        mask = np.ones((grid * grid, q), np.float32)
        mask[ignore] = 0.0
        b = np.zeros((grid * grid, 4), np.float32)
        if len(boxes):
            cxcywh = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                               boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
            b[owner >= 0] = cxcywh[owner[owner >= 0]]
        cls_t.append(t), cls_mask.append(mask), box_t.append(b), pos.append(owner >= 0)
    pixels = preprocessor(images)
    return (pixels, torch.from_numpy(np.stack(cls_t)), torch.from_numpy(np.stack(cls_mask)),
            torch.from_numpy(np.stack(box_t)), torch.from_numpy(np.stack(pos)))


def _corners(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of ``1 - GIoU`` of ``(cx, cy, w, h)`` box pairs."""
    a, b = _corners(pred), _corners(target)
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(-1), (b[:, 2:] - b[:, :2]).prod(-1)
    union = area_a + area_b - inter
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(-1)
    iou = inter / union.clamp(min=1e-9)
    return (1 - (iou - (hull - union) / hull.clamp(min=1e-9))).sum()


def box_iou_pairs(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of ``(cx, cy, w, h)`` box pairs (``... x 4``)."""
    a, b = _corners(pred), _corners(target)
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = (a[..., 2:] - a[..., :2]).prod(-1) + (b[..., 2:] - b[..., :2]).prod(-1) - inter
    return inter / union.clamp(min=1e-9)


def losses(model, pixels, queries_embeds, cls_t, cls_mask, box_t, pos) -> dict:
    enc = image_heads(model, pixels)
    logits = (torch.einsum("npd,qd->npq", enc.class_embeds, queries_embeds)
              + enc.logit_shift) * enc.logit_scale
    n_pos = max(1.0, float(pos.sum()))
    p = torch.sigmoid(logits)
    # Varifocal loss: a positive's target is the IoU of its own predicted box with the object's, so
    # a score says how good the box is; negatives are down-weighted by alpha * p^gamma.
    quality = box_iou_pairs(enc.boxes.detach().float(), box_t).clamp(min=0.05)[...,
                                                                               None] * pos[...,
                                                                                           None]
    target = cls_t * quality
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    weight = torch.where(cls_t > 0, target, FOCAL_ALPHA * p.detach() ** FOCAL_GAMMA)
    out = {"class": (ce * weight * cls_mask).sum() / n_pos}
    if pos.any():
        pb, tb = enc.boxes[pos], box_t[pos]
        out["l1"] = (pb - tb).abs().sum() / n_pos
        out["giou"] = giou_loss(pb, tb) / n_pos
    else:
        out["l1"] = out["giou"] = enc.boxes.sum() * 0.0
    # the ignored patches, as for the class loss
    obj_mask = cls_mask[..., 0]
    out["objectness"] = (F.binary_cross_entropy_with_logits(enc.objectness, pos.float(),
                                                            reduction="none")
                         * obj_mask).sum() / n_pos
    out["total"] = sum(LOSS_WEIGHTS[k] * v for k, v in out.items())
    return out


def copy_clip_text_tower(owl, clip_dir: Path = EMBEDDED_CLIP_DIR) -> None:
    """Load the embedded CLIP's text transformer and projection into ``owl``'s text model."""
    from ros_mm_perception.core.models.clip_model import load_clip

    clip = load_clip(str(clip_dir), device="cpu", precision="fp32").model
    text = owl.owlv2.text_model
    n_pos = text.embeddings.position_embedding.weight.shape[0]
    with torch.no_grad():
        text.embeddings.token_embedding.weight.copy_(clip.token_embedding.weight)
        text.embeddings.position_embedding.weight.copy_(clip.positional_embedding[:n_pos])
        for layer, block in zip(text.encoder.layers, clip.transformer.resblocks):
            q, k, v = block.attn.in_proj_weight.chunk(3)
            qb, kb, vb = block.attn.in_proj_bias.chunk(3)
            for proj, w, b in ((layer.self_attn.q_proj, q, qb), (layer.self_attn.k_proj, k, kb),
                               (layer.self_attn.v_proj, v, vb)):
                proj.weight.copy_(w), proj.bias.copy_(b)
            layer.self_attn.out_proj.weight.copy_(block.attn.out_proj.weight)
            layer.self_attn.out_proj.bias.copy_(block.attn.out_proj.bias)
            layer.layer_norm1.load_state_dict(block.ln_1.state_dict())
            layer.layer_norm2.load_state_dict(block.ln_2.state_dict())
            layer.mlp.fc1.load_state_dict(block.mlp.c_fc.state_dict())
            layer.mlp.fc2.load_state_dict(block.mlp.c_proj.state_dict())
        text.final_layer_norm.load_state_dict(clip.ln_final.state_dict())
        owl.owlv2.text_projection.weight.copy_(clip.text_projection.t())


def build_model(seed: int):
    """A fresh ``Owlv2ForObjectDetection`` with the embedded CLIP's text tower, and its
    processor."""
    from transformers import Owlv2ForObjectDetection

    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(owl_config("owlv2", VISION, TEXT_FROM_CLIP))
    copy_clip_text_tower(model)
    with torch.no_grad():  # heads start neutral: every score near the prior, boxes at their patch
        for layer in (model.class_head.logit_shift, model.class_head.logit_scale,
                      model.objectness_head.dense2, model.box_head.dense2):
            layer.weight.zero_(), layer.bias.zero_()
        model.class_head.logit_shift.bias.fill_(SHIFT_PRIOR)
        model.objectness_head.dense2.bias.fill_(SHIFT_PRIOR)
    model.owlv2.text_model.requires_grad_(False)
    model.owlv2.text_projection.requires_grad_(False)
    return model, owl_processor("owlv2", VISION["image_size"])


@torch.no_grad()
def query_embeddings(model, processor, texts: Sequence[str]) -> torch.Tensor:
    """Normalised query embeddings, as :meth:`OwlEngine.encode_text` computes them."""
    tokens = processor.tokenizer(list(texts), padding="max_length", truncation=True,
                                 return_tensors="pt")
    out = model.owlv2.get_text_features(**tokens).pooler_output
    out = out / torch.linalg.norm(out, dim=-1, keepdim=True)
    return out / (torch.linalg.norm(out, dim=-1, keepdim=True) + 1e-6)


def batch_maker(batch_size: int):
    """``make(rng)`` → one training batch (what :func:`prefetched_batches` calls in its
    process)."""
    from functools import partial

    preprocessor = Owlv2Preprocessor(owl_processor("owlv2", VISION["image_size"]).image_processor,
                                     torch.device("cpu"))
    return partial(make_batch, batch_size=batch_size, preprocessor=preprocessor,
                   query_list=queries(), grid=VISION["image_size"] // VISION["patch_size"])


def train(seed: int, steps: int, batch_size: int, lr: float, out: Path, threads: int,
          log_every: int = 25) -> dict:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    model, processor = build_model(seed)
    query_list = queries()
    embeds = query_embeddings(model, processor, [t for t, _, _ in query_list])
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = adamw_cosine([p for p in params if p.ndim >= 2],
                              [p for p in params if p.ndim < 2], lr, steps)
    start = time.time()
    curve = optimise(model, prefetched_batches(batch_maker, (batch_size,), seed, steps),
                     lambda batch: losses(model, batch[0], embeds, *batch[1:]), opt, sched,
                     steps, start, log_every)
    out = Path(out)
    model.half().save_pretrained(out)
    processor.save_pretrained(out)
    return write_training_info(out, seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                               threads=threads, started=start, loss_curve=curve, vision=VISION,
                               text_from="embedded CLIP", queries=[t for t, _, _ in query_list])


def main(argv=None) -> int:
    return training_main(__doc__.split("\n\n")[0], train, EMBEDDED_OWL_DIR, steps=3200,
                         batch_size=16, lr=1.5e-3, threads=1, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
