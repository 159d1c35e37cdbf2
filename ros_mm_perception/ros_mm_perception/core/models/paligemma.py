"""PaliGemma / PaliGemma 2 engine: visual question answering, captioning, OCR, detection,
segmentation.

``load_paligemma(model)`` takes a hub id (from the Hugging Face cache; ``HF_HUB_OFFLINE=1`` is
honoured) or a local folder written by ``save_pretrained``. Frames are HxWx3 uint8 RGB numpy
arrays; they are uploaded as uint8 and resized/normalised by the model's own processor on the model
device.

Prompts follow the mix checkpoints: ``answer <lang> <question>``, ``caption <lang>``, ``ocr``,
``detect a ; b`` and ``segment a``. Every task goes through one ``generate`` call per batch
(:meth:`PaliGemmaEngine._generate`), greedy, returning texts, token ids and the model's
log-probability of every generated token.

Detection confidence: PaliGemma emits no scores. A detection's score is the geometric mean of the
model's probabilities (softmax of the raw logits) of the tokens that make up its entry: the four
location tokens and the label tokens (not the ``;`` separator, not the ``<seg>`` tokens). It is in
(0, 1], comparable across phrases and frames, and low when the model hesitated about where or what.
"""

from __future__ import annotations

import gc
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ros_mm_perception.core.config import PerceptionConfig, check_phrases
from ros_mm_perception.core.devices import resolve_device, resolve_dtype
from ros_mm_perception.core.errors import ModelNotFoundError, UserError
from ros_mm_perception.core.models.hf_loading import (build_network, checked_config,
                                                      checkpoint_source, error_reason)
from ros_mm_perception.core.models.paligemma_parser import ParsedObject, parse_detections
from ros_mm_perception.core.imaging.preprocess import check_rgb, upload
from ros_mm_perception.core.results import Detection

log = logging.getLogger(__name__)

DEFAULT_MODEL = "google/paligemma2-3b-mix-224"
"""The checkpoint suggested to users (the default ``--paligemma-model`` of ask and caption)."""
MAX_PROMPT_CHARS = 1000
"""Longest accepted prompt (question, or the whole ``detect a ; b ; ...`` prompt) in characters."""
IMAGE_TOKEN = "<image>"
_LANGUAGE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{1,8})?$")
_DEFAULTS = PerceptionConfig()


class PromptError(UserError, ValueError):
    """A prompt, question or phrase list was rejected before reaching the model."""


@dataclass
class PaliGemmaSegment(Detection):
    """A :class:`Detection` from ``segment``, with its 16 mask codebook indices.

    ``mask`` is set only when the engine has a mask decoder (see
    :attr:`PaliGemmaEngine.has_mask_decoder`).
    """

    seg_codes: Tuple[int, ...] = ()


@dataclass
class Generation:
    """One generated answer: its text, per-token log-probabilities and (for parsing) token
    character spans."""

    text: str
    logprobs: np.ndarray
    token_spans: List[Tuple[int, int]] = field(default_factory=list)

    def score(self, spans: Sequence[Tuple[int, int]]) -> float:
        """Geometric mean of the probabilities of the tokens overlapping any of ``spans``."""
        picked = [lp for lp, (a, b) in zip(self.logprobs, self.token_spans)
                  if any(a < end and start < b for start, end in spans)]
        return float(np.exp(np.mean(picked))) if picked else 0.0


class _TokenLogProbs:
    """Logits processor that records the model's log-probability of each generated token.

    It sees the raw logits of step t and, at step t+1, the token chosen at step t (the last input
    id), so it keeps one ``B x V`` row at a time on the device.
    """

    def __init__(self):
        self._last: Optional[torch.Tensor] = None
        self._steps: List[torch.Tensor] = []

    def _collect(self, tokens: torch.Tensor) -> None:
        if self._last is not None:
            self._steps.append(self._last.gather(1, tokens[:, None])[:, 0])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._collect(input_ids[:, -1])
        self._last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """``B x T`` log-probabilities of ``new_tokens`` (the generated part of the sequences)."""
        if new_tokens.shape[1]:
            self._collect(new_tokens[:, -1])
        self._last = None
        if not self._steps:
            return new_tokens.new_zeros(new_tokens.shape, dtype=torch.float32)
        return torch.stack(self._steps, dim=1)


