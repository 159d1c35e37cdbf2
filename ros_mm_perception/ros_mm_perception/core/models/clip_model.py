"""Loading CLIP-family models through open_clip.

Three ways to name a model:

* ``load_clip("")`` – the embedded default model shipped in the package (see :mod:`.embedded`);
* ``load_clip("ViT-B-16", "laion2b_s34b_b88k")`` – an open_clip name + pretrained tag, taken from
  the hub cache (honours ``HF_HUB_OFFLINE``); a local checkpoint file may replace the tag;
* ``load_clip("/path/to/dir")`` or ``load_clip("local-dir:/path")`` – a folder written by
  :func:`save_clip` (``open_clip_config.json`` + weights), the format open_clip itself reads.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ros_mm_perception.core.devices import INT8, dtype_of, resolve_device, resolve_precision
from ros_mm_perception.core.errors import ModelNotFoundError, UserError
from ros_mm_perception.core.imaging.preprocess import ClipPreprocessor
from ros_mm_perception.core.models.int8 import quantize_linear_layers

log = logging.getLogger(__name__)

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@dataclass
class ClipModel:
    """A loaded open_clip model with its tokenizer and device-side preprocessing."""

    model: Any
    tokenizer: Any
    preprocessor: ClipPreprocessor
    name: str
    device: torch.device
    dtype: torch.dtype
    fast_encoder: Optional[Any] = None
    """A :class:`~ros_mm_perception.core.models.fast_clip.FastClipEncoder` set by
    ``enable_fast_clip``, or ``None``."""
    precision: str = "fp32"
    """The resolved precision: fp32, fp16, bf16 or int8 (the image tower's linear layers in
    int8)."""

    @property
    def image_size(self) -> int:
        return self.preprocessor.size

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image embeddings (not normalised) of a preprocessed batch, through the fast encoder when
        enabled."""
        if self.fast_encoder is not None:
            try:
                return self.fast_encoder(pixels)
            # a failed capture or compile must not stop the robot: fall back for good
            except Exception:
                log.exception("CLIP fast path %r failed; using open_clip's encoder from now on",
                              self.fast_encoder.mode)
                self.fast_encoder = None
        return self.model.encode_image(pixels)


def _missing_weights_error(name: str, pretrained: str, err: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"CLIP weights for model {name!r} pretrained {pretrained!r} are not in the local cache "
        f"and could not be downloaded ({type(err).__name__}: "
        f"{str(err).splitlines()[0][:200] if str(err) else ''}). Download them on a machine with "
        "network access (e.g. `python -c \"import open_clip; "
        f"open_clip.create_model_and_transforms('{name}', pretrained='{pretrained}')\"` fills "
        "the Hugging Face cache, which you can copy to ~/.cache/huggingface), or pass a local "
        "checkpoint path as pretrained, or a model folder as the model; leave the model empty "
        "to use the embedded default."
    )


def _resolve_source(name: str, pretrained: str):
    """Map the user's (name, pretrained) to open_clip's (model id, pretrained argument), checking
    both."""
    import open_clip

    if name.startswith("local-dir:"):
        name = name[len("local-dir:"):]
    local_dir = Path(name).expanduser()
    if local_dir.is_dir():
        if not (local_dir / CONFIG_NAME).is_file():
            raise ModelNotFoundError(f"{local_dir} has no {CONFIG_NAME}; it is not an open_clip "
                                     "model folder")
        return f"local-dir:{local_dir.resolve()}", None
    if os.sep in name or name.endswith(_CHECKPOINT_SUFFIXES):
        raise ModelNotFoundError(f"CLIP model path {name!r} does not exist")
    if name not in open_clip.list_models():
        raise UserError(f"unknown open_clip model {name!r}; see open_clip.list_models() for names")
    tags = open_clip.list_pretrained_tags_by_model(name)
    checkpoint = Path(pretrained).expanduser()
    if checkpoint.is_file():
        return name, str(checkpoint)
    if os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
        raise ModelNotFoundError(f"CLIP checkpoint {pretrained!r} does not exist")
    if pretrained not in tags:
        what = (
            f"unknown pretrained tag {pretrained!r}"
            if pretrained
            else "no pretrained weights given"
        )
        raise UserError(f"{what} for open_clip model {name!r}: pass a tag "
                        f"({', '.join(tags) or 'none known'}) or a local checkpoint path")
    return name, pretrained


def open_clip_config(model_id: str) -> Dict[str, Any]:
    """The open_clip model config of ``model_id`` (empty when it has none)."""
    import open_clip

    if model_id.startswith("local-dir:"):
        folder = Path(model_id[len("local-dir:"):])
        return json.loads((folder / CONFIG_NAME).read_text()).get("model_cfg", {})
    return open_clip.get_model_config(model_id) or {}


