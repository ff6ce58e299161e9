"""Benchmark: DP-SGD on MNIST with the small CNN: test accuracy at ε = 3, and throughput vs Opacus and non-private.

Not collected by pytest (the name does not match ``test_*.py``). Two modes, each printing one JSON line:

    python tests/benchmarks/bench_training.py accuracy [--epochs 40] [--batch 512] [--lr 0.5] [--clip 0.1]
    python tests/benchmarks/bench_training.py throughput [--batch 512] [--steps 20] [--rounds 5] [--warmup 1]
    python tests/benchmarks/bench_training.py methods [--batch 512] [--steps 5] [--rounds 5]

Every mode takes ``--device cpu|cuda`` (default: cuda when available, else cpu); our engine, Opacus and
the non-private baseline all run on it. On cuda every timer is read after ``torch.cuda.synchronize()``
and only wall-clock rates are reported (the process's CPU time measures the host thread, not the GPU).

``accuracy`` trains on the full 60k MNIST training set (``../shared/data/mnist/``, IDX gzipped) and
reports the held-out 10k test accuracy. σ is calibrated by the service's own accountant
(``accounting.calibration``, dp-accounting's PLD) for the target (ε, δ) = (3, 1e-5), q = batch/60000 and
T = epochs · round(1/q) steps; Poisson sampling, as the accounting assumes. Defaults follow Tramèr & Boneh
2021's end-to-end CNN on MNIST (batch 512, 40 epochs, SGD momentum 0.9, lr 0.5 on the mean clipped
gradient, C = 0.1), which reached 98.1 % at ε = 3.

``throughput`` trains the same model at the same batch size for a fixed number of steps with each of
(a) our engine (``privacy.dpsgd.engine.DPSGDTrainer``), (b) Opacus from PyPI (``PrivacyEngine``,
Poisson sampling, same σ, C, lr), (c) plain non-private SGD on batches of the expected size, in
interleaved rounds (ours, Opacus, non-private, then again) so that load from other processes on the
machine hits all three alike; the median round of each is reported, in training examples per second.
Each round starts from a fresh model and runs one untimed warm-up step. Rates are given by wall-clock
time and by the process's CPU time (all threads): on a machine shared with other work the CPU-time rate
is the steadier one, and the JSON keeps both.

``methods`` compares the ways of getting clipped per-example gradients, one privatized gradient of a
batch of ``--batch`` MNIST images at a time, on one thread, by CPU time: ours by ``vmap`` (torch.func)
and by ``layerwise`` (privacy.dpsgd.layerwise), Opacus' GradSampleModule with ``hooks``, ``functorch``
and ``ghost`` clipping (each with its optimizer's clip, noise and step), and a non-private
forward/backward/step for scale. docs/benchmarks.md has the figures that chose ``layerwise``.
On cuda it uses the wall clock (synchronized) instead of CPU time.

On cuda ``throughput`` adds a fourth runner, ``opacus_resident``: Opacus' model and optimizer fed by
Poisson batches indexed on the device from a training set already there, as our engine's are, so that
the comparison also shows Opacus without its DataLoader (which collates each batch on the host, one
example at a time, and copies it over).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from accounting.calibration import calibrate_noise_multiplier, dpsgd_epsilon, rdp_epsilon  # noqa: E402
from privacy.dpsgd.datasets import load_mnist  # noqa: E402
from privacy.dpsgd.engine import DPSGDConfig, DPSGDTrainer, accuracy  # noqa: E402
from privacy.dpsgd.models import build_model  # noqa: E402

MNIST = Path(os.environ.get("MNIST_DIR", ROOT.parent.parent / "shared" / "data" / "mnist"))
TARGET_EPSILON, DELTA = 3.0, 1e-5
ACCURACY_TARGET = 0.975


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def synchronize(device: str) -> None:
    """Wait for the device's queued work, so that a host timer read next covers it (a no-op on cpu)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def on_cuda(args) -> bool:
    return torch.device(args.device).type == "cuda"


def machine(device: str | None = None) -> dict:
    device = device or default_device()
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "device": torch.device(device).type}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                     "multiprocessors": props.multi_processor_count, "cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version(), "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                     "matmul_precision": torch.get_float32_matmul_precision()})
    return info


def load(limit: int | None = None):
    train, test = load_mnist(MNIST, "train", limit), load_mnist(MNIST, "test", limit)
    return (torch.from_numpy(train.features), torch.from_numpy(train.labels),
            torch.from_numpy(test.features), torch.from_numpy(test.labels))


def fresh_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", (1, 28, 28), 10)