def check_prompt(text, what: str = "prompt") -> str:
    """Validate a prompt or question (1..MAX_PROMPT_CHARS characters) and return it
    whitespace-normalised."""
    if not isinstance(text, str):
        raise PromptError(f"{what} must be a string, got {type(text).__name__}")
    cleaned = " ".join(text.split())
    if not cleaned:
        raise PromptError(f"{what} is empty")
    if len(cleaned) > MAX_PROMPT_CHARS:
        raise PromptError(f"{what} has {len(cleaned)} characters; at most {MAX_PROMPT_CHARS} are "
                          "allowed")
    if IMAGE_TOKEN in cleaned:
        raise PromptError(f"{what} must not contain {IMAGE_TOKEN}; the image is added by the "
                          "engine")
    return cleaned


def check_language(code) -> str:
    """Validate a prompt language code (``en``, ``es``, ``zh``, ``pt-BR``, ...) and return it."""
    if not isinstance(code, str) or not _LANGUAGE.match(code):
        raise PromptError(f"language {code!r} is not a language code like en, es or zh")
    return code


def _normal(label: str) -> str:
    return " ".join(label.lower().split())


class PaliGemmaEngine:
    """A loaded PaliGemma model with its processor; see the module docstring for prompts and
    scores.

    ``logits_processors`` (transformers ``LogitsProcessor`` objects, empty by default) are applied
    after the engine's own score recording in every generate call, e.g. to constrain the output.
    ``fast_path`` (see :attr:`fast_path`) picks transformers' ``generate`` or the fixed-shape fast
    path.
    """

    def __init__(self, model, processor, *, name: str, device: torch.device, dtype: torch.dtype,
                 max_new_tokens: int = _DEFAULTS.max_new_tokens,
                 language: str = _DEFAULTS.language, mask_decoder=None,
                 fast_path: str = _DEFAULTS.paligemma_fast_path):
        self.model = model
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        self.name = name
        self.device = device
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.language = language
        self.mask_decoder = mask_decoder
        self.logits_processors: list = []
        self._warned_no_mask = False
        self.fast_path = fast_path

    # ---- settings ---------------------------------------------------------------------------
    @property
    def language(self) -> str:
        """Prompt language code (``en``, ``es``, ``zh``, ...) used by answer, ask_many and
        caption."""
        return self._language

    @language.setter
    def language(self, code: str) -> None:
        self._language = check_language(code)

    @property
    def has_mask_decoder(self) -> bool:
        return self.mask_decoder is not None

    @property
    def fast_path(self) -> str:
        """Generation path: ``off`` (transformers ``generate``), ``static``, ``graph`` or
        ``compile`` (see :mod:`~ros_mm_perception.core.models.fast_generate`); set ``auto`` for
        graph on CUDA, off on CPU. Calls with ``logits_processors`` or prompts longer than its
        buckets use ``generate``."""
        return self._fast.mode if self._fast is not None else "off"

    @fast_path.setter
    def fast_path(self, mode: str) -> None:
        from ros_mm_perception.core.models.cuda_graphs import resolve_mode
        from ros_mm_perception.core.models.fast_generate import FastGenerator

        mode = resolve_mode(mode, self.device)
        self._fast = (
            None
            if mode == "off"
            else FastGenerator(self.model, self.processor, self.device, self.dtype, mode=mode)
        )

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Prepare the fast path's shapes for these batch sizes now (the node calls this when it
        configures)."""
        if self._fast is not None:
            try:
                self._fast.warm_up(batch_sizes, self.max_new_tokens)
            except Exception:  # as in _generate: fall back rather than fail to start
                log.exception("PaliGemma fast path %r failed to prepare; using transformers "
                              "generate", self.fast_path)
                self._fast = None

    # ---- tasks ------------------------------------------------------------------------------
    def answer(self, image, question: str) -> str:
        """Answer one question about ``image``."""
        return self.ask_many(image, [question])[0]

    def caption(self, image) -> str:
        return self.answer_batch([image], [f"caption {self.language}"])[0]

    def ocr(self, image) -> str:
        """The text PaliGemma reads in ``image``."""
        return self.answer_batch([image], ["ocr"])[0]

    def ask_many(self, image, questions: Sequence[str]) -> List[str]:
        """Several questions about one frame in one generate call; answers in question order."""
        prompts = [f"answer {self.language} {check_prompt(q, 'question')}" for q in questions]
        return self.answer_batch([image] * len(prompts), prompts)

    def answer_batch(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> List[str]:
        """Raw prompts, one per image (pairs ``(images[i], prompts[i])``), in one generate call."""
        return [g.text for g in self._generate(images, prompts)]

    def detect(self, image, phrases: Sequence[str]) -> List[Detection]:
        """Ground ``phrases`` in ``image``; boxes in original-image pixels, scores as documented
        above."""
        return self.detect_batch([image], phrases)[0]

    def detect_batch(self, images: Sequence[np.ndarray],
                     phrases: Sequence[str]) -> List[List[Detection]]:
        """The same phrases over several frames (e.g. cameras) in one generate call, in frame
        order.

        Entries whose label is not one of ``phrases`` (compared case-insensitively) are dropped;
        the returned ``phrase`` is the caller's spelling.
        """
        phrases = self._check_phrases(phrases)
        prompt = "detect " + " ; ".join(phrases)
        generations = self._generate(images, [prompt] * len(images), spans=True)
        return [[self._detection(obj, gen, phrase, Detection)
                 for obj, phrase in self._matched(gen, image, phrases)]
                for gen, image in zip(generations, images)]

    def segment(self, image, phrase: str) -> List[PaliGemmaSegment]:
        """Boxes, mask codebook indices and, with a mask decoder, masks in original-image
        pixels."""
        return self.segment_batch([image], [phrase])[0]

    def segment_batch(self, images: Sequence[np.ndarray],
                      phrases: Sequence[str]) -> List[List[PaliGemmaSegment]]:
        """``segment`` for every phrase in every frame in one generate call, in frame order.

        ``segment`` takes one phrase, so each frame gets one prompt per phrase; the fast path
        encodes each frame once for all of them. With a mask decoder every segment gets a mask
        (one decoder call for all): an entry without ``<seg>`` tokens gets an empty one.
        """
        phrases = self._check_phrases(phrases)
        generations = self._generate([image for image in images for _ in phrases],
                                     [f"segment {p}" for _ in images for p in phrases],
                                     spans=True)
        found = []
        for i, image in enumerate(images):
            answers = zip(phrases, generations[i * len(phrases):(i + 1) * len(phrases)])
            found.append([self._detection(obj, gen, p, PaliGemmaSegment, seg_codes=obj.seg_codes)
                          for phrase, gen in answers
                          for obj, p in self._matched(gen, image, [phrase])])
        self._add_masks(images, found)
        return found

    def close(self) -> None:
        """Release the model and free its GPU memory; the engine cannot be used afterwards."""
        self.model = None
        self.mask_decoder = None
        self._fast = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- internals --------------------------------------------------------------------------
    def _check_phrases(self, phrases) -> List[str]:
        if isinstance(phrases, str) or not all(isinstance(p, str) for p in phrases):
            raise PromptError("phrases must be a list of strings")
        phrases = check_phrases(list(phrases), "phrases")
        bad = [p for p in phrases if ";" in p]
        if bad:
            raise PromptError(f"phrases must not contain ';' (it separates phrases): {bad[0]!r}")
        check_prompt("detect " + " ; ".join(phrases),
                     "detect prompt (split the phrases over several calls)")
        return phrases

    def _add_masks(self, images, found: List[List[PaliGemmaSegment]]) -> None:
        """Decode the ``<seg>`` codes of every frame's segments into masks (see segment_batch)."""
        coded = [s for segments in found for s in segments if s.seg_codes]
        if self.mask_decoder is None:
            if coded and not self._warned_no_mask:
                log.warning("no mask decoder configured: segment returns boxes and <seg> codes "
                            "but no masks; pass mask_decoder=PATH/vae-oid.npz to load_paligemma")
                self._warned_no_mask = True
            return
        from ros_mm_perception.core.models.seg_decoder import masks_in_boxes

        logits = []
        if coded:
            codes = torch.tensor([s.seg_codes for s in coded], device=self.device)
            with torch.inference_mode():
                logits = self.mask_decoder(codes)
        coded_logits = iter(logits)
        for image, segments in zip(images, found):
            height, width = image.shape[:2]
            for s in segments:
                s.mask = (masks_in_boxes(next(coded_logits)[None], [s.box], height, width)[0]
                          if s.seg_codes else np.zeros((height, width), dtype=bool))

    def _matched(self, gen: Generation, image, phrases: Sequence[str]):
        by_key = {_normal(p): p for p in phrases}
        height, width = image.shape[:2]
        for obj in parse_detections(gen.text, width, height):
            phrase = by_key.get(_normal(obj.label))
            if phrase is not None:
                yield obj, phrase

    @staticmethod
    def _detection(obj: ParsedObject, gen: Generation, phrase: str, cls, **extra):
        return cls(phrase=phrase, score=gen.score([obj.loc_span, obj.label_span]), box=obj.box,
                   source="paligemma", **extra)

    def _generate(self, images: Sequence[np.ndarray], prompts: Sequence[str], *,
                  spans: bool = False) -> List[Generation]:
        """The one place that runs the model: processor → greedy generate → texts and token
        scores."""
        images, prompts = list(images), [check_prompt(p) for p in prompts]
        if len(images) != len(prompts):
            raise PromptError(f"got {len(images)} images for {len(prompts)} prompts; pass one "
                              "image per prompt")
        for img in images:
            check_rgb(img)
        if self.model is None:
            raise RuntimeError("this PaliGemma engine was closed")
        if not prompts:
            return []
        if (
            self._fast is not None
            and not self.logits_processors
            and self._fast.supports(prompts, self.max_new_tokens)
        ):
            try:
                new_tokens, logprobs = self._fast.generate(images, prompts, self.max_new_tokens)
            # a failed capture or compile must not stop the robot: fall back for good
            except Exception:
                log.exception("PaliGemma fast path %r failed; using transformers generate from "
                              "now on", self.fast_path)
                self._fast = None
            else:
                return [self._decode(ids, lps, spans)
                        for ids, lps in zip(new_tokens.tolist(), logprobs.numpy())]
        pixels = [upload(img, self.device) for img in images]
        inputs = self.processor(images=pixels, text=[IMAGE_TOKEN + p for p in prompts],
                                return_tensors="pt", padding="longest", device=self.device)
        model_inputs = {k: inputs[k].to(self.device)
                        for k in ("input_ids", "attention_mask", "token_type_ids")}
        model_inputs["pixel_values"] = inputs["pixel_values"].to(self.device, self.dtype)
        recorder = _TokenLogProbs()
        from transformers import LogitsProcessorList

        with torch.inference_mode():
            sequences = self.model.generate(
                **model_inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([recorder, *self.logits_processors]),
            )
        new_tokens = sequences[:, model_inputs["input_ids"].shape[1]:]
        logprobs = recorder.finish(new_tokens).cpu().numpy()
        return [self._decode(ids, lps, spans)
                for ids, lps in zip(new_tokens.cpu().tolist(), logprobs)]

    def _decode(self, ids: List[int], logprobs: np.ndarray, spans: bool) -> Generation:
        tokenizer = self.processor.tokenizer
        stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        end = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        ids, logprobs = ids[:end], logprobs[:end]
        decode = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
        text = tokenizer.decode(ids, **decode)
        token_spans = []
        if spans and ids:
            ends = [len(t)
                    for t in tokenizer.batch_decode([ids[:k] for k in range(1, len(ids) + 1)],
                                                    **decode)]
            token_spans = list(zip([0] + ends[:-1], ends))
        # Spans index the raw text; plain answers are stripped.
        return Generation(text=text if spans else text.strip(), logprobs=logprobs,
                          token_spans=token_spans)


