"""OWLv2 / OWL-ViT open-vocabulary detection engine (transformers), split as NanoOWL splits it.

``load_owl(model)`` takes a hub id (from the Hugging Face cache; ``HF_HUB_OFFLINE=1`` is honoured,
e.g. ``google/owlv2-base-patch16-ensemble`` or ``google/owlvit-base-patch32``), a local folder
written by ``save_pretrained``, or ``embedded`` for the detector shipped in the package.

The work is split in three so that each part runs only when it must:

* :meth:`OwlEngine.encode_text` – the text tower, once per phrase: embeddings are cached on the
  device and a vocabulary change encodes only the new phrases (:attr:`OwlEngine.text_encodings`
  counts the phrases encoded);
* :meth:`OwlEngine.encode_image` – the image tower and the per-patch heads, one call for every
  frame of a batch: per patch a box, a normalised class embedding, the logit shift and scale and
  (OWLv2) the objectness logit. Through the fast path (:mod:`.fast_owl`) when enabled;
* :meth:`OwlEngine.decode` – class logits of every patch against the cached queries, exactly as the
  model's class head computes them.

Frames are uploaded as uint8 and preprocessed on the device exactly as the checkpoint's processor
does (:mod:`~ros_mm_perception.core.imaging.owl_preprocess`). Each patch proposes one box; its
phrase is the best-scoring query and its score is ``sigmoid(logit)`` in [0, 1], the rule of
transformers' ``post_process_object_detection``. Boxes are mapped back to the original frame's
pixels on both axes (OWLv2: relative to the padded square; OWL-ViT: to the stretched frame) and
clipped to it. OWLv2's objectness picks which patches are kept when a frame has more candidates
than ``max_candidates``: the most object-like first, so that a large vocabulary cannot crowd real
objects out with many weak matches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ros_mm_perception.core.config import check_phrases
from ros_mm_perception.core.devices import INT8, dtype_of, resolve_device, resolve_precision
from ros_mm_perception.core.errors import ModelNotFoundError
from ros_mm_perception.core.models.hf_loading import (build_network, checked_config,
                                                      checkpoint_source, error_reason)
from ros_mm_perception.core.imaging.owl_preprocess import Owlv2Preprocessor, OwlViTPreprocessor
from ros_mm_perception.core.imaging.preprocess import check_rgb, upload
from ros_mm_perception.core.models.int8 import quantize_linear_layers
from ros_mm_perception.core.results import Detection

log = logging.getLogger(__name__)

DEFAULT_MODEL = "google/owlv2-base-patch16-ensemble"
"""The checkpoint suggested to users."""
EMBEDDED = "embedded"
"""Model name of the detector shipped in the package (:func:`embedded_owl_dir`)."""
MAX_CANDIDATES = 100
"""Most boxes per frame handed on to thresholding and NMS."""

MODEL_TYPES = ("owlv2", "owlvit")


@dataclass
class OwlImageEncoding:
    """Per-patch outputs of the image tower and heads for ``N`` frames of ``P`` patches.

    ``boxes`` are ``(cx, cy, w, h)`` relative to the model input; ``class_embeds`` are normalised
    as the class head normalises them; ``objectness`` is ``None`` for OWL-ViT.
    """

    class_embeds: torch.Tensor   # N x P x D
    logit_shift: torch.Tensor    # N x P x 1
    logit_scale: torch.Tensor    # N x P x 1 (elu + 1 applied)
    boxes: torch.Tensor          # N x P x 4
    objectness: Optional[torch.Tensor] = None  # N x P

    def tensors(self):
        return tuple(t
                     for t in (self.class_embeds, self.logit_shift, self.logit_scale, self.boxes,
                               self.objectness)
                     if t is not None)

    @classmethod
    def from_tensors(cls, tensors) -> "OwlImageEncoding":
        return cls(*tensors)


def image_heads(model, pixels: torch.Tensor) -> OwlImageEncoding:
    """Image tower and per-patch heads of an ``Owlv2ForObjectDetection`` /
    ``OwlViTForObjectDetection``."""
    feature_map = model.image_embedder(pixel_values=pixels)[0]
    n, gh, gw, d = feature_map.shape
    feats = feature_map.reshape(n, gh * gw, d)
    head = model.class_head
    embeds = head.dense0(feats)
    embeds = embeds / (torch.linalg.norm(embeds, dim=-1, keepdim=True) + 1e-6)
    shift = head.logit_shift(feats)
    scale = head.elu(head.logit_scale(feats)) + 1
    boxes = model.box_predictor(feats, feature_map)
    objectness = (
        model.objectness_predictor(feats) if hasattr(model, "objectness_predictor") else None
    )
    return OwlImageEncoding(embeds, shift, scale, boxes, objectness)


class OwlEngine:
    """A loaded OWL model, its processor and device-side preprocessing (see the module docstring).

    ``fast_encoder`` is a :class:`~ros_mm_perception.core.models.fast_owl.FastOwlEncoder` set by
    :func:`~ros_mm_perception.core.models.fast_owl.enable_fast_owl`, or ``None``.
    """

    def __init__(self, model, processor, *, name: str, device: torch.device, dtype: torch.dtype,
                 max_candidates: int = MAX_CANDIDATES, precision: str = ""):
        self.model = model
        self.processor = processor
        self.name = name
        self.device = device
        self.dtype = dtype
        self.precision = precision or {torch.float16: "fp16",
                                       torch.bfloat16: "bf16"}.get(dtype, "fp32")
        """fp32, fp16, bf16 or int8 (the image tower's linear layers in int8, the rest fp32)."""
        self.kind = model.config.model_type
        cls = Owlv2Preprocessor if self.kind == "owlv2" else OwlViTPreprocessor
        self.preprocessor = cls(processor.image_processor, device, dtype)
        self.max_candidates = int(max_candidates)
        self.fast_encoder = None
        self.text_encodings = 0
        """How many phrases went through the text tower so far (each once, then cached)."""
        self._text: Dict[str, torch.Tensor] = {}

    @property
    def image_size(self) -> int:
        return self.preprocessor.image_size

    @property
    def has_objectness(self) -> bool:
        return hasattr(self.model, "objectness_predictor")

    # -------------------------------------------------------------------------------- the split

    @torch.inference_mode()
    def encode_text(self, phrases: Sequence[str]) -> torch.Tensor:
        """``Q x D`` query embeddings of ``phrases`` (normalised as the class head does), new ones
        encoded."""
        phrases = list(phrases)
        new = [p for p in dict.fromkeys(phrases) if p not in self._text]
        if new:
            tokens = self.processor.tokenizer(new, padding="max_length", truncation=True,
                                              return_tensors="pt")
            base = self.model.owlv2 if self.kind == "owlv2" else self.model.owlvit
            out = base.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                         attention_mask=tokens["attention_mask"].to(self.device))
            text = out.pooler_output if hasattr(out, "pooler_output") else out
            # as the model's forward
            text = text / torch.linalg.norm(text, ord=2, dim=-1, keepdim=True)
            # as the class head
            text = text / (torch.linalg.norm(text, dim=-1, keepdim=True) + 1e-6)
            self._text.update(zip(new, text))
            self.text_encodings += len(new)
        if not phrases:
            return torch.zeros(0, self.model.config.projection_dim, device=self.device,
                               dtype=self.dtype)
        return torch.stack([self._text[p] for p in phrases])

    def forget_text(self, keep: Sequence[str] = ()) -> None:
        """Drop cached phrase embeddings except ``keep``."""
        self._text = {p: v for p, v in self._text.items() if p in set(keep)}

    @torch.inference_mode()
    def encode_image(self, pixels: torch.Tensor) -> OwlImageEncoding:
        """Per-patch outputs of a preprocessed ``N x 3 x S x S`` batch, in one image-tower call."""
        if self.fast_encoder is not None:
            try:
                return self.fast_encoder(pixels)
            # a failed capture or compile must not stop the robot: fall back for good
            except Exception:
                log.exception("OWL fast path %r failed; using the plain encoder from now on",
                              self.fast_encoder.mode)
                self.fast_encoder = None
        return image_heads(self.model, pixels.to(self.dtype))

    @staticmethod
    def decode(encoding: OwlImageEncoding, queries: torch.Tensor) -> torch.Tensor:
        """``N x P x Q`` float32 class logits of every patch against ``queries`` (``Q x D``)."""
        logits = torch.einsum("npd,qd->npq", encoding.class_embeds,
                              queries.to(encoding.class_embeds.dtype))
        return ((logits + encoding.logit_shift) * encoding.logit_scale).float()

    # -------------------------------------------------------------------------------- detection

    @torch.inference_mode()
    def raw_detections(self, images: Sequence[np.ndarray], phrases: Sequence[str],
                       threshold: float = 0.0):
        """Per frame ``(scores, labels, boxes)`` tensors with ``scores > threshold``, unclipped,
        unsorted.

        The same numbers as transformers' ``post_process_object_detection`` with ``target_sizes``
        the frames' (height, width): best query per patch, sigmoid score, boxes in the frame's
        pixels.
        """
        images = [check_rgb(image) for image in images]
        if not images:
            return []
        queries = self.encode_text(phrases)
        pixels = self.preprocessor([upload(image, self.device) for image in images])
        encoding = self.encode_image(pixels)
        best = self.decode(encoding, queries).max(dim=-1)
        scores = torch.sigmoid(best.values)
        cx, cy, w, h = encoding.boxes.float().unbind(-1)
        corners = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
        out = []
        for i, image in enumerate(images):
            sx, sy = self.preprocessor.box_scale(*image.shape[:2])
            keep = scores[i] > threshold
            scale = torch.tensor([sx, sy, sx, sy], device=corners.device)
            objectness = encoding.objectness[i][keep] if encoding.objectness is not None else None
            out.append((scores[i][keep], best.indices[i][keep], corners[i][keep] * scale,
                        objectness))
        return out

    def detect_batch(self, images: Sequence[np.ndarray], phrases: Sequence[str],
                     threshold: float = 0.0) -> List[List[Detection]]:
        """Boxes of ``phrases`` in each frame (score > ``threshold``, at most ``max_candidates``),
        no NMS."""
        phrases = check_phrases(phrases, "phrases")
        results = []
        for image, (scores, labels, boxes, objectness) in zip(
            images, self.raw_detections(images, phrases, threshold)
        ):
            if scores.numel() > self.max_candidates:
                rank = objectness if objectness is not None else scores
                top = torch.topk(rank.float(), self.max_candidates).indices
                scores, labels, boxes = scores[top], labels[top], boxes[top]
            h, w = image.shape[:2]
            bounds = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
            boxes = torch.minimum(boxes.clamp(min=0), bounds).cpu().numpy().astype(np.float64)
            dets = [Detection(phrase=phrases[int(k)], score=float(s),
                              box=tuple(float(v) for v in b), source="owl")
                    for s, k, b in zip(scores.cpu().numpy(), labels.cpu().numpy(), boxes)
                    if b[2] > b[0] and b[3] > b[1]]
            results.append(sorted(dets, key=lambda d: -d.score))
        return results

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Prepare the fast path's buckets for these batch sizes (nothing on the plain path)."""
        if self.fast_encoder is not None:
            try:
                self.fast_encoder.warm_up(batch_sizes)
            except Exception:  # as encode_image: keep the plain encoder rather than fail
                log.exception("OWL fast path failed to prepare; using the plain encoder")
                self.fast_encoder = None

    def close(self) -> None:
        """Release the model and cached embeddings."""
        self.model, self.fast_encoder, self._text = None, None, {}


