"""The ROS-free perception pipeline: frames in, labels and tracked, language-grounded detections
out.

One :class:`PerceptionPipeline` owns one copy of each model and serves every camera; the live node
and the offline tools run the same object. Per frame (or per batch of frames from several cameras):

* **labels** – CLIP zero-shot labels over ``config.labels`` (top ``config.top_k``);
* **detections** for ``config.detect_phrases`` from ``config.grounding_source``:

  - ``paligemma``: PaliGemma ``detect`` boxes, each re-scored by CLIP exactly as CLIP-only
    grounding scores its proposals: the square context crop around the box
    (:func:`~ros_mm_perception.core.perception.clip_grounding.context_squares`) against the detect
    phrases plus the null prompts (``"background"``, ``"an object"``) and any other phrase in the
    answer; ``p_clip`` is the softmax probability of the box's own phrase. The final score is the
    geometric mean ``sqrt(p_paligemma * p_clip)``: high only when both models agree, on the same
    [0, 1] scale for every phrase and frame. Boxes below ``score_threshold`` are dropped and
    same-phrase boxes overlapping more than ``nms_iou`` are suppressed (highest score kept);
  - ``clip``: CLIP-only grounding
    (:func:`~ros_mm_perception.core.perception.clip_grounding.ground_with_clip`: region proposals
    scored by CLIP, thresholded and suppressed);
  - ``owl``: OWLv2 / OWL-ViT (:mod:`~ros_mm_perception.core.models.owl`): one box per image patch,
    scored against the cached phrase queries, thresholded and suppressed like PaliGemma's boxes (no
    CLIP re-scoring);
  - ``sam3``: SAM 3 (:mod:`~ros_mm_perception.core.models.sam3`): every instance of each phrase
    with a box, a mask and a score (query probability times the phrase's presence probability),
    thresholded by ``score_threshold``; one image-encoder call per batch, cached phrase encodings;
  - ``auto``: the best source configured: SAM 3 when a SAM 3 model is configured, else OWL when an
    OWL model is (boxes at camera rate), else PaliGemma when a PaliGemma model is, else CLIP;
    ``off``: no detections;

* **masks** – with ``mask_model`` (SAM or SAM 2, :mod:`~ros_mm_perception.core.models.sam`) each
  detection gets a mask, prompted with its box; one image embedding per frame serves all its boxes.
  Without one, ``paligemma_mask_decoder`` makes PaliGemma grounding run ``segment`` (one prompt
  per phrase, all in one generate call) instead of ``detect``: its boxes come with PaliGemma's own
  masks. SAM 3 makes its own masks;
* **tracking** – a :class:`~ros_mm_perception.core.perception.tracking.Tracker` per camera sets
  ``track_id``;
* **3D** – with depth and intrinsics on the frame,
  :func:`~ros_mm_perception.core.perception.geometry.locate` sets ``xyz`` and ``size_xyz`` (from
  the mask's pixels when the detection has a mask).

Each part has its own maximum rate per camera (``labels_rate_hz``, ``detect_rate_hz``; 0 = every
frame), judged by frame stamps on a fixed grid: a part runs on the first frame at or after each due
time, so 30 Hz input with ``detect_rate_hz=10`` detects on every third frame on average. A stamp
that goes backwards (a bag restarts, simulation resets) restarts the grid.

Batches make one call per model: PaliGemma detects on all due frames at once, OWL encodes them in
one image-tower call, and CLIP encodes the due frames (labels) and every PaliGemma box crop in one
image batch; tensors leave the GPU once.
All public methods are thread-safe (one lock): service calls wait for the frame batch in progress.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ros_mm_perception.core.perception.boxes import nms
from ros_mm_perception.core.perception.clip_grounding import (NULL_PROMPTS, context_squares,
                                                              ground_with_clip)
from ros_mm_perception.core.models.clip_model import ClipModel
from ros_mm_perception.core.config import ConfigError, PerceptionConfig, check_phrases
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.perception.geometry import check_depth, depth_scale, locate
from ros_mm_perception.core.perception.labeler import BACKGROUND_PROMPT, ClipLabeler, top_labels
from ros_mm_perception.core.imaging.preprocess import (check_rgb, crop_windows, label_windows,
                                                       upload)
from ros_mm_perception.core.results import Detection, Frame, FrameResult, Label
from ros_mm_perception.core.perception.tracking import Tracker

log = logging.getLogger(__name__)

MAX_TEXT_MATRICES = 8
"""How many stacked phrase sets (vocabulary, detect phrases + null prompts, ...) stay on the
device."""
WARM_UP_FRAMES = ((480, 640), (360, 640))
"""Frame shapes (4:3 and 16:9) whose label views :meth:`PerceptionPipeline.warm_up` prepares
batches for."""
MODEL_FIELDS = ("device", "precision", "clip_model", "clip_pretrained", "paligemma_model",
                "paligemma_mask_decoder", "owl_model", "mask_model", "sam3_model")
"""Settings fixed for the life of a pipeline (changing them means building a new one)."""


def combine_scores(detector_scores, clip_probabilities) -> np.ndarray:
    """The re-scoring rule: geometric mean of detector confidence and CLIP probability, in [0,
    1]."""
    a = np.clip(np.asarray(detector_scores, dtype=np.float64), 0.0, 1.0)
    b = np.clip(np.asarray(clip_probabilities, dtype=np.float64), 0.0, 1.0)
    return np.sqrt(a * b)


def suppress(detections: Sequence[Detection], score_threshold: float,
             nms_iou: float) -> List[Detection]:
    """Drop detections under ``score_threshold``, then per-phrase NMS; highest score first."""
    kept = [d for d in detections if d.score >= score_threshold]
    out: List[Detection] = []
    for phrase in dict.fromkeys(d.phrase for d in kept):
        group = [d for d in kept if d.phrase == phrase]
        out += [group[i] for i in nms([d.box for d in group], [d.score for d in group], nms_iou)]
    return sorted(out, key=lambda d: -d.score)


class RateGate:
    """Decides by frame stamp whether a part is due, at most ``rate_hz`` times per second on
    average."""

    def __init__(self):
        self._due_ns: Optional[int] = None
        self._last_ns: Optional[int] = None

    def due(self, stamp_ns: int, rate_hz: float) -> bool:
        went_back = self._last_ns is not None and stamp_ns < self._last_ns
        self._last_ns = stamp_ns
        if rate_hz <= 0:
            self._due_ns = None
            return True
        period = max(1, int(round(1e9 / rate_hz)))
        if self._due_ns is None or went_back or stamp_ns - self._due_ns >= 2 * period:
            self._due_ns = stamp_ns          # (re)start the grid here
            return True
        if stamp_ns >= self._due_ns + period:
            self._due_ns += period
            return True
        return False


@dataclass
class _CameraState:
    tracker: Tracker
    labels_gate: RateGate = field(default_factory=RateGate)
    detect_gate: RateGate = field(default_factory=RateGate)


class PerceptionPipeline:
    """Labels, grounded detections, tracks and 3D for frames of any number of cameras.

    ``clip``, ``paligemma`` and ``owl`` may be given already loaded (they stay the caller's to
    close); otherwise they are loaded from ``config`` (PaliGemma and OWL only when their model is
    set).
    """

    def __init__(self, config: PerceptionConfig, *, clip: Optional[ClipModel] = None,
                 paligemma=None, owl=None, masker=None, sam3=None):
        if not isinstance(config, PerceptionConfig):
            raise TypeError(f"config must be a PerceptionConfig, got {type(config).__name__}")
        self._lock = threading.RLock()
        self._owned = []
        if clip is None:
            from ros_mm_perception.core.models.clip_model import load_clip

            from ros_mm_perception.core.models.fast_clip import enable_fast_clip

            clip = load_clip(config.clip_model, config.clip_pretrained, config.device,
                             config.precision)
            enable_fast_clip(clip, config.clip_fast_path)
        paligemma_masks = bool(config.paligemma_mask_decoder)
        if paligemma_masks and (masker is not None or config.mask_model):
            log.warning("mask_model gives the masks: paligemma_mask_decoder is not used")
            paligemma_masks = False
        if paligemma is None and config.paligemma_model:
            from ros_mm_perception.core.models.paligemma import load_paligemma

            paligemma = load_paligemma(
                config.paligemma_model, config.device, config.precision,
                mask_decoder=config.paligemma_mask_decoder if paligemma_masks else "",
                max_new_tokens=config.max_new_tokens, fast_path=config.paligemma_fast_path)
            self._owned.append(paligemma)
        if owl is None and config.owl_model:
            from ros_mm_perception.core.models.fast_owl import enable_fast_owl
            from ros_mm_perception.core.models.owl import load_owl

            owl = load_owl(config.owl_model, config.device, config.precision)
            enable_fast_owl(owl, config.owl_fast_path)
            self._owned.append(owl)
        if sam3 is None and config.sam3_model:
            from ros_mm_perception.core.models.sam3 import load_sam3

            sam3 = load_sam3(config.sam3_model, config.device, config.precision)
            self._owned.append(sam3)
        if masker is None and config.mask_model:
            from ros_mm_perception.core.models.sam import load_mask_model

            masker = load_mask_model(config.mask_model, config.device, config.precision)
            self._owned.append(masker)
        self._clip: Optional[ClipModel] = clip
        self._paligemma = paligemma
        self._paligemma_masks = paligemma_masks
        self._owl = owl
        self._masker = masker
        self._sam3 = sam3
        self._labeler: Optional[ClipLabeler] = ClipLabeler(
            clip, config.labels, config.prompt_templates, config.crop_mode, config.label_tiles
        )
        self._cameras: Dict[str, _CameraState] = {}
        self._stacked: Dict[tuple, torch.Tensor] = {}
        self._check_source(config)
        self._check_paligemma_masks(config)
        self._configure_paligemma(config)
        self._encode(config.detect_phrases)
        self.config = config

    # ----------------------------------------------------------------- configuration and state

    @property
    def model_state(self) -> str:
        """``"ready"`` or ``"closed"``."""
        return "closed" if self._labeler is None else "ready"

    @property
    def paligemma(self):
        """The PaliGemma engine in use, or None."""
        return self._paligemma

    @property
    def makes_masks(self) -> bool:
        """Whether detections can get masks (a mask model, SAM 3 or PaliGemma's mask decoder is
        loaded)."""
        return self._masker is not None or self._sam3 is not None or self._paligemma_masks

    def _masks_run(self, source: str) -> bool:
        """Whether detections from ``source`` get masks."""
        return (self._masker is not None or source == "sam3"
                or (source == "paligemma" and self._paligemma_masks))

    @property
    def owl(self):
        """The OWL engine in use, or None."""
        return self._owl

    @property
    def labeler(self) -> ClipLabeler:
        self._check_open()
        return self._labeler

    def detection_source(self, config: Optional[PerceptionConfig] = None) -> str:
        """The grounding source in effect: ``sam3``, ``owl``, ``paligemma``, ``clip`` or ``off``
        (``auto`` resolved)."""
        source = (config or self.config).grounding_source
        return self._best_source() if source == "auto" else source

    def _best_source(self) -> str:
        """SAM 3, else OWL, else PaliGemma, else CLIP: the best detector configured."""
        if self._sam3 is not None:
            return "sam3"
        return (
            "owl"
            if self._owl is not None
            else "paligemma" if self._paligemma is not None else "clip"
        )

    def update_config(self, config: PerceptionConfig) -> None:
        """Apply run-time changes (vocabulary, phrases, templates, thresholds, rates, tracking).

        Only new phrases go through the text encoder. Model settings cannot change at run time
        (:class:`ConfigError`); nothing changes when a check fails.
        """
        if not isinstance(config, PerceptionConfig):
            raise TypeError(f"config must be a PerceptionConfig, got {type(config).__name__}")
        with self._lock:
            self._check_open()
            for name in MODEL_FIELDS:
                if getattr(config, name) != getattr(self.config, name):
                    raise ConfigError(f"{name} cannot change at run time; restart with the new "
                                      "model setting")
            self._check_source(config)
            self._configure_paligemma(config)
            self._labeler.set_templates(config.prompt_templates)
            self._labeler.set_vocabulary(config.labels)
            self._labeler.crop_mode = config.crop_mode
            self._labeler.label_tiles = config.label_tiles
            self._encode(config.detect_phrases)
            for state in self._cameras.values():
                self._configure_tracker(state.tracker, config)
            self.config = config

    def reset(self, camera: Optional[str] = None, restart_ids: bool = False) -> None:
        """Forget tracks and rate state of ``camera`` (all cameras when None); track ids stay
        unique, unless ``restart_ids`` numbers them from 1 again (a new recording, as in a fresh
        pipeline)."""
        with self._lock:
            for name, state in list(self._cameras.items()):
                if camera is None or name == camera:
                    if restart_ids:
                        del self._cameras[name]
                        continue
                    state.tracker.reset()
                    state.labels_gate, state.detect_gate = RateGate(), RateGate()

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Prepare the fast paths (CUDA graphs, compiled code) for these frame batch sizes now.

        The node calls this at configure time so the first frames do not pay for capture or
        compilation. CLIP prepares the batches of whole-frame labels (each frame with its tiles,
        for 4:3 and 16:9 frames) and its largest bucket, which region scoring uses. Does nothing on
        the plain paths.
        """
        with self._lock:
            encoder = self._clip.fast_encoder if self._clip is not None else None
            if encoder is not None:
                views = {1 + len(label_windows(h, w, self._labeler.label_tiles))
                         for h, w in WARM_UP_FRAMES}
                try:
                    encoder.warm_up(sorted({n * v for n in batch_sizes for v in views}
                                           | {encoder.buckets[-1]}))
                except Exception:  # as enable_fast_clip: keep open_clip's encoder rather than fail
                    log.exception("CLIP fast path failed to prepare; using open_clip's encoder")
                    self._clip.fast_encoder = None
            if self._paligemma is not None:
                self._paligemma.warm_up(batch_sizes)
            if self._owl is not None:
                self._owl.warm_up(batch_sizes)
            if self._masker is not None:
                self._masker.warm_up()
            if self._sam3 is not None:
                self._sam3.warm_up(batch_sizes)

    def close(self) -> None:
        """Release the models (closing those this pipeline loaded) and free cached GPU memory."""
        with self._lock:
            if self._labeler is None:
                return
            cuda = self._clip.device.type == "cuda"
            for model in self._owned:
                model.close()
            (self._owned, self._paligemma, self._owl, self._clip,
             self._labeler) = [], None, None, None, None
            self._masker = self._sam3 = None
            self._stacked = {}
            if cuda:
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------- per frame

    def process(self, frame: Frame) -> FrameResult:
        """Labels and detections (with track ids, and 3D when the frame has depth and
        intrinsics)."""
        return self.process_batch([frame])[0]

    def process_batch(self, frames: Sequence[Frame]) -> List[FrameResult]:
        """Process frames of several cameras with one call per model; results in input order."""
        with self._lock:
            self._check_open()
            cfg = self.config
            source = self.detection_source(cfg)
            for f in frames:
                self._check_frame(f)
            runs_labels, runs_detect = [], []
            for f in frames:
                state = self._camera(f.camera)
                ns = f.stamp.to_ns()
                runs_labels.append(cfg.enable_labels
                                   and state.labels_gate.due(ns, cfg.labels_rate_hz))
                runs_detect.append(source != "off"
                                   and state.detect_gate.due(ns, cfg.detect_rate_hz))
            label_images = [f.image for f, run in zip(frames, runs_labels) if run]
            detect_images = [f.image for f, run in zip(frames, runs_detect) if run]
            labels, detections = self._run_models(label_images, detect_images, cfg.detect_phrases,
                                                  source, self._threshold(source))
            labels, detections = iter(labels), iter(detections)
            results = []
            for f, run_labels, run_detect in zip(frames, runs_labels, runs_detect):
                result = _empty_result(f)
                if run_labels:
                    result.labels, result.labels_ran = next(labels), True
                if run_detect:
                    dets = next(detections)
                    locate(dets, f.depth, f.intrinsics, f.image.shape)
                    self._cameras[f.camera].tracker.update(dets)
                    result.detections, result.detections_ran = dets, True
                    result.masks_ran = self._masks_run(source)
                results.append(result)
            return results

    # -------------------------------------------------------------------------------- services

    def _threshold(self, source: str) -> float:
        """The configured least score of ``source``'s detections (OWL's scores have their own
        scale)."""
        return self.config.owl_score_threshold if source == "owl" else self.config.score_threshold

    def detection_threshold(self) -> float:
        """The least score of the detections that :meth:`ground` returns by default."""
        source = self.detection_source()
        return self._threshold(self._best_source() if source == "off" else source)

    def ground(self, frame: Frame, phrases: Sequence[str],
               score_threshold: Optional[float] = None) -> FrameResult:
        """Detect ``phrases`` in ``frame`` now (no tracking, no rate limit), with 3D when possible.

        Uses the configured grounding source; with ``off`` the best one configured (as ``auto``).
        """
        phrases = check_phrases(phrases, "phrases")
        if score_threshold is not None and not 0.0 <= float(score_threshold) <= 1.0:
            raise UserError(f"score_threshold={score_threshold} is outside [0, 1]")
        with self._lock:
            self._check_open()
            self._check_frame(frame)
            source = self.detection_source()
            if source == "off":
                source = self._best_source()
            threshold = (
                self._threshold(source) if score_threshold is None else float(score_threshold)
            )
            _, (dets,) = self._run_models([], [frame.image], phrases, source, threshold)
            locate(dets, frame.depth, frame.intrinsics, frame.image.shape)
            result = _empty_result(frame)
            result.detections, result.detections_ran = dets, True
            result.masks_ran = self._masks_run(source)
            return result

    def classify(self, image: np.ndarray, labels: Sequence[str],
                 top_k: Optional[int] = None) -> List[Label]:
        """Zero-shot labels of ``image`` over ``labels`` (all of them, sorted, unless
        ``top_k``)."""
        labels = check_phrases(labels, "labels")
        with self._lock:
            self._check_open()
            return self._labeler.label(check_rgb(image), top_k=top_k or len(labels),
                                       phrases=labels)

    def answer(self, image: np.ndarray, question: str) -> str:
        """PaliGemma's answer to ``question`` about ``image``."""
        if not isinstance(question, str) or not question.strip():
            raise UserError("the question is empty")
        with self._lock:
            return self._require_paligemma().answer(check_rgb(image), question.strip())

    def caption(self, image: np.ndarray) -> str:
        """PaliGemma's caption of ``image``."""
        with self._lock:
            return self._require_paligemma().caption(check_rgb(image))

    # -------------------------------------------------------------------------------- internals

    def _run_models(self, label_images, detect_images, phrases, source, threshold):
        """(labels per label image, detections per detect image), one call per model."""
        cfg = self.config
        if not phrases or not detect_images or source in ("clip", "owl", "sam3"):
            proposals = [[] for _ in detect_images]
        else:
            find = (self._paligemma.segment_batch if self._paligemma_masks
                    else self._paligemma.detect_batch)
            proposals = [list(d) for d in find(detect_images, list(phrases))]
        detections = None
        if source == "clip" and phrases:
            detections = [ground_with_clip(self._labeler, image, list(phrases),
                                           score_threshold=threshold)
                          for image in detect_images]
        elif source == "owl" and phrases:
            detections = [suppress(dets, threshold, cfg.nms_iou)
                          for dets in self._owl.detect_batch(detect_images, list(phrases),
                                                             threshold)]
        elif source == "sam3" and phrases:
            detections = self._sam3.detect_batch(detect_images, list(phrases), threshold)
        # the object memory needs each detection's crop embedding: PaliGemma's crops are scored
        # anyway; OWL's and CLIP-only grounding's boxes join the frame's CLIP batch
        embed = detections if cfg.memory_enabled and detections is not None else None
        labels, clip_probs = self._clip_scores(label_images, detect_images, proposals, phrases,
                                               embed)
        if detections is None:
            detections = []
            for dets, probs in zip(proposals, clip_probs):
                for det, score in zip(dets, combine_scores([d.score for d in dets], probs)):
                    det.score = float(score)
                detections.append(suppress(dets, threshold, cfg.nms_iou))
        self._add_masks(detect_images, detections)
        return labels, detections

    def _add_masks(self, images, detections) -> None:
        """Masks from the mask model for detections without one: one image embedding per frame,
        all of the frame's boxes decoded against it."""
        if self._masker is None:
            return
        todo = [(image, [d for d in dets if d.mask is None])
                for image, dets in zip(images, detections)]
        todo = [(image, dets) for image, dets in todo if dets]
        if todo:
            masks = self._masker.masks([image for image, _ in todo],
                                       [[d.box for d in dets] for _, dets in todo])
            for (_, dets), frame_masks in zip(todo, masks):
                for det, mask in zip(dets, frame_masks):
                    det.mask = mask

    @torch.inference_mode()
    def _clip_scores(self, label_images, detect_images, proposals, phrases, embed=None):
        """Whole-frame labels and per-box CLIP probabilities from one CLIP image batch.

        With ``config.memory_enabled``, each proposal gets the embedding of its context crop; so do
        the detections of ``embed`` (per detect image, when the boxes came from another source than
        PaliGemma: their crops join the batch, for embeddings only).
        """
        boxes = proposals if embed is None else embed
        crops = [(i, square) for i, dets in enumerate(boxes) if dets
                 for square in context_squares([d.box for d in dets], *detect_images[i].shape[:2])]
        if not label_images and not crops:
            return [], [np.zeros(0) for _ in proposals]
        device = self._clip.device
        uploaded = {}                                  # each frame goes to the device once

        def on_device(image):
            if id(image) not in uploaded:
                uploaded[id(image)] = upload(image, device)
            return uploaded[id(image)]

        crop_pixels = []
        for i, box in crops:
            (x0, y0, x1, y1), = crop_windows(detect_images[i].shape, [box])
            crop_pixels.append(on_device(detect_images[i])[:, y0:y1, x0:x1])
        vocabulary = self._labeler.vocabulary
        text = self._text_matrix(vocabulary + (BACKGROUND_PROMPT,)) if label_images else None
        probs, crop_embeddings = self._labeler.frame_probabilities(
            [on_device(image) for image in label_images], text, crop_pixels)
        if self.config.memory_enabled and crops:
            rows = crop_embeddings.cpu().numpy()
            for det, row in zip([d for dets in boxes for d in dets], rows):
                det.embedding = row
        labels = [top_labels(row, vocabulary, self.config.top_k) for row in probs.cpu().numpy()]
        box_probs = np.zeros(0)
        if crops and embed is None:
            extra = [d.phrase for dets in proposals for d in dets]
            competing = tuple(dict.fromkeys([*phrases, *NULL_PROMPTS, *extra]))
            text = self._text_matrix(competing)
            column = torch.as_tensor(
                [competing.index(d.phrase) for dets in proposals for d in dets], device=device
            )
            probs = self._labeler.logits(crop_embeddings, text).softmax(dim=-1)
            box_probs = probs.gather(1, column[:, None])[:, 0].cpu().numpy()
        split = np.cumsum([len(d) for d in proposals])[:-1]
        return labels, np.split(box_probs, split)

    def _text_matrix(self, phrases: Tuple[str, ...]) -> torch.Tensor:
        """The ``P x D`` text embedding matrix of ``phrases``, kept across frames (a few recent
        sets)."""
        key = (phrases, self._labeler.templates)
        matrix = self._stacked.get(key)
        if matrix is None:
            if len(self._stacked) >= MAX_TEXT_MATRICES:
                self._stacked.clear()
            matrix = self._stacked[key] = self._labeler.encode_text(phrases)
        return matrix

    def _encode(self, phrases: Sequence[str]) -> None:
        """Encode (and cache) phrases now, so the first frame that needs them does not wait."""
        if phrases:
            self._labeler.encode_text(phrases)
            if self._owl is not None:
                self._owl.encode_text(phrases)
            if self._sam3 is not None:
                self._sam3.encode_text(phrases)

    def _camera(self, camera: str) -> _CameraState:
        state = self._cameras.get(camera)
        if state is None:
            state = self._cameras[camera] = _CameraState(self._configure_tracker(Tracker(),
                                                                                 self.config))
        return state

    @staticmethod
    def _configure_tracker(tracker: Tracker, config: PerceptionConfig) -> Tracker:
        tracker.iou_threshold = config.track_iou
        tracker.max_missed = config.track_max_missed
        tracker.min_hits = config.track_min_hits
        return tracker

    @staticmethod
    def _check_frame(frame: Frame) -> None:
        check_rgb(frame.image)
        if frame.depth is not None:
            depth_scale(frame.image.shape, check_depth(frame.depth).shape)

    def _configure_paligemma(self, config: PerceptionConfig) -> None:
        if self._paligemma is not None:
            self._paligemma.language = config.language
            self._paligemma.max_new_tokens = config.max_new_tokens

    def _check_source(self, config: PerceptionConfig) -> None:
        if config.grounding_source == "paligemma" and self._paligemma is None:
            raise ConfigError("grounding_source=paligemma needs a PaliGemma model: set "
                              "paligemma_model")
        if config.grounding_source == "owl" and self._owl is None:
            raise ConfigError("grounding_source=owl needs an OWL model: set owl_model")
        if config.grounding_source == "sam3" and self._sam3 is None:
            raise ConfigError("grounding_source=sam3 needs a SAM 3 model: set sam3_model")

    def _check_open(self) -> None:
        if self._labeler is None:
            raise UserError("the perception pipeline is closed")

    def _check_paligemma_masks(self, config: PerceptionConfig) -> None:
        if not config.paligemma_mask_decoder:
            return
        if self._paligemma is None:
            raise ConfigError("paligemma_mask_decoder needs a PaliGemma model: set "
                              "paligemma_model")
        if self._paligemma_masks and not self._paligemma.has_mask_decoder:
            raise ConfigError("paligemma_mask_decoder is set but the PaliGemma engine passed in "
                              "has none: load it with load_paligemma(..., mask_decoder=PATH)")

    def _require_paligemma(self):
        self._check_open()
        if self._paligemma is None:
            raise UserError("PaliGemma is not configured: set paligemma_model to a model id or "
                            "directory")
        return self._paligemma


def _empty_result(frame: Frame) -> FrameResult:
    height, width = frame.image.shape[:2]
    return FrameResult(camera=frame.camera, frame_id=frame.frame_id, stamp=frame.stamp,
                       width=width, height=height)
