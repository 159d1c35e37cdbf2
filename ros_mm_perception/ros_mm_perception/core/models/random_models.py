"""Models with random weights built from real configs, saved and loaded through the real loaders.

Tests use tiny configs; the benchmark uses real-size ones (compute does not depend on weight
values).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch

TINY_CLIP_CONFIG: Dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def build_random_clip(directory, model_cfg: Optional[Dict[str, Any]] = None, *,
                      seed: int = 0) -> Path:
    """Create an open_clip CLIP from ``model_cfg`` (default: tiny) with random weights in
    ``directory``.

    ``model_cfg`` may also be the name of a built-in open_clip architecture (e.g. ``"ViT-B-16"``).
    """
    import open_clip

    from ros_mm_perception.core.models.clip_model import save_clip

    if isinstance(model_cfg, str):
        model_cfg = open_clip.get_model_config(model_cfg)
    model_cfg = model_cfg or TINY_CLIP_CONFIG
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    return save_clip(model, model_cfg, directory)


_PALIGEMMA_WORDS = (
    "a an the this that these those of in on at to from by with without and or not no yes is are "
    "was be what where which who how many much color colour shape size kind there here it its "
    "one two three four five six seven eight nine ten some all none left right top bottom front "
    "back behind near far next above below under over inside outside open closed empty full big "
    "small large tiny tall short long red green blue yellow black white gray grey brown orange "
    "pink purple dark light bright person people man woman child boy girl robot arm hand face "
    "head dog cat bird horse cow sheep mug cup glass bottle bowl plate fork knife spoon table "
    "chair sofa couch bed desk shelf cabinet drawer door window wall floor ceiling stairs room "
    "kitchen office hallway corridor garage street road sidewalk car truck bus bicycle "
    "motorcycle train boat plane sign light traffic cone box bag backpack laptop computer screen "
    "monitor keyboard mouse phone book paper pen lamp clock plant tree flower picture photo "
    "image scene camera sky cloud grass water sea snow sun building house tower bridge caption "
    "answer detect segment ocr en es de fr zh text word letter number standing sitting walking "
    "holding looking picture shows showing image contains photo of a robot in an office"
).split()


def _tiny_paligemma_processor(image_size: int, patch_size: int):
    """A PaliGemmaProcessor with a small BPE tokenizer (Gemma's special ids, ``▁`` word marks)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PaliGemmaProcessor, PreTrainedTokenizerFast, SiglipImageProcessor

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    alphabet = list(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:?!'\"-()/\n▁"
    )
    trainer = trainers.BpeTrainer(vocab_size=1000,
                                  special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator([" ".join(_PALIGEMMA_WORDS), " ; ".join(_PALIGEMMA_WORDS)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size},
                                           image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image_processor.image_seq_length = (image_size // patch_size) ** 2
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=fast)


_SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                      num_attention_heads=16, image_size=224, patch_size=14)
PALIGEMMA_SIZES: Dict[str, Dict[str, Any]] = {
    "tiny": {
        "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, image_size=32, patch_size=8),
        "text": dict(model_type="gemma", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                     initializer_range=0.5, max_position_embeddings=512),
        "vocab_size": None,  # the tokenizer's size
        "weights": True,
    },
    "tiny-paligemma2": {
        "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, image_size=32, patch_size=8),
        "text": dict(model_type="gemma2", hidden_size=32, intermediate_size=64,
                     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                     head_dim=16, initializer_range=0.5, max_position_embeddings=512,
                     query_pre_attn_scalar=16, final_logit_softcapping=30.0,
                     attn_logit_softcapping=50.0, sliding_window=8),
        "vocab_size": None,
        "weights": True,
    },
    "paligemma-3b-224": {
        "vision": _SIGLIP_SO400M,
        "text": dict(model_type="gemma", hidden_size=2048, intermediate_size=16384,
                     num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1,
                     head_dim=256),
        "vocab_size": 257216,
    },
    "paligemma2-3b-224": {
        "vision": _SIGLIP_SO400M,
        "text": dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216,
                     num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                     head_dim=256, query_pre_attn_scalar=256, final_logit_softcapping=30.0,
                     attn_logit_softcapping=50.0, sliding_window=4096),
        "vocab_size": 257216,
    },
}
"""Architectures for :func:`build_random_paligemma`: tiny PaliGemma 1 and 2 for tests, the real
3B/224 shapes."""


def build_random_paligemma(directory, size: str = "tiny", seed: int = 0) -> Path:
    """Write a PaliGemma model folder with random weights for ``size`` (see ``PALIGEMMA_SIZES``).

    The folder holds the config and a processor with a small custom tokenizer (``<image>``, the
    1024 ``<locNNNN>`` and 128 ``<segNNN>`` tokens, a few hundred words). The tiny sizes also get
    their weights, so they load like any checkpoint; the real-size ones hold the config only and
    are loaded with ``load_paligemma(directory, random_weights=True)``, which builds the weights on
    the device.
    """
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    if size not in PALIGEMMA_SIZES:
        raise ValueError(f"unknown PaliGemma size {size!r}; known: {', '.join(PALIGEMMA_SIZES)}")
    spec = PALIGEMMA_SIZES[size]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    processor = _tiny_paligemma_processor(spec["vision"]["image_size"],
                                          spec["vision"]["patch_size"])
    tokenizer = processor.tokenizer
    vocab_size = spec["vocab_size"] or len(tokenizer)
    hidden = spec["text"]["hidden_size"]
    with_weights = spec.get("weights", False)
    config = PaliGemmaConfig(
        vision_config=dict(model_type="siglip_vision_model", vision_use_head=False,
                           **spec["vision"]),
        text_config=dict(vocab_size=vocab_size, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=not with_weights, **spec["text"]),
        image_token_index=processor.image_token_id, vocab_size=vocab_size, projection_dim=hidden,
        hidden_size=hidden, tie_word_embeddings=not with_weights,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    processor.save_pretrained(directory)
    if with_weights:
        # Untied, widely spread random weights make greedy answers depend on the image and prompt.
        torch.manual_seed(seed)
        PaliGemmaForConditionalGeneration(config).save_pretrained(directory)
    else:
        config.save_pretrained(directory)
    return directory


def build_random_mask_decoder(path, seed: int = 0) -> Path:
    """Write an ``.npz`` with the parameter names and shapes of big_vision's ``vae-oid.npz``,
    random values."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shapes = {"_vq_vae._embedding": (128, 512), "decoder.0.weight": (128, 512, 1, 1),
              "decoder.0.bias": (128,)}
    for block in (2, 3):
        for conv, k in ((0, 3), (2, 3), (4, 1)):
            shapes[f"decoder.{block}.net.{conv}.weight"] = (128, 128, k, k)
            shapes[f"decoder.{block}.net.{conv}.bias"] = (128,)
    for index, (c_in, c_out) in zip((4, 6, 8, 10), ((128, 128), (128, 64), (64, 32), (32, 16))):
        shapes[f"decoder.{index}.weight"] = (c_in, c_out, 4, 4)  # ConvTranspose2d layout
        shapes[f"decoder.{index}.bias"] = (c_out,)
    shapes["decoder.12.weight"], shapes["decoder.12.bias"] = (1, 16, 1, 1), (1,)
    params = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = 1.0 if name.startswith("_vq_vae") else 1.0 / np.sqrt(fan_in)
        params[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    # An output layer of alternating sign and no bias gives masks with both inside and outside
    # pixels.
    params["decoder.12.weight"] = np.abs(params["decoder.12.weight"]) * np.resize([1.0, -1.0],
                                                                                  (1, 16, 1, 1))
    params["decoder.12.bias"][:] = 0.0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **params)
    return path


def clip_tokenizer(model_max_length: int = 16):
    """A transformers ``CLIPTokenizer`` with CLIP's BPE vocabulary (from open_clip's bundled
    merges).

    Token ids equal open_clip's (``<|startoftext|>`` 49406, ``<|endoftext|>`` 49407); padding is
    ``!`` (id 0), as on the OWL checkpoints, whose query mask treats a leading 0 as an empty query.
    """
    import gzip

    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)},
                         merges=[tuple(m.split()) for m in merges], pad_token="!",
                         model_max_length=model_max_length)


OWL_SIZES: Dict[str, Dict[str, Any]] = {
    "tiny": {
        "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, image_size=48, patch_size=16),
        "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=2),
        "weights": True,
    },
    "owlv2-base-patch16": {
        "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=12, image_size=960, patch_size=16),
        "text": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8),
    },
    "owlvit-base-patch32": {
        "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=12, image_size=768, patch_size=32),
        "text": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8),
    },
}
"""Architectures for :func:`build_random_owl`: a tiny one for tests and the real base shapes."""


def owl_config(kind: str, vision: Dict[str, Any], text: Dict[str, Any], *, vocab_size: int = 49408,
               max_positions: int = 16):
    """An ``Owlv2Config`` (``kind`` owlv2) or ``OwlViTConfig`` (owlvit) from vision and text
    sizes."""
    from transformers import Owlv2Config, OwlViTConfig

    if kind not in ("owlv2", "owlvit"):
        raise ValueError(f"unknown OWL kind {kind!r}; use owlv2 or owlvit")
    cls = Owlv2Config if kind == "owlv2" else OwlViTConfig
    text = dict(vocab_size=vocab_size, max_position_embeddings=max_positions, pad_token_id=0,
                bos_token_id=49406, eos_token_id=49407, **text)
    return cls(text_config=text, vision_config=dict(vision), projection_dim=text["hidden_size"])


def owl_processor(kind: str, image_size: int):
    """An ``Owlv2Processor`` / ``OwlViTProcessor`` for ``image_size`` px inputs with CLIP's
    tokenizer."""
    from transformers import (Owlv2ImageProcessor, Owlv2Processor, OwlViTImageProcessor,
                              OwlViTProcessor)

    size = {"height": image_size, "width": image_size}
    if kind == "owlv2":
        return Owlv2Processor(image_processor=Owlv2ImageProcessor(size=size),
                              tokenizer=clip_tokenizer())
    return OwlViTProcessor(image_processor=OwlViTImageProcessor(size=size, crop_size=size),
                           tokenizer=clip_tokenizer())


def build_random_owl(directory, kind: str = "owlv2", size: str = "tiny", seed: int = 0) -> Path:
    """Write an OWLv2 / OWL-ViT model folder with random weights (see :data:`OWL_SIZES`).

    The tiny size gets its weights, so it loads like any checkpoint; the real-size ones hold the
    config and processor only and are loaded with ``load_owl(directory, random_weights=True)``.
    """
    from transformers import Owlv2ForObjectDetection, OwlViTForObjectDetection

    if size not in OWL_SIZES:
        raise ValueError(f"unknown OWL size {size!r}; known: {', '.join(OWL_SIZES)}")
    spec = OWL_SIZES[size]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = owl_config(kind, spec["vision"], spec["text"])
    owl_processor(kind, spec["vision"]["image_size"]).save_pretrained(directory)
    if spec.get("weights", False):
        torch.manual_seed(seed)
        net = (Owlv2ForObjectDetection if kind == "owlv2" else OwlViTForObjectDetection)(config)
        net.save_pretrained(directory)
    else:
        config.save_pretrained(directory)
    return directory


def sam_config(image_size: int = 64, patch_size: int = 8, width: int = 32, layers: int = 2,
               heads: int = 2, window_size: int = 4):
    """A ``SamConfig`` of SAM's architecture at a small size: a ViT image encoder of ``layers``
    blocks (the last with global attention) on ``image_size`` px inputs, prompt encoder and mask
    decoder ``width`` wide."""
    from transformers import SamConfig

    grid = image_size // patch_size
    vision = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                  num_attention_heads=heads, image_size=image_size, patch_size=patch_size,
                  output_channels=width, window_size=window_size, global_attn_indexes=[layers - 1],
                  mlp_dim=2 * width, num_pos_feats=width // 2)
    prompt = dict(hidden_size=width, image_size=image_size, patch_size=patch_size,
                  image_embedding_size=grid, mask_input_channels=4)
    decoder = dict(hidden_size=width, mlp_dim=2 * width, num_hidden_layers=2,
                   num_attention_heads=heads, iou_head_hidden_dim=width)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt,
                     mask_decoder_config=decoder)


def sam_processor(image_size: int):
    """A ``SamProcessor`` resizing the longest side to ``image_size`` and padding to a square."""
    from transformers import SamImageProcessor, SamProcessor

    side = {"height": image_size, "width": image_size}
    return SamProcessor(SamImageProcessor(size={"longest_edge": image_size}, pad_size=side,
                                          mask_size={"longest_edge": image_size // 4},
                                          mask_pad_size={k: v // 4 for k, v in side.items()}))


def sam2_config(image_size: int = 64, width: int = 32):
    """A ``Sam2Config`` of SAM 2's architecture (Hiera backbone, feature pyramid) at a tiny
    size."""
    from transformers import Sam2Config

    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1,
                    image_size=[image_size, image_size], blocks_per_stage=[1, 1, 2, 1],
                    embed_dim_per_stage=[8, 16, 32, 64],
                    num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4],
                    global_attention_blocks=[3],
                    window_positional_embedding_background_size=[2, 2])
    sizes = [[image_size // s] * 2 for s in (4, 8, 16)]
    vision = dict(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                  backbone_feature_sizes=sizes, fpn_hidden_size=width)
    return Sam2Config(vision_config=vision,
                      prompt_encoder_config=dict(hidden_size=width, image_size=image_size,
                                                 patch_size=16, mask_input_channels=4),
                      mask_decoder_config=dict(hidden_size=width, mlp_dim=2 * width,
                                               num_attention_heads=2, iou_head_hidden_dim=width))


def build_random_sam(directory, kind: str = "sam", image_size: int = 64, seed: int = 0) -> Path:
    """Write a tiny SAM (``kind`` sam) or SAM 2 (sam2) model folder with random weights and its
    processor."""
    from transformers import Sam2ImageProcessor, Sam2Model, Sam2Processor, SamModel

    if kind not in ("sam", "sam2"):
        raise ValueError(f"unknown SAM kind {kind!r}; use sam or sam2")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if kind == "sam":
        net, processor = SamModel(sam_config(image_size)), sam_processor(image_size)
    else:
        side = {"height": image_size, "width": image_size}
        net = Sam2Model(sam2_config(image_size))
        processor = Sam2Processor(
            Sam2ImageProcessor(size=side, mask_size={k: v // 4 for k, v in side.items()})
        )
    net.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def sam3_config(image_size: int = 56, width: int = 32, queries: int = 8):
    """A ``Sam3Config`` of SAM 3's architecture (ViT backbone, feature pyramid, CLIP text encoder,
    DETR encoder and decoder with the presence token, mask decoder) at a tiny size."""
    from transformers import Sam3Config

    grid = image_size // 14
    small = dict(hidden_size=width, num_attention_heads=2, intermediate_size=2 * width)
    backbone = dict(model_type="sam3_vit_model", num_hidden_layers=2, image_size=image_size,
                    patch_size=14, window_size=2, global_attn_indexes=[1],
                    pretrain_image_size=image_size, **small)
    vision = dict(backbone_config=backbone, fpn_hidden_size=width,
                  backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2])
    text = dict(vocab_size=49408, projection_dim=width, num_hidden_layers=1,
                max_position_embeddings=32, **small)
    return Sam3Config(vision_config=vision, text_config=text,
                      geometry_encoder_config=dict(num_layers=1, **small),
                      detr_encoder_config=dict(num_layers=1, **small),
                      detr_decoder_config=dict(num_layers=1, num_queries=queries, **small),
                      mask_decoder_config=dict(hidden_size=width, num_attention_heads=2))


def build_random_sam3(directory, image_size: int = 56, seed: int = 0) -> Path:
    """Write a tiny SAM 3 model folder with random weights, its processor and CLIP's tokenizer."""
    from transformers import Sam3ImageProcessor, Sam3Model, Sam3Processor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    Sam3Model(sam3_config(image_size)).save_pretrained(directory)
    Sam3Processor(Sam3ImageProcessor(size={"height": image_size, "width": image_size}),
                  clip_tokenizer(32)).save_pretrained(directory)
    return directory
