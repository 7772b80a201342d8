"""Model zoo by name. Every model has ``features(x)`` (penultimate embedding) and ``head`` (final Linear)."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .errors import ConfigError

MODELS = {
    "logreg": "multinomial logistic regression (one linear layer); cheapest, convex",
    "mlp": "multi-layer perceptron, one hidden layer of 256 ReLU units by default",
    "convnet": "DatasetCondensation ConvNet-3: 3 x (3x3 conv 128, instance norm, ReLU, 2x2 avg pool) + linear; "
               "on 1-channel 28x28 images the first conv pads by 3 (maps 32->16->8->4, a 2048-d embedding)",
    "convnet-p1": "the ConvNet with padding 1 everywhere (1-channel 28x28 maps 28->14->7->3, a 1152-d embedding)",
    "resnet18": "ResNet-18 (instance norm, 3x3 stem) for small images",
    "conv1d": "1-D ConvNet for sequences (T, C): 3 x (conv 32/64/128, instance norm, ReLU, 2x avg pool) + global avg pool",
}


class Classifier(nn.Module):
    """A feature extractor followed by a linear head."""

    def __init__(self, body: nn.Module, feature_dim: int, n_classes: int):
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind in ("none", None):
        return nn.Identity()
    raise ConfigError(f"unknown norm '{kind}' (instancenorm, batchnorm, none)")


def first_padding(in_shape: Sequence[int]) -> int:
    """Padding of the ConvNet's first convolution: 3 on 1-channel 28x28 images, 1 otherwise.

    The DatasetCondensation protocol treats MNIST-sized images as 32x32: padding the first 3x3
    convolution by 3 turns 28x28 into 32x32 maps, so three blocks pool to 4x4 (the published 2048-d
    embedding at width 128) rather than 3x3 with a row and a column dropped.
    """
    return 3 if tuple(in_shape) == (1, 28, 28) else 1


def convnet_body(in_shape: Sequence[int], width: int = 128, depth: int = 3, norm: str = "instancenorm",
                 first_pad: int | None = None) -> tuple[nn.Module, int]:
    """The DC ConvNet feature extractor and its output dimension.

    ``first_pad``: padding of the first convolution; ``None``: :func:`first_padding` (the published network).
    """
    c, h, w = in_shape
    pad = first_padding(in_shape) if first_pad is None else first_pad
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(c, width, 3, padding=pad), _norm(norm, width), nn.ReLU(inplace=True),
                   nn.AvgPool2d(2, 2)]
        c, h, w = width, (h + 2 * pad - 2) // 2, (w + 2 * pad - 2) // 2
        pad = 1
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), c * h * w


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm(norm, cout)
        self.short = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x):
        out = torch.relu(self.n1(self.conv1(x)))
        return torch.relu(self.n2(self.conv2(out)) + self.short(x))


def resnet18_body(in_shape: Sequence[int], norm: str = "instancenorm", width: int = 64) -> tuple[nn.Module, int]:
    c = in_shape[0]
    layers: list[nn.Module] = [nn.Conv2d(c, width, 3, 1, 1, bias=False), _norm(norm, width), nn.ReLU(inplace=True)]
    cin = width
    for i, stride in enumerate((1, 2, 2, 2)):
        cout = width * 2**i
        layers += [_BasicBlock(cin, cout, stride, norm), _BasicBlock(cout, cout, 1, norm)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), cin


class _ChannelsFirst1d(nn.Module):
    """Model-space sequences (N, 1, T, C) -> (N, C, T); vectors (N, d) -> one-channel series (N, 1, d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].transpose(1, 2) if x.dim() == 4 else x.unsqueeze(1)


