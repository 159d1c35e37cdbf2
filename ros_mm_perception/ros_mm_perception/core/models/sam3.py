"""SAM 3 (transformers ``Sam3Model``): every instance of each phrase, with a box, a mask and a
score.

Per batch of frames, :meth:`Sam3Engine.detect_batch` runs the image encoder once (one call for all
frames) and decodes every phrase against it: the DETR encoder and decoder and the mask decoder run
on the frames x phrases pairs in one call, with the phrases' text encodings taken from a per-phrase
cache (each phrase goes through the text encoder once). Scores are transformers' own: each query's
probability times the phrase's presence probability, so a phrase that is not in the image returns
nothing; boxes and masks are in original-image pixels. The results equal
``Sam3Processor.post_process_instance_segmentation`` on the model's outputs for each (frame,
phrase) (it is what runs here), with ``mask_threshold`` :data:`MASK_THRESHOLD`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from ros_mm_perception.core.devices import resolve_device, resolve_dtype
from ros_mm_perception.core.errors import ModelNotFoundError
from ros_mm_perception.core.models.hf_loading import (build_network, checked_config,
                                                      checkpoint_source, error_reason)
from ros_mm_perception.core.results import Detection

log = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/sam3"
"""The checkpoint suggested to users (gated on the Hugging Face hub: accept the SAM licence
first)."""
MODEL_TYPES = ("sam3",)
MASK_THRESHOLD = 0.5
"""Mask probability above which a pixel belongs to the instance (transformers' default)."""
MAX_CACHED_PHRASES = 1024


class Sam3Engine:
    """SAM 3 with its processor: :meth:`detect_batch` finds every instance of each phrase."""

    def __init__(self, net, processor, *, name: str, device: torch.device, dtype: torch.dtype):
        self.net, self.processor, self.name = net, processor, name
        self.device, self.dtype = device, dtype
        self._text: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.inference_mode()
    def encode_text(self, phrases: Sequence[str]) -> None:
        """Encode phrases not seen before (each once) and keep their encodings."""
        new = [p for p in dict.fromkeys(phrases) if p not in self._text]
        if not new:
            return
        if len(self._text) + len(new) > MAX_CACHED_PHRASES:
            self._text.clear()
        tokens = self.processor(text=new, return_tensors="pt")
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        features = self.net.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        for i, phrase in enumerate(new):
            self._text[phrase] = (features[i], mask[i])

    @torch.inference_mode()
    def detect_batch(self, images: Sequence[np.ndarray], phrases: Sequence[str],
                     threshold: float) -> List[List[Detection]]:
        """For each RGB image, the instances of ``phrases`` scoring above ``threshold``, highest
        first."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        phrases = list(phrases)
        if not images or not phrases:
            return [[] for _ in images]
        self.encode_text(phrases)
        pixels = self.processor.image_processor(list(images), return_tensors="pt")["pixel_values"]
        vision = self.net.get_vision_features(pixel_values=pixels.to(self.device, self.dtype))
        pairs = torch.arange(len(images), device=self.device).repeat_interleave(len(phrases))
        vision.fpn_hidden_states = tuple(h[pairs] for h in vision.fpn_hidden_states)
        vision.fpn_position_encoding = tuple(p[pairs] for p in vision.fpn_position_encoding)
        text = torch.stack([self._text[p][0] for p in phrases]).repeat(len(images), 1, 1)
        mask = torch.stack([self._text[p][1] for p in phrases]).repeat(len(images), 1)
        out = self.net(vision_embeds=vision,
                       text_embeds=BaseModelOutputWithPooling(pooler_output=text),
                       attention_mask=mask)
        sizes = [tuple(image.shape[:2]) for image in images for _ in phrases]
        found = self.processor.post_process_instance_segmentation(
            out, threshold=threshold, mask_threshold=MASK_THRESHOLD, target_sizes=sizes)
        results: List[List[Detection]] = [[] for _ in images]
        for k, instances in enumerate(found):
            image, phrase = images[k // len(phrases)], phrases[k % len(phrases)]
            h, w = image.shape[:2]
            boxes = instances["boxes"].float().cpu().numpy().reshape(-1, 4).clip(0, [w, h, w, h])
            for score, box, inst_mask in zip(instances["scores"].float().cpu().numpy(), boxes,
                                             instances["masks"].bool().cpu().numpy()):
                results[k // len(phrases)].append(Detection(phrase, float(score),
                                                            tuple(float(v) for v in box),
                                                            source="sam3", mask=inst_mask))
        return [sorted(dets, key=lambda d: -d.score) for dets in results]

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run small frames through the model (kernels and allocations ready before the first
        frame)."""
        for n in batch_sizes:
            self.detect_batch([np.zeros((32, 32, 3), np.uint8)] * n, ["object"], 1.0)

    def close(self) -> None:
        """Release the model; the engine cannot be used afterwards."""
        self.net, self._text = None, {}


def load_sam3(model: str, device: str = "auto", precision: str = "auto", *,
              random_weights: bool = False
              ) -> Sam3Engine:
    """Load SAM 3 from a hub id (cache) or a local folder written by ``save_pretrained``.

    A missing model raises :class:`ModelNotFoundError` saying what to download or which path to
    pass; a folder of another model type raises :class:`UserError`.
    """
    from transformers import Sam3Model, Sam3Processor

    if not isinstance(model, str) or not model.strip():
        raise ModelNotFoundError(f"no SAM 3 model given; pass a hub id such as {DEFAULT_MODEL} "
                                 "or a local folder")
    dev = resolve_device(device)
    path = Path(model).expanduser()
    source, local = checkpoint_source(model, path, "SAM 3",
                                      f" or a hub id such as {DEFAULT_MODEL}")
    try:
        config = checked_config(source, model, MODEL_TYPES, "SAM 3")
        dtype = resolve_dtype(precision, dev, cuda_default="bf16",
                              width=config.vision_config.backbone_config.hidden_size)
        processor = Sam3Processor.from_pretrained(source)
        net = build_network(Sam3Model, source, config, dtype, dev, random_weights)
    except (OSError, ValueError) as err:
        reason = error_reason(err)
        if local:
            raise ModelNotFoundError(f"{model} is not a complete SAM 3 model folder ({reason}); "
                                     "pass a folder written by save_pretrained (config.json, "
                                     "model*.safetensors, tokenizer and processor files) or a "
                                     f"hub id such as {DEFAULT_MODEL}") from err
        raise ModelNotFoundError(
            f"SAM 3 model {model!r} is not in the Hugging Face cache and could not be downloaded "
            f"({reason}). {DEFAULT_MODEL} is gated: accept its licence on the hub, then on a "
            f"machine with network access run `hf download {model}` and copy "
            "~/.cache/huggingface here if needed, or pass a local folder"
        ) from err
    return Sam3Engine(net, processor, name=model, device=dev, dtype=dtype)