def embedded_owl_dir() -> Path:
    """Folder of the embedded detector (transformers OWLv2 format); a clear error if the package
    lacks it."""
    from ros_mm_perception.core.models.embedded import EMBEDDED_OWL_DIR

    if not (EMBEDDED_OWL_DIR / "config.json").is_file():
        raise ModelNotFoundError(
            f"the embedded OWL detector is missing from {EMBEDDED_OWL_DIR}; reinstall the "
            "package or retrain it with `python scripts/train_embedded_owl.py`, or name an OWL "
            "checkpoint (owl_model / --owl-model)")
    return EMBEDDED_OWL_DIR


def _missing_model_error(model: str, local: bool, err: Exception) -> ModelNotFoundError:
    reason = error_reason(err)
    if local:
        return ModelNotFoundError(
            f"{model} is not a complete OWL model folder ({reason}); pass a folder written by "
            "save_pretrained (config.json, model*.safetensors, tokenizer and processor files) "
            f"or a hub id such as {DEFAULT_MODEL}")
    return ModelNotFoundError(
        f"OWL model {model!r} is not in the Hugging Face cache and could not be downloaded "
        f"({reason}). On a machine with network access run `hf download {model}` (older "
        f"huggingface_hub: `huggingface-cli download {model}`) and copy ~/.cache/huggingface "
        f"here if needed; or pass a local model folder, or '{EMBEDDED}' for the detector shipped "
        "in the package")