def _missing_model_error(model: str, local: bool, err: Exception) -> ModelNotFoundError:
    reason = error_reason(err)
    if local:
        return ModelNotFoundError(
            f"{model} is not a complete PaliGemma model folder ({reason}); pass a folder written "
            "by save_pretrained (config.json, model*.safetensors, tokenizer and processor "
            f"files) or a hub id such as {DEFAULT_MODEL}")
    return ModelNotFoundError(
        f"PaliGemma model {model!r} is not in the Hugging Face cache and could not be downloaded "
        f"({reason}). Accept the Gemma licence on https://huggingface.co/{model}, then on a "
        f"machine with network access run `hf auth login` and `hf download {model}` (older "
        f"huggingface_hub: `huggingface-cli login` and `huggingface-cli download {model}`), "
        f"copying ~/.cache/huggingface here if needed; or pass a local model folder instead")


def load_paligemma(model: str, device: str = "auto", precision: str = "auto", *,
                   mask_decoder: str = "", max_new_tokens: int = _DEFAULTS.max_new_tokens,
                   random_weights: bool = False,
                   fast_path: str = _DEFAULTS.paligemma_fast_path) -> PaliGemmaEngine:
    """Load PaliGemma or PaliGemma 2 from a hub id (cache) or a local folder.

    ``precision`` auto is bf16 on CUDA; on the CPU bf16 where it runs natively for models wide
    enough to gain, else fp32 (see :func:`~ros_mm_perception.core.devices.resolve_dtype`).
    ``mask_decoder`` is the path of the ``<seg>`` mask decoder checkpoint (``vae-oid.npz``); empty
    means segment returns boxes and codes only. ``random_weights`` builds the folder's architecture
    with random weights on the device (benchmarks: compute does not depend on weight values).
    ``fast_path`` is the engine's :attr:`~PaliGemmaEngine.fast_path`. A missing model raises
    :class:`ModelNotFoundError` saying what to download or which path to pass.
    """
    from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    if not isinstance(model, str) or not model.strip():
        raise ModelNotFoundError("no PaliGemma model given; pass a hub id such as "
                                 f"{DEFAULT_MODEL} or a local model folder")
    dev = resolve_device(device)
    resolve_dtype(precision, dev)  # a bad precision fails before anything loads
    source, local = checkpoint_source(model, Path(model).expanduser(), "PaliGemma",
                                      f" or a hub id such as {DEFAULT_MODEL}")
    try:
        config = checked_config(source, model, ("paligemma",), "PaliGemma")
        dtype = resolve_dtype(precision, dev, cuda_default="bf16",
                              width=config.text_config.hidden_size)
        processor = PaliGemmaProcessor.from_pretrained(source)
        net = build_network(PaliGemmaForConditionalGeneration, source, config, dtype, dev,
                            random_weights)
    except (OSError, ValueError) as err:
        raise _missing_model_error(model, local, err) from err
    decoder = None
    if mask_decoder:
        from ros_mm_perception.core.models.seg_decoder import load_mask_decoder

        decoder = load_mask_decoder(mask_decoder, dev)
    return PaliGemmaEngine(net, processor, name=model, device=dev, dtype=dtype,
                           max_new_tokens=max_new_tokens, mask_decoder=decoder,
                           fast_path=fast_path)
