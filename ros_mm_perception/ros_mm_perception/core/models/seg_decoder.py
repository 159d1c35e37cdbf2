"""Masks from PaliGemma's 16 ``<segNNN>`` tokens: the published VQ-VAE mask decoder, in torch.

The decoder checkpoint is big_vision's ``vae-oid.npz`` (a PyTorch state dict saved with numpy): the
codebook ``_vq_vae._embedding`` (128 x D) and ``decoder.N.*`` layers of an ``nn.Sequential``:
a 1x1 conv, two residual blocks (3x3, 3x3, 1x1 convs), four stride-2 transposed convs and a final
1x1 conv. The 16 codes form a 4x4 grid (row-major) of codebook vectors that the decoder upsamples
to a 64x64 mask with values in about [-1, 1]; a pixel belongs to the object where the value is > 0.
The 64x64 mask covers the entry's box and is resized to the box in original-image pixels.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ros_mm_perception.core.errors import ModelNotFoundError, UserError
from ros_mm_perception.core.models.paligemma_parser import SEG_TOKENS

CODEBOOK_KEY = "_vq_vae._embedding"
DOWNLOAD_HINT = ("download big_vision's PaliGemma mask decoder, e.g. `wget "
                 "https://storage.googleapis.com/big_vision/paligemma/vae-oid.npz` "
                 "(or `gsutil cp gs://big_vision/paligemma/vae-oid.npz .`), and pass its path")


class _ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class MaskDecoder(nn.Module):
    """Codebook indices ``B x 16`` → mask logits ``B x 64 x 64`` (the layout of
    ``vae-oid.npz``)."""

    def __init__(self, codebook_size: int, embedding_dim: int, widths: Sequence[int]):
        super().__init__()
        w0 = widths[0]
        self.register_buffer("codebook", torch.zeros(codebook_size, embedding_dim))
        layers = [nn.Conv2d(embedding_dim, w0, 1), nn.ReLU(), _ResBlock(w0), _ResBlock(w0)]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(widths[-1], 1, 1))
        self.decoder = nn.Sequential(*layers)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.ndim != 2 or codes.shape[1] != SEG_TOKENS:
            raise ValueError(f"expected B x {SEG_TOKENS} codebook indices, got shape "
                             f"{tuple(codes.shape)}")
        side = int(SEG_TOKENS ** 0.5)
        x = self.codebook[codes].view(codes.shape[0], side, side, -1).permute(0, 3, 1, 2)
        return self.decoder(x)[:, 0]


def _architecture(params: Dict[str, np.ndarray]):
    """Codebook size, embedding dim and layer widths read from the checkpoint's shapes."""
    codebook_size, dim = params[CODEBOOK_KEY].shape
    widths = [params["decoder.0.weight"].shape[0]]
    index = 4
    while f"decoder.{index}.weight" in params and params[f"decoder.{index}.weight"].shape[-1] == 4:
        # ConvTranspose2d: in x out x 4 x 4
        widths.append(params[f"decoder.{index}.weight"].shape[1])
        index += 2
    return codebook_size, dim, widths


def load_mask_decoder(path, device="cpu") -> MaskDecoder:
    """Load ``vae-oid.npz`` (or a file with its layout) onto ``device`` in fp32."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"mask decoder checkpoint {str(path)!r} does not exist; "
                                 f"{DOWNLOAD_HINT}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            params = {k: npz[k] for k in npz.files}
        decoder = MaskDecoder(*_architecture(params))
        state = {
            ("codebook" if k == CODEBOOK_KEY else k): torch.from_numpy(
                np.asarray(v, dtype=np.float32)
            )
            for k, v in params.items()
        }
        decoder.load_state_dict(state, strict=True)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, IndexError,
            RuntimeError) as err:
        raise UserError(
            f"{path} is not a PaliGemma mask decoder checkpoint (like vae-oid.npz): "
            f"{str(err).splitlines()[0][:300] if str(err) else type(err).__name__}"
        ) from err
    return decoder.to(device).eval().requires_grad_(False)


def masks_in_boxes(mask_logits: torch.Tensor, boxes, height: int, width: int) -> np.ndarray:
    """Paste each ``64 x 64`` mask into its box: ``N x height x width`` bool in original-image
    pixels.

    Each mask is resized (bilinear) to its box rounded to whole pixels and thresholded at 0; pixels
    outside the box are False.
    """
    out = np.zeros((len(boxes), height, width), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        ix0, iy0 = int(np.clip(round(x0), 0, width)), int(np.clip(round(y0), 0, height))
        ix1, iy1 = int(np.clip(round(x1), 0, width)), int(np.clip(round(y1), 0, height))
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        resized = F.interpolate(mask_logits[i][None, None].float(), size=(iy1 - iy0, ix1 - ix0),
                                mode="bilinear", align_corners=False, antialias=True)[0, 0]
        out[i, iy0:iy1, ix0:ix1] = (resized > 0).cpu().numpy()
    return out
