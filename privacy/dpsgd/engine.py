"""The DP-SGD step: per-example gradients, clipping, Gaussian noise, Poisson sampling.

DP-SGD of Abadi et al. 2016 (Algorithm 1), in the form Opacus and JAX Privacy run it:

1. Poisson sampling: each of the N examples joins the step's batch independently with
   probability q, so the batch size varies and may be 0 (an empty batch is a valid step
   that adds noise only). This is the sampler the ``PoissonSampledGaussianEvent`` accounts.
2. Per-example gradient norms over *physical* chunks of at most ``physical_batch_size``
   examples, so memory is bounded whatever the logical (sampled) batch size. Two methods, the
   same result (docs/benchmarks.md has the measurements that chose the default):
   ``layerwise`` (:mod:`privacy.dpsgd.layerwise`: one forward and one backward pass, then each
   layer's per-example norms and weighted sum in closed form) for models made of Linear, Conv2d
   and GroupNorm layers, the zoo's; ``vmap`` (``torch.func``: ``vmap`` over ``grad`` of a
   ``functional_call``, every per-example gradient materialized) for any other model.
3. Each example's gradient is clipped to L2 norm ≤ C, and the clipped gradients are summed.
4. Gaussian noise N(0, σ²C²) is added to the sum, from a ``torch.Generator`` seeded by the
   OS CSPRNG (ARCHITECTURE.md, invariant 2) unless a test passes an explicit seed.
5. The noisy sum is divided by the *expected* batch size q·N, not the sampled one, whose
   value depends on who was sampled (Abadi et al. 2016; Opacus does the same).
6. The optimizer (SGD, momentum, Adam) applies the privatized gradient: post-processing.

The same code runs on cuda when available, else on cpu (:func:`default_device`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from typing import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from privacy.dpsgd import layerwise

__all__ = [
    "CLIP_MARGIN",
    "CLIP_STABILIZER",
    "DPSGDConfig",
    "DPSGDTrainer",
    "StepResult",
    "accuracy",
    "clip_factors",
    "default_device",
    "evaluate",
    "factors_from_norms",
    "make_generator",
    "make_optimizer",
    "per_example_gradients",
    "per_example_norms",
    "poisson_sample",
    "privatized_gradient",
    "resolve_method",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, labels) -> mean loss of the batch
Gradients = dict[str, torch.Tensor]

# A clipped gradient is scaled to C / (‖g‖·(1 + 1e-5) + 1e-6), not exactly C / ‖g‖: the relative
# margin exceeds float32's rounding error in a norm, so the clipped norm, computed again, never
# exceeds C; the additive term keeps a zero gradient finite (Opacus adds 1e-6 the same way).
CLIP_MARGIN = 1e-5
CLIP_STABILIZER = 1e-6


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_generator(device: torch.device | str, seed: int | None = None) -> torch.Generator:
    """A generator on ``device`` seeded from the OS CSPRNG (invariant 2), or from ``seed`` in tests."""
    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63) if seed is None else seed)
    return generator


def _derived_seed(seed: int | None, purpose: str) -> int | None:
    """Independent-looking seeds for the sampler and the noise from one reproducible seed."""
    if seed is None:
        return None
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "big") >> 1


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def refuse_batch_norm(model: nn.Module) -> None:
    """BatchNorm mixes examples of a batch: per-example gradients, and so DP-SGD, are undefined with it."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"{name or 'model'} is a BatchNorm layer: DP-SGD needs GroupNorm or no norm")


# --- sampling -----------------------------------------------------------------------------------


def poisson_sample(num_examples: int, sampling_probability: float, generator: torch.Generator) -> torch.Tensor:
    """Indices of a Poisson sample: each example is in independently with probability q (possibly none)."""
    draws = torch.rand(num_examples, generator=generator, device=generator.device)
    return (draws < sampling_probability).nonzero(as_tuple=True)[0]


# --- per-example gradients and clipping ---------------------------------------------------------


