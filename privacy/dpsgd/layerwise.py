"""Per-example norms and the clipped sum, layer by layer, from one forward and one backward pass.

The "book-keeping" method (Bu, Wang, Zha & Karypis 2023, "Differentially private optimization on
large model at small cost"), in the hook-based form of Opacus' GradSampleModule (Yousefpour et al.
2021): a forward pass keeps each parametric layer's input a and output z; one backward pass of the
summed loss gives ∂L/∂z for every example at once (no BatchNorm: example i's loss depends only on its
own z_i); each layer's per-example gradient is then a closed form of (a_i, ∂L/∂z_i), e.g. g_i a_iᵀ for
a linear layer. The norms come first, then the clipped sum Σ c_i ∇_i is one weighted reduction per
layer. Autograd never computes the parameters' gradients itself, and linear layers never materialize
per-example gradients: ‖g aᵀ‖_F = ‖g‖·‖a‖ (Goodfellow 2015, "Efficient per-example gradient
computations").

Each layer must run exactly once per forward pass (no weight sharing); a model that breaks this
is refused with a ValueError. Supported layers: ``nn.Linear`` (inputs (B, in) or (B, T, in)), ``nn.Conv2d`` (groups 1, zero
padding) and ``nn.GroupNorm``; :func:`supports` says whether a model has only those as layers with
trainable parameters of their own. Anything else uses ``torch.func`` (vmap over grad) in
:mod:`privacy.dpsgd.engine`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional

__all__ = ["supports", "norms_and_clipped_sum"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _parametric_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, module) for name, module in model.named_modules()
            if any(p.requires_grad for p in module.parameters(recurse=False))]


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.padding_mode == "zeros" and isinstance(module.padding, tuple)
    return isinstance(module, (nn.Linear, nn.GroupNorm))


def supports(model: nn.Module) -> bool:
    """True when every layer with trainable parameters is one this module computes in closed form."""
    layers = _parametric_layers(model)
    return bool(layers) and all(_supported(module) for _, module in layers) and all(
        p.requires_grad for _, module in layers for p in module.parameters(recurse=False))


# --- per layer: per-example gradients (or their norms) from activations and output gradients ----


class _Layer:
    """Per-example gradient pieces of one layer: squared norms [B], and the clipped sum for factors c [B]."""

    def __init__(self, module: nn.Module, activation: torch.Tensor, grad_output: torch.Tensor) -> None:
        self.module, self.a, self.g = module, activation, grad_output

    def squared_norms(self) -> torch.Tensor:
        raise NotImplementedError

    def clipped_sums(self, factors: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class _Linear(_Layer):
    # z = a Wᵀ + b, so ∇W_i = Σ_t g_it a_itᵀ and ∇b_i = Σ_t g_it (Goodfellow 2015)
    def __init__(self, module, activation, grad_output) -> None:
        super().__init__(module, activation, grad_output)
        self.sequence = activation.dim() > 2
        if self.sequence:
            self.a = activation.reshape(activation.shape[0], -1, activation.shape[-1])
            self.g = grad_output.reshape(grad_output.shape[0], -1, grad_output.shape[-1])
            self.per_example = torch.bmm(self.g.transpose(1, 2), self.a)  # [B, out, in]

    def squared_norms(self) -> torch.Tensor:
        if self.sequence:
            weight = self.per_example.square().sum(dim=(1, 2))
            bias = self.g.sum(dim=1).square().sum(dim=1)
        else:  # ‖g aᵀ‖_F² = ‖g‖²·‖a‖²: no per-example matrix at all
            g_squared = self.g.square().sum(dim=1)
            weight, bias = g_squared * self.a.square().sum(dim=1), g_squared
        return weight + bias if self.module.bias is not None else weight

    def clipped_sums(self, factors):
        if self.sequence:
            sums = {"weight": torch.einsum("b,boi->oi", factors, self.per_example)}
            weighted = self.g.sum(dim=1) * factors[:, None]
        else:
            weighted = self.g * factors[:, None]
            sums = {"weight": weighted.t() @ self.a}
        if self.module.bias is not None:
            sums["bias"] = weighted.sum(dim=0)
        return sums


class _Conv2d(_Layer):
    # ∇W_i is the weight gradient of example i's conv alone: the batch becomes B groups of one
    # convolution, so one grouped weight-gradient call gives all B of them (Rochette et al. 2019)
    def __init__(self, module: nn.Conv2d, activation, grad_output) -> None:
        super().__init__(module, activation, grad_output)
        batch, channels = activation.shape[:2]
        out = grad_output.shape[1]
        self.g = grad_output.reshape(batch, out, -1)  # [B, out, T]
        self.per_example = torch.nn.grad.conv2d_weight(
            activation.reshape(1, batch * channels, *activation.shape[2:]), (batch * out, *module.weight.shape[1:]),
            grad_output.reshape(1, batch * out, *grad_output.shape[2:]), stride=module.stride,
            padding=module.padding, dilation=module.dilation, groups=batch,
        ).reshape(batch, out, -1)  # [B, out, C·k·k]

    def squared_norms(self):
        weight = self.per_example.square().sum(dim=(1, 2))
        return weight + self.g.sum(dim=2).square().sum(dim=1) if self.module.bias is not None else weight

    def clipped_sums(self, factors):
        sums = {"weight": torch.einsum("b,boi->oi", factors, self.per_example).reshape(self.module.weight.shape)}
        if self.module.bias is not None:
            sums["bias"] = factors @ self.g.sum(dim=2)
        return sums


class _GroupNorm(_Layer):
    # z = x̂ γ + β per channel, so ∇γ_i = Σ_spatial g_i x̂_i and ∇β_i = Σ_spatial g_i (Wu & He 2018)
    def __init__(self, module: nn.GroupNorm, activation, grad_output) -> None:
        super().__init__(module, activation, grad_output)
        batch, channels = grad_output.shape[:2]
        normalized = functional.group_norm(activation, module.num_groups, eps=module.eps)
        self.gamma = (grad_output * normalized).reshape(batch, channels, -1).sum(dim=2)  # [B, C]
        self.beta = grad_output.reshape(batch, channels, -1).sum(dim=2)

    def squared_norms(self):
        return self.gamma.square().sum(dim=1) + self.beta.square().sum(dim=1)

    def clipped_sums(self, factors):
        return {"weight": factors @ self.gamma, "bias": factors @ self.beta}


_KINDS = {nn.Linear: _Linear, nn.Conv2d: _Conv2d, nn.GroupNorm: _GroupNorm}


def _kind(module: nn.Module) -> type[_Layer]:
    return next(kind for base, kind in _KINDS.items() if isinstance(module, base))


def _capture(model: nn.Module, layers, features):
    """The model's output, and each layer's (input, output) of this forward pass."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(name):
        def hook(_module, inputs, output):
            if name in seen:  # a shared layer: its per-example gradient sums two uses; use vmap instead
                raise ValueError(f"layer {name or 'model'} runs twice in one forward pass: use method='vmap'")
            seen[name] = (inputs[0].detach(), output)
        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in layers]
    try:
        output = model(features)
    finally:
        for handle in handles:
            handle.remove()
    unused = [name for name, _ in layers if name not in seen]
    if unused:
        raise ValueError(f"layers {unused} have trainable parameters but do not run: use method='vmap'")
    return output, seen


