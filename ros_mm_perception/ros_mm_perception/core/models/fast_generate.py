"""Fast greedy PaliGemma generation: fixed shapes, a static KV cache and CUDA graphs.

The plain path (``model.generate``) launches hundreds of small kernels per token from Python and
runs the vision tower once per prompt. This module runs the same model functions
(``get_image_features``, the input embeddings, the language model, and the head with PaliGemma's
soft-capping on the last position only) in three fixed-shape steps:

* **vision** – the SigLIP tower on each *distinct* image once (eight questions about one frame
  encode it once), at batch buckets;
* **prefill** – every row's prefix ``[image tokens][bos][prompt]\\n`` left-padded to a bucket of
  ``image tokens + text bucket`` positions, attending bidirectionally to its own prefix
  (PaliGemma's prefix-LM mask) and never to padding; it writes the KV cache and picks the first
  token;
* **decode** – one token per step for the whole batch, writing the cache at the next index, picking
  the arg-max and recording its log-probability on the device, so steps run back to back.

Position ids count real tokens only (1-based, as PaliGemma's), so a padded row computes what the
same row computes alone; greedy tokens equal the plain path's (``test_fast_paths`` checks this).
Finished rows emit the pad token like ``generate`` does. Each (batch, text bucket) shape is
prepared once and reused for every prompt length in the bucket; ``mode`` ``graph`` captures the
steps into CUDA graphs, ``compile`` captures torch.compile'd steps, ``static`` runs them uncaptured
(what both do on a CPU).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ros_mm_perception.core.models.cuda_graphs import CapturedCall, bucket_for, compiled, new_pool
from ros_mm_perception.core.imaging.preprocess import check_rgb, upload

TEXT_BUCKETS: Tuple[int, ...] = (16, 32, 64, 128, 256)
"""Prompt lengths in tokens (bos + prompt + newline) that get their own prefill shape."""
BATCH_BUCKETS: Tuple[int, ...] = (1, 2, 4, 8, 16)
"""Batch sizes (prompts, and distinct images) that get their own shapes; larger batches are
split."""
NEW_TOKEN_BUCKETS: Tuple[int, ...] = (32, 64, 128, 256, 512)
"""Room for generated tokens in the cache; ``max_new_tokens`` is rounded up to one of these."""


class _PositionedLayer:
    """Mixed into transformers' ``StaticLayer``: writes go to the owner's ``write_index`` and
    attention sees the first ``kv_len`` positions, both set by the step being run."""

    def update(self, key_states, value_states, *args, **kwargs):
        cache = self.owner
        self.keys.index_copy_(2, cache.write_index, key_states)
        self.values.index_copy_(2, cache.write_index, value_states)
        return self.keys[:, :, :cache.kv_len], self.values[:, :, :cache.kv_len]


def _positioned_cache(config, batch: int, length: int, device, dtype):
    """A transformers ``Cache`` of preallocated layers that write where the running step says."""
    from transformers.cache_utils import Cache, StaticLayer

    layer_cls = type("PositionedStaticLayer", (_PositionedLayer, StaticLayer), {})
    text = config.get_text_config()
    heads = text.num_key_value_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    cache = Cache(layers=[layer_cls(max_cache_len=length) for _ in range(text.num_hidden_layers)])
    cache.write_index = torch.zeros(1, dtype=torch.long, device=device)
    cache.kv_len = length
    probe = torch.zeros(batch, heads, 1, head_dim, device=device, dtype=dtype)
    for layer in cache.layers:
        layer.owner = cache
        layer.lazy_initialization(probe, probe)
    return cache


@dataclass
class _Lane:
    """Buffers and prepared steps for one batch bucket and one room for new tokens."""

    batch: int
    room: int
    cache: object
    ids: torch.Tensor            # B x Pmax prefix token ids (left padded)
    pads: torch.Tensor           # B       padding positions of each row
    image_features: torch.Tensor  # B x I x D
    key_mask: torch.Tensor       # B x 1 x 1 x Cmax additive mask used by decode
    tokens: torch.Tensor         # B       last chosen token
    positions: torch.Tensor      # B       position id of the next decode input
    out_tokens: torch.Tensor     # B x room
    out_logprobs: torch.Tensor   # B x room
    done: torch.Tensor           # B
    all_done: torch.Tensor       # 1
    step: torch.Tensor           # 1
    flags: torch.Tensor          # room  all_done after each step, on the host (pinned on CUDA)
    events: list                 # two CUDA events marking when a step's flag has arrived
    steps: Dict[int, Tuple[CapturedCall, CapturedCall]] = field(default_factory=dict)


class FastGenerator:
    """Greedy generation for a loaded ``PaliGemmaForConditionalGeneration`` (see the module
    docstring)."""

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype, *,
                 mode: str = "graph", text_buckets: Iterable[int] = TEXT_BUCKETS,
                 batch_buckets: Iterable[int] = BATCH_BUCKETS, compile_backend: str = "inductor"):
        if mode not in ("static", "graph", "compile"):
            raise ValueError(f"FastGenerator mode must be static, graph or compile, got {mode!r}")
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.dtype = dtype
        self.mode = mode
        self.text_buckets = tuple(sorted(set(int(t) for t in text_buckets)))
        self.batch_buckets = tuple(sorted(set(int(b) for b in batch_buckets)))
        self.image_tokens = int(processor.image_seq_length)
        self._capture_device = device if mode != "static" else torch.device("cpu")
        self._pool = new_pool(self._capture_device)
        self._wrap = (
            (lambda fn: compiled(fn, compile_backend)) if mode == "compile" else (lambda fn: fn)
        )
        if mode == "compile":
            # One compiled variant per (batch, text bucket) step: allow more than dynamo's default
            # of 8.
            cfg = torch._dynamo.config
            name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
            setattr(cfg, name, max(getattr(cfg, name), 64))
        gen = model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos)
        self.pad_id = next(t for t in (gen.pad_token_id, self.tokenizer.pad_token_id, eos[0])
                           if t is not None)
        self._eos = torch.tensor(eos, dtype=torch.long, device=device)
        text = model.config.get_text_config()
        self._sliding_window = getattr(text, "sliding_window", None)
        # The steps call the language model and the head directly: PaliGemma's own forward would
        # only merge image features and build masks, which the steps have already done.
        self._language_model = model.model.language_model
        self._softcap = getattr(text, "final_logit_softcapping", None)
        forward_params = inspect.signature(self._language_model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_params else "past_key_values"
        self._embed = model.get_input_embeddings()
        self._resize_size = _cpu_resize_size(processor.image_processor, device)
        self._lanes: Dict[Tuple[int, int], _Lane] = {}
        self._vision: Dict[int, Tuple[torch.Tensor, CapturedCall]] = {}
        self._prompt_ids: Dict[str, List[int]] = {}

    # ---- public ------------------------------------------------------------------------------
    def supports(self, prompts: Sequence[str], max_new_tokens: int) -> bool:
        """Whether every prompt fits the largest text bucket and the token budget a room bucket."""
        if bucket_for(max_new_tokens, NEW_TOKEN_BUCKETS) is None:
            return False
        longest = max((len(self.prompt_ids(p)) for p in prompts), default=0)
        if bucket_for(longest, self.text_buckets) is None:
            return False
        cache_len = self.image_tokens + self.text_buckets[-1] + bucket_for(max_new_tokens,
                                                                           NEW_TOKEN_BUCKETS)
        return self._sliding_window is None or cache_len <= self._sliding_window

    def prompt_ids(self, prompt: str) -> List[int]:
        """Token ids after the image tokens, as the processor writes them: bos, prompt, newline."""
        ids = self._prompt_ids.get(prompt)
        if ids is None:
            ids = self.tokenizer(
                self.tokenizer.bos_token + prompt + "\n", add_special_tokens=False
            )["input_ids"]
            if len(self._prompt_ids) > 1024:
                self._prompt_ids.clear()
            self._prompt_ids[prompt] = ids
        return ids

    @torch.inference_mode()
    def warm_up(self, batch_sizes: Iterable[int] = (1,), max_new_tokens: int = 32,
                prompt_tokens: Iterable[int] = (TEXT_BUCKETS[0],)) -> None:
        """Prepare (compile and capture) the steps for these batch sizes and prompt lengths now.

        The node calls this when it configures, so the first frame is served at full speed. Shapes
        not prepared here are prepared on first use.
        """
        room = bucket_for(max_new_tokens, NEW_TOKEN_BUCKETS) or NEW_TOKEN_BUCKETS[-1]
        for n in batch_sizes:
            batch = bucket_for(int(n), self.batch_buckets) or self.batch_buckets[-1]
            self._vision_call(batch)
            for t in prompt_tokens:
                self._steps(self._lane(batch, room),
                            bucket_for(int(t), self.text_buckets) or self.text_buckets[-1])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def generate(self, images: Sequence[np.ndarray], prompts: Sequence[str],
                 max_new_tokens: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Greedy answers to ``prompts[i]`` about ``images[i]``: (token ids, log-probabilities),
        ``B x T`` on the CPU, ``T <= max_new_tokens``; finished rows continue with the pad token,
        as ``generate`` does."""
        limit = self.batch_buckets[-1]
        if len(prompts) > limit:
            parts = [self.generate(images[i:i + limit], prompts[i:i + limit], max_new_tokens)
                     for i in range(0, len(prompts), limit)]
            width = max(p[0].shape[1] for p in parts)
            return (torch.cat([_pad_right(p[0], width, self.pad_id) for p in parts]),
                    torch.cat([_pad_right(p[1], width, 0.0) for p in parts]))
        lane, steps, count = self._prefill(images, prompts, max_new_tokens)
        done_at = self._run_decode(lane, steps[1], max_new_tokens)
        return (lane.out_tokens[:count, :done_at].cpu(),
                lane.out_logprobs[:count, :done_at].float().cpu())

    # ---- steps ---------------------------------------------------------------------------------
    def _prefill(self, images, prompts, max_new_tokens):
        rows = [self.prompt_ids(p) for p in prompts]
        count = len(rows)
        batch = bucket_for(count, self.batch_buckets)
        text = bucket_for(max(len(r) for r in rows), self.text_buckets)
        room = bucket_for(max_new_tokens, NEW_TOKEN_BUCKETS)
        if batch is None or text is None or room is None:
            raise ValueError("batch, prompt or token budget outside the prepared buckets; check "
                             "supports() first")
        lane = self._lane(batch, room)
        steps = self._steps(lane, text)
        # Distinct images once through the vision tower; each row picks its image's features.
        distinct: Dict[int, int] = {}
        order = [distinct.setdefault(id(img), len(distinct)) for img in images]
        firsts = {i: img for img, i in zip(images, order)}
        vision_inputs, vision_call = self._vision_call(
            bucket_for(len(distinct), self.batch_buckets)
        )
        vision_inputs[: len(distinct)].copy_(
            self._pixels([firsts[i] for i in range(len(distinct))])
        )
        features = vision_call()
        pick = torch.tensor(order + [order[0]] * (batch - count), device=self.device)
        lane.image_features.copy_(features.index_select(0, pick))
        # Prefix ids, left padded to the bucket; image positions hold the pad id (replaced by
        # features).
        width = self.image_tokens + text
        ids = np.full((batch, width), self.pad_id, dtype=np.int64)
        pads = np.zeros(batch, dtype=np.int64)
        for i in range(batch):
            row = rows[i] if i < count else rows[0]
            ids[i, width - len(row):] = row
            pads[i] = width - self.image_tokens - len(row)
        lane.ids[:, :width].copy_(torch.from_numpy(ids))
        lane.pads.copy_(torch.from_numpy(pads))
        steps[0]()
        return lane, steps, count

    def _run_decode(self, lane: _Lane, decode_step: CapturedCall, max_new_tokens: int) -> int:
        """Run decode steps until every row finished or the budget is spent; returns the tokens
        made.

        Step t is queued before the host reads step t-1's flag, so the GPU never waits for the
        host; at most one step past the end is computed (and dropped).
        """
        cuda = self.device.type == "cuda"
        flags, events = lane.flags, lane.events
        flags[0:1].copy_(lane.all_done, non_blocking=cuda)
        if cuda:
            events[0].record()
        for t in range(1, max_new_tokens):
            decode_step()
            flags[t:t + 1].copy_(lane.all_done, non_blocking=cuda)
            if cuda:
                events[t % 2].record()
                events[(t - 1) % 2].synchronize()
            if bool(flags[t - 1]):
                return t
        return max_new_tokens

    def _steps(self, lane: _Lane, text: int) -> Tuple[CapturedCall, CapturedCall]:
        if text not in lane.steps:
            width = self.image_tokens + text
            kv_len = width + lane.room
            prefill = self._wrap(self._prefill_fn(lane, width, kv_len))
            decode = self._wrap(self._decode_fn(lane, kv_len))
            lane.steps[text] = (CapturedCall(prefill, self._capture_device, self._pool),
                                CapturedCall(decode, self._capture_device, self._pool))
        return lane.steps[text]

    def _prefill_fn(self, lane: _Lane, width: int, kv_len: int):
        image_tokens = self.image_tokens
        cache = lane.cache
        ids = lane.ids[:, :width]
        index = torch.arange(width, device=self.device)
        keys = torch.arange(kv_len, device=self.device)
        dim = lane.image_features.shape[-1]

        def prefill():
            cache.write_index = index
            cache.kv_len = kv_len
            pads = lane.pads[:, None]
            # B x W, 0 at the first real token
            rel = index[None, :] - pads
            is_image = (rel >= 0) & (rel < image_tokens)
            slot = rel.clamp(0, image_tokens - 1)[..., None].expand(-1, -1, dim)
            embeds = self._embed(ids)
            features = lane.image_features.gather(1, slot).to(embeds.dtype)
            embeds = torch.where(is_image[..., None], features, embeds)
            # B x K: the row's own prefix
            real_keys = (keys[None, :] >= pads) & (keys[None, :] < width)
            mask = self._additive(real_keys)[:, None, None, :]
            logits = self._forward(embeds, mask.expand(-1, -1, width, -1), rel.clamp(min=0) + 1,
                                   cache)
            lane.key_mask[..., :kv_len].copy_(mask)
            lane.positions.copy_(width - lane.pads + 1)
            lane.done.zero_()
            lane.step.zero_()
            self._select(lane, logits)

        return prefill

    def _decode_fn(self, lane: _Lane, kv_len: int):
        cache = lane.cache
        write = torch.zeros(1, dtype=torch.long, device=self.device)
        width = kv_len - lane.room

        def decode():
            # the input token's cache index
            write.copy_(lane.step + (width - 1))
            cache.write_index = write
            cache.kv_len = kv_len
            mask = lane.key_mask[..., :kv_len]
            mask.index_fill_(3, write, 0.0)
            logits = self._forward(self._embed(lane.tokens[:, None]), mask,
                                   lane.positions[:, None], cache)
            lane.positions.add_(1)
            self._select(lane, logits)

        return decode

    def _forward(self, embeds, mask, positions, cache) -> torch.Tensor:
        """Float logits of each row's last position (the head and soft-capping as PaliGemma applies
        them)."""
        hidden = self._language_model(inputs_embeds=embeds, attention_mask=mask,
                                      position_ids=positions, use_cache=True,
                                      **{self._cache_arg: cache})[0]
        logits = self.model.lm_head(hidden[:, -1])
        if self._softcap is not None:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits.float()

    def _select(self, lane: _Lane, logits: torch.Tensor) -> None:
        """Greedy pick, its log-probability, finished rows → pad; all on the device."""
        chosen = torch.where(lane.done, self.pad_id, logits.argmax(dim=-1))
        logprob = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None])
        lane.out_tokens.index_copy_(1, lane.step, chosen[:, None])
        lane.out_logprobs.index_copy_(1, lane.step, logprob)
        lane.done.logical_or_((chosen[:, None] == self._eos[None, :]).any(dim=1))
        lane.all_done.copy_(lane.done.all()[None])
        lane.tokens.copy_(chosen)
        lane.step.add_(1)

    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        return torch.where(allowed, zero, torch.finfo(self.dtype).min)

    # ---- buffers -------------------------------------------------------------------------------
    def _lane(self, batch: int, room: int) -> _Lane:
        key = (batch, room)
        if key not in self._lanes:
            dev = self.device
            width = self.image_tokens + self.text_buckets[-1]
            cache_len = width + room
            dim = self.model.config.get_text_config().hidden_size
            self._lanes[key] = _Lane(
                batch=batch, room=room,
                cache=_positioned_cache(self.model.config, batch, cache_len, dev, self.dtype),
                ids=torch.full((batch, width), self.pad_id, dtype=torch.long, device=dev),
                pads=torch.zeros(batch, dtype=torch.long, device=dev),
                image_features=torch.zeros(batch, self.image_tokens, dim, dtype=self.dtype,
                                           device=dev),
                key_mask=torch.zeros(batch, 1, 1, cache_len, dtype=self.dtype, device=dev),
                tokens=torch.full((batch,), self.pad_id, dtype=torch.long, device=dev),
                positions=torch.ones(batch, dtype=torch.long, device=dev),
                out_tokens=torch.full((batch, room), self.pad_id, dtype=torch.long, device=dev),
                out_logprobs=torch.zeros(batch, room, dtype=torch.float32, device=dev),
                done=torch.zeros(batch, dtype=torch.bool, device=dev),
                all_done=torch.zeros(1, dtype=torch.bool, device=dev),
                step=torch.zeros(1, dtype=torch.long, device=dev),
                flags=torch.zeros(room, dtype=torch.bool, pin_memory=dev.type == "cuda"),
                events=[torch.cuda.Event(), torch.cuda.Event()] if dev.type == "cuda" else [],
            )
        return self._lanes[key]

    def _vision_call(self, count: int) -> Tuple[torch.Tensor, CapturedCall]:
        if count not in self._vision:
            size = self.processor.image_processor.size
            shape = (count, 3, size["height"], size["width"])
            pixels = torch.zeros(shape, dtype=self.dtype, device=self.device)
            text_dtype = self.dtype

            def vision():
                out = self.model.get_image_features(pixels)
                return getattr(out, "pooler_output", out).to(text_dtype)

            self._vision[count] = (pixels,
                                   CapturedCall(self._wrap(vision), self._capture_device,
                                                self._pool))
        return self._vision[count]

    def _pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The processor's pixel values for these frames (uploaded as uint8, processed on the
        device).

        On the CPU the resize runs here, on channels-last uint8 pixels (torch's fast layout for the
        kernel the processor calls; the processor makes them contiguous first), and the processor
        then only rescales and normalises: the values are the processor's, bit for bit (tested).
        """
        uploaded = [upload(check_rgb(img), self.device) for img in images]
        processor, options = self.processor.image_processor, {}
        if self._resize_size is not None:
            uploaded = [
                F.interpolate(
                    img[None].contiguous(memory_format=torch.channels_last),
                    size=self._resize_size,
                    mode="bicubic",
                    align_corners=False,
                    antialias=True,
                )[0]
                for img in uploaded
            ]
            options["do_resize"] = False
        out = processor(images=uploaded, return_tensors="pt", device=self.device, **options)
        return out["pixel_values"].to(self.device, self.dtype)


def _cpu_resize_size(image_processor, device: torch.device):
    """(height, width) when :meth:`FastGenerator._pixels` can resize for the processor: on the CPU,
    for a processor that resizes to a fixed size with antialiased bicubic resampling; else
    ``None``."""
    from transformers.image_utils import PILImageResampling

    size = getattr(image_processor, "size", None)
    height, width = getattr(size, "height", None), getattr(size, "width", None)
    if (device.type != "cpu" or not getattr(image_processor, "do_resize", False) or not height
        or not width
            or getattr(image_processor, "resample", None) != PILImageResampling.BICUBIC):
        return None
    return int(height), int(width)


def _pad_right(t: torch.Tensor, width: int, value) -> torch.Tensor:
    if t.shape[1] == width:
        return t
    return torch.cat([t, t.new_full((t.shape[0], width - t.shape[1]), value)], dim=1)
