"""The ``<seg>`` mask decoder: checkpoint layout, agreement with the published (Flax) definition,
pasting."""

from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from ros_mm_perception.core.errors import ModelNotFoundError, UserError
from ros_mm_perception.core.models.random_models import build_random_mask_decoder
from ros_mm_perception.core.models.seg_decoder import load_mask_decoder, masks_in_boxes


@pytest.fixture(scope="module")
def vae_path(tmp_path_factory):
    return build_random_mask_decoder(tmp_path_factory.mktemp("vae") / "vae-oid.npz")


# ---- an independent numpy version of big_vision's Flax decoder (NHWC, Flax kernel layouts) -----

def _correlate(x, kernel_hwio, bias, pad):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel_hwio.shape[:2]
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))  # B, H, W, C, kh, kw
    return np.einsum("bhwcij,ijco->bhwo", windows, kernel_hwio) + bias


def _conv_transpose(x, kernel, bias, stride=2, pad=2):
    """``lax.conv_transpose(..., padding=((2, 2), (2, 2)), transpose_kernel=True)`` with a Flax
    kernel."""
    b, h, w, c = x.shape
    dilated = np.zeros((b, (h - 1) * stride + 1, (w - 1) * stride + 1, c), x.dtype)
    dilated[:, ::stride, ::stride] = x
    flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)  # flip space, swap in/out channels
    return _correlate(dilated, flipped, bias, pad)


def _reference_masks(params, codes):
    def conv(name, x, pad):
        kernel = np.transpose(params[name + ".weight"], (2, 3, 1, 0))  # big_vision's _get_params
        return _correlate(x, kernel, params[name + ".bias"], pad)

    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    emb = params["_vq_vae._embedding"]
    x = emb[codes.reshape(-1)].reshape(codes.shape[0], 4, 4, emb.shape[1])
    x = relu(conv("decoder.0", x, 0))
    for block in ("decoder.2.net", "decoder.3.net"):
        y = relu(conv(block + ".0", x, 1))
        y = relu(conv(block + ".2", y, 1))
        x = x + conv(block + ".4", y, 0)
    for name in ("decoder.4", "decoder.6", "decoder.8", "decoder.10"):
        kernel = np.transpose(params[name + ".weight"], (2, 3, 1, 0))
        x = relu(_conv_transpose(x, kernel, params[name + ".bias"]))
    return conv("decoder.12", x, 0)[..., 0]


def test_decoder_matches_the_published_definition(vae_path):
    params = dict(np.load(vae_path))
    codes = np.random.default_rng(1).integers(0, 128, size=(3, 16))
    decoder = load_mask_decoder(vae_path)
    with torch.inference_mode():
        got = decoder(torch.from_numpy(codes)).numpy()
    want = _reference_masks({k: v.astype(np.float64) for k, v in params.items()}, codes)
    assert got.shape == (3, 64, 64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_decoder_needs_sixteen_codes(vae_path):
    with pytest.raises(ValueError, match="16"):
        load_mask_decoder(vae_path)(torch.zeros(1, 15, dtype=torch.long))


def test_missing_checkpoint_says_what_to_download(tmp_path):
    with pytest.raises(ModelNotFoundError, match="vae-oid.npz"):
        load_mask_decoder(tmp_path / "nothing.npz")


def test_wrong_checkpoint_is_a_clear_error(tmp_path, vae_path):
    params = dict(np.load(vae_path))
    del params["decoder.6.bias"]
    np.savez(tmp_path / "broken.npz", **params)
    with pytest.raises(UserError, match="not a PaliGemma mask decoder"):
        load_mask_decoder(tmp_path / "broken.npz")
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(UserError, match="not a PaliGemma mask decoder"):
        load_mask_decoder(tmp_path / "text.npz")
    (tmp_path / "cut.npz").write_bytes(Path(vae_path).read_bytes()[:100])   # a cut-off download
    with pytest.raises(UserError, match="not a PaliGemma mask decoder"):
        load_mask_decoder(tmp_path / "cut.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(UserError, match="not a PaliGemma mask decoder"):
        load_mask_decoder(tmp_path / "empty.npz")


def test_masks_are_pasted_into_their_boxes():
    logits = -torch.ones(2, 64, 64)
    logits[0, :, :32] = 1.0  # left half of the first mask is inside
    logits[1] = 1.0
    masks = masks_in_boxes(logits, [(10.2, 4.0, 30.0, 20.4), (0.0, 0.0, 5.0, 5.0)], height=24,
                           width=40)
    assert masks.shape == (2, 24, 40) and masks.dtype == bool
    expected = np.zeros((24, 40), bool)
    expected[4:20, 10:20] = True  # box x 10..30, y 4..20; left half x 10..20
    np.testing.assert_array_equal(masks[0], expected)
    assert masks[1, :5, :5].all() and masks[1].sum() == 25
