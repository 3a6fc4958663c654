"""A small Vision Transformer (Dosovitskiy et al., ICLR 2021, arXiv:2010.11929), sized for the
SAM papers' ViT experiments on small images (Chen, Hsieh, Gong, "When Vision Transformers
Outperform ResNets without Pretraining or Strong Data Augmentations", ICLR 2022, arXiv:2106.01548).

    x (C, H, W) -> patches p x p -> Linear(dim) + learned position embedding   (T = HW / p^2 tokens)
    depth x [ x + MHSA(LN(x));  x + MLP(LN(x)) ]                              (pre-norm blocks)
    LN -> mean over tokens -> Linear(classes)

The patch size is the smallest p >= 2 dividing H and W with at most 64 tokens: 8x8 -> p = 2
(16 tokens), 28x28 -> p = 4 (49), 32x32 -> p = 4 (64). Attention is written with einsum and
softmax (no nn.MultiheadAttention), LayerNorm only, no buffers: the model is a pure function of
(parameters, input) under torch.func.functional_call and vmap. Defaults (dim 64, depth 2,
4 heads, MLP ratio 2) give about 70k parameters on 8x8 digits.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from . import MODELS
from .simple import image_shape

MAX_TOKENS = 64


def patch_size(name: str, height: int, width: int) -> int:
    """Smallest p >= 2 dividing height and width with (height / p) * (width / p) <= 64 tokens."""
    for p in range(2, min(height, width) + 1):
        if height % p == 0 and width % p == 0 and (height // p) * (width // p) <= MAX_TOKENS:
            return p
    raise ConfigError(f"model {name!r}: no patch size p >= 2 divides the {height}x{width} input into at "
                      f"most {MAX_TOKENS} tokens; resize the images (8x8, 28x28, 32x32 work)")


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> Linear(dim) (a conv with stride p) + position embedding."""

    def __init__(self, input_shape: tuple[int, int, int], dim: int, name: str):
        super().__init__()
        c, h, w = input_shape
        p = patch_size(name, h, w)
        self.proj = nn.Conv2d(c, dim, p, stride=p)
        self.pos = nn.Parameter(torch.randn(1, (h // p) * (w // p), dim) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos   # (B, T, dim)


class Attention(nn.Module):
    """Multi-head self-attention: softmax(q k^T / sqrt(d_head)) v per head, then a projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"vit: dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).unbind(2)
        att = torch.einsum("bthe,bshe->bhts", q, k) / math.sqrt(d // self.heads)
        out = torch.einsum("bhts,bshe->bthe", att.softmax(-1), v)
        return self.proj(out.reshape(b, t, d))


def mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), mlp(dim, mlp_ratio * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding, ``depth`` pre-norm blocks, final LayerNorm, mean pooling, linear head."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, dim: int = 64,
                 depth: int = 2, heads: int = 4, mlp_ratio: int = 2):
        super().__init__()
        self.embed = PatchEmbed(input_shape, dim, "vit")
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))).mean(1))


@MODELS.register("vit")
def vit(input_shape: tuple[int, ...], num_classes: int, dim: int = 64, depth: int = 2,
        heads: int = 4) -> nn.Module:
    """The small ViT for 1- or 3-channel images (8x8, 28x28, 32x32)."""
    for key, value in (("dim", dim), ("depth", depth), ("heads", heads)):
        if value < 1:
            raise ConfigError(f"model 'vit': {key} must be >= 1, got {value}")
    return ViT(image_shape("vit", input_shape), num_classes, dim=dim, depth=depth, heads=heads)
