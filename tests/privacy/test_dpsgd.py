"""DP-SGD engine (privacy/dpsgd): the step against a naive loop, clipping, Poisson sampling,
physical chunking, the model zoo and the dataset readers. Pure: no database, CPU, one thread."""

from __future__ import annotations

import copy
import gzip
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from privacy.dpsgd import engine
from privacy.dpsgd.datasets import DatasetError, load_csv, load_digits, load_mnist, load_npz, read_idx
from privacy.dpsgd.models import build_model

pytestmark = pytest.mark.slow  # PyTorch training steps

torch.set_num_threads(1)

MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
if not MNIST.exists():  # the main checkout's layout: /work/main next to /work/shared
    MNIST = Path("/work/shared/data/mnist")


def _toy(n=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 1, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (n,), generator=generator)
    torch.manual_seed(seed)
    return build_model("mlp", (1, 4, 4), 3), features, labels


def _naive_noisy_gradient(model, features, labels, *, clip_norm, noise_multiplier, expected, noise_seed):
    """Abadi et al. 2016, Alg. 1, one example at a time with autograd: grad, clip, sum, add noise, divide."""
    params = [p for p in model.parameters()]
    sums = [torch.zeros_like(p) for p in params]
    for x, y in zip(features, labels):
        loss = nn.functional.cross_entropy(model(x.unsqueeze(0)), y.unsqueeze(0))
        grads = torch.autograd.grad(loss, params)
        norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
        factor = min(1.0, clip_norm / (norm * (1 + engine.CLIP_MARGIN) + engine.CLIP_STABILIZER))
        sums = [s + factor * g for s, g in zip(sums, grads)]
    noise = torch.Generator().manual_seed(noise_seed)
    return [(s + noise_multiplier * clip_norm * torch.randn(s.shape, generator=noise)) / expected for s in sums]


def _dp_gradient(model, features, labels, *, physical, noise_seed, clip_norm=0.5, sigma=1.3, expected=10.0,
                 method="auto"):
    gradient, _ = engine.privatized_gradient(
        model, nn.functional.cross_entropy, features, labels, clip_norm=clip_norm, noise_multiplier=sigma,
        expected_batch_size=expected, physical_batch_size=physical,
        noise_generator=engine.make_generator("cpu", noise_seed), method=method,
    )
    return gradient


@pytest.mark.parametrize("method", ["layerwise", "vmap"])
def test_one_step_equals_the_naive_loop_to_1e_6(method):
    model, features, labels = _toy()
    # C = 4.5 lies inside the examples' gradient norms here: some are clipped, some not (checked)
    norms = engine.per_example_norms(engine.per_example_gradients(model, nn.functional.cross_entropy,
                                                                  features, labels)[0])
    assert (norms > 4.5).sum() >= 3 and (norms < 4.5).sum() >= 3
    fast = _dp_gradient(model, features, labels, physical=5, noise_seed=7, clip_norm=4.5, method=method)
    slow = _naive_noisy_gradient(model, features, labels, clip_norm=4.5, noise_multiplier=1.3, expected=10.0,
                                 noise_seed=7)
    for (name, value), expected in zip(fast.items(), slow):
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=0, msg=name)


def test_the_optimizer_step_applies_the_privatized_gradient():
    model, features, labels = _toy()
    original = copy.deepcopy(model)
    optimizer = engine.make_optimizer("sgd", model.parameters(), learning_rate=0.1)
    config = engine.DPSGDConfig(clip_norm=0.5, noise_multiplier=1.0, sampling_probability=1.0, physical_batch_size=4)
    trainer = engine.DPSGDTrainer(model, optimizer, features, labels, config, seed=3, device="cpu")
    assert trainer.step().batch_size == 12  # q = 1: everyone is in
    expected = _naive_noisy_gradient(original, features, labels, clip_norm=0.5, noise_multiplier=1.0,
                                     expected=12.0, noise_seed=engine._derived_seed(3, "noise"))
    for old, new, gradient in zip(original.parameters(), model.parameters(), expected):
        torch.testing.assert_close(new.detach(), old.detach() - 0.1 * gradient, atol=1e-6, rtol=0)


