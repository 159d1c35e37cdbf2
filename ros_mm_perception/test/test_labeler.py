"""ClipLabeler against a direct open_clip computation on the same tiny model."""

import cv2
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from ros_mm_perception.core.config import ConfigError
from ros_mm_perception.core.imaging.preprocess import (MIN_TILE_SIDE, TILE_STEP, label_windows,
                                                       tile_windows)
from ros_mm_perception.core.perception.labeler import BACKGROUND_PROMPT, ClipLabeler
from ros_mm_perception.core.perception.labeler import _pool_views as pool_views

PHRASES = ["red mug", "person", "open door"]
TEMPLATES = ("a photo of {}.", "a picture of a {}.")

# Antialiased bicubic resampling in torch and in PIL differ by at most one grey level (0.015 in
# normalised units) on camera-like (smooth) images; on pure noise, single pixels can differ by ~14
# grey levels while the mean stays below 0.01. Embeddings agree to within 1e-3 in cosine.
SMOOTH_MAX_TOL = 2 / 255 / 0.26
PIXEL_MEAN_TOL = 0.01
EMBEDDING_COS_TOL = 1e-3
PROB_TOL = 2e-3


@pytest.fixture(scope="module")
def reference(tiny_clip_dir):
    """The same tiny model, tokenizer and transform, built by open_clip itself."""
    model, _, transform = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip_dir}")
    model.eval()
    return model, open_clip.get_tokenizer(f"local-dir:{tiny_clip_dir}"), transform


def reference_probs(reference, images, phrases, templates):
    model, tokenizer, transform = reference
    with torch.no_grad():
        rows = []
        for phrase in phrases:
            emb = model.encode_text(tokenizer([t.format(phrase) for t in templates]))
            emb = emb / emb.norm(dim=-1, keepdim=True)
            emb = emb.mean(dim=0)
            rows.append(emb / emb.norm())
        text = torch.stack(rows)
        pixels = torch.stack([transform(Image.fromarray(im)) for im in images])
        img = model.encode_image(pixels)
        img = img / img.norm(dim=-1, keepdim=True)
        return (model.logit_scale.exp() * img @ text.T).softmax(dim=-1).numpy(), img


