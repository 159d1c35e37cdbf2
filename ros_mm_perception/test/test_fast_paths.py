"""Fast paths equal the plain paths on tiny models (CPU).

CLIP: embeddings within 1e-5 (fp32) of open_clip's own ``encode_image``. PaliGemma: greedy tokens
identical to transformers' ``generate``, per-token log-probabilities within 1e-4. On the CPU the
``graph`` mode runs its static buffers uncaptured (CUDA graphs need a GPU); the ``compile`` mode is
checked with dynamo's ``eager`` backend (tracing and guards, no code generation), because inductor
needs about a minute per shape on two CPU cores.
"""

import numpy as np
import pytest
import torch

from ros_mm_perception.core.config import CLIP_FAST_PATHS
from ros_mm_perception.core.models.clip_model import load_clip
from ros_mm_perception.core.models.cuda_graphs import bucket_for, resolve_mode
from ros_mm_perception.core.models.fast_clip import (ONEDNN_FROM_BATCH, FastClipEncoder,
                                                     enable_fast_clip)
from ros_mm_perception.core.perception.labeler import ClipLabeler

CLIP_ATOL = 1e-5
LOGPROB_ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; two threads on two busy shared cores spin instead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    return load_clip(str(tiny_clip_dir), device="cpu", precision="fp32")


def test_modes_resolve_per_device():
    assert resolve_mode("auto", torch.device("cpu")) == "off"
    assert resolve_mode("auto", torch.device("cuda")) == "graph"
    assert resolve_mode("compile", torch.device("cpu")) == "compile"
    with pytest.raises(ValueError, match="unknown fast path"):
        resolve_mode("turbo", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown fast path"):   # freeze is CLIP's alone
        resolve_mode("freeze", torch.device("cpu"))
    assert resolve_mode("auto", torch.device("cpu"), choices=CLIP_FAST_PATHS,
                        cpu_auto="freeze") == "freeze"
    assert resolve_mode("auto", torch.device("cuda"), choices=CLIP_FAST_PATHS,
                        cpu_auto="freeze") == "graph"
    assert [bucket_for(n, (1, 2, 4)) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 4, None]


@pytest.mark.parametrize("mode, backend",
                         [("static", "inductor"), ("graph", "inductor"), ("compile", "eager"),
                          ("freeze", "inductor")])
def test_fast_clip_matches_open_clip(clip, mode, backend):
    encoder = FastClipEncoder(clip.model, clip.image_size, clip.device, clip.dtype, mode=mode,
                              buckets=(1, 2, 4), compile_backend=backend)
    pixels = torch.randn(7, 3, clip.image_size, clip.image_size,
                         generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = clip.model.encode_image(pixels)
    # exact bucket, padded bucket, split over buckets
    for batch in (pixels[:1], pixels[:3], pixels):
        out = encoder(batch)
        assert out.shape == (batch.shape[0], reference.shape[1])
        torch.testing.assert_close(out, reference[:batch.shape[0]], atol=CLIP_ATOL, rtol=0)
    assert encoder.captured_buckets == (1, 4)
    with pytest.raises(ValueError, match="pixels"):
        encoder(pixels[:, :, :8])


def test_labeler_routes_through_the_fast_encoder(tiny_clip_dir, rng):
    clip = load_clip(str(tiny_clip_dir), device="cpu", precision="fp32")
    labeler = ClipLabeler(clip, ["red mug", "person", "open door"])
    frames = [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(3)]
    plain = labeler.probabilities(frames)
    encoder = enable_fast_clip(clip, "static", warm_up=[3])
    assert clip.fast_encoder is encoder and encoder.captured_buckets == (4,)
    np.testing.assert_allclose(labeler.probabilities(frames), plain, atol=CLIP_ATOL)
    assert clip.fast_encoder is encoder
    # auto on CPU is freeze
    assert enable_fast_clip(clip, "auto").mode == "freeze"
    assert enable_fast_clip(clip, "off") is None and clip.fast_encoder is None


def test_frozen_convolutional_encoder_matches_open_clip():
    """The embedded model is a ResNet: its large buckets also take oneDNN's rewrite, small ones do
    not."""
    clip = load_clip("", device="cpu", precision="fp32")
    encoder = FastClipEncoder(clip.model, clip.image_size, clip.device, clip.dtype, mode="freeze",
                              buckets=(2, ONEDNN_FROM_BATCH))
    pixels = torch.randn(ONEDNN_FROM_BATCH, 3, clip.image_size, clip.image_size,
                         generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = clip.model.encode_image(pixels)
    for batch in (pixels[:2], pixels):
        out = encoder(batch)
        # Folded batch norms and oneDNN's kernels reorder the sums: equal to float rounding, not
        # bit for bit.
        torch.testing.assert_close(out, reference[:batch.shape[0]], atol=1e-4, rtol=1e-4)
    assert encoder.captured_buckets == (2, ONEDNN_FROM_BATCH)


def test_failing_fast_clip_falls_back_to_open_clip(tiny_clip_dir, rng):
    clip = load_clip(str(tiny_clip_dir), device="cpu", precision="fp32")
    labeler = ClipLabeler(clip, ["red mug", "person"])
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    plain = labeler.probabilities([frame])
    encoder = enable_fast_clip(clip, "graph")

    def broken():
        raise RuntimeError("capture failed")

    encoder._call = lambda bucket: (torch.zeros(bucket, 3, clip.image_size, clip.image_size),
                                    broken)
    np.testing.assert_allclose(labeler.probabilities([frame]), plain, atol=CLIP_ATOL)
    assert clip.fast_encoder is None


# ---- PaliGemma
# -----------------------------------------------------------------------------------

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def engine(tiny_paligemma_dir):
    from ros_mm_perception.core.models.paligemma import load_paligemma

    return load_paligemma(str(tiny_paligemma_dir), device="cpu", precision="fp32",
                          max_new_tokens=NEW_TOKENS, fast_path="off")


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (40 + 8 * i, 64, 3), dtype=np.uint8) for i in range(3)]


def reference(engine, images, prompts):
    """transformers' greedy ``generate`` on the processor's batch: generated ids and their
    log-probabilities."""
    from ros_mm_perception.core.imaging.preprocess import upload

    inputs = engine.processor(images=[upload(i, engine.device) for i in images],
                              text=["<image>" + p for p in prompts], return_tensors="pt",
                              padding="longest")
    with torch.inference_mode():
        out = engine.model.generate(
            **{
                k: inputs[k]
                for k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
            },
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True
        )
    ids = out.sequences[:, inputs["input_ids"].shape[1]:]
    logprobs = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], 1).gather(
        2, ids[..., None]
    )
    return ids, logprobs[..., 0]


