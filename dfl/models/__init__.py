"""Models every client trains: logistic, mlp, cnn, cnn1d, resnet18 and vgg11 (GroupNorm), vit, mixer
(LayerNorm).

    model = dfl.models.build("cnn", (1, 8, 8), 10)

No model has buffers, and none uses BatchNorm, for two reasons:

- Model averaging. BatchNorm's running mean and variance are buffers, not parameters: gossip or
  FedAvg would average them separately from the weights, and the average of the clients'
  statistics is not the statistics of the averaged model's activations (with non-iid shards each
  client's statistics describe a different distribution), so the averaged model evaluates badly.
  GroupNorm normalises each sample by itself and has only an affine weight and bias, which
  average like any other parameter (Hsieh et al. 2020, "The Non-IID Data Quagmire of
  Decentralized Machine Learning", replace BatchNorm by GroupNorm for this reason).
- Vectorised clients. The engine trains all clients at once with torch.func.vmap over a stacked
  parameter dict through torch.func.functional_call; BatchNorm's in-place update of its running
  buffers in training mode is not allowed under vmap.

So every model is a pure function of (parameters, input); tests check functional_call and vmap
over stacked clients against a per-client loop.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

from . import resnet as _resnet  # noqa: E402,F401  (registers resnet18)
from . import simple as _simple  # noqa: E402,F401  (registers logistic, mlp, cnn, cnn1d)
from . import vgg as _vgg  # noqa: E402,F401  (registers vgg11)
from . import mixer as _mixer  # noqa: E402,F401  (registers mixer)
from . import vit as _vit  # noqa: E402,F401  (registers vit)

IGNORABLE = {"hidden", "groups"}
"""Model options that are fine to pass to any model (ModelConfig fields); others must be taken."""


def build(name: str, input_shape: tuple[int, ...], num_classes: int, **kw: Any) -> nn.Module:
    """Build a fresh model (initialised from torch's global generator; seed it around the call).

    Args:
        name: a name in MODELS (logistic, mlp, cnn, cnn1d, resnet18, vgg11, vit, mixer).
        input_shape: shape of one sample, e.g. (1, 8, 8), (60,) or (40,) for cnn1d.
        num_classes: output width.
        **kw: model options (mlp: hidden; resnet18, vgg11: groups); options of other models are ignored.
    """
    fn = MODELS[name]
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"model {name!r}: bad input shape {shape}")
    if num_classes < 1:
        raise ConfigError(f"model {name!r}: num_classes must be >= 1, got {num_classes}")
    accepted = inspect.signature(fn).parameters
    bad = sorted(k for k in kw if k not in accepted and k not in IGNORABLE)
    if bad:
        raise ConfigError(f"model {name!r}: unknown option(s) {', '.join(bad)}")
    return fn(shape, num_classes, **{k: v for k, v in kw.items() if k in accepted})


def num_params(model: nn.Module) -> int:
    """Number of scalar parameters."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "build", "num_params"]
