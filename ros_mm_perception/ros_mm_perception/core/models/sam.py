"""Box-prompted masks from SAM or SAM 2 (transformers ``SamModel`` / ``Sam2Model``).

:class:`BoxMaskEngine` gives each detection box a mask: the image embedding is computed once per
frame (one vision-encoder call for all frames of a batch) and every box of the frame is decoded
against it in one mask-decoder call, with one mask per box (``multimask_output=False``, SAM's
choice for box prompts). Boxes are scaled onto the model input as the processors scale them, and
masks go back to original-image pixels with the processors' own ``post_process_masks``, so the
result equals transformers' pipeline of processor, model and post-processing. A box that lies
outside the image, or is narrower than a pixel inside it, gets an empty mask and costs nothing.

The embedded model, like any folder trained on crops (:func:`trained_on_crops`), masks each box
on its own crop instead
(``crop_margin``, :func:`crop_window`): a square around the box, resized to the model's input, so
the object fills most of its 96 x 96 mask grid rather than a few cells of the whole frame's; the
mask comes back into the crop's pixels and is pasted into the frame. That costs one image
encoding per box (all crops of a batch in one encoder and one decoder call), cheap for the
embedded model's tiny encoder; SAM and SAM 2 checkpoints, whose encoders are the expensive part,
see the whole frame.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ros_mm_perception.core.devices import resolve_device, resolve_dtype
from ros_mm_perception.core.errors import ModelNotFoundError
from ros_mm_perception.core.models.embedded import EMBEDDED_SAM_DIR
from ros_mm_perception.core.models.hf_loading import (build_network, checked_config,
                                                      checkpoint_source, error_reason)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/sam-vit-base"
"""The checkpoint suggested to users (Apache-2.0, not gated)."""
MODEL_TYPES = ("sam", "sam2")
EMBEDDED = "embedded"
"""The ``mask_model`` value of the mask model shipped in the package (:data:`EMBEDDED_SAM_DIR`)."""
MASK_THRESHOLD = 0.0
"""Mask logit above which a pixel belongs to the object (transformers' default)."""
CROP_MARGIN = 0.25
"""The embedded model's crop around a box: the box's longer side grown by this share of it on
every side, so a box off by its 5 % jitter still holds the whole object and the decoder sees
background all round, while the object fills two thirds of the model's input."""


def clip_boxes(boxes, height: int, width: int) -> np.ndarray:
    """``N x 4`` boxes clipped to the image; non-finite coordinates are a :class:`ValueError`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError("a box has coordinates that are not finite")
    x0, x1 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
    y0, y1 = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    return np.stack([x0.clip(0, width), y0.clip(0, height), x1.clip(0, width), y1.clip(0, height)],
                    1)


def crop_window(box, height: int, width: int, margin: float) -> Tuple[int, int, int, int]:
    """``(col0, row0, col1, row1)``: the square around a clipped ``box`` whose side is the box's
    longer side times ``1 + 2 * margin``, centred on the box, moved to lie in the image and cut
    to it where the image is smaller."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    left = min(max((x0 + x1 - side) / 2, 0.0), max(width - side, 0.0))
    top = min(max((y0 + y1 - side) / 2, 0.0), max(height - side, 0.0))
    col0, row0 = int(np.floor(left)), int(np.floor(top))
    return (col0, row0, min(width, int(np.ceil(left + side))),
            min(height, int(np.ceil(top + side))))


class BoxMaskEngine:
    """SAM / SAM 2 with its processor: :meth:`masks` turns boxes into masks in original-image
    pixels."""

    def __init__(self, net, processor, *, name: str, device: torch.device, dtype: torch.dtype,
                 crop_margin: Optional[float] = None):
        self.net, self.processor, self.name = net, processor, name
        self.device, self.dtype = device, dtype
        self.kind = net.config.model_type
        self.crop_margin = crop_margin

    @torch.inference_mode()
    def masks(self, images: Sequence[np.ndarray],
              boxes: Sequence[Sequence]) -> List[List[np.ndarray]]:
        """For each RGB image its boxes' masks (``H x W`` bool), in box order."""
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} box lists")
        clipped = [clip_boxes(b, *image.shape[:2]) for image, b in zip(images, boxes)]
        usable = [(c[:, 2] - c[:, 0] >= 1) & (c[:, 3] - c[:, 1] >= 1) for c in clipped]
        out = [[np.zeros(image.shape[:2], bool) for _ in c] for image, c in zip(images, clipped)]
        if self.crop_margin is None:
            self._frame_masks(images, clipped, usable, out)
        else:
            self._crop_masks(images, clipped, usable, out)
        return out

    def _frame_masks(self, images, clipped, usable, out) -> None:
        """One image embedding per frame, all of the frame's boxes decoded against it."""
        todo = [i for i, u in enumerate(usable) if u.any()]
        if not todo:
            return
        inputs = self._encode_inputs([images[i] for i in todo])
        embeddings = self.net.get_image_embeddings(
            inputs["pixel_values"].to(self.device, self.dtype))
        for k, i in enumerate(todo):
            keep = np.flatnonzero(usable[i])
            prompt = self._prompt(clipped[i][keep], images[i].shape[:2])
            pred = self.net(image_embeddings=_select(embeddings, k), input_boxes=prompt,
                            multimask_output=False).pred_masks
            for j, mask in zip(keep, self._post_process(pred.float(), inputs, k)):
                out[i][j] = mask

    def _crop_masks(self, images, clipped, usable, out) -> None:
        """Each box on its own crop (:func:`crop_window` at ``crop_margin``), its mask pasted
        back into the frame; the crops of all frames go through the encoder and the decoder in
        one call each."""
        jobs = []
        for i, image in enumerate(images):
            for j in np.flatnonzero(usable[i]):
                window = crop_window(clipped[i][j], *image.shape[:2], self.crop_margin)
                jobs.append((i, j, window))
        if not jobs:
            return
        crops = [np.ascontiguousarray(images[i][r0:r1, c0:c1]) for i, _, (c0, r0, c1, r1) in jobs]
        inputs = self._encode_inputs(crops)
        embeddings = self.net.get_image_embeddings(
            inputs["pixel_values"].to(self.device, self.dtype))
        prompts = torch.cat([self._prompt(clipped[i][j:j + 1] - np.array([c0, r0, c0, r0]),
                                          crop.shape[:2])
                             for (i, j, (c0, r0, c1, r1)), crop in zip(jobs, crops)])
        pred = self.net(image_embeddings=embeddings, input_boxes=prompts,
                        multimask_output=False).pred_masks.float()
        for k, (i, j, (c0, r0, c1, r1)) in enumerate(jobs):
            out[i][j][r0:r1, c0:c1] = self._post_process(pred[k:k + 1], inputs, k)[0]

    def _encode_inputs(self, images):
        """The processor's inputs for RGB ``H x W x 3`` images (channels named: a guess takes a
        1- or 3-pixel-high image for channels first)."""
        return self.processor.image_processor(images, return_tensors="pt",
                                              input_data_format="channels_last")

    def _prompt(self, boxes: np.ndarray, hw) -> torch.Tensor:
        """``1 x N x 4`` boxes on the model input, scaled as the processor scales them."""
        if self.kind == "sam2":
            scaled = self.processor(input_boxes=[boxes.tolist()], original_sizes=[list(hw)],
                                    return_tensors="pt")["input_boxes"]
        else:
            longest = self.processor.image_processor.size["longest_edge"]
            new_h, new_w = self.processor.image_processor._get_preprocess_shape(tuple(hw), longest)
            scaled = torch.from_numpy(boxes
                                      * np.array([new_w / hw[1], new_h / hw[0]] * 2)).float()[None]
        return scaled.to(self.device, self.dtype)

    def _post_process(self, pred: torch.Tensor, inputs, k: int) -> np.ndarray:
        """``N x H x W`` bool masks of one frame from the decoder's ``1 x N x 1 x h x w``
        logits."""
        sizes = inputs["original_sizes"][k:k + 1]
        if self.kind == "sam2":
            masks = self.processor.post_process_masks(pred, sizes, mask_threshold=MASK_THRESHOLD)
        else:
            masks = self.processor.post_process_masks(pred, sizes,
                                                      inputs["reshaped_input_sizes"][k:k + 1],
                                                      mask_threshold=MASK_THRESHOLD)
        return masks[0][:, 0].cpu().numpy()

    def warm_up(self) -> None:
        """Run one small frame through the model (allocations and kernels ready before the first
        frame)."""
        self.masks([np.zeros((32, 32, 3), np.uint8)], [[(4.0, 4.0, 28.0, 28.0)]])

    def close(self) -> None:
        """Release the model; the engine cannot be used afterwards."""
        self.net = None