def conv1d_body(in_shape: Sequence[int], width: int = 128, depth: int = 3, norm: str = "instancenorm"
                ) -> tuple[nn.Module, int]:
    """1-D ConvNet over time and its output dimension; global average pooling makes it shift-tolerant.

    Channels double block by block up to ``width`` (32, 64, 128 by default): a quarter of the cost of
    ``width`` channels throughout, which matters for probes trained on a CPU.
    """
    if len(in_shape) == 3 and in_shape[0] == 1:
        t, c = in_shape[1], in_shape[2]
    elif len(in_shape) == 1:
        t, c = in_shape[0], 1
    else:
        raise ConfigError(f"conv1d reads sequences stored as (N, T, C) (model shape (1, T, C)) or vectors (d,) "
                          f"as one-channel series; this data has model shape {tuple(in_shape)}")
    layers: list[nn.Module] = [_ChannelsFirst1d()]
    for i in range(depth):
        k = 5 if i == 0 else 3
        out = max(1, width >> (depth - 1 - i))
        norm_layer = nn.BatchNorm1d(out) if norm == "batchnorm" else _norm(norm, out)
        layers += [nn.Conv1d(c, out, k, padding=k // 2), norm_layer, nn.ReLU(inplace=True)]
        if t >= 2:
            layers.append(nn.AvgPool1d(2))
            t //= 2
        c = out
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten()]
    return nn.Sequential(*layers), width


def _check_convnet_depth(name: str, input_shape: tuple[int, ...], depth: int) -> None:
    """Refuse a depth that would pool the (padded) maps below 1x1."""
    grow = 2 * (first_padding(input_shape) - 1) if name == "convnet" else 0
    size = min(input_shape[1:]) + grow
    if size < 2**depth:
        raise ConfigError(f"{name}: depth {depth} halves the image size {depth} times, more than "
                          f"{input_shape[1]} x {input_shape[2]} images allow; use --depth "
                          f"{max(1, int(math.log2(size)))} or less")


IMAGE_MODELS = ("convnet", "convnet-p1", "resnet18")  # models that take (C, H, W) images only


def check_known(name: str) -> None:
    """ConfigError unless ``name`` is a model of the zoo."""
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")


def check_model_for(name: str, *, images: bool, data_name: str = "the data", shape: Sequence[int] = (),
                    what: str = "model") -> None:
    """ConfigError unless ``name`` is a known model that can take the data (``images``: a data set's
    ``is_image``, or a model input shape of length 3): the one check that an image model is not given tabular
    rows. ``what`` names the role in the message (e.g. "teacher model")."""
    check_known(name)
    if name in IMAGE_MODELS and not images:
        raise ConfigError(f"{what} '{name}' needs images; {data_name} is tabular {tuple(shape)}. "
                          "Use --model mlp or logreg")


def check_model_options(name: str, **options) -> None:
    """Refuse an unknown model or option, or a ``width``, ``depth`` or ``hidden`` size below 1 (no data needed)."""
    check_known(name)
    known = set(inspect.signature(build_model).parameters) - {"name", "input_shape", "n_classes", "seed"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown model option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    hidden = options.get("hidden", ())
    if not isinstance(hidden, (list, tuple)):
        raise ConfigError(f"{name}: hidden must be a list of layer widths, got {hidden!r}")
    sizes = [(k, options[k]) for k in ("width", "depth") if k in options] + [("hidden", h) for h in hidden]
    for key, value in sizes:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            flag = "" if key == "hidden" else f" (--{key})"
            raise ConfigError(f"{name}: {key}{flag} must be a positive integer, got {value!r}")


def build_model(
    name: str,
    input_shape: Sequence[int],
    n_classes: int,
    *,
    hidden: Sequence[int] = (256,),
    width: int = 128,
    depth: int = 3,
    norm: str = "instancenorm",
    seed: int | None = None,
) -> Classifier:
    """Build a fresh model for inputs of ``input_shape`` ((d,) or (C, H, W)) and ``n_classes`` outputs.

    Args:
        name: one of :data:`MODELS`.
        hidden: MLP hidden widths.
        width, depth, norm: ConvNet channels, blocks and normalisation.
        seed: initialise deterministically from this seed (the global RNG is left untouched).
    """
    check_model_options(name, hidden=hidden, width=width, depth=depth, norm=norm)
    input_shape = tuple(int(s) for s in input_shape)
    check_model_for(name, images=len(input_shape) == 3, shape=input_shape)  # an image model needs (C, H, W)
    if name in ("convnet", "convnet-p1") and len(input_shape) == 3:
        _check_convnet_depth(name, input_shape, depth)
    fork = torch.random.fork_rng(devices=[]) if seed is not None else None
    if fork is not None:
        fork.__enter__()
        torch.manual_seed(seed)
    try:
        d = int(np.prod(input_shape))
        if name == "logreg":
            return Classifier(nn.Flatten(), d, n_classes)
        if name == "mlp":
            layers: list[nn.Module] = [nn.Flatten()]
            prev = d
            for h in hidden:
                layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
                prev = h
            return Classifier(nn.Sequential(*layers), prev, n_classes)
        if name == "conv1d":
            body, dim = conv1d_body(input_shape, width=width, depth=depth, norm=norm)
            return Classifier(body, dim, n_classes)
        if name in ("convnet", "convnet-p1"):
            body, dim = convnet_body(input_shape, width=width, depth=depth, norm=norm,
                                     first_pad=1 if name == "convnet-p1" else None)
        else:
            body, dim = resnet18_body(input_shape, norm=norm)
        return Classifier(body, dim, n_classes)
    finally:
        if fork is not None:
            fork.__exit__(None, None, None)