def assert_same_generation(engine, fast, images, prompts):
    ids, logprobs = reference(engine, images, prompts)
    fast_ids, fast_logprobs = fast.generate(images, prompts, NEW_TOKENS)
    # generate may stop one step earlier or later only when every row already finished (pad after
    # that).
    width = min(ids.shape[1], fast_ids.shape[1])
    assert fast_ids[:, :width].tolist() == ids[:, :width].tolist()
    torch.testing.assert_close(fast_logprobs[:, :width], logprobs[:, :width], atol=LOGPROB_ATOL,
                               rtol=0)
    assert (ids[:, width:] == engine.processor.tokenizer.pad_token_id).all()


QUESTIONS = ["answer en what color is the mug?", "caption en",
             "answer en is the door on the left open or closed?"]


def test_fast_generation_matches_generate(engine, frames):
    from ros_mm_perception.core.models.fast_generate import FastGenerator

    fast = FastGenerator(engine.model, engine.processor, engine.device, engine.dtype,
                         mode="static", batch_buckets=(1, 2, 4), text_buckets=(16, 32))
    assert_same_generation(engine, fast, frames[:1], QUESTIONS[:1])
    # one image, prompts of three lengths
    assert_same_generation(engine, fast, [frames[0]] * 3, QUESTIONS)
    assert_same_generation(engine, fast, frames, ["detect person ; cup", "ocr", QUESTIONS[2]])
    # split over batches
    assert_same_generation(engine, fast, frames + frames[:2], QUESTIONS + QUESTIONS[:2])
    assert fast.supports(QUESTIONS, NEW_TOKENS)
    # over the text buckets
    assert not fast.supports(["answer en " + "is it red or blue " * 10], NEW_TOKENS)


def test_fast_pixels_equal_the_processor_bit_for_bit(engine):
    """On the CPU the fast path resizes frames itself (channels-last) and lets the processor
    normalise."""
    from ros_mm_perception.core.imaging.preprocess import upload
    from ros_mm_perception.core.models.fast_generate import FastGenerator

    fast = FastGenerator(engine.model, engine.processor, engine.device, engine.dtype,
                         mode="static")
    assert fast._resize_size == (engine.processor.image_processor.size.height,) * 2
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8)
              for shape in ((480, 640, 3), (37, 53, 3), (16, 16, 3))]
    expected = engine.processor.image_processor(images=[upload(i, engine.device) for i in images],
                                                return_tensors="pt")["pixel_values"]
    assert torch.equal(fast._pixels(images), expected.to(engine.dtype))


