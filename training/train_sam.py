"""Train the embedded box-prompted mask model (SAM format) on rendered scenes (CPU, two threads).

    .venv/bin/python scripts/train_embedded_sam.py            # writes the package's model
    .venv/bin/python scripts/train_embedded_sam.py --steps 50 --out /tmp/sam_try

The model is a transformers ``SamModel`` at a tiny size (:data:`ARCH`: a ViT image encoder on
:data:`IMAGE_SIZE` px inputs with 8 px patches, its neck, SAM's prompt encoder and two-way mask
decoder), saved with ``save_pretrained`` together with a ``SamProcessor``; it loads through
:func:`~ros_mm_perception.core.models.sam.load_mask_model` like any SAM checkpoint.

Training data: :data:`POOL` scenes of :mod:`ros_mm_perception.synthetic.scenes` (three in four
``varied``), 1-4 objects each at one of :data:`SCENE_SIZES`, rendered once at the start with their
exact visible masks. The model masks each box on its own crop at run time
(:func:`~ros_mm_perception.core.models.sam.crop_window`), so each step draws scenes from the pool,
one object of each, mirrors some left to right, moves each side of the object's box by up to
:data:`BOX_JITTER` of its size (a detector's box is never exact), crops around that box with a
margin drawn from :data:`CROP_MARGINS` and prompts with the box. The low-resolution mask logits (a
quarter of the input size) are compared with the exact mask resampled onto the same grid (area
averaging: soft targets on the outline) by binary cross-entropy plus a soft Dice loss. The unseen
style of :mod:`.unseen` is never trained on.

The run is deterministic given ``--seed`` and ``--threads``: the pool and each step's draw come
from the seed alone, and torch uses deterministic algorithms. ``--init-from DIR`` continues from
a saved model instead of random weights (a fresh optimizer and schedule; a new ``--seed`` gives a
new pool); its ``training.json`` is kept under ``continued_from`` in the new one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ros_mm_perception.core.models.embedded import EMBEDDED_SAM_DIR
from ros_mm_perception.core.models.random_models import sam_config, sam_processor
from ros_mm_perception.core.models.sam import CROP_MARGIN, crop_window
from ros_mm_perception.synthetic.scenes import render_scene
from training.common import (TRAINING_INFO, adamw_cosine, optimise, training_main,
                             write_training_info)

IMAGE_SIZE = 192
ARCH = dict(image_size=IMAGE_SIZE, patch_size=8, width=48, layers=3, heads=4, window_size=6)
POOL = 800
"""Scenes rendered once for the whole run."""
SCENE_SIZES = ((240, 320), (480, 640))
"""Frame sizes of the pool, one drawn per scene."""
BOX_JITTER = 0.05
CROP_MARGINS = (CROP_MARGIN / 2, CROP_MARGIN * 2)
"""Range of the crop margin drawn per crop: the model learns around the engine's
:data:`~ros_mm_perception.core.models.sam.CROP_MARGIN` rather than at one value."""


def render_pool(seed: int, n: int) -> List:
    """``n`` scenes (image and objects with masks) from ``seed``, each at one of
    :data:`SCENE_SIZES`."""
    rng = np.random.default_rng([seed, 1])
    pool = []
    for _ in range(n):
        size = SCENE_SIZES[int(rng.integers(len(SCENE_SIZES)))]
        pool.append(render_scene(rng, n_objects=int(rng.integers(1, 5)), size=size,
                                 varied=rng.random() < 0.75, size_range=(0.15, 0.5)))
    return pool


def low_res_target(mask: np.ndarray, new_hw, grid: int) -> np.ndarray:
    """The exact mask as the model's low-resolution mask sees it: resized onto the resized crop,
    padded to the square input and area-averaged to ``grid x grid``."""
    scaled = cv2.resize(mask.astype(np.float32), (new_hw[1], new_hw[0]),
                        interpolation=cv2.INTER_AREA)
    square = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    square[:new_hw[0], :new_hw[1]] = scaled
    return cv2.resize(square, (grid, grid), interpolation=cv2.INTER_AREA)


def make_batch(rng: np.random.Generator, pool, processor, batch_size: int):
    """Pixels of ``batch_size`` crops (one object each), ``B x 1 x 4`` prompt boxes (input
    pixels), targets ``B x 1 x g x g`` and a box mask ``B x 1``."""
    crops, boxes, masks = [], [], []
    for i in rng.choice(len(pool), batch_size, replace=False):
        scene = pool[i]
        obj = scene.objects[int(rng.integers(len(scene.objects)))]
        flip = rng.random() < 0.5
        image = scene.image[:, ::-1] if flip else scene.image
        mask = obj.mask[:, ::-1] if flip else obj.mask
        h, w = image.shape[:2]
        x0, y0, x1, y1 = obj.box
        if flip:
            x0, x1 = w - x1, w - x0
        bw, bh = x1 - x0, y1 - y0
        jitter = rng.uniform(-BOX_JITTER, BOX_JITTER, 4) * [bw, bh, bw, bh]
        box = np.clip(np.array([x0, y0, x1, y1]) + jitter, 0, [w, h, w, h])
        c0, r0, c1, r1 = crop_window(box, h, w, rng.uniform(*CROP_MARGINS))
        crops.append(np.ascontiguousarray(image[r0:r1, c0:c1]))
        boxes.append(box - [c0, r0, c0, r0])
        masks.append(mask[r0:r1, c0:c1])
    inputs = processor.image_processor(crops, return_tensors="pt")
    grid = IMAGE_SIZE // ARCH["patch_size"] * 4
    box_t = np.zeros((batch_size, 1, 4), np.float32)
    target = np.zeros((batch_size, 1, grid, grid), np.float32)
    for i, (crop, box, mask) in enumerate(zip(crops, boxes, masks)):
        h, w = crop.shape[:2]
        new_h, new_w = processor.image_processor._get_preprocess_shape((h, w), IMAGE_SIZE)
        box_t[i, 0] = box * np.array([new_w / w, new_h / h] * 2)
        target[i, 0] = low_res_target(mask, (new_h, new_w), grid)
    return (inputs["pixel_values"], torch.from_numpy(box_t), torch.from_numpy(target),
            torch.ones(batch_size, 1))


def losses(model, pixels, boxes, target, valid) -> dict:
    out = model(pixel_values=pixels, input_boxes=boxes, multimask_output=False)
    logits = out.pred_masks[:, :, 0]
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-2, -1))
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum((-2, -1)) + 1) / (p.sum((-2, -1)) + target.sum((-2, -1)) + 1)
    n = valid.sum()
    out = {"bce": (bce * valid).sum() / n, "dice": (dice * valid).sum() / n}
    out["total"] = out["bce"] + out["dice"]
    return out


def build_model(seed: int):
    from transformers import SamModel

    torch.manual_seed(seed)
    model = SamModel(sam_config(**ARCH))
    # The random Fourier features that encode box corners: N(0, 1) frequencies, as the original
    # SAM draws them (transformers draws them at half the vision width, to be overwritten by a
    # checkpoint; that many cycles across the frame alias on the mask grid and hide the boxes).
    frequencies = torch.randn_like(model.shared_image_embedding.positional_embedding)
    for embedding in (model.shared_image_embedding, model.prompt_encoder.shared_embedding):
        embedding.positional_embedding.data.copy_(frequencies)
    return model, sam_processor(IMAGE_SIZE)


def load_model(folder: Path):
    """A model saved by this script, in float32, and its training record."""
    from transformers import SamModel

    model = SamModel.from_pretrained(folder, torch_dtype=torch.float32)
    if model.config.vision_config.image_size != IMAGE_SIZE:
        raise ValueError(f"{folder}: input size {model.config.vision_config.image_size}, "
                         f"this script trains {IMAGE_SIZE}")
    record = json.loads((Path(folder) / TRAINING_INFO).read_text())
    record.pop("loss_curve", None)
    return model, sam_processor(IMAGE_SIZE), record


def train(seed: int, steps: int, batch_size: int, lr: float, out: Path, threads: int,
          init_from: Optional[Path] = None, log_every: int = 25) -> dict:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    start = time.time()
    if init_from is None:
        model, processor = build_model(seed)
        previous = {}
    else:
        model, processor, record = load_model(init_from)
        previous = {"continued_from": record}
    pool = render_pool(seed, POOL)
    print(f"rendered {len(pool)} scenes in {time.time() - start:.0f}s", flush=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = adamw_cosine([p for p in params if p.ndim >= 2],
                              [p for p in params if p.ndim < 2], lr, steps)
    rng = np.random.default_rng([seed, 2])
    batches = (make_batch(rng, pool, processor, batch_size) for _ in range(steps))
    curve = optimise(model, batches, lambda batch: losses(model, *batch), opt, sched, steps,
                     start, log_every)
    out = Path(out)
    model.half().save_pretrained(out)
    processor.save_pretrained(out)
    return write_training_info(out, seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                               threads=threads, started=start, loss_curve=curve, arch=ARCH,
                               pool=POOL, scene_sizes=SCENE_SIZES, box_jitter=BOX_JITTER,
                               crop_margins=CROP_MARGINS,
                               **previous)


def main(argv=None) -> int:
    return training_main(__doc__.split("\n\n")[0], train, EMBEDDED_SAM_DIR, steps=1800,
                         batch_size=8, lr=2e-3, threads=2, continuable=True, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