@pytest.mark.parametrize("clip_norm", [1e-3, 0.1, 1.0])
def test_clipped_norms_never_exceed_c(clip_norm):
    model, features, labels = _toy(n=32, seed=1)
    per_example, _ = engine.per_example_gradients(model, nn.functional.cross_entropy, features * 50, labels)
    factors = engine.clip_factors(per_example, clip_norm)
    clipped = {name: g * factors.view(-1, *[1] * (g.dim() - 1)) for name, g in per_example.items()}
    norms = engine.per_example_norms(clipped)
    assert (norms <= clip_norm).all()
    raw = engine.per_example_norms(per_example)
    assert torch.allclose(norms, torch.minimum(raw, torch.tensor(clip_norm)), rtol=3e-5, atol=1e-6)
    assert (raw > clip_norm).sum() >= 16  # most examples were clipped: the bound is exercised


def test_physical_chunking_gives_the_same_gradient():
    model, features, labels = _toy(n=13)
    whole = _dp_gradient(model, features, labels, physical=13, noise_seed=11)
    for physical in (1, 4):
        chunked = _dp_gradient(model, features, labels, physical=physical, noise_seed=11)
        for name in whole:
            torch.testing.assert_close(chunked[name], whole[name], atol=1e-6, rtol=0)


def test_an_empty_batch_is_a_step_of_noise_only():
    model, features, labels = _toy()
    empty = _dp_gradient(model, features[:0], labels[:0], physical=4, noise_seed=5, clip_norm=0.5, sigma=2.0,
                         expected=8.0)
    noise = torch.Generator().manual_seed(5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(empty[name], 2.0 * 0.5 * torch.randn(p.shape, generator=noise) / 8.0)
    # and the trainer takes such a step: q tiny, so the batch is empty, the weights still move
    optimizer = engine.make_optimizer("sgd", model.parameters(), learning_rate=0.1)
    config = engine.DPSGDConfig(clip_norm=0.5, noise_multiplier=1.0, sampling_probability=1e-9)
    trainer = engine.DPSGDTrainer(model, optimizer, features, labels, config, seed=1, device="cpu")
    before = [p.detach().clone() for p in model.parameters()]
    assert trainer.step().batch_size == 0
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_poisson_batch_sizes_have_binomial_mean_and_variance():
    """Sizes are Binomial(N=1000, q=0.05): mean 50, variance 47.5. Over 2000 draws the sample mean's
    sd is √(47.5/2000) ≈ 0.154, so |mean − 50| < 0.8 is a 5-sd bound; the sample variance's sd is
    ≈ 47.5·√(2/1999) ≈ 1.5, so |var − 47.5| < 7.5 is a 5-sd bound. A fixed batch of 50 (variance 0)
    or q·N rounded differently would fail both."""
    generator = engine.make_generator("cpu", 123)
    sizes = np.array([engine.poisson_sample(1000, 0.05, generator).numel() for _ in range(2000)])
    assert abs(sizes.mean() - 50) < 0.8
    assert abs(sizes.var(ddof=1) - 47.5) < 7.5
    # membership is independent across examples: each index is sampled about q of the time
    counts = torch.zeros(1000)
    for _ in range(400):
        counts[engine.poisson_sample(1000, 0.05, generator)] += 1
    assert abs(float(counts.mean()) / 400 - 0.05) < 0.003  # sd ≈ √(0.05·0.95/400000) ≈ 3.4e-4


def test_generators_are_csprng_seeded_unless_a_seed_is_given():
    draws = {float(torch.rand(1, generator=engine.make_generator("cpu"))) for _ in range(5)}
    assert len(draws) == 5
    same = {float(torch.rand(1, generator=engine.make_generator("cpu", 9))) for _ in range(3)}
    assert len(same) == 1


def test_the_zoo_builds_each_model_and_refuses_batch_norm():
    x = torch.zeros(2, 1, 28, 28)
    for name in ("logreg", "mlp", "cnn"):
        model = build_model(name, (1, 28, 28), 10)
        assert model(x).shape == (2, 10)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in build_model("cnn", (1, 28, 28), 10).modules())
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="at least 16"):
        build_model("cnn", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="BatchNorm"):
        engine.refuse_batch_norm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))