def test_finished_rows_continue_with_pad_like_generate(engine, frames):
    from ros_mm_perception.core.models.fast_generate import FastGenerator

    ids, _ = reference(engine, frames[:2], QUESTIONS[:2])
    config = engine.model.generation_config
    saved = config.eos_token_id
    config.eos_token_id = [saved, int(ids[0, 2]), int(ids[1, 4])]   # make both rows finish early
    try:
        fast = FastGenerator(engine.model, engine.processor, engine.device, engine.dtype,
                             mode="static")
        assert_same_generation(engine, fast, frames[:2], QUESTIONS[:2])
        fast_ids, _ = fast.generate(frames[:2], QUESTIONS[:2], NEW_TOKENS)
        assert fast_ids.shape[1] < NEW_TOKENS
    finally:
        config.eos_token_id = saved


def test_compiled_generation_matches_generate(engine, frames):
    from ros_mm_perception.core.models.fast_generate import FastGenerator

    fast = FastGenerator(engine.model, engine.processor, engine.device, engine.dtype,
                         mode="compile", compile_backend="eager", batch_buckets=(2,),
                         text_buckets=(32,))
    assert_same_generation(engine, fast, frames[:2], QUESTIONS[1:])


@pytest.fixture(scope="module")
def engine2(tmp_path_factory):
    """A tiny PaliGemma 2 (Gemma 2 text model: soft-capping, sliding-window layers, grouped KV
    heads)."""
    from ros_mm_perception.core.models import random_models
    from ros_mm_perception.core.models.paligemma import load_paligemma

    tiny = random_models.PALIGEMMA_SIZES["tiny"]
    text = dict(model_type="gemma2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                query_pre_attn_scalar=16, final_logit_softcapping=30.0,
                attn_logit_softcapping=50.0, sliding_window=4096, initializer_range=0.5,
                max_position_embeddings=512)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(random_models.PALIGEMMA_SIZES, "tiny2", {**tiny, "text": text})
        folder = random_models.build_random_paligemma(tmp_path_factory.mktemp("tiny_paligemma2"),
                                                      "tiny2")
    return load_paligemma(str(folder), device="cpu", precision="fp32", max_new_tokens=NEW_TOKENS,
                          fast_path="off")


def test_paligemma2_fast_generation_matches_generate(engine2, frames):
    from ros_mm_perception.core.models.fast_generate import FastGenerator

    fast = FastGenerator(engine2.model, engine2.processor, engine2.device, engine2.dtype,
                         mode="graph")
    assert_same_generation(engine2, fast, frames, QUESTIONS)
    assert_same_generation(engine2, fast, frames[:1] * 2, QUESTIONS[:2])


def test_engine_fast_path_gives_the_plain_answers(engine, frames):
    from transformers import LogitsProcessor

    prompts = ["caption en", "detect person ; cup ; door"]
    plain = engine.answer_batch(frames[:2], prompts)
    plain_detections = engine.detect_batch(frames[:2], ["person", "cup"])
    engine.fast_path = "static"
    try:
        engine.warm_up([1, 2])
        assert engine.fast_path == "static"
        assert engine.answer_batch(frames[:2], prompts) == plain
        fast_detections = engine.detect_batch(frames[:2], ["person", "cup"])
        assert [[(d.phrase, d.box) for d in f] for f in fast_detections] == \
            [[(d.phrase, d.box) for d in f] for f in plain_detections]
        np.testing.assert_allclose([d.score for f in fast_detections for d in f],
                                   [d.score for f in plain_detections for d in f],
                                   atol=LOGPROB_ATOL)

        class OnlyToken(LogitsProcessor):          # the fast path cannot run these: generate must
            def __call__(self, input_ids, scores):
                forced = torch.full_like(scores, -float("inf"))
                forced[:, 5] = 0.0
                return forced

        engine.logits_processors = [OnlyToken()]
        only = engine.processor.tokenizer.decode([5] * NEW_TOKENS, skip_special_tokens=True)
        assert engine.answer_batch(frames[:1], prompts[:1]) == [only.strip()]
        engine.logits_processors = []
        assert engine.fast_path == "static"       # it was used, not abandoned

        def broken(*args):
            raise RuntimeError("capture failed")

        # a failing fast path falls back to generate for good
        engine._fast.generate = broken
        assert engine.answer_batch(frames[:2], prompts) == plain
        assert engine.fast_path == "off"
    finally:
        engine.logits_processors = []
        engine.fast_path = "off"
    assert engine.fast_path == "off"
