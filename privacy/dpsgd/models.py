"""The model zoo: logistic regression, an MLP, and the small MNIST CNN; built by name.

No BatchNorm anywhere: it mixes the examples of a batch, so per-example gradients (and
DP-SGD's per-example clipping) are undefined with it. The CNN uses GroupNorm instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MODELS", "build_model"]


def logistic_regression(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Multinomial logistic regression: one linear layer on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 128) -> nn.Module:
    """One hidden layer with tanh (bounded activations suit DP-SGD; Papernot et al. 2021)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.Tanh(),
        nn.Linear(hidden, num_classes),
    )


def mnist_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The end-to-end CNN of Tramèr & Boneh 2021 / Opacus' MNIST example, with GroupNorm.

    conv 16@8×8 stride 2 → GroupNorm → tanh → maxpool 2 stride 1 → conv 32@4×4 stride 2
    → GroupNorm → tanh → maxpool 2 stride 1 → linear 32 → tanh → linear ``num_classes``.
    Needs images of at least 16×16 (28×28 for MNIST); ``input_shape`` is (channels, H, W).
    """
    if len(input_shape) != 3:
        raise ValueError(f"the CNN needs (channels, height, width) inputs, got {input_shape}")
    channels, height, width = input_shape
    features = nn.Sequential(
        nn.Conv2d(channels, 16, 8, stride=2, padding=3),
        nn.GroupNorm(4, 16),
        nn.Tanh(),
        nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2),
        nn.GroupNorm(4, 32),
        nn.Tanh(),
        nn.MaxPool2d(2, 1),
        nn.Flatten(),
    )
    try:
        with torch.no_grad():
            flat = features(torch.zeros(1, channels, height, width)).shape[1]
    except RuntimeError as exc:
        raise ValueError(f"the CNN needs images of at least 16×16, got {height}×{width}") from exc
    return nn.Sequential(features, nn.Linear(flat, 32), nn.Tanh(), nn.Linear(32, num_classes))


MODELS = {"logreg": logistic_regression, "mlp": mlp, "cnn": mnist_cnn}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The zoo's model ``name`` for inputs of ``input_shape`` (no batch axis) and ``num_classes`` classes."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: one of {sorted(MODELS)}")
    if num_classes < 2:
        raise ValueError("num_classes must be >= 2")
    return MODELS[name](tuple(input_shape), num_classes)