def test_the_cnn_has_per_example_gradients_equal_to_autograd():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 28, 28), 10)
    features, labels = torch.rand(3, 1, 28, 28), torch.tensor([1, 7, 3])
    per_example, _ = engine.per_example_gradients(model, nn.functional.cross_entropy, features, labels)
    for i in range(3):
        loss = nn.functional.cross_entropy(model(features[i : i + 1]), labels[i : i + 1])
        for (name, _), g in zip(model.named_parameters(), torch.autograd.grad(loss, list(model.parameters()))):
            torch.testing.assert_close(per_example[name][i], g, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("clip_norm", [0.01, 1.0, 100.0])
def test_the_cnn_step_is_the_same_by_either_per_example_method(clip_norm):
    """The layerwise closed forms (Linear, Conv2d with stride and padding, GroupNorm) against vmap over
    autograd, on the CNN with every example clipped (C = 0.01), some, or none (C = 100)."""
    torch.manual_seed(0)
    model = build_model("cnn", (1, 28, 28), 10)
    features, labels = torch.rand(9, 1, 28, 28), torch.randint(0, 10, (9,))
    assert engine.resolve_method(model) == "layerwise"
    by_vmap = _dp_gradient(model, features, labels, physical=4, noise_seed=2, clip_norm=clip_norm, method="vmap")
    layerwise = _dp_gradient(model, features, labels, physical=4, noise_seed=2, clip_norm=clip_norm,
                             method="layerwise")
    assert by_vmap.keys() == layerwise.keys()
    for name in by_vmap:
        torch.testing.assert_close(layerwise[name], by_vmap[name], atol=1e-6, rtol=1e-5, msg=name)


def test_layerwise_norms_are_the_norms_of_the_per_example_gradients_and_clip_below_c():
    """The closed-form norms against the norms of vmap's materialized gradients (float32: rtol 1e-5, far
    inside CLIP_MARGIN), so the clipped gradients, whose norms are the factors times these, stay ≤ C."""
    from privacy.dpsgd import layerwise

    torch.manual_seed(3)
    model = build_model("cnn", (1, 28, 28), 10)
    features, labels = torch.rand(16, 1, 28, 28) * 5, torch.randint(0, 10, (16,))
    _, norms, _ = layerwise.norms_and_clipped_sum(model, nn.functional.cross_entropy, features, labels,
                                                  lambda n: engine.factors_from_norms(n, 0.1))
    per_example, _ = engine.per_example_gradients(model, nn.functional.cross_entropy, features, labels)
    exact = engine.per_example_norms(per_example)
    torch.testing.assert_close(norms, exact, rtol=1e-5, atol=0)
    assert (exact * engine.factors_from_norms(norms, 0.1) <= 0.1).all() and (exact > 0.1).sum() >= 8


def test_a_sequence_linear_layer_by_either_method_and_other_layers_fall_back_to_vmap():
    torch.manual_seed(1)
    sequence = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Flatten(), nn.Linear(20, 2))  # inputs (B, 5, 3)
    features, labels = torch.randn(6, 5, 3), torch.randint(0, 2, (6,))
    one = _dp_gradient(sequence, features, labels, physical=6, noise_seed=1, clip_norm=0.3, method="vmap")
    other = _dp_gradient(sequence, features, labels, physical=6, noise_seed=1, clip_norm=0.3, method="layerwise")
    for name in one:
        torch.testing.assert_close(other[name], one[name], atol=1e-6, rtol=1e-5, msg=name)
    unsupported = nn.Sequential(nn.Flatten(), nn.LayerNorm(15), nn.Linear(15, 2))
    assert engine.resolve_method(unsupported) == "vmap"
    with pytest.raises(ValueError, match="layerwise"):
        engine.resolve_method(unsupported, "layerwise")
    with pytest.raises(ValueError, match="unknown"):
        engine.resolve_method(unsupported, "ghost")
    shared = nn.Linear(3, 3)
    twice = nn.Sequential(nn.Flatten(), shared, nn.Tanh(), shared)  # weight sharing: two uses of one layer
    with pytest.raises(ValueError, match="twice"):
        _dp_gradient(twice, torch.randn(4, 3), torch.randint(0, 3, (4,)), physical=4, noise_seed=1,
                     method="layerwise")


