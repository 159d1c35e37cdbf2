"""PaliGemma engine end to end on a tiny random model saved with save_pretrained and loaded for
real."""

import json
import logging

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, PaliGemmaConfig, PaliGemmaForConditionalGeneration

from ros_mm_perception import cli
from ros_mm_perception.core.config import ConfigError
from ros_mm_perception.core.errors import ImageFormatError, ModelNotFoundError
from ros_mm_perception.core.imaging.image_io import write_rgb
from ros_mm_perception.core.models.paligemma import (
    MAX_PROMPT_CHARS,
    PaliGemmaEngine,
    PaliGemmaSegment,
    PromptError,
    load_paligemma,
)
from ros_mm_perception.core.models.paligemma_parser import LOC_GRID
from ros_mm_perception.core.models.random_models import (build_random_mask_decoder,
                                                         build_random_paligemma)

SHORT = 6  # generation budget for tests that only compare answers


@pytest.fixture(scope="module")
def engine(tiny_paligemma_dir):
    eng = load_paligemma(str(tiny_paligemma_dir), device="cpu")
    eng.max_new_tokens = SHORT
    yield eng
    eng.logits_processors.clear()


@pytest.fixture
def frames():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8)
            for shape in ((40, 100, 3), (64, 48, 3), (30, 30, 3))]


class ForceTokens(LogitsProcessor):
    """Make generation emit ``rows[b]`` then end-of-sequence, row ``b`` for batch entry ``b``."""

    def __init__(self, rows, eos_id):
        self.rows = [list(r) + [eos_id] for r in rows]
        self.step = 0

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, float("-inf"))
        for b in range(scores.shape[0]):
            row = self.rows[b % len(self.rows)]
            forced[b, row[min(self.step, len(row) - 1)]] = 0.0
        self.step += 1
        return forced


def ids(engine, text):
    return engine.processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def loc(*values):
    return "".join(f"<loc{v:04d}>" for v in values)


def force(engine, *texts):
    forcer = ForceTokens([ids(engine, t) for t in texts], engine.processor.tokenizer.eos_token_id)
    engine.logits_processors[:] = [forcer]
    return forcer


@pytest.fixture(autouse=True)
def _no_forcing(request):
    yield
    if "engine" in request.fixturenames:
        request.getfixturevalue("engine").logits_processors.clear()


def reference_answer(engine, image, prompt, max_new_tokens=SHORT):
    """The same request through transformers' own processor and generate, without the engine."""
    inputs = engine.processor(images=[image], text=[prompt], return_tensors="pt")
    inputs.pop("labels")
    out = engine.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    return engine.processor.decode(new, skip_special_tokens=True).strip()


# ---- loading
# --------------------------------------------------------------------------------------

def test_loads_through_the_real_loader_on_cpu_in_fp32(engine):
    assert isinstance(engine.model, PaliGemmaForConditionalGeneration)
    assert engine.device.type == "cpu" and engine.dtype == torch.float32
    assert next(engine.model.parameters()).dtype == torch.float32
    assert engine.language == "en" and not engine.has_mask_decoder


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_paligemma(str(tmp_path / "nowhere" / "model"), device="cpu")
    with pytest.raises(ModelNotFoundError, match="not a complete PaliGemma model folder"):
        load_paligemma(str(tmp_path), device="cpu")
    with pytest.raises(ModelNotFoundError, match="no PaliGemma model given"):
        load_paligemma("", device="cpu")