def per_example_gradients(
    model: nn.Module, loss_fn: LossFn, features: torch.Tensor, labels: torch.Tensor
) -> tuple[Gradients, torch.Tensor]:
    """(gradient of each example's loss w.r.t. each trainable parameter, shape [B, *p.shape]; losses [B])."""
    params = {name: p.detach() for name, p in trainable_parameters(model).items()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def example_loss(params: Gradients, x: torch.Tensor, y: torch.Tensor):
        output = functional_call(model, (params, buffers), (x.unsqueeze(0),))
        loss = loss_fn(output, y.unsqueeze(0))
        return loss, loss.detach()

    return vmap(grad(example_loss, has_aux=True), in_dims=(None, 0, 0))(params, features, labels)


def per_example_norms(per_example: Gradients) -> torch.Tensor:
    """The L2 norm of each example's whole gradient (all parameters together), shape [B]."""
    per_parameter = [g.reshape(g.shape[0], -1).norm(dim=1) for g in per_example.values()]
    return torch.stack(per_parameter, dim=1).norm(dim=1)


def factors_from_norms(norms: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """min(1, C / ‖g_i‖) per example, with a safety margin: g_i times its factor has norm ≤ C (Abadi et al. 2016)."""
    return (clip_norm / (norms * (1 + CLIP_MARGIN) + CLIP_STABILIZER)).clamp(max=1.0)


def clip_factors(per_example: Gradients, clip_norm: float) -> torch.Tensor:
    """The clip factors of materialized per-example gradients."""
    return factors_from_norms(per_example_norms(per_example), clip_norm)


METHODS = ("auto", "layerwise", "vmap")


def _clipped_sum(model: nn.Module, loss_fn: LossFn, features: torch.Tensor, labels: torch.Tensor, clip_norm: float,
                 method: str) -> tuple[Gradients, float]:
    """(Σ_i clip(∇_i) per trainable parameter, summed loss) of one physical chunk, by ``method``."""
    if method == "layerwise":
        sums, _, loss_sum = layerwise.norms_and_clipped_sum(
            model, loss_fn, features, labels, lambda norms: factors_from_norms(norms, clip_norm))
        return sums, loss_sum
    per_example, losses = per_example_gradients(model, loss_fn, features, labels)
    factors = clip_factors(per_example, clip_norm)
    return {name: torch.einsum("b,b...->...", factors, g) for name, g in per_example.items()}, float(losses.sum())


def resolve_method(model: nn.Module, method: str = "auto") -> str:
    """``auto``: layerwise when the model's layers allow it (faster, see docs/benchmarks.md), else vmap."""
    if method not in METHODS:
        raise ValueError(f"unknown per-example gradient method {method!r}: one of {METHODS}")
    if method == "auto":
        return "layerwise" if layerwise.supports(model) else "vmap"
    if method == "layerwise" and not layerwise.supports(model):
        raise ValueError("the layerwise method needs a model of Linear, Conv2d and GroupNorm layers only")
    return method


def privatized_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    clip_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    physical_batch_size: int,
    noise_generator: torch.Generator,
    method: str = "auto",
) -> tuple[Gradients, float]:
    """(Σ clip(g_i) + N(0, σ²C²)) / (q·N) for each trainable parameter, and the batch's summed loss.

    Clipped sums are accumulated over physical chunks of ``physical_batch_size`` examples,
    so the result does not depend on the chunking. The noise is drawn in
    ``model.named_parameters()`` order, one standard normal per coordinate times σ·C.
    The summed loss is a diagnostic of the batch, not privatized.
    """
    method = resolve_method(model, method)
    sums = {name: torch.zeros_like(p) for name, p in trainable_parameters(model).items()}
    loss_sum = 0.0
    for start in range(0, features.shape[0], physical_batch_size):
        chunk = slice(start, start + physical_batch_size)
        clipped, chunk_loss = _clipped_sum(model, loss_fn, features[chunk], labels[chunk], clip_norm, method)
        for name, value in clipped.items():
            sums[name] += value
        loss_sum += chunk_loss
    noise_std = noise_multiplier * clip_norm
    noisy = {}
    for name, total in sums.items():
        noise = torch.randn(total.shape, generator=noise_generator, device=total.device, dtype=total.dtype)
        noisy[name] = (total + noise_std * noise) / expected_batch_size
    return noisy, loss_sum


# --- the trainer --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DPSGDConfig:
    """σ (noise multiplier), C (clip norm), q (Poisson rate), the physical chunk size and the
    per-example gradient method (``auto``, ``layerwise`` or ``vmap``; the same result)."""

    clip_norm: float
    noise_multiplier: float
    sampling_probability: float
    physical_batch_size: int = 256
    method: str = "auto"

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ValueError("clip_norm must be > 0")
        if not self.noise_multiplier >= 0:
            raise ValueError("noise_multiplier must be >= 0")
        if not 0 < self.sampling_probability <= 1:
            raise ValueError("sampling_probability must be in (0, 1]")
        if self.physical_batch_size < 1:
            raise ValueError("physical_batch_size must be >= 1")


@dataclasses.dataclass(frozen=True)
class StepResult:
    batch_size: int
    loss_sum: float  # summed training loss of the sampled batch: a diagnostic, not privatized


class DPSGDTrainer:
    """Runs DP-SGD steps of ``config`` on a model and an in-memory dataset.

    ``seed=None`` (production) seeds the sampler and the noise from the OS CSPRNG;
    an explicit seed makes a run reproducible (tests). Steps per epoch are round(1/q),
    the convention of the accounting (T = epochs / q).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        features: torch.Tensor,
        labels: torch.Tensor,
        config: DPSGDConfig,
        *,
        loss_fn: LossFn = nn.functional.cross_entropy,
        seed: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        refuse_batch_norm(model)
        if features.shape[0] != labels.shape[0] or features.shape[0] == 0:
            raise ValueError("features and labels must be non-empty and of the same length")
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.features = features.to(self.device)
        self.labels = labels.to(self.device)
        self.config = config
        self.loss_fn = loss_fn
        self.sampler_generator = make_generator(self.device, _derived_seed(seed, "sampler"))
        self.noise_generator = make_generator(self.device, _derived_seed(seed, "noise"))
        self.method = resolve_method(model, config.method)
        self.steps_taken = 0

    @property
    def num_examples(self) -> int:
        return self.features.shape[0]

    @property
    def expected_batch_size(self) -> float:
        return self.config.sampling_probability * self.num_examples

    @property
    def steps_per_epoch(self) -> int:
        return max(1, round(1 / self.config.sampling_probability))

    def step(self) -> StepResult:
        indices = poisson_sample(self.num_examples, self.config.sampling_probability, self.sampler_generator)
        self.model.train()
        gradient, loss_sum = privatized_gradient(
            self.model,
            self.loss_fn,
            self.features[indices],
            self.labels[indices],
            clip_norm=self.config.clip_norm,
            noise_multiplier=self.config.noise_multiplier,
            expected_batch_size=self.expected_batch_size,
            physical_batch_size=self.config.physical_batch_size,
            noise_generator=self.noise_generator,
            method=self.method,
        )
        for name, parameter in trainable_parameters(self.model).items():
            parameter.grad = gradient[name]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_taken += 1
        return StepResult(batch_size=int(indices.numel()), loss_sum=loss_sum)

    def epoch(self) -> list[StepResult]:
        return [self.step() for _ in range(self.steps_per_epoch)]


def make_optimizer(
    name: str, parameters: Iterable[nn.Parameter], *, learning_rate: float, momentum: float = 0.0
) -> torch.optim.Optimizer:
    """SGD (with optional momentum) or Adam over the privatized gradient (post-processing: no privacy cost)."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}: sgd or adam")


@torch.no_grad()
def evaluate(model: nn.Module, features: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 1024,
             loss_fn: LossFn = nn.functional.cross_entropy) -> tuple[float, float]:
    """(mean loss, top-1 accuracy) on held-out data, in eval mode, in chunks."""
    if features.shape[0] == 0:
        raise ValueError("no examples to evaluate")
    model.eval()
    device = next(model.parameters()).device
    correct, loss_sum = 0, 0.0
    for start in range(0, features.shape[0], batch_size):
        x = features[start : start + batch_size].to(device)
        y = labels[start : start + batch_size].to(device)
        output = model(x)
        correct += int((output.argmax(dim=1) == y).sum())
        loss_sum += float(loss_fn(output, y)) * x.shape[0]
    return loss_sum / features.shape[0], correct / features.shape[0]


def accuracy(model: nn.Module, features: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 1024) -> float:
    """Top-1 accuracy on held-out data, in eval mode, in chunks."""
    return evaluate(model, features, labels, batch_size=batch_size)[1]
