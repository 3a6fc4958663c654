"""Small models: multinomial logistic regression, a two-hidden-layer MLP, a small CNN, MNIST-1D's 1-D CNN."""
from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from . import MODELS


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def image_shape(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of an image input, or ConfigError naming the model and the shape."""
    if len(shape) != 3:
        raise ConfigError(f"model {name!r} needs image inputs (channels, height, width), got input shape "
                          f"{shape}; use logistic or mlp for flat features")
    return shape  # type: ignore[return-value]


@MODELS.register("logistic")
def logistic(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Linear layer on the flattened input (softmax is in the loss)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(_numel(input_shape), num_classes))


@MODELS.register("mlp")
def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 200) -> nn.Module:
    """Flatten -> Linear(hidden) -> ReLU -> Linear(hidden) -> ReLU -> Linear(classes) (FedAvg's 2NN)."""
    if hidden < 1:
        raise ConfigError(f"model 'mlp': hidden must be >= 1, got {hidden}")
    return nn.Sequential(nn.Flatten(), nn.Linear(_numel(input_shape), hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class CNN(nn.Module):
    """conv3x3(32) -> ReLU -> [maxpool] -> conv3x3(64) -> ReLU -> [maxpool] -> FC(128) -> ReLU -> FC.

    Convolutions keep the size (padding 1); each 2x2 max-pool is applied where the map is at
    least 2 wide, so 8x8 -> 2x2, 28x28 -> 7x7, 32x32 -> 8x8 before the head.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int = 32, fc: int = 128):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for c_in, c_out in ((c, width), (width, 2 * width)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * h * w, fc), nn.ReLU(),
                                  nn.Linear(fc, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@MODELS.register("cnn")
def cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The small CNN for 1- or 3-channel images of any size (8x8 digits, 28x28 MNIST, 32x32 CIFAR)."""
    return CNN(image_shape("cnn", input_shape), num_classes)


class CNN1D(nn.Module):
    """MNIST-1D's ConvBase (Greydanus & Steinbach 2024, greydanus/mnist1d notebooks/models.py):

        conv1d(25, k=5, s=2, p=1) -> ReLU -> conv1d(25, k=3, s=2, p=1) -> ReLU
        -> conv1d(25, k=3, s=2, p=1) -> ReLU -> flatten -> Linear(classes)

    Each convolution maps a length L to floor((L + 2 - k) / 2) + 1: 40 -> 19 -> 10 -> 5, so the
    head sees 25 * 5 = 125 features (5,210 parameters for 10 classes).
    """

    def __init__(self, input_shape: tuple[int, int], num_classes: int, channels: int = 25):
        super().__init__()
        c, length = input_shape
        self.input_shape = input_shape
        layers: list[nn.Module] = []
        for k in (5, 3, 3):
            layers += [nn.Conv1d(c, channels, k, stride=2, padding=1), nn.ReLU()]
            c, length = channels, (length + 2 - k) // 2 + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * length, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.reshape(x.shape[0], *self.input_shape)).flatten(1))


@MODELS.register("cnn1d")
def cnn1d(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The 1-D CNN of the MNIST-1D paper for sequences: input shape (length,) or (channels, length)."""
    if len(input_shape) not in (1, 2) or input_shape[-1] < 3:
        raise ConfigError(f"model 'cnn1d' needs sequence inputs (length,) or (channels, length) with length >= 3, "
                          f"got input shape {input_shape}; use cnn, resnet18 or vgg11 for images")
    shape = (1, input_shape[0]) if len(input_shape) == 1 else (input_shape[0], input_shape[1])
    return CNN1D(shape, num_classes)