def test_uncached_hub_model_says_what_to_download(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    repo = "ros-mm-perception-test/no-such-paligemma"
    with pytest.raises(ModelNotFoundError) as err:
        load_paligemma(repo, device="cpu")
    assert f"hf download {repo}" in str(err.value) and "licence" in str(err.value)


def test_real_size_folders_hold_the_3b_architectures_without_weights(tmp_path):
    for size, text_type, hidden, layers in (("paligemma-3b-224", "gemma", 2048, 18),
                                            ("paligemma2-3b-224", "gemma2", 2304, 26)):
        folder = build_random_paligemma(tmp_path / size, size)
        config = PaliGemmaConfig.from_pretrained(folder)
        assert config.text_config.model_type == text_type
        assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (hidden,
                                                                                          layers)
        assert (config.vision_config.num_hidden_layers,
                config.text_config.num_image_tokens) == (27, 256)
        assert not list(folder.glob("*.safetensors"))
        with pytest.raises(ModelNotFoundError, match="not a complete"):
            load_paligemma(str(folder), device="cpu")


def test_random_weights_build_the_folders_architecture_without_reading_weights(tiny_paligemma_dir,
                                                                               engine):
    eng = load_paligemma(str(tiny_paligemma_dir), device="cpu", random_weights=True)
    saved, built = engine.model.state_dict(), eng.model.state_dict()
    assert {k: v.shape for k, v in built.items()} == {k: v.shape for k, v in saved.items()}
    assert not torch.equal(built["lm_head.weight"], saved["lm_head.weight"])
    eng.close()


def test_paligemma2_batches_and_maps_boxes(tmp_path, frames):
    eng = load_paligemma(str(build_random_paligemma(tmp_path / "pg2", "tiny-paligemma2")),
                         device="cpu")
    assert eng.model.config.text_config.model_type == "gemma2"
    # the prefix (16 image tokens + prompt) is longer than its sliding window of 8
    eng.max_new_tokens = SHORT
    questions = ["what color is the mug?", "how many people are there in the room?"]
    assert eng.ask_many(frames[0], questions) == [eng.answer(frames[0], q) for q in questions]
    force(eng, loc(100, 200, 300, 400) + " cup")
    (found,) = eng.detect(frames[1], ["cup"])
    h, w = frames[1].shape[:2]
    assert found.box == pytest.approx((200 / LOC_GRID * w, 100 / LOC_GRID * h, 400 / LOC_GRID * w,
                                       300 / LOC_GRID * h))
    eng.close()


# ---- text tasks
# -----------------------------------------------------------------------------------

@pytest.mark.parametrize("language", ["en", "es"])
def test_text_tasks_match_transformers_own_pipeline(engine, frames, language, monkeypatch):
    monkeypatch.setattr(engine, "language", language)
    image = frames[0]
    assert engine.answer(image, "  what color is\nthe mug? ") == \
        reference_answer(engine, image, f"<image>answer {language} what color is the mug?")
    assert engine.caption(image) == reference_answer(engine, image, f"<image>caption {language}")
    assert engine.ocr(image) == reference_answer(engine, image, "<image>ocr")


def test_questions_and_frames_batch_in_request_order(engine, frames):
    questions = ["what color is the mug?", "where is the door?", "how many people are there?"]
    assert engine.ask_many(frames[0],
                           questions) == [engine.answer(frames[0], q) for q in questions]
    prompts = ["caption en", "answer en where is the cat?", "ocr"]
    singles = [engine.answer_batch([f], [p])[0] for f, p in zip(frames, prompts)]
    assert engine.answer_batch(frames, prompts) == singles
    assert len(set(singles)) > 1  # the tiny model's answers depend on their inputs
    assert engine.ask_many(frames[0], []) == []


# ---- detection
# ------------------------------------------------------------------------------------

def test_detect_maps_boxes_to_a_non_square_frame(engine, frames, monkeypatch):
    image = frames[0]  # 100 wide, 40 high: stretched to the model's square input
    height, width = image.shape[:2]
    force(engine, loc(256, 512, 768, 1000) + " red mug ; " + loc(100, 50, 900, 300) + " person")
    monkeypatch.setattr(engine, "max_new_tokens", 20)
    found = engine.detect(image, ["Red Mug", "person", "door"])
    assert [d.phrase for d in found] == ["Red Mug", "person"]
    assert found[0].box == pytest.approx((512 / LOC_GRID * width, 256 / LOC_GRID * height,
                                          1000 / LOC_GRID * width, 768 / LOC_GRID * height))
    assert found[1].box == pytest.approx((50 / LOC_GRID * width, 100 / LOC_GRID * height,
                                          300 / LOC_GRID * width, 900 / LOC_GRID * height))
    assert all(d.source == "paligemma" and 0.0 < d.score <= 1.0 for d in found)


def test_detections_with_other_labels_are_dropped(engine, frames, monkeypatch):
    force(engine, loc(1, 2, 300, 400) + " cat ; " + loc(5, 6, 700, 800) + " dog")
    monkeypatch.setattr(engine, "max_new_tokens", 20)
    found = engine.detect(frames[1], ["dog", "chair"])
    assert [d.phrase for d in found] == ["dog"]


def test_score_is_the_geometric_mean_of_the_entry_token_probabilities(engine, frames, monkeypatch):
    image = frames[1]
    # The answer's pieces; the score of an entry uses its location and label tokens only.
    pieces = [loc(256, 512, 768, 1000), " red mug", " ;", " ", loc(10, 20, 30, 40), " person"]
    entry_pieces = [(0, 1), (4, 5)]
    piece_ids = [ids(engine, p) for p in pieces]
    forced = ids(engine, "".join(pieces))
    assert forced == [t for p in piece_ids for t in p]
    force(engine, "".join(pieces))
    monkeypatch.setattr(engine, "max_new_tokens", 20)
    found = engine.detect(image, ["red mug", "person"])
    # Independent check: one forward pass over prompt + forced answer, probabilities from raw
    # logits.
    prompt = engine.processor(images=[image], text=["<image>detect red mug ; person"],
                              return_tensors="pt")
    n_prompt = prompt["input_ids"].shape[1]
    full = torch.cat([prompt["input_ids"], torch.tensor([forced])], dim=1)
    # suffix is causal
    token_types = torch.cat([torch.zeros(1, n_prompt), torch.ones(1, len(forced))], 1).long()
    with torch.inference_mode():
        logits = engine.model(input_ids=full, pixel_values=prompt["pixel_values"],
                              attention_mask=torch.ones_like(full),
                              token_type_ids=token_types).logits[0]
    logprobs = torch.log_softmax(logits.float(), -1)
    token_lp = [logprobs[n_prompt + i - 1, t].item() for i, t in enumerate(forced)]
    starts = np.cumsum([0] + [len(p) for p in piece_ids])
    want = [np.exp(np.mean([token_lp[i] for k in entry for i in range(starts[k], starts[k + 1])]))
            for entry in entry_pieces]
    assert [d.score for d in found] == pytest.approx(want, rel=1e-4)


def test_detect_batch_keeps_frame_order_and_each_frames_size(engine, frames, monkeypatch):
    answers = [loc(100, 200, 300, 400) + " cup", loc(512, 0, 1023, 512) + " cup", "nothing here"]
    force(engine, *answers)
    monkeypatch.setattr(engine, "max_new_tokens", 12)
    per_frame = engine.detect_batch(frames, ["cup"])
    assert [len(dets) for dets in per_frame] == [1, 1, 0]
    for dets, image, (y0, x0, y1, x1) in zip(per_frame[:2], frames,
                                             [(100, 200, 300, 400), (512, 0, 1023, 512)]):
        h, w = image.shape[:2]
        want = (x0 / LOC_GRID * w, y0 / LOC_GRID * h, x1 / LOC_GRID * w, y1 / LOC_GRID * h)
        assert dets[0].box == pytest.approx(want)


# ---- segmentation
# ---------------------------------------------------------------------------------

def segment_answer(codes):
    return loc(256, 100, 768, 900) + "".join(f"<seg{c:03d}>" for c in codes) + " cat"


def test_segment_without_decoder_gives_box_and_codes_and_says_there_is_no_mask(
    engine, frames, caplog, monkeypatch
):
    codes = list(range(0, 128, 8))
    force(engine, segment_answer(codes))
    monkeypatch.setattr(engine, "max_new_tokens", 24)
    with caplog.at_level(logging.WARNING):
        (found,) = engine.segment(frames[0], "cat")
    assert isinstance(found, PaliGemmaSegment)
    assert found.seg_codes == tuple(codes) and found.mask is None and found.phrase == "cat"
    assert "no mask decoder" in caplog.text


def test_segment_with_decoder_gives_a_mask_in_image_pixels(tiny_paligemma_dir, frames, tmp_path):
    eng = load_paligemma(str(tiny_paligemma_dir), device="cpu",
                         mask_decoder=str(build_random_mask_decoder(tmp_path / "vae-oid.npz")))
    eng.max_new_tokens = 24
    force(eng, segment_answer([5] * 8 + [100] * 8))
    image = frames[0]
    (found,) = eng.segment(image, "cat")
    eng.close()
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (round(v) for v in found.box)
    assert found.mask.shape == (h, w) and found.mask.dtype == bool
    inside = found.mask[y0:y1, x0:x1]
    assert 0 < inside.sum() < inside.size  # the random decoder's mask is partly on
    assert found.mask.sum() == inside.sum()  # nothing outside the box


# ---- input checks and lifetime
# --------------------------------------------------------------------

class _Untouchable:
    def generate(self, *args, **kwargs):
        raise AssertionError("the model must not run for rejected input")


@pytest.fixture
def guarded(engine):
    return PaliGemmaEngine(_Untouchable(), engine.processor, name="guarded", device=engine.device,
                           dtype=engine.dtype)


@pytest.mark.parametrize("call, error", [
    (lambda e, f: e.answer(f, ""), PromptError),
    (lambda e, f: e.answer(f, "   \n "), PromptError),
    (lambda e, f: e.answer(f, "x" * (MAX_PROMPT_CHARS + 1)), PromptError),
    (lambda e, f: e.answer(f, "what is <image> here?"), PromptError),
    (lambda e, f: e.ask_many(f, ["fine", ""]), PromptError),
    (lambda e, f: e.answer_batch([f, f], ["caption en"]), PromptError),
    (lambda e, f: e.answer_batch([f], [""]), PromptError),
    (lambda e, f: e.detect(f, []), ConfigError),
    (lambda e, f: e.detect(f, "red mug"), PromptError),
    (lambda e, f: e.detect(f, ["a ; b"]), PromptError),
    (lambda e, f: e.detect(f, ["mug", "mug"]), ConfigError),
    (lambda e, f: e.detect(f, [f"thing {i} " + "x" * 150 for i in range(8)]), PromptError),
    (lambda e, f: e.segment(f, ""), ConfigError),
    (lambda e, f: e.segment(f, None), PromptError),
    (lambda e, f: e.answer(f.astype(np.float32), "what?"), ImageFormatError),
    (lambda e, f: e.detect_batch([f, f[..., 0]], ["cup"]), ImageFormatError),
])
def test_bad_requests_fail_clearly_before_the_model_runs(guarded, frames, call, error):
    with pytest.raises(error):
        call(guarded, frames[0])


def test_language_is_validated(engine):
    with pytest.raises(PromptError):
        engine.language = "english please"
    assert engine.language == "en"


def test_close_releases_the_model(tiny_paligemma_dir, frames):
    eng = load_paligemma(str(tiny_paligemma_dir), device="cpu")
    eng.close()
    assert eng.model is None
    with pytest.raises(RuntimeError, match="closed"):
        eng.caption(frames[0])


# ---- command line
# ---------------------------------------------------------------------------------

def test_ask_and_caption_commands(engine, tiny_paligemma_dir, frames, tmp_path, capsys):
    path = write_rgb(tmp_path / "frame.png", frames[0])
    common = ["--paligemma-model", str(tiny_paligemma_dir), "--device", "cpu", "--max-new-tokens",
              str(SHORT)]
    assert cli.main(["ask", str(path), "what color is the mug?", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "answer": engine.answer(frames[0], "what color is the mug?")
    }
    assert cli.main(["caption", str(path), "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out) == {"caption": engine.caption(frames[0])}
    assert cli.main(["caption", str(path), *common]) == 0
    assert capsys.readouterr().out.strip() == engine.caption(frames[0])


def test_commands_report_user_errors_in_one_line(tiny_paligemma_dir, frames, tmp_path, capsys):
    path = write_rgb(tmp_path / "frame.png", frames[0])
    assert cli.main(["caption", str(path), "--paligemma-model",
                     str(tmp_path / "missing" / "model")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["ask", str(path), " ", "--paligemma-model", str(tiny_paligemma_dir)]) == 2
    assert "question is empty" in capsys.readouterr().err
    assert cli.main(["ask", str(path), "why?", "--paligemma-model", str(tiny_paligemma_dir),
                     "--language", "e n"]) == 2
    assert "language" in capsys.readouterr().err