def smooth_image(rng, shape):
    """Camera-like content: low-resolution noise upsampled bilinearly."""
    small = rng.integers(0, 256, (max(1, shape[0] // 4), max(1, shape[1] // 4), 3), dtype=np.uint8)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("shape",
                         [(48, 64, 3), (64, 40, 3), (32, 32, 3), (120, 160, 3), (480, 640, 3)])
def test_preprocessing_matches_open_clip(tiny_clip, reference, rng, shape):
    for image, max_tol in ((smooth_image(rng, shape), SMOOTH_MAX_TOL),
                           (rng.integers(0, 256, shape, dtype=np.uint8), None)):
        ours = tiny_clip.preprocessor.frames([image])[0]
        theirs = reference[2](Image.fromarray(image))
        assert ours.shape == theirs.shape
        diff = (ours - theirs).abs()
        assert diff.mean().item() < PIXEL_MEAN_TOL
        if max_tol is not None:
            assert diff.max().item() < max_tol


@pytest.mark.parametrize("shape", [(48, 64, 3), (64, 40, 3), (20, 24, 3), (480, 640, 3)])
def test_cpu_resize_is_within_one_grey_level_of_pil(tiny_clip, reference, rng, shape):
    """On the CPU the resize runs on uint8 pixels with PIL's rounding: one grey level even on pure
    noise."""
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    ours = tiny_clip.preprocessor.frames([image])[0]
    theirs = reference[2](Image.fromarray(image))
    assert ((ours - theirs).abs() * tiny_clip.preprocessor.std * 255).max().item() < 1 + 1e-3


def test_labels_equal_direct_open_clip(tiny_clip, reference, rng):
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    labeler = ClipLabeler(tiny_clip, PHRASES, TEMPLATES, crop_mode="center", label_tiles=0)
    expected, ref_emb = reference_probs(reference, images, PHRASES, TEMPLATES)
    ours_emb = labeler.encode_image(tiny_clip.preprocessor.frames(images))
    cos = (ours_emb * ref_emb).sum(dim=-1)
    assert torch.all(cos > 1 - EMBEDDING_COS_TOL)
    probs = labeler.probabilities(images)
    np.testing.assert_allclose(probs, expected, atol=PROB_TOL)
    for row, labels in zip(expected, labeler.label_batch(images, top_k=3)):
        assert [lb.phrase for lb in labels] == [PHRASES[i] for i in np.argsort(-row)]
        assert sum(lb.score for lb in labels) == pytest.approx(1.0, abs=1e-5)


def test_single_frame_equals_batch(tiny_clip, rng):
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(2)]
    labeler = ClipLabeler(tiny_clip, PHRASES)
    batch = labeler.label_batch(images, top_k=2)
    for image, labels in zip(images, batch):
        single = labeler.label(image, top_k=2)
        assert [lb.phrase for lb in single] == [lb.phrase for lb in labels]
        assert [lb.score for lb in single] == pytest.approx([lb.score for lb in labels], abs=1e-5)


def test_text_cache_reused_and_invalidated(tiny_clip):
    labeler = ClipLabeler(tiny_clip, PHRASES)
    assert labeler.text_encodes == 3
    labeler.set_vocabulary(["person", "red mug", "open door"])   # same phrases, new order
    assert labeler.text_encodes == 3
    labeler.set_vocabulary(["person", "chair"])                   # one new phrase
    assert labeler.text_encodes == 4
    before = labeler.encode_text(["person"]).clone()
    # templates change → cache cleared
    labeler.set_templates(["a blurry photo of {}."])
    assert labeler.text_encodes == 6                               # vocabulary re-encoded at once
    assert not torch.allclose(before, labeler.encode_text(["person"]))
    labeler.set_templates(["a blurry photo of {}."])              # unchanged → nothing re-encoded
    assert labeler.text_encodes == 6


def test_region_scores_equal_cropped_frames(tiny_clip, rng):
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    boxes = [(0, 0, 40, 30), (10.4, 5.6, 70.2, 59.9), (79, 59, 80, 60)]
    labeler = ClipLabeler(tiny_clip, PHRASES, label_tiles=0)
    scores = labeler.score_regions(image, boxes)
    assert scores.shape == (3, 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    crops = [image[0:30, 0:40], image[5:60, 10:71], image[59:60, 79:80]]
    np.testing.assert_allclose(scores, labeler.probabilities(crops), atol=1e-5)
    assert labeler.score_regions(image, []).shape == (0, 3)


def test_bad_inputs(tiny_clip):
    labeler = ClipLabeler(tiny_clip)
    with pytest.raises(ValueError, match="no vocabulary"):
        labeler.label(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match="empty phrase"):
        labeler.set_vocabulary(["cup", " "])
    with pytest.raises(ConfigError, match="duplicates"):
        labeler.set_vocabulary(["cup", "cup"])
    with pytest.raises(ConfigError, match="must not be empty"):
        labeler.set_vocabulary([])
    with pytest.raises(ConfigError, match="at most"):
        labeler.set_vocabulary(["x" * 1000])
    labeler.set_vocabulary(["cup"])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        labeler.label(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        labeler.label(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        labeler.score_regions(np.zeros((8, 8, 3), np.uint8), [(0, 0, float("nan"), 4)])
    with pytest.raises(ValueError, match="'{}'"):
        labeler.set_templates(["no placeholder"])


@pytest.mark.parametrize("height,width",
                         [(240, 320), (480, 640), (360, 640), (640, 480), (100, 100), (33, 200)])
@pytest.mark.parametrize("rows", [1, 2, 3, 5])
def test_tiles_are_squares_inside_the_frame_that_hold_every_small_object_whole(height, width, rows,
                                                                               rng):
    windows = tile_windows(height, width, rows)
    if 2 * min(height, width) / (rows + 1) < MIN_TILE_SIDE or (rows == 1 and height == width):
        assert windows == []
        return
    side = windows[0][2] - windows[0][0]
    assert all(x1 - x0 == y1 - y0 == side and 0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height
               for x0, y0, x1, y1 in windows)
    assert len({y0 for _, y0, _, _ in windows}) == (rows if height <= width
                                                    else len(windows) // rows)
    assert (0, 0, width, height) not in windows
    # any box up to 40 % of a tile's side lies whole in one
    for _ in range(50):
        size = rng.uniform(1, (1 - TILE_STEP) * side)
        x, y = rng.uniform(0, width - size), rng.uniform(0, height - size)
        assert any(x0 <= x and y0 <= y and x + size <= x1 and y + size <= y1
                   for x0, y0, x1, y1 in windows)


def test_no_tiles_for_zero_rows_or_frames_too_small():
    assert tile_windows(480, 640, 0) == []
    assert tile_windows(20, 20, 3) == []             # tiles would be 10 px
    assert tile_windows(240, 240, 1) == []           # the one tile would be the frame itself
    assert len(tile_windows(240, 320, 3)) == 12      # 4 x 3 on a 4:3 frame


@pytest.mark.parametrize("height,width",
                         [(240, 320), (480, 640), (360, 640), (640, 480), (100, 100)])
def test_label_windows_add_full_height_squares_that_hold_large_objects_whole(height, width, rng):
    windows = label_windows(height, width, 3)
    tiles = tile_windows(height, width, 3)
    short = min(height, width)
    squares = [w for w in windows if w[2] - w[0] == short]
    assert squares == tile_windows(height, width, 1) and windows == squares + tiles
    assert len(squares) == (0 if height == width else 2 if max(height, width) < 1.6 * short else 3)
    assert (
        label_windows(height, width, 1) == tile_windows(height, width, 1)
        and label_windows(height, width, 0) == []
    )
    if height == width:
        return
    # objects larger than the tiles are sure to hold lie whole in a square
    for _ in range(50):
        size = rng.uniform((1 - TILE_STEP) * (tiles[0][2] - tiles[0][0]), (1 - TILE_STEP) * short)
        x, y = rng.uniform(0, width - size), rng.uniform(0, height - size)
        assert any(x0 <= x and y0 <= y and x + size <= x1 and y + size <= y1
                   for x0, y0, x1, y1 in squares)
    assert len(label_windows(240, 320, 3)) == 14     # 2 squares and 4 x 3 tiles on a 4:3 frame


def test_pooled_views_follow_the_view_that_is_sure():
    frame = torch.tensor([[0.0, 0.0, 0.0]])          # the whole frame: undecided
    tile = torch.tensor([[6.0, 0.0, 0.0]])           # one tile sees phrase 0 clearly
    background = torch.tensor([[0.0, 0.3, 0.0]])     # another sees nothing in particular
    pooled = pool_views(torch.cat([frame, tile, background, tile]), [3, 1])
    assert pooled.shape == (2, 3)
    torch.testing.assert_close(pooled.sum(dim=-1), torch.ones(2))
    assert pooled[0].argmax() == 0 and pooled[0, 0] > 0.9
    # one view: its softmax unchanged
    torch.testing.assert_close(pooled[1], tile[0].softmax(dim=-1))


def test_a_view_that_looks_like_background_counts_little_in_the_pool():
    frame = torch.tensor([[1.0, 0.0]])               # the frame leans to phrase 0
    # a tile of background, fairly sure of phrase 1 ...
    ground = torch.tensor([[0.0, 3.0]])
    logits = torch.cat([frame, ground])
    assert pool_views(logits, [2])[0].argmax() == 1  # ... which decides without the null prompt
    null = torch.tensor([[0.0], [6.0]])              # but it is far surer of "background"
    pooled = pool_views(logits, [2], null)
    assert pooled[0].argmax() == 0
    torch.testing.assert_close(pooled.sum(dim=-1), torch.ones(1))
    # one view: unchanged
    torch.testing.assert_close(pool_views(frame, [1], null[:1]), frame.softmax(dim=-1))


def test_tiled_labels_pool_the_frame_and_its_tile_crops(tiny_clip, rng):
    image = smooth_image(rng, (48, 64, 3))
    labeler = ClipLabeler(tiny_clip, PHRASES, label_tiles=2)
    views = [image] + [image[y0:y1, x0:x1] for x0, y0, x1, y1 in label_windows(48, 64, 2)]
    assert len(views) > 1
    alone = ClipLabeler(tiny_clip, PHRASES + [BACKGROUND_PROMPT], label_tiles=0)
    logits = torch.log(torch.from_numpy(alone.probabilities(views)))
    pooled = pool_views(logits[:, :-1], [len(views)], logits[:, -1:])[0].numpy()
    np.testing.assert_allclose(labeler.probabilities([image])[0], pooled, atol=1e-5)
    with pytest.raises(ValueError, match="label_tiles"):
        labeler.label_tiles = 9
