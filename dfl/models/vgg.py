"""VGG-11 with GroupNorm (Simonyan & Zisserman 2015, configuration "A"; GroupNorm: Wu & He 2018).

The model of the DFedSAM paper's CIFAR experiments, as defined in rong-dai/DisPFL
(fedml_api/model/cv/vgg.py), which the DFedSAM code builds on:

    [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M]

each number a conv3x3 (padding 1, with bias) -> GroupNorm(groups) -> ReLU, each M a 2x2 max-pool;
then the flattened features -> Linear(num_classes) (one layer: 512 -> classes at 32 x 32).
Initialisation as the reference: conv weights Kaiming-normal (fan_out, ReLU), biases 0;
GroupNorm weight 1, bias 0; linear weight N(0, 0.01^2), bias 0. A max-pool is skipped where the
map is already 1 wide, so 8 x 8 and 28 x 28 inputs work too (32 x 32 is exactly the reference).
About 9.23M parameters for 3 x 32 x 32 inputs and 10 classes.
"""
from __future__ import annotations

from torch import Tensor, nn

from . import MODELS
from .resnet import check_groups
from .simple import image_shape

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """VGG features (conv -> GroupNorm -> ReLU, max-pools) and a linear classifier."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, cfg: tuple = VGG11,
                 groups: int = 32):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for v in cfg:
            if v == "M":
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2, 2))
                    h, w = h // 2, w // 2
                continue
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.GroupNorm(groups, v), nn.ReLU()]
            c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * h * w, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


@MODELS.register("vgg11")
def vgg11(input_shape: tuple[int, ...], num_classes: int, groups: int = 32) -> nn.Module:
    """VGG-11 with GroupNorm(groups) (32 as the DFedSAM / DisPFL code) for 1- or 3-channel images."""
    check_groups("vgg11", groups, 64)
    return VGG(image_shape("vgg11", input_shape), num_classes, VGG11, groups)
