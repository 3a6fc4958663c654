"""ResNet-18 with GroupNorm, CIFAR-style stem (He et al. 2016; GroupNorm: Wu & He 2018).

The stem is one 3x3 convolution with stride 1 and no max-pool (as for 32x32 CIFAR images);
four stages of two BasicBlocks (64, 128, 256, 512 channels, strides 1, 2, 2, 2); global average
pooling; a linear head. Every BatchNorm of the original is a GroupNorm with ``groups`` groups
(2 by default, as Hsieh et al. 2020 use in decentralized learning). Inputs as small as 8x8 work
(the spatial size reaches 1x1 at the last stage).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from . import MODELS
from .simple import image_shape


def check_groups(name: str, groups: int, channels: int) -> None:
    """ConfigError unless ``groups`` divides ``channels`` (the gcd of the model's GroupNorm widths)."""
    if groups < 1 or channels % groups:
        raise ConfigError(f"model.groups: must divide {channels} (the channels of every GroupNorm of "
                          f"{name}), got {groups}")


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels)


class BasicBlock(nn.Module):
    """x -> conv3x3 -> GN -> ReLU -> conv3x3 -> GN, plus the (projected) shortcut, -> ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(c_out, groups)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(c_out, groups))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18GN(nn.Module):
    """ResNet-18 (CIFAR stem) with GroupNorm; about 11.2M parameters for 10 classes."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, groups: int = 2):
        super().__init__()
        check_groups("resnet18", groups, 64)
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], 64, 3, 1, 1, bias=False), _norm(64, groups), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(c_in, c_out, stride, groups), BasicBlock(c_out, c_out, 1, groups)]
            c_in = c_out
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


@MODELS.register("resnet18")
def resnet18(input_shape: tuple[int, ...], num_classes: int, groups: int = 2) -> nn.Module:
    """ResNet-18 with GroupNorm(groups) for 1- or 3-channel images (8x8 and up)."""
    return ResNet18GN(image_shape("resnet18", input_shape), num_classes, groups)
