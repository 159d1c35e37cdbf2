"""int8 image towers for the CPU (``precision: int8``).

Every linear layer of a transformer image tower, the attention projections included, runs in
int8 through torch's dynamic quantization: weights stored as int8 per output channel, each input
quantized per call from its own range, products summed in int32 by fbgemm's x86 kernels (AVX2,
AVX-512 or VNNI, whichever the CPU has). Convolutions, layer norms, softmax and the text towers
stay fp32. open_clip's ``nn.MultiheadAttention`` keeps its input projection as a bare parameter,
which dynamic quantization skips: :class:`ProjectedAttention` gives it two linear layers first.

Chosen over ONNX Runtime's int8 (within 15 % of it on ViT-B/16, see docs/performance.md) because
it needs no extra package or exported model, keeps the frozen CPU fast path (a quantized tower
traces and freezes) and honours the instruction-set caps that emulate an AVX2-only CPU
(``FBGEMM_ENABLE_INSTRUCTIONS``), so its speed on robots' CPUs can be measured at all.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn


class ProjectedAttention(nn.Module):
    """``nn.MultiheadAttention`` (self-attention, no dropout) with ``nn.Linear`` projections.

    Called as open_clip calls the module it replaces, ``(q, k, v, need_weights=False,
    attn_mask=...)``, returning ``(output, None)``; ``k`` and ``v`` must be ``q``.
    """

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.in_proj_bias is None or mha.bias_k is not None:
            raise ValueError("only self-attention with packed, biased projections converts")
        dim = mha.embed_dim
        self.heads = mha.num_heads
        self.batch_first = mha.batch_first
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        with torch.no_grad():
            self.in_proj.weight.copy_(mha.in_proj_weight)
            self.in_proj.bias.copy_(mha.in_proj_bias)
            self.out_proj.weight.copy_(mha.out_proj.weight)
            self.out_proj.bias.copy_(mha.out_proj.bias)
        self.requires_grad_(False)

    def forward(self, query, key=None, value=None, need_weights: bool = False, attn_mask=None):
        x = query if self.batch_first else query.transpose(0, 1)
        n, length, dim = x.shape
        qkv = self.in_proj(x).reshape(n, length, 3, self.heads, dim // self.heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(n, length, dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _convert_attention(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.MultiheadAttention):
            setattr(module, name, ProjectedAttention(child))
        else:
            _convert_attention(child)


def _called_linears(module: nn.Module):
    """Names of the ``nn.Linear`` layers of ``module`` that run as modules.

    open_clip's ``AttentionPool2d`` (ResNet towers) reads its projections' weights directly, so its
    layers are left out.
    """
    from open_clip.modified_resnet import AttentionPool2d

    skip = [name for name, m in module.named_modules() if isinstance(m, AttentionPool2d)]
    return [name for name, m in module.named_modules()
            if isinstance(m, nn.Linear) and not any(name.startswith(s + ".") for s in skip)]


def quantize_linear_layers(module: nn.Module) -> int:
    """Convert ``module``'s linear layers (attention projections too) to dynamic int8, in place.

    Returns how many layers were converted (0 for a tower without any, e.g. a ResNet's).
    """
    _convert_attention(module)
    names = _called_linears(module)
    if names:
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        with warnings.catch_warnings():
            # torch.ao's eager quantization warns that it will move to torchao; it is in torch 2.x
            warnings.simplefilter("ignore")
            torch.ao.quantization.quantize_dynamic(module, {name: qconfig for name in names},
                                                   dtype=torch.qint8, inplace=True)
    return len(names)


def quantized_layers(module: nn.Module) -> int:
    """How many dynamic int8 linear layers ``module`` holds."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(isinstance(m, DynamicLinear) for m in module.modules())