def norms_and_clipped_sum(model: nn.Module, loss_fn: LossFn, features: torch.Tensor, labels: torch.Tensor,
                          clip_factors: Callable[[torch.Tensor], torch.Tensor]):
    """(Σ_i c_i ∇_i per trainable parameter name, per-example norms [B], summed loss) for one chunk.

    ``loss_fn`` returns the mean loss of a batch (the torch default), so B times it is the sum whose
    gradient with respect to z_i is example i's own. ``clip_factors`` maps norms to factors c_i.
    """
    layers = _parametric_layers(model)
    batch = features.shape[0]
    output, seen = _capture(model, layers, features)
    loss_sum = loss_fn(output, labels) * batch
    grad_outputs = torch.autograd.grad(loss_sum, [seen[name][1] for name, _ in layers])
    pieces = [(name, _kind(module)(module, seen[name][0], grad))
              for (name, module), grad in zip(layers, grad_outputs)]
    norms = torch.stack([piece.squared_norms() for _, piece in pieces], dim=1).sum(dim=1).sqrt()
    factors = clip_factors(norms)
    sums = {}
    for prefix, piece in pieces:
        for parameter, value in piece.clipped_sums(factors).items():
            sums[f"{prefix}.{parameter}" if prefix else parameter] = value
    return sums, norms, float(loss_sum.detach())
