"""DP-SGD on each device this machine has: cpu always, cuda where a GPU is (skipped elsewhere).

The engine's other tests pin ``device="cpu"`` so that their numbers are exact; these check that the
same code gives the same clipped sums on a GPU, draws its noise and its Poisson batches there with
the right distribution, and resumes a run from a checkpoint exactly (the generators live on the
device; their states are saved on cpu).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from privacy.dpsgd import engine
from privacy.dpsgd.datasets import load_digits
from privacy.dpsgd.models import build_model
from privacy.dpsgd.runs import TrainingRun

pytestmark = pytest.mark.slow  # PyTorch training steps

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.fixture(autouse=True)
def _exact_float32():
    """No TF32 in cuDNN's convolutions or cuBLAS' products while a test runs: float32 all through, as on cpu."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _cnn_batch(n=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(n, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    torch.manual_seed(seed)
    return build_model("cnn", (1, 28, 28), 10), features, labels


def _clipped_sum(model, features, labels, device, method, physical=10):
    """The privatized gradient with σ = 0 (the clipped sum over 1) of the batch on ``device``, back on cpu."""
    model = model.to(device)
    gradient, loss_sum = engine.privatized_gradient(
        model, nn.functional.cross_entropy, features.to(device), labels.to(device), clip_norm=10.7,
        noise_multiplier=0.0, expected_batch_size=1.0, physical_batch_size=physical,
        noise_generator=engine.make_generator(device, 0), method=method)
    return {name: value.cpu() for name, value in gradient.items()}, loss_sum


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["layerwise", "vmap"])
def test_the_cnn_clipped_sum_on_the_device_equals_cpus(device, method):
    model, features, labels = _cnn_batch()
    expected, expected_loss = _clipped_sum(model, features, labels, "cpu", "vmap", physical=24)
    # C = 10.7 lies among the examples' norms (checked on cpu): some are clipped, some are not
    norms = engine.per_example_norms(engine.per_example_gradients(model.cpu(), nn.functional.cross_entropy,
                                                                  features, labels)[0])
    assert (norms > 10.7).sum() >= 5 and (norms < 10.7).sum() >= 5
    got, loss = _clipped_sum(model, features, labels, device, method)
    assert next(model.parameters()).device.type == device
    assert math.isclose(loss, expected_loss, rel_tol=1e-5)
    for name, value in expected.items():  # float32 sums in another order: agreement to ~1e-6 of the scale
        torch.testing.assert_close(got[name], value, atol=1e-5 * float(value.abs().max()), rtol=1e-4, msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_noise_on_the_device_is_gaussian_with_sd_sigma_c_over_the_expected_batch(device):
    """An empty batch's gradient is noise alone: N(0, (σC/E)²) per coordinate. The CNN has 26,106
    coordinates, so the sample sd is within 5·sd/√(2n) ≈ 2.2 % of σC/E and the mean within 5·sd/√n."""
    model, features, labels = _cnn_batch()
    model = model.to(device)
    gradient, _ = engine.privatized_gradient(
        model, nn.functional.cross_entropy, features[:0].to(device), labels[:0].to(device), clip_norm=0.5,
        noise_multiplier=3.0, expected_batch_size=6.0, physical_batch_size=8,
        noise_generator=engine.make_generator(device), method="layerwise")
    values = torch.cat([g.reshape(-1).double().cpu() for g in gradient.values()])
    assert all(g.device.type == device for g in gradient.values())
    sd = 3.0 * 0.5 / 6.0
    assert values.numel() == 26106
    assert abs(float(values.std()) / sd - 1) < 5 / math.sqrt(2 * values.numel())
    assert abs(float(values.mean())) < 5 * sd / math.sqrt(values.numel())


@pytest.mark.parametrize("device", DEVICES)
def test_poisson_batches_on_the_device_have_binomial_sizes_and_repeat_with_the_seed(device):
    """Binomial(N=1000, q=0.05) sizes: over 1000 draws |mean − 50| < 5·√(47.5/1000) ≈ 1.09."""
    generator = engine.make_generator(device, 5)
    samples = [engine.poisson_sample(1000, 0.05, generator) for _ in range(1000)]
    assert samples[0].device.type == device
    sizes = np.array([s.numel() for s in samples])
    assert abs(sizes.mean() - 50) < 1.09 and sizes.var(ddof=1) > 25
    again = engine.make_generator(device, 5)
    assert all(torch.equal(engine.poisson_sample(1000, 0.05, again), s) for s in samples[:5])


@pytest.mark.parametrize("device", DEVICES)
def test_a_run_resumed_from_its_checkpoint_takes_the_same_steps_on_the_device(device, tmp_path):
    digits = load_digits()
    config = engine.DPSGDConfig(clip_norm=1.0, noise_multiplier=1.0, sampling_probability=64 / len(digits),
                                physical_batch_size=32)
    run = TrainingRun(model_name="cnn", features=digits.features.repeat(2, axis=2).repeat(2, axis=3),
                      labels=digits.labels, num_classes=10, config=config, learning_rate=0.5, seed=3, device=device)
    assert run.trainer.sampler_generator.device.type == device
    assert next(run.trainer.model.parameters()).device.type == device
    for _ in range(2):
        run.step()
    run.save_checkpoint(tmp_path / "checkpoint.pt")
    first = [run.step().batch_size for _ in range(3)]
    weights = {name: value.detach().cpu().clone() for name, value in run.trainer.model.state_dict().items()}
    run.load_checkpoint(tmp_path / "checkpoint.pt")
    assert run.steps_taken == 2
    second = [run.step().batch_size for _ in range(3)]
    assert second == first
    for name, value in run.trainer.model.state_dict().items():
        # the noise alone moves each weight by ~lr·σC/E ≈ 8e-3 a step: a wrong generator state is far outside this
        torch.testing.assert_close(value.cpu(), weights[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_moves_cpu_data_to_the_models_device(device):
    model, features, labels = _cnn_batch(n=50, seed=2)
    on_cpu = engine.evaluate(model, features, labels, batch_size=16)
    on_device = engine.evaluate(model.to(device), features, labels, batch_size=16)
    assert abs(on_device[1] - on_cpu[1]) <= 1 / 50  # one near-tie of logits may break the other way
    assert math.isclose(on_device[0], on_cpu[0], rel_tol=1e-5)


def test_the_default_device_is_cuda_when_there_is_one():
    assert engine.default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    digits = load_digits()
    config = engine.DPSGDConfig(clip_norm=1.0, noise_multiplier=1.0, sampling_probability=0.05)
    run = TrainingRun(model_name="mlp", features=digits.features, labels=digits.labels, num_classes=10,
                      config=config, learning_rate=1.0, seed=0)
    assert run.trainer.features.device.type == engine.default_device().type
    assert run.step().batch_size > 0