# --- accuracy -----------------------------------------------------------------------------------


def run_accuracy(args) -> dict:
    x, y, x_test, y_test = load()
    n = x.shape[0]
    q = args.batch / n
    steps_per_epoch = max(1, round(1 / q))
    steps = args.epochs * steps_per_epoch
    started = time.perf_counter()
    sigma = calibrate_noise_multiplier(TARGET_EPSILON, DELTA, q, steps)
    log(f"q={q:.6f} T={steps} sigma={sigma:.4f} (calibrated in {time.perf_counter() - started:.1f}s)")
    model = fresh_cnn(args.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    config = DPSGDConfig(clip_norm=args.clip, noise_multiplier=sigma, sampling_probability=q,
                         physical_batch_size=args.physical)
    trainer = DPSGDTrainer(model, optimizer, x, y, config, device=args.device)
    curve = []
    synchronize(args.device)
    train_started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        losses = [trainer.step() for _ in range(steps_per_epoch)]
        mean_loss = sum(r.loss_sum for r in losses) / max(1, sum(r.batch_size for r in losses))
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            acc = accuracy(model, x_test, y_test)
            curve.append([epoch, round(acc, 4)])
            log(f"epoch {epoch}: train loss {mean_loss:.4f}, test accuracy {acc:.4f}, "
                f"{time.perf_counter() - train_started:.0f}s")
    synchronize(args.device)
    train_s = time.perf_counter() - train_started
    final = accuracy(model, x_test, y_test)
    return {
        "benchmark": "dpsgd_mnist_accuracy", "model": "cnn", "train_examples": n, "test_examples": x_test.shape[0],
        "target_epsilon": TARGET_EPSILON, "delta": DELTA,
        "epsilon_pld": round(dpsgd_epsilon(sigma, q, steps, DELTA), 4),
        "epsilon_rdp": round(rdp_epsilon(sigma, q, steps, DELTA), 4),
        "noise_multiplier": round(sigma, 4), "sampling_probability": q, "expected_batch_size": args.batch,
        "steps": steps, "epochs": args.epochs, "clip_norm": args.clip, "learning_rate": args.lr,
        "momentum": args.momentum, "seed": args.seed, "test_accuracy": round(final, 4), "accuracy_curve": curve,
        "accuracy_target": ACCURACY_TARGET, "meets_accuracy_target": final >= ACCURACY_TARGET,
        "train_seconds": round(train_s, 1), "examples_per_s": round(steps * args.batch / train_s, 1),
        "physical_batch_size": args.physical, "machine": machine(args.device),
    }


# --- throughput ---------------------------------------------------------------------------------


def ours_runner(x, y, args, sigma):
    model = fresh_cnn(args.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    config = DPSGDConfig(clip_norm=args.clip, noise_multiplier=sigma, sampling_probability=args.batch / x.shape[0],
                         physical_batch_size=args.physical)
    trainer = DPSGDTrainer(model, optimizer, x, y, config, device=args.device, seed=args.seed)

    def step() -> int:
        return trainer.step().batch_size

    return step


def _private_opacus(x, y, args, sigma):
    """Opacus' (model, optimizer, Poisson DataLoader) for the CNN on ``args.device``; the loader's data stays on cpu."""
    import warnings

    from opacus import PrivacyEngine

    warnings.filterwarnings("ignore")
    model = fresh_cnn(args.seed).to(args.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=args.batch)
    engine = PrivacyEngine(accountant="prv")
    return engine.make_private(module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
                               max_grad_norm=args.clip, poisson_sampling=True)


def opacus_runner(x, y, args, sigma):
    model, optimizer, loader = _private_opacus(x, y, args, sigma)
    batches = iter(loader)

    def step() -> int:
        nonlocal batches
        try:
            features, labels = next(batches)
        except StopIteration:
            batches = iter(loader)
            features, labels = next(batches)
        features, labels = features.to(args.device), labels.to(args.device)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(features), labels).backward()
        optimizer.step()
        return int(labels.shape[0])

    return step


def opacus_resident_runner(x, y, args, sigma):
    """Opacus' model and optimizer, its batches Poisson-sampled on the device from data already there (as ours)."""
    from privacy.dpsgd.engine import make_generator, poisson_sample

    model, optimizer, _ = _private_opacus(x, y, args, sigma)
    x, y = x.to(args.device), y.to(args.device)
    generator = make_generator(args.device, args.seed)
    q = args.batch / x.shape[0]

    def step() -> int:
        indices = poisson_sample(x.shape[0], q, generator)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[indices]), y[indices]).backward()
        optimizer.step()
        return int(indices.numel())

    return step