def test_two_epochs_on_digits_with_the_mlp_reach_a_sanity_accuracy():
    """σ = 1.0, q = 64/1437, T = 44 steps: ε ≈ 2.3 at δ = 1e-5 by PLD (checked in
    tests/accounting/test_calibration.py). Chance is 0.1; the same run without noise reaches
    ≈ 0.95, with σ = 1 seeds 0–3 gave 0.82–0.89 and with σ = 20 under 0.16. So > 0.7 shows
    learning under DP noise with margin for the seed, and fails when the noise swamps the signal."""
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits))
    train, test = order[:1437], order[1437:]
    features, labels = torch.from_numpy(digits.features), torch.from_numpy(digits.labels)
    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    optimizer = engine.make_optimizer("sgd", model.parameters(), learning_rate=2.0, momentum=0.5)
    config = engine.DPSGDConfig(clip_norm=1.0, noise_multiplier=1.0, sampling_probability=64 / 1437,
                                physical_batch_size=128)
    trainer = engine.DPSGDTrainer(model, optimizer, features[train], labels[train], config, seed=0, device="cpu")
    for _ in range(2):
        trainer.epoch()
    assert trainer.steps_taken == 2 * 22
    assert engine.accuracy(model, features[test], labels[test]) > 0.7


# --- datasets -------------------------------------------------------------------------------------


@pytest.mark.skipif(not MNIST.exists(), reason="shared MNIST files not present")
def test_the_idx_reader_reads_a_slice_of_real_mnist():
    train = load_mnist(MNIST, "train", limit=200)
    assert train.features.shape == (200, 1, 28, 28) and train.features.dtype == np.float32
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the canonical first labels
    assert 0.0 <= train.features.min() and train.features.max() == 1.0 and train.num_classes == 10
    test = load_mnist(MNIST, "test", limit=5)
    assert test.labels.tolist() == [7, 2, 1, 0, 4]


def test_the_idx_reader_reads_plain_and_gzipped_files_and_refuses_bad_ones(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 0x08, 3]) + np.array([2, 3, 4], dtype=">u4").tobytes() + array.tobytes()
    (tmp_path / "plain").write_bytes(raw)
    (tmp_path / "zipped").write_bytes(gzip.compress(raw))
    for name in ("plain", "zipped"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)
        np.testing.assert_array_equal(read_idx(tmp_path / name, limit=1), array[:1])
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x01" + raw[1:])
    with pytest.raises(DatasetError, match="magic"):
        read_idx(tmp_path / "magic")


def _npz(**arrays) -> io.BytesIO:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    return buffer


def test_npz_and_csv_load_features_and_labels():
    dataset = load_npz(_npz(x=np.ones((4, 3)), y=np.array([0, 1, 2, 1])))
    assert dataset.features.shape == (4, 3) and dataset.num_classes == 3
    table = load_csv(io.BytesIO(b"a,label,b\n0.5,1,2\n1.5,0,3\n"))
    np.testing.assert_array_equal(table.features, [[0.5, 2], [1.5, 3]])
    np.testing.assert_array_equal(table.labels, [1, 0])


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.ones((3, 2))}, "missing"),
    ({"x": np.ones((3, 2)), "y": np.array([0, 1])}, "labels of shape"),
    ({"x": np.array([[1.0, np.nan], [0, 0]]), "y": np.array([0, 1])}, "NaN"),
    ({"x": np.ones((2, 2)), "y": np.array([0.5, 1])}, "non-negative integers"),
    ({"x": np.ones((2, 2)), "y": np.array([-1, 1])}, "non-negative integers"),
    ({"x": np.array([["a", "b"], ["c", "d"]]), "y": np.array([0, 1])}, "real numbers"),
    ({"x": np.array([{}, {}], dtype=object), "y": np.array([0, 1])}, "readable NPZ"),
])
def test_malformed_npz_files_raise_dataset_error(arrays, message):
    with pytest.raises(DatasetError, match=message):
        load_npz(_npz(**arrays))


def test_a_file_that_is_not_npz_raises_dataset_error():
    with pytest.raises(DatasetError, match="readable NPZ"):
        load_npz(io.BytesIO(b"not a zip"))


@pytest.mark.parametrize("text, message", [
    (b"a,b\n1,2\n", "no column 'label'"),
    (b"a,label\n", "header row and at least one data row"),
    (b"a,label\n1,0\n2\n", "line 3 has 1 fields"),
    (b"a,label\n1,0\nx,1\n", "not a number"),
    (b"a,label\n1,0\n2,1.5\n", "non-negative integers"),
    (b"label\n1\n0\n", "at least one feature column"),
    (b"a,label\n\xff,0\n", "UTF-8"),
])
def test_malformed_csv_files_raise_dataset_error(text, message):
    with pytest.raises(DatasetError, match=message):
        load_csv(io.BytesIO(text))