def _select(embeddings, k: int):
    """Image ``k``'s embedding (SAM: one tensor; SAM 2: a list of feature levels)."""
    if isinstance(embeddings, (list, tuple)):
        return [e[k:k + 1] for e in embeddings]
    return embeddings[k:k + 1]


def load_mask_model(model: str, device: str = "auto", precision: str = "auto", *,
                    random_weights: bool = False) -> BoxMaskEngine:
    """Load SAM or SAM 2 from a hub id (cache), a local folder written by ``save_pretrained`` or
    ``embedded`` (the tiny SAM shipped in the package, trained on the rendered world).

    A missing model raises :class:`ModelNotFoundError` saying what to download or which path to
    pass; a folder of another model type raises :class:`UserError`.
    """
    from transformers import Sam2Model, Sam2Processor, SamModel, SamProcessor

    if not isinstance(model, str) or not model.strip():
        raise ModelNotFoundError(f"no mask model given; pass a hub id such as {DEFAULT_MODEL}, a "
                                 f"local folder or '{EMBEDDED}'")
    dev = resolve_device(device)
    path = EMBEDDED_SAM_DIR if model == EMBEDDED else Path(model).expanduser()
    if model == EMBEDDED and not (path / "config.json").is_file():
        raise ModelNotFoundError(f"the embedded mask model is missing from {path}; reinstall the "
                                 "package or retrain it with `python "
                                 "scripts/train_embedded_sam.py`")
    source, local = checkpoint_source(model, path, "mask (SAM)",
                                      f", a hub id such as {DEFAULT_MODEL} "
                                      f"or '{EMBEDDED}'")
    try:
        config = checked_config(source, model, MODEL_TYPES, "SAM or SAM 2")
        width = (config.vision_config.hidden_size if config.model_type == "sam"
                 else config.vision_config.backbone_config.hidden_size)
        dtype = resolve_dtype(precision, dev, cuda_default="fp16", width=width)
        net_cls, proc_cls = (
            (SamModel, SamProcessor) if config.model_type == "sam" else (Sam2Model, Sam2Processor)
        )
        processor = proc_cls.from_pretrained(source)
        net = build_network(net_cls, source, config, dtype, dev, random_weights)
    except (OSError, ValueError) as err:
        reason = error_reason(err)
        if local:
            raise ModelNotFoundError(f"{model} is not a complete SAM model folder ({reason}); "
                                     "pass a folder written by save_pretrained (config.json, "
                                     "model*.safetensors and the processor files) or a hub id "
                                     f"such as {DEFAULT_MODEL}") from err
        raise ModelNotFoundError(
            f"mask model {model!r} is not in the Hugging Face cache and could not be downloaded "
            f"({reason}). On a machine with network access run `hf download {model}` and copy "
            "~/.cache/huggingface here if needed, or pass a local model folder") from err
    return BoxMaskEngine(net, processor, name=str(path) if model == EMBEDDED else model,
                         device=dev, dtype=dtype,
                         crop_margin=CROP_MARGIN if trained_on_crops(path) else None)


def trained_on_crops(folder: Path) -> bool:
    """Whether a model folder was trained on box crops (its ``training.json``, as
    ``training/train_sam.py`` writes it, lists ``crop_margins``), so it masks on crops too."""
    try:
        return "crop_margins" in json.loads((folder / "training.json").read_text())
    except (OSError, ValueError, TypeError):
        return False
