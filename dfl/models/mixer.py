"""A small MLP-Mixer (Tolstikhin et al., NeurIPS 2021, arXiv:2105.01601), the attention-free
model of the SAM papers' ViT/Mixer study (Chen et al., ICLR 2022, arXiv:2106.01548).

    x (C, H, W) -> patches p x p -> Linear(dim)                         (T tokens, as the ViT)
    depth x [ x + TokenMLP(LN(x)^T)^T;  x + ChannelMLP(LN(x)) ]
    LN -> mean over tokens -> Linear(classes)

TokenMLP mixes across the T tokens (hidden width ``token_hidden``), ChannelMLP across the
``dim`` channels (hidden 2 * dim); both Linear -> GELU -> Linear. The patch size is chosen as for
the ViT (8x8 -> 2, 28x28 -> 4, 32x32 -> 4). LayerNorm only, no buffers. Defaults (dim 64,
depth 4, token_hidden 32) give about 75k parameters on 8x8 digits.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from . import MODELS
from .simple import image_shape
from .vit import mlp, patch_size


class MixerBlock(nn.Module):
    """x + TokenMLP over tokens, then x + ChannelMLP over channels (pre-norm)."""

    def __init__(self, tokens: int, dim: int, token_hidden: int, channel_hidden: int):
        super().__init__()
        self.norm1, self.token_mlp = nn.LayerNorm(dim), mlp(tokens, token_hidden)
        self.norm2, self.channel_mlp = nn.LayerNorm(dim), mlp(dim, channel_hidden)

    def forward(self, x: Tensor) -> Tensor:                  # x: (B, T, dim)
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class Mixer(nn.Module):
    """Patch embedding, ``depth`` Mixer blocks, final LayerNorm, mean pooling, linear head."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, dim: int = 64,
                 depth: int = 4, token_hidden: int = 32):
        super().__init__()
        c, h, w = input_shape
        p = patch_size("mixer", h, w)
        tokens = (h // p) * (w // p)
        self.embed = nn.Conv2d(c, dim, p, stride=p)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, dim, token_hidden, 2 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(tokens)).mean(1))


@MODELS.register("mixer")
def mixer(input_shape: tuple[int, ...], num_classes: int, dim: int = 64, depth: int = 4,
          token_hidden: int = 32) -> nn.Module:
    """The small MLP-Mixer for 1- or 3-channel images (8x8, 28x28, 32x32)."""
    for key, value in (("dim", dim), ("depth", depth), ("token_hidden", token_hidden)):
        if value < 1:
            raise ConfigError(f"model 'mixer': {key} must be >= 1, got {value}")
    return Mixer(image_shape("mixer", input_shape), num_classes, dim=dim, depth=depth,
                 token_hidden=token_hidden)