def transformer_width(config: Dict[str, Any]) -> Optional[int]:
    """The width of open_clip's own vision transformer in ``config`` (``None``: ResNet, timm)."""
    vision = config.get("vision_cfg", {})
    width = vision.get("width")
    return width if isinstance(width, int) and "timm_model_name" not in vision and isinstance(
        vision.get("layers", 12), int) else None


def merge_branches(model) -> None:
    """Merge the train-time branches of a reparameterizable image tower into single convolutions.

    MobileCLIP's FastViT/MobileOne blocks train with parallel branches that their authors merge for
    inference (timm's ``reparameterize_model``): the same outputs, 1.4x faster measured on one CPU
    thread for MobileCLIP-S1. Towers without such blocks are left as they are.
    """
    if any(hasattr(m, "reparameterize") for m in model.visual.modules()):
        from timm.utils.model import reparameterize_model

        reparameterize_model(model.visual, inplace=True)


def load_clip(name: str = "", pretrained: str = "", device: str = "auto",
              precision: str = "auto") -> ClipModel:
    """Load an open_clip model (see the module docstring for how to name one).

    ``precision`` auto means fp16 on CUDA; on the CPU bf16 where it runs natively (AMX or AVX-512
    BF16) for models wide enough to gain, on CPUs without it int8 for vision transformers (the
    image tower's linear layers, :mod:`.int8`), else fp32 (the embedded model stays fp32; see
    :func:`~ros_mm_perception.core.devices.resolve_precision`). Raises :class:`ModelNotFoundError`
    with what to download when weights are missing, :class:`UserError` for unknown names.
    """
    import open_clip

    dev = resolve_device(device)
    if not name:
        from ros_mm_perception.core.models.embedded import embedded_clip_dir

        name = str(embedded_clip_dir())
    model_id, pretrained_arg = _resolve_source(name, pretrained)
    config = open_clip_config(model_id)
    precision = resolve_precision(precision, dev, cuda_default="fp16",
                                  width=config.get("embed_dim"),
                                  int8_width=transformer_width(config))
    dtype = dtype_of(precision)
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            model_id, pretrained=pretrained_arg, device=dev,
            precision={torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32"),
        )
    except Exception as err:  # open_clip, huggingface_hub and safetensors raise many kinds
        if pretrained_arg is None or Path(pretrained_arg).is_file():
            raise ModelNotFoundError("cannot load CLIP weights from "
                                     f"{pretrained_arg or model_id}: {err}") from err
        raise _missing_weights_error(name, pretrained_arg, err) from err
    model.eval().requires_grad_(False)
    merge_branches(model)
    if precision == INT8 and not quantize_linear_layers(model.visual):
        log.warning("CLIP model %r has no linear layers in its image tower to run in int8; "
                    "it runs fp32", name)
        precision = "fp32"
    tokenizer = open_clip.get_tokenizer(model_id)
    pp = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    if (
        pp.get("resize_mode", "shortest") != "shortest"
        or pp.get("interpolation", "bicubic") != "bicubic"
    ):
        raise UserError(f"CLIP model {name!r} uses resize mode {pp.get('resize_mode')!r} / "
                        f"interpolation {pp.get('interpolation')!r}; only 'shortest' with "
                        "'bicubic' is supported")
    mean = pp.get("mean", model.visual.image_mean)
    std = pp.get("std", model.visual.image_std)
    preprocessor = ClipPreprocessor(size, mean, std, dev, dtype)
    return ClipModel(model=model, tokenizer=tokenizer, preprocessor=preprocessor, name=name,
                     device=dev, dtype=dtype, precision=precision)


def save_clip(model, model_cfg: Dict[str, Any], directory, *, half: bool = False,
              preprocess_cfg: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``model`` as an open_clip model folder (config JSON + safetensors weights).

    ``model_cfg`` is the open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``). With
    ``half`` the weights are stored in fp16 (they are loaded back in the requested precision).
    """
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Models built directly from a config (not through open_clip.create_model) lack these.
    model.visual.image_mean = getattr(model.visual, "image_mean", None) or OPENAI_DATASET_MEAN
    model.visual.image_std = getattr(model.visual, "image_std", None) or OPENAI_DATASET_STD
    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_NAME))
    save_config_for_hf(model, directory / CONFIG_NAME, model_config=model_cfg)
    if preprocess_cfg:
        cfg = json.loads((directory / CONFIG_NAME).read_text())
        cfg["preprocess_cfg"].update(preprocess_cfg)
        (directory / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
    return directory
