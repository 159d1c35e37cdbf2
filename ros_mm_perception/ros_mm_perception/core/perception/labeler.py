"""CLIP zero-shot labeling of frames and regions with cached text embeddings.

Follows open_clip's ``build_zero_shot_classifier``: each phrase is written into every prompt
template, the normalised text embeddings are averaged and normalised again. Embeddings are cached
per phrase (keyed by the templates), so changing the vocabulary only encodes the new phrases.

Its public verbs are :meth:`ClipLabeler.encode_text`, :meth:`ClipLabeler.encode_image` and
:meth:`ClipLabeler.label` (with its batch and region forms). Whole-frame labels look at the frame,
at squares as tall as its short side and at ``label_tiles`` rows of overlapping square tiles
(:func:`~ros_mm_perception.core.imaging.preprocess.label_windows`), all in one image batch, and
average the views' probabilities weighted by how sure each view is (:func:`_pool_views`), so an
object too small to tell in the whole frame is labelled from the view that sees it clearly; how the
views are cut and pooled is private to this module.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ros_mm_perception.core.imaging.preprocess import label_windows, upload
from ros_mm_perception.core.models.clip_model import ClipModel
from ros_mm_perception.core.config import CROP_MODES, PerceptionConfig, check_phrases
from ros_mm_perception.core.results import Box, Label

DEFAULT_TEMPLATES = ("a photo of {}.",)
BACKGROUND_PROMPT = "background"
"""The null phrase: whole-frame pooling weighs each view against it (:func:`_pool_views`) and
CLIP-only grounding scores regions against it."""


class ClipLabeler:
    """Zero-shot labels for frames and regions over a vocabulary of phrases."""

    def __init__(self, clip: ClipModel, vocabulary: Sequence[str] = (),
                 templates: Sequence[str] = DEFAULT_TEMPLATES,
                 crop_mode: str = PerceptionConfig().crop_mode,
                 label_tiles: int = PerceptionConfig().label_tiles):
        self.clip = clip
        self.crop_mode = crop_mode
        self.label_tiles = label_tiles
        self._templates: Tuple[str, ...] = tuple(templates)
        self._cache: Dict[str, torch.Tensor] = {}
        self.text_encodes = 0
        """How many phrases have been through the text encoder (cache misses)."""
        self._vocabulary: Tuple[str, ...] = ()
        self._vocab_embeddings: Optional[torch.Tensor] = None
        if vocabulary:
            self.set_vocabulary(vocabulary)

    @property
    def vocabulary(self) -> Tuple[str, ...]:
        return self._vocabulary

    @property
    def crop_mode(self) -> str:
        """How frames and region crops are fitted to the model's square input: letterbox or
        center."""
        return self._crop_mode

    @crop_mode.setter
    def crop_mode(self, mode: str) -> None:
        if mode not in CROP_MODES:
            raise ValueError(f"crop mode {mode!r} is not one of {', '.join(CROP_MODES)}")
        self._crop_mode = mode

    @property
    def label_tiles(self) -> int:
        """Rows of tiles whole-frame labels look at besides the frame (0: the frame alone)."""
        return self._label_tiles

    @label_tiles.setter
    def label_tiles(self, rows: int) -> None:
        low, high = PerceptionConfig.describe()["label_tiles"]["range"]
        if isinstance(rows, bool) or not isinstance(rows, int) or not low <= rows <= high:
            raise ValueError(f"label_tiles must be an integer in [{low}, {high}], got {rows!r}")
        self._label_tiles = rows

    def _frame_views(self, frames: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], List[int]]:
        """What whole-frame labels look at in 3xHxW frames: each frame, then its windows
        (:func:`~ros_mm_perception.core.imaging.preprocess.label_windows`), all in one list, and
        how many views each frame has (for :func:`_pool_views`)."""
        views, counts = [], []
        for frame in frames:
            windows = label_windows(frame.shape[1], frame.shape[2], self.label_tiles)
            views += [frame, *(frame[:, y0:y1, x0:x1] for x0, y0, x1, y1 in windows)]
            counts.append(1 + len(windows))
        return views, counts

    @property
    def templates(self) -> Tuple[str, ...]:
        return self._templates

    def set_templates(self, templates: Sequence[str]) -> None:
        """Change the prompt templates; this invalidates every cached text embedding."""
        templates = tuple(templates)
        if not templates or any("{}" not in t for t in templates):
            raise ValueError("templates must be non-empty and each must contain '{}'")
        if templates != self._templates:
            self._templates = templates
            self._cache.clear()
            if self._vocabulary:
                self._vocab_embeddings = self.encode_text(self._vocabulary)

    def set_vocabulary(self, phrases: Sequence[str]) -> None:
        """Set the whole-frame vocabulary; embeddings of phrases seen before are reused."""
        phrases = tuple(check_phrases(phrases, "vocabulary"))
        self._vocab_embeddings = self.encode_text(phrases)
        self._vocabulary = phrases

    @torch.inference_mode()
    def encode_text(self, phrases: Sequence[str]) -> torch.Tensor:
        """Normalised class embeddings, one row per phrase (``P x D``), from the cache where
        possible."""
        missing = [p for p in dict.fromkeys(phrases) if p not in self._cache]
        if missing:
            texts = [t.format(p) for p in missing for t in self._templates]
            tokens = self.clip.tokenizer(texts).to(self.clip.device)
            emb = self.clip.model.encode_text(tokens).float()
            emb = emb / emb.norm(dim=-1, keepdim=True)
            emb = emb.view(len(missing), len(self._templates), -1).mean(dim=1)
            emb = emb / emb.norm(dim=-1, keepdim=True)
            self._cache.update(zip(missing, emb))
            self.text_encodes += len(missing)
        return torch.stack([self._cache[p] for p in phrases])

    @torch.inference_mode()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings (``N x D``, float32) for a preprocessed batch."""
        emb = self.clip.encode_image(pixels).float()
        return emb / emb.norm(dim=-1, keepdim=True)

    @torch.inference_mode()
    def logits(self, image_embeddings: torch.Tensor,
               text_embeddings: torch.Tensor) -> torch.Tensor:
        """CLIP logits: cosine similarity times the model's learned logit scale (``N x P``)."""
        scale = self.clip.model.logit_scale.exp().float()
        return scale * image_embeddings @ text_embeddings.T

    def _phrases_and_embeddings(self, phrases: Optional[Sequence[str]]):
        if phrases is None:
            if self._vocab_embeddings is None:
                raise ValueError("no vocabulary set: call set_vocabulary() or pass phrases")
            return self._vocabulary, self._vocab_embeddings
        phrases = tuple(check_phrases(phrases))
        return phrases, self.encode_text(phrases)

    def probabilities(self, images: Sequence[np.ndarray],
                      phrases: Optional[Sequence[str]] = None) -> np.ndarray:
        """Probabilities over phrases for each frame (``N x P``, rows sum to 1), pooled over its
        views; phrases default to the vocabulary."""
        phrases, text = self._phrases_and_embeddings(phrases)
        if len(images) == 0:
            return np.zeros((0, len(phrases)), dtype=np.float32)
        text = torch.cat([text, self.encode_text([BACKGROUND_PROMPT])])
        probs, _ = self.frame_probabilities([upload(image, self.clip.device) for image in images],
                                            text)
        return probs.cpu().numpy()

    @torch.inference_mode()
    def frame_probabilities(self, frames: Sequence[torch.Tensor],
                            text_embeddings: Optional[torch.Tensor],
                            crops: Sequence[torch.Tensor] = ()) -> Tuple[torch.Tensor,
                                                                         torch.Tensor]:
        """Whole-frame probabilities of 3xHxW frames on the model's device (``N x P``), pooled over
        their views, against ``P + 1`` text embeddings whose last row is the
        :data:`BACKGROUND_PROMPT`'s (it only weighs the views; None when there are no frames); and
        the embeddings of ``crops`` (3xhxw), encoded in the same image batch."""
        views, counts = self._frame_views(frames)
        if not views and not crops:
            return torch.zeros((0, 0)), torch.zeros((0, 0))
        embeddings = self.encode_image(self.clip.preprocessor([*views, *crops], self.crop_mode))
        n = len(views)
        if not frames:
            return embeddings.new_zeros((0, 0)), embeddings
        logits = self.logits(embeddings[:n], text_embeddings)
        return _pool_views(logits[:, :-1], counts, logits[:, -1:]), embeddings[n:]

    def label_batch(self, images: Sequence[np.ndarray], top_k: int = 5,
                    phrases: Optional[Sequence[str]] = None) -> List[List[Label]]:
        """Top-k labels for each frame, sorted by probability (probabilities sum to 1 over
        phrases)."""
        phrases, _ = self._phrases_and_embeddings(phrases)
        probs = self.probabilities(images, phrases)
        return [top_labels(row, phrases, top_k) for row in probs]

    def label(self, image: np.ndarray, top_k: int = 5,
              phrases: Optional[Sequence[str]] = None) -> List[Label]:
        """Top-k labels for one HxWx3 uint8 RGB frame."""
        return self.label_batch([image], top_k, phrases)[0]

    def region_logits(self, image: np.ndarray, boxes: Sequence[Box],
                      phrases: Optional[Sequence[str]] = None, margin: float = 0.0) -> np.ndarray:
        """CLIP logits of each box crop against each phrase (``B x P``), all crops in one batch."""
        phrases, text = self._phrases_and_embeddings(phrases)
        if len(boxes) == 0:
            return np.zeros((0, len(phrases)), dtype=np.float32)
        image_emb = self.encode_image(self.clip.preprocessor.regions(image, boxes, margin,
                                                                     self.crop_mode))
        return self.logits(image_emb, text).cpu().numpy()

    def score_regions(self, image: np.ndarray, boxes: Sequence[Box],
                      phrases: Optional[Sequence[str]] = None, margin: float = 0.0) -> np.ndarray:
        """Softmax over phrases for each box crop (``B x P``)."""
        logits = self.region_logits(image, boxes, phrases, margin)
        if logits.size == 0:
            return logits
        return torch.from_numpy(logits).softmax(dim=-1).numpy()