def plain_runner(x, y, args, sigma):
    model = fresh_cnn(args.seed).to(args.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    x, y = x.to(args.device), y.to(args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)

    def step() -> int:
        indices = torch.randint(0, x.shape[0], (args.batch,), generator=generator, device=args.device)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[indices]), y[indices]).backward()
        optimizer.step()
        return args.batch

    return step


def timed(make, x, y, args, sigma) -> tuple[float, float]:
    """(examples/s by wall clock, examples/s by process CPU time) over ``args.steps`` steps, after
    ``args.warmup`` untimed ones; on cuda the clock is read after the device has finished."""
    step = make(x, y, args, sigma)
    for _ in range(args.warmup):
        step()
    synchronize(args.device)
    examples, started, cpu_started = 0, time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        examples += step()
    synchronize(args.device)
    return examples / (time.perf_counter() - started), examples / (time.process_time() - cpu_started)


def _ratios(median: dict) -> dict:
    return {"ratio_to_opacus": round(median["ours"] / median["opacus"], 3),
            "overhead_vs_non_private": round(median["non_private"] / median["ours"], 3),
            "opacus_overhead_vs_non_private": round(median["non_private"] / median["opacus"], 3)}


def _paired(rates: dict) -> dict:
    """Medians of the ratios within each round: the three runners of a round ran back to back, so a burst of
    load from elsewhere hits them together; steadier than ratios of separate medians on a shared machine."""
    rounds = list(zip(rates["ours"], rates["opacus"], rates["non_private"]))
    return {"ratio_to_opacus": round(statistics.median(o / p for o, p, _ in rounds), 3),
            "overhead_vs_non_private": round(statistics.median(n / o for o, _, n in rounds), 3),
            "opacus_overhead_vs_non_private": round(statistics.median(n / p for _, p, n in rounds), 3)}


