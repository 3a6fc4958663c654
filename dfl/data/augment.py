"""Training-batch augmentation of images, vectorised over clients and samples.

crop_flip is the CIFAR augmentation of the DFedSAM / DisPFL / FL-Simulator code: a random
H x W crop of the image zero-padded by ``pad`` pixels on every side, then a horizontal flip with
probability 1/2 (torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``;
He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2):

    out[c, i, j] = padded[c, i + dy, j' + dx],  j' = W - 1 - j if flip else j,
    padded = x zero-padded by pad,  dy, dx uniform in {0, ..., 2 * pad},  flip ~ Bernoulli(1/2).

The inputs here are already normalised, so the padding is 0 in normalised units (the channel's
mean), as FL-Simulator pads its normalised arrays; torchvision pads the raw pixels with black.
The randomness comes in as uniforms (``dfl.rng.augment_uniforms``, turned into integer draws
on the host by ``crop_flip_draws``), so the same draws give the same batch in every engine.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AUGMENTS
from ..errors import ConfigError

CROP_FLIP_FIELDS = 3
"""Uniforms per sample of crop_flip: dy, dx, flip."""


def check_augment(mode: str, input_shape: tuple[int, ...]) -> None:
    """ConfigError unless ``mode`` is known and fits inputs of ``input_shape`` (one sample)."""
    if mode not in AUGMENTS:
        raise ConfigError(f"data.augment: must be one of {', '.join(AUGMENTS)}, got {mode!r}")
    if mode == "crop_flip" and len(input_shape) != 3:
        raise ConfigError(f"data.augment: must be 'none' for non-image inputs (crop_flip needs "
                          f"(channels, height, width)), got 'crop_flip' with input shape {tuple(input_shape)}")


def crop_flip_draws(u: np.ndarray, pad: int = 4) -> np.ndarray:
    """(..., 3) uniforms in [0, 1) -> (..., 3) int64 (dy, dx, flip) of crop_flip.

    dy = floor(u0 * (2 pad + 1)), dx = floor(u1 * (2 pad + 1)), flip = [u2 < 1/2].
    """
    u = np.asarray(u, dtype=np.float64)
    out = np.empty(u.shape, dtype=np.int64)
    out[..., :2] = np.minimum(np.floor(u[..., :2] * (2 * pad + 1)), 2 * pad)
    out[..., 2] = u[..., 2] < 0.5
    return out


def crop_flip(x: torch.Tensor, draws: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random crop of the zero-padded images and random horizontal flip, one draw per image.

    Args:
        x: (..., C, H, W) images.
        draws: (..., 3) integers per image (see crop_flip_draws): dy, dx in [0, 2 pad] (the
            crop's top-left corner in the padded image; pad, pad = no shift) and flip (0 / 1).
        pad: zero padding on each side (4 for CIFAR's 32 x 32).

    Returns:
        Augmented images, the shape and dtype of x.
    """
    *lead, c, h, w = x.shape
    n = 1
    for s in lead:
        n *= s
    d = draws.reshape(n, CROP_FLIP_FIELDS).to(device=x.device, dtype=torch.int64)
    dy, dx, flip = d[:, 0], d[:, 1], d[:, 2].bool()
    padded = F.pad(x.reshape(n, c, h, w), (pad, pad, pad, pad))  # (n, C, H + 2 pad, W + 2 pad), zeros
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (n, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (n, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # flip after the crop: read columns backwards
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    return out.reshape(x.shape)