VIEW_WEIGHT_POWER = 4
"""A view's weight in :func:`_pool_views` is its top probability to this power: views that see an
object clearly decide, views of background or of part of an object (spread probabilities) count
little."""


def _pool_views(logits: torch.Tensor, counts: Sequence[int],
                null_logits: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-frame probabilities from the logits of each frame's views (``counts[i]`` consecutive
    rows per frame): the mean of the views' softmax, each weighted by its confidence: its top
    probability, in a softmax that also holds the view's ``null_logits`` column (the
    :data:`BACKGROUND_PROMPT`) when given, to the :data:`VIEW_WEIGHT_POWER`, so a view that looks
    like background counts little. Rows sum to 1; one view per frame gives its softmax
    unchanged."""
    probs = logits.softmax(dim=-1)
    if all(count == 1 for count in counts):
        return probs
    sure = (
        probs if null_logits is None else torch.cat([logits, null_logits], dim=-1).softmax(dim=-1)
    )
    weights = sure[:, :logits.shape[1]].max(dim=-1, keepdim=True).values ** VIEW_WEIGHT_POWER
    return torch.stack([(w * rows).sum(dim=0) / w.sum()
                        for rows, w in zip(probs.split(list(counts)),
                                           weights.split(list(counts)))])


def top_labels(probabilities: np.ndarray, phrases: Sequence[str], top_k: int) -> List[Label]:
    """The ``top_k`` (phrase, probability) pairs of one row, highest first."""
    order = np.argsort(-probabilities, kind="stable")[: max(1, int(top_k))]
    return [Label(phrases[i], float(probabilities[i])) for i in order]