def load_owl(model: str, device: str = "auto", precision: str = "auto", *,
             random_weights: bool = False, max_candidates: int = MAX_CANDIDATES) -> OwlEngine:
    """Load OWLv2 or OWL-ViT from a hub id (cache), a local folder or ``embedded``.

    ``precision`` auto is fp16 on CUDA; on the CPU bf16 where it runs natively for models wide
    enough to gain (OWLv2-base), on CPUs without it int8 (the image tower's linear layers; heads
    and text tower fp32), as for CLIP. ``random_weights`` builds the folder's architecture with
    random weights on the device (benchmarks: compute does not depend on weight values). A missing
    model raises :class:`ModelNotFoundError` saying what to download or which path to pass; a
    folder of another model type raises :class:`UserError`.
    """
    from transformers import (Owlv2ForObjectDetection, Owlv2Processor, OwlViTForObjectDetection,
                              OwlViTProcessor)

    if not isinstance(model, str) or not model.strip():
        raise ModelNotFoundError(f"no OWL model given; pass a hub id such as {DEFAULT_MODEL}, a "
                                 f"local model folder or '{EMBEDDED}'")
    dev = resolve_device(device)
    path = embedded_owl_dir() if model == EMBEDDED else Path(model).expanduser()
    source, local = checkpoint_source(model, path, "OWL",
                                      f", a hub id such as {DEFAULT_MODEL} or '{EMBEDDED}'")
    try:
        config = checked_config(source, model, MODEL_TYPES, "OWLv2 or OWL-ViT")
        width = config.vision_config.hidden_size
        precision = resolve_precision(precision, dev, cuda_default="fp16", width=width,
                                      int8_width=width)
        dtype = dtype_of(precision)
        net_cls, proc_cls = ((Owlv2ForObjectDetection, Owlv2Processor)
                             if config.model_type == "owlv2"
                             else (OwlViTForObjectDetection, OwlViTProcessor))
        processor = proc_cls.from_pretrained(source)
        net = build_network(net_cls, source, config, dtype, dev, random_weights)
    except (OSError, ValueError) as err:
        raise _missing_model_error(model, local, err) from err
    if precision == INT8:
        base = net.owlv2 if config.model_type == "owlv2" else net.owlvit
        quantize_linear_layers(base.vision_model.encoder)
    return OwlEngine(net, processor, name=str(path) if model == EMBEDDED else model, device=dev,
                     dtype=dtype, max_candidates=max_candidates, precision=precision)
