"""A DP-SGD run that can stop and resume: checkpoints, final weights, held-out accuracy (no Django).

The service's training task (``federation.tasks``) drives one :class:`TrainingRun` step by
step; everything that touches torch is here, so torch stays inside ``privacy/dpsgd``.
A checkpoint holds the model's and the optimizer's state, both generators' states (the
Poisson sampler's and the noise's) and the step count: a run resumed from it takes exactly
the steps an uninterrupted run would have taken. Files are written to a temporary name and
renamed, so a crash mid-write leaves the previous checkpoint whole, and are read back with
``torch.load(..., weights_only=True)`` (tensors and plain containers only: no code runs).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from privacy.dpsgd.engine import (DPSGDConfig, DPSGDTrainer, StepResult, accuracy, default_device, evaluate,
                                  make_optimizer)
from privacy.dpsgd.models import build_model

__all__ = ["TrainingRun", "load_weights"]


def _save_atomically(state, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A model's saved ``state_dict`` (on cpu)."""
    return torch.load(path, map_location="cpu", weights_only=True)


class TrainingRun:
    """A zoo model trained by DP-SGD (SGD optimizer) on numpy features and labels.

    ``seed`` makes the initial weights, the sampler and the noise reproducible (tests);
    ``None`` draws the sampler's and the noise's seeds from the OS CSPRNG.
    """

    def __init__(self, *, model_name: str, features: np.ndarray, labels: np.ndarray, num_classes: int,
                 config: DPSGDConfig, learning_rate: float, seed: int | None = None,
                 device: str | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves the global RNG alone
            if seed is not None:
                torch.manual_seed(seed)
            model = build_model(model_name, tuple(features.shape[1:]), num_classes)
        optimizer = make_optimizer("sgd", model.parameters(), learning_rate=learning_rate)
        self.trainer = DPSGDTrainer(model, optimizer, torch.from_numpy(features), torch.from_numpy(labels), config,
                                    seed=seed, device=self.device)

    @property
    def steps_taken(self) -> int:
        return self.trainer.steps_taken

    @property
    def steps_per_epoch(self) -> int:
        return self.trainer.steps_per_epoch

    def step(self) -> StepResult:
        return self.trainer.step()

    def save_checkpoint(self, path: str | Path) -> None:
        _save_atomically({
            "model": self.trainer.model.state_dict(),
            "optimizer": self.trainer.optimizer.state_dict(),
            "sampler_rng": self.trainer.sampler_generator.get_state(),
            "noise_rng": self.trainer.noise_generator.get_state(),
            "steps_taken": self.trainer.steps_taken,
        }, Path(path))

    def load_checkpoint(self, path: str | Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.trainer.model.load_state_dict(state["model"])
        self.trainer.optimizer.load_state_dict(state["optimizer"])
        self.trainer.sampler_generator.set_state(state["sampler_rng"].cpu())
        self.trainer.noise_generator.set_state(state["noise_rng"].cpu())
        self.trainer.steps_taken = int(state["steps_taken"])

    def save_weights(self, path: str | Path) -> None:
        _save_atomically({name: tensor.cpu() for name, tensor in self.trainer.model.state_dict().items()}, Path(path))

    def test_accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        return accuracy(self.trainer.model, torch.from_numpy(features), torch.from_numpy(labels))

    def evaluate(self, features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """(mean loss, accuracy) on held-out data."""
        return evaluate(self.trainer.model, torch.from_numpy(features), torch.from_numpy(labels))