def run_throughput(args) -> dict:
    from importlib.metadata import version

    x, y, _, _ = load()
    q = args.batch / x.shape[0]
    steps = args.epochs * max(1, round(1 / q))
    sigma = calibrate_noise_multiplier(TARGET_EPSILON, DELTA, q, steps)
    runners = {"ours": ours_runner, "opacus": opacus_runner, "non_private": plain_runner}
    if on_cuda(args):
        runners["opacus_resident"] = opacus_resident_runner
    wall = {name: [] for name in runners}
    cpu = {name: [] for name in runners}
    load_before = os.getloadavg()[0]
    for round_ in range(args.rounds):
        for name, make in runners.items():
            by_wall, by_cpu = timed(make, x, y, args, sigma)
            wall[name].append(by_wall)
            cpu[name].append(by_cpu)
        log(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s (cpu {cpu[k][-1]:.0f}/s)" for k, v in wall.items()))
    median = {name: statistics.median(values) for name, values in wall.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    ratios, ratios_cpu = _ratios(median), _ratios(median_cpu)
    if on_cuda(args):
        return _throughput_on_cuda(args, sigma, wall, median, ratios, version("opacus"))
    return {
        "benchmark": "dpsgd_mnist_throughput", "model": "cnn", "expected_batch_size": args.batch,
        "physical_batch_size": args.physical, "steps_per_round": args.steps, "rounds": args.rounds,
        "noise_multiplier": round(sigma, 4), "clip_norm": args.clip, "method": "layerwise",
        "examples_per_s": {name: round(value, 1) for name, value in median.items()}, **ratios,
        "cpu_time": {"examples_per_s": {name: round(value, 1) for name, value in median_cpu.items()}, **ratios_cpu},
        "paired_by_round": {"wall": _paired(wall), "cpu_time": _paired(cpu)},
        "rounds_examples_per_s": {name: [round(v, 1) for v in values] for name, values in wall.items()},
        "targets": {"ratio_to_opacus": 1.0, "overhead_vs_non_private": 1.6},
        "meets_targets": ratios["ratio_to_opacus"] >= 1.0 and ratios["overhead_vs_non_private"] <= 1.6,
        "meets_targets_by_cpu_time": ratios_cpu["ratio_to_opacus"] >= 1.0
        and ratios_cpu["overhead_vs_non_private"] <= 1.6,
        "loadavg_1m": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
        "opacus": version("opacus"), "machine": machine(args.device),
    }


def _throughput_on_cuda(args, sigma, wall, median, ratios, opacus_version) -> dict:
    """The throughput result on a GPU: wall-clock rates only, and the ratios against Opacus fed on the device too."""
    resident = {"ratio_to_opacus_resident": round(median["ours"] / median["opacus_resident"], 3),
                "opacus_resident_overhead_vs_non_private": round(median["non_private"] / median["opacus_resident"], 3)}
    return {
        "benchmark": "dpsgd_mnist_throughput", "device": torch.device(args.device).type, "model": "cnn",
        "expected_batch_size": args.batch, "physical_batch_size": args.physical, "steps_per_round": args.steps,
        "warmup_steps": args.warmup, "rounds": args.rounds, "noise_multiplier": round(sigma, 4),
        "clip_norm": args.clip, "method": "layerwise", "clock": "wall, after torch.cuda.synchronize()",
        "examples_per_s": {name: round(value, 1) for name, value in median.items()}, **ratios, **resident,
        "paired_by_round": _paired(wall),
        "rounds_examples_per_s": {name: [round(v, 1) for v in values] for name, values in wall.items()},
        "targets": {"ratio_to_opacus": 1.0, "overhead_vs_non_private": 1.6},
        "meets_targets": ratios["ratio_to_opacus"] >= 1.0 and ratios["overhead_vs_non_private"] <= 1.6,
        "opacus": opacus_version, "machine": machine(args.device),
    }


# --- per-example gradient methods ----------------------------------------------------------------


def method_steps(x, y, args) -> dict:
    """One callable per method, each computing one privatized gradient (and step) of the batch."""
    import warnings

    from opacus import PrivacyEngine

    from privacy.dpsgd.engine import make_generator, privatized_gradient

    warnings.filterwarnings("ignore")

    def ours(method):
        model, generator = fresh_cnn(args.seed).to(args.device), make_generator(args.device, args.seed)
        return lambda: privatized_gradient(model, nn.functional.cross_entropy, x, y, clip_norm=args.clip,
                                           noise_multiplier=1.0, expected_batch_size=x.shape[0],
                                           physical_batch_size=x.shape[0], noise_generator=generator, method=method)

    def opacus(mode):
        model = fresh_cnn(args.seed).to(args.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=x.shape[0])
        extra = {"criterion": nn.CrossEntropyLoss()} if mode == "ghost" else {}
        made = PrivacyEngine().make_private(module=model, optimizer=optimizer, data_loader=loader,
                                            noise_multiplier=1.0, max_grad_norm=args.clip, poisson_sampling=False,
                                            grad_sample_mode=mode, **extra)
        model, optimizer = made[0], made[1]
        criterion = made[2] if mode == "ghost" else nn.functional.cross_entropy

        def step():
            optimizer.zero_grad(set_to_none=True)
            criterion(model(x), y).backward()
            optimizer.step()
        return step

    def plain():
        model = fresh_cnn(args.seed).to(args.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)

        def step():
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return step

    return {"non_private": plain(), "ours_layerwise": ours("layerwise"), "ours_vmap": ours("vmap"),
            "opacus_hooks": opacus("hooks"), "opacus_functorch": opacus("functorch"), "opacus_ghost": opacus("ghost")}


def run_methods(args) -> dict:
    cuda = on_cuda(args)
    if not cuda:
        torch.set_num_threads(1)
    clock = time.perf_counter if cuda else time.process_time
    x, y, _, _ = load(limit=args.batch)
    x, y = x.to(args.device), y.to(args.device)
    steps = method_steps(x, y, args)
    rates = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            step()
            synchronize(args.device)
            started = clock()
            for _ in range(args.steps):
                step()
            synchronize(args.device)
            rates[name].append(args.steps * args.batch / (clock() - started))
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "benchmark": "dpsgd_per_example_methods", "model": "cnn", "batch": args.batch, "threads": 1,
        "clock": "process CPU time", "steps_per_round": args.steps, "rounds": args.rounds,
        "examples_per_s": {name: round(value, 1) for name, value in median.items()},
        "overhead_vs_non_private": {name: round(median["non_private"] / value, 3) for name, value in median.items()},
        "loadavg_1m": round(os.getloadavg()[0], 2), "machine": machine(args.device),
    }
    if cuda:
        result.update({"device": torch.device(args.device).type, "threads": torch.get_num_threads(),
                       "clock": "wall, after torch.cuda.synchronize()"})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["accuracy", "throughput", "methods"])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=512, help="expected (Poisson) batch size")
    parser.add_argument("--physical", type=int, default=1024, help="physical chunk of the engine")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--clip", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round (throughput)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each timed run (throughput)")
    parser.add_argument("--device", default=default_device(), help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args()
    result = {"accuracy": run_accuracy, "throughput": run_throughput, "methods": run_methods}[args.mode](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
